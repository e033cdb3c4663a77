"""Conversation store cost: direct messages, the conversation list and a page of
history over ``Store`` on a temporary SQLite file (WAL, synchronous=FULL), in
microseconds per call, medians of --repeats runs.

    python -m benchmarks.conversations [--peers 50] [--messages 2000] [--repeats 3]

* **send**: ``Store.send_direct`` between two connections who both keep history
  (two sealed copies and one commit per message).
* **list**: ``Store.conversations`` of an account with --peers accepted connections.
* **page**: ``Store.conversation_messages``, 50 newest of --messages (the first page,
  which also marks the conversation read).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from mediaserver.store import Store

KEY = bytes(range(32))
NOW = 1781524800.0  # 2026-06-15


def run(peers: int, messages: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as d:
        store = Store(os.path.join(d, "bench.db"), KEY, clock=lambda: NOW)
        me = store.create_profile("me_0", "1990-01-02")[0].id
        conversations = []
        for i in range(peers):
            peer = store.create_profile(f"peer_{i}", "1990-01-02", discoverable=True)[0].id
            asked = store.request_connection(me, f"peer_{i}")
            conversations.append(store.accept_connection(peer, asked["id"])["conversation_id"])
        for user in (me, peer):
            store.update_conversation(user, conversations[-1], keep_history=True)
        t = time.perf_counter()
        for i in range(messages):
            store.send_direct(me if i % 2 else peer, conversations[-1], f"message {i} " * 4)
        send = (time.perf_counter() - t) / messages
        lists = 50
        t = time.perf_counter()
        for _ in range(lists):
            store.conversations(me)
        listing = (time.perf_counter() - t) / lists
        pages = 200
        t = time.perf_counter()
        for _ in range(pages):
            store.conversation_messages(me, conversations[-1])
        page = (time.perf_counter() - t) / pages
        store.close()
    return send, listing, page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=50)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = [run(args.peers, args.messages) for _ in range(args.repeats)]
    names = ("send (both keep)", f"list ({args.peers} conversations)",
             f"page (50 of {args.messages})")
    for name, values in zip(names, zip(*runs)):
        print(f"{name}: {statistics.median(values) * 1e6:.0f} us per call"
              f" (min {min(values) * 1e6:.0f}, max {max(values) * 1e6:.0f})")


if __name__ == "__main__":
    main()
