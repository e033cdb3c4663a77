"""Operator commands on accounts: `mediaserver accounts underage-reports` lists open
under-age reports (an account's or a guardian's, marked by `source`);
`mediaserver accounts confirm-underage REPORT_ID` confirms one, which deletes the
reported account and all its data at once (the audit log keeps an entry without
personal data). `mediaserver accounts hold USER_ID --reason TEXT` places a legal hold
(every deletion of the account waits; the reason goes to the audit log) and
`mediaserver accounts unhold USER_ID` releases it, completing the deletions that
waited."""

from __future__ import annotations

import argparse
import json
import os
import sys

from mediaserver.store.crypto import load_data_key
from mediaserver.store.db import Store
from mediaserver.store.errors import Conflict, Invalid, NotFound, StoreError


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
    hold = sub.add_parser(
        "hold", parents=[common],
        help="place a legal hold: the account's deletion (by any path) waits",
    )
    hold.add_argument("user_id", metavar="USER_ID", help="the account's id")
    hold.add_argument("--reason", required=True,
                      help="why (recorded in the audit log with the action)")
    unhold = sub.add_parser(
        "unhold", parents=[common],
        help="release a legal hold; deletions that waited complete now",
    )
    unhold.add_argument("user_id", metavar="USER_ID", help="the account's id")
    return parser


def _hold(store: Store, args: argparse.Namespace) -> int:
    try:
        if args.command == "hold":
            store.place_legal_hold(args.user_id, args.reason)
            print(json.dumps({"held": True, "user_id": args.user_id}))
            return 0
        waiting = store.release_legal_hold(args.user_id)
    except NotFound:
        what = "no legal hold on" if args.command == "unhold" else "no account"
        print(f"mediaserver accounts: {what} {args.user_id!r}", file=sys.stderr)
        return 1
    except Invalid as exc:
        print(f"mediaserver accounts: {exc.field}: {exc.message}", file=sys.stderr)
        return 1
    # what the server's timer would do within seconds; done here so a store no
    # server runs on completes them too
    store.process_pending()
    print(json.dumps({"released": True, "user_id": args.user_id,
                      "deletions_completed": waiting}))
    return 0


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
        if args.command in ("hold", "unhold"):
            return _hold(store, args)
        try:
            store.confirm_underage(args.report_id)
        except NotFound:
            print(f"mediaserver accounts: no report {args.report_id!r}", file=sys.stderr)
            return 1
        except Invalid as exc:
            print(f"mediaserver accounts: {exc.message}", file=sys.stderr)
            return 1
        except Conflict as exc:  # a legal hold
            print(f"mediaserver accounts: {exc}", file=sys.stderr)
            return 1
        print(json.dumps({"deleted": True, "report_id": args.report_id}))
        return 0
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
