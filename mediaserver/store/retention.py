"""Retention: `python -m mediaserver.store.retention --db PATH --data-key-file PATH
--run-once` (also `mediaserver retention --run-once`), for cron, or without
--run-once a pass every --interval seconds. Each pass delivers the mail it queued
(inactivity notices) through --smtp-url or the Maildir. `--as-of YYYY-MM-DD` runs
as of the end of that day (UTC), to preview what is due then (and for tests)."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time

from mediaserver.mail.commands import add_mail_arguments, deliver, transport_from_args
from mediaserver.store.crypto import load_data_key
from mediaserver.store.db import Store
from mediaserver.store.errors import StoreError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediaserver retention",
        description="Purge chat history 6 months after a conversation's last message, "
        "flag accounts inactive 12 months, delete those flagged 30 days ago, delete "
        "moderation evidence (a report's chat lines) 30 days after the report.",
    )
    parser.add_argument("--db", required=True, help="the SQLite database file")
    parser.add_argument(
        "--data-key-file", required=True, help="the data key file (32 bytes, mode 0600)"
    )
    parser.add_argument(
        "--run-once", action="store_true", help="one pass, print the counts as JSON, exit"
    )
    parser.add_argument(
        "--interval", type=float, default=3600.0,
        help="without --run-once: seconds between passes",
    )
    parser.add_argument(
        "--as-of", type=_as_of, default=None, metavar="YYYY-MM-DD",
        help="run as of the end of that day (UTC) instead of now: a preview, or a test",
    )
    add_mail_arguments(parser)
    return parser


def _as_of(text: str) -> float:
    try:
        day = _dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None
    end = _dt.datetime.combine(day, _dt.time(23, 59, 59), tzinfo=_dt.UTC)
    return end.timestamp()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be positive")
    transport = transport_from_args(parser, args)
    as_of: float | None = args.as_of
    if not os.path.exists(args.db):
        print(f"mediaserver retention: no database at {args.db!r}", file=sys.stderr)
        return 1
    try:
        key = load_data_key(args.data_key_file)
        store = Store(args.db, key) if as_of is None else Store(args.db, key, clock=lambda: as_of)
    except StoreError as exc:
        print(f"mediaserver retention: {exc}", file=sys.stderr)
        return 1
    try:
        while True:
            counts: dict[str, object] = dict(store.run_retention())
            counts["mail"] = deliver(store, transport)
            print(json.dumps(counts, sort_keys=True), flush=True)
            if args.run_once:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
