"""What the operator commands share for mail (`mediaserver retention`, `mediaserver
policy publish`): the --smtp-url / --mail-from / --maildir flags, and delivering the
mail a command queued before it exits. Also the `policy` command."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys

from mediaserver.mail.sender import deliver_queued
from mediaserver.mail.transport import (
    Transport,
    check_mail_from,
    make_transport,
    parse_smtp_url,
)
from mediaserver.store.crypto import load_data_key
from mediaserver.store.db import Store
from mediaserver.store.errors import StoreError


def add_mail_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smtp-url", default=os.environ.get("MEDIASERVER_SMTP_URL", ""),
                        help="smtp://[user:pass@]host:port (STARTTLS when offered) or "
                        "smtps://...; absent: mail is written to --maildir")
    parser.add_argument("--mail-from",
                        default=os.environ.get("MEDIASERVER_MAIL_FROM", "mediaserver@localhost"),
                        help="From address of the mail")
    parser.add_argument("--maildir", default=os.environ.get("MEDIASERVER_MAILDIR", ""),
                        help="Maildir without --smtp-url (default: maildir next to --db)")


def transport_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Transport:
    """The transport the flags name (a bad flag: parser.error, exit code 2)."""
    try:
        if args.smtp_url:
            parse_smtp_url(args.smtp_url)
        check_mail_from(args.mail_from)
    except ValueError as exc:
        parser.error(str(exc))
    maildir = args.maildir or os.path.join(os.path.dirname(os.path.abspath(args.db)), "maildir")
    return make_transport(args.smtp_url, args.mail_from, maildir)


def deliver(store: Store, transport: Transport) -> dict[str, int]:
    """Deliver the queued mail that is due; the counts (sent, failed, given_up).
    What failed stays queued for the server's sender (or the next run)."""
    return deliver_queued(store, transport).as_dict()


def build_policy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediaserver policy",
        description="Publish a new policy version: record it, notice every account "
        "(inbox and mail), deliver the mail.")
    sub = parser.add_subparsers(dest="command", required=True)
    publish = sub.add_parser("publish", help="record FILE as the new policy version")
    publish.add_argument("file", metavar="FILE", help="the policy text (UTF-8)")
    publish.add_argument("--version", dest="policy_version", default=None,
                         help="its version (default: one more than the current, or 1)")
    publish.add_argument("--effective-date", default=None,
                         help="YYYY-MM-DD it takes effect (default: today, UTC)")
    publish.add_argument("--url", default="", help="where people read it")
    publish.add_argument("--db", required=True, help="the SQLite database file")
    publish.add_argument("--data-key-file", required=True, help="the data key file")
    add_mail_arguments(publish)
    return parser


def policy_main(argv: list[str] | None = None) -> int:
    parser = build_policy_parser()
    args = parser.parse_args(argv)
    transport = transport_from_args(parser, args)
    try:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"mediaserver policy: cannot read {args.file!r}: {exc}", file=sys.stderr)
        return 1
    if not os.path.exists(args.db):
        print(f"mediaserver policy: no database at {args.db!r}", file=sys.stderr)
        return 1
    try:
        store = Store(args.db, load_data_key(args.data_key_file))
    except StoreError as exc:
        print(f"mediaserver policy: {exc}", file=sys.stderr)
        return 1
    try:
        version = args.policy_version
        if version is None:
            current = store.current_policy()
            version = "1" if current is None else (
                str(int(current.version) + 1) if current.version.isdigit() else None)
            if version is None:
                parser.error("the current version is not a number: give --version")
        effective = args.effective_date or _dt.datetime.now(_dt.UTC).date().isoformat()
        noticed = store.publish_policy(version, effective, args.url, text)
        sent = deliver(store, transport)
    except StoreError as exc:
        print(f"mediaserver policy: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps({"version": version, "effective_date": effective, "noticed": noticed,
                      "mail": sent}, sort_keys=True), flush=True)
    return 0
