"""Operator commands on accounts: `mediaserver accounts underage-reports` lists open
`underage` reports; `mediaserver accounts confirm-underage REPORT_ID` confirms one,
which deletes the reported account and all its data at once (the audit log keeps an
entry without personal data)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from mediaserver.store.crypto import load_data_key
from mediaserver.store.db import Store
from mediaserver.store.errors import Invalid, NotFound, StoreError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mediaserver accounts", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db", default=os.environ.get("MEDIASERVER_DB", "mediaserver.db"),
        help="the SQLite database file (default: $MEDIASERVER_DB or mediaserver.db)",
    )
    common.add_argument(
        "--data-key-file",
        default=os.environ.get("MEDIASERVER_DATA_KEY_FILE", "mediaserver.key"),
        help="the data key file (default: $MEDIASERVER_DATA_KEY_FILE or mediaserver.key)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "underage-reports", parents=[common],
        help="list open underage reports as JSON lines (report_id, reported_user_id, at)",
    )
    confirm = sub.add_parser(
        "confirm-underage", parents=[common],
        help="confirm an underage report: delete the reported account and its data now",
    )
    confirm.add_argument("report_id", metavar="ID", help="the report's id")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not os.path.exists(args.db):
        print(f"mediaserver accounts: no database at {args.db!r}", file=sys.stderr)
        return 1
    try:
        store = Store(args.db, load_data_key(args.data_key_file))
    except StoreError as exc:
        print(f"mediaserver accounts: {exc}", file=sys.stderr)
        return 1
    try:
        if args.command == "underage-reports":
            for report in store.underage_reports():
                print(json.dumps(report, sort_keys=True))
            return 0
        try:
            store.confirm_underage(args.report_id)
        except NotFound:
            print(f"mediaserver accounts: no report {args.report_id!r}", file=sys.stderr)
            return 1
        except Invalid as exc:
            print(f"mediaserver accounts: {exc.message}", file=sys.stderr)
            return 1
        print(json.dumps({"deleted": True, "report_id": args.report_id}))
        return 0
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
