"""Operator commands on moderators: `mediaserver moderation grant USERNAME` gives an
account the moderator role (the moderation API under /api/v1/moderation/ answers it),
`mediaserver moderation revoke USERNAME` takes it back. Both go to the audit log."""

from __future__ import annotations

import argparse
import json
import os
import sys

from mediaserver.store.crypto import load_data_key
from mediaserver.store.db import Store
from mediaserver.store.errors import NotFound, StoreError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mediaserver moderation", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        default=os.environ.get("MEDIASERVER_DB", "mediaserver.db"),
        help="the SQLite database file (default: $MEDIASERVER_DB or mediaserver.db)",
    )
    common.add_argument(
        "--data-key-file",
        default=os.environ.get("MEDIASERVER_DATA_KEY_FILE", "mediaserver.key"),
        help="the data key file (default: $MEDIASERVER_DATA_KEY_FILE or mediaserver.key)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("grant", "give an account the moderator role"),
        ("revoke", "take the moderator role back"),
    ):
        command = sub.add_parser(name, parents=[common], help=text)
        command.add_argument("username", metavar="USERNAME", help="the account's username")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not os.path.exists(args.db):
        print(f"mediaserver moderation: no database at {args.db!r}", file=sys.stderr)
        return 1
    try:
        store = Store(args.db, load_data_key(args.data_key_file))
    except StoreError as exc:
        print(f"mediaserver moderation: {exc}", file=sys.stderr)
        return 1
    try:
        granted = args.command == "grant"
        try:
            user_id = store.set_moderator(args.username, granted)
        except NotFound:
            print(f"mediaserver moderation: no account {args.username!r}", file=sys.stderr)
            return 1
        print(json.dumps({"moderator": granted, "user_id": user_id}))
        return 0
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
