"""Profile store cost: create, get and browse over ``Store`` on a temporary SQLite file
(WAL, synchronous=FULL), in microseconds per call, medians of --repeats runs.

    python -m benchmarks.profiles [--users 200] [--repeats 3]

* **create**: ``Store.create_profile`` (no password: no Argon2), discoverable.
* **get**: ``Store.get_profile`` round-robin over the accounts.
* **browse**: ``Store.browse`` of a viewer with --users listed profiles, every other
  call filtered by an interest everyone has (a full first page each time).
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


def run(users: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as d:
        store = Store(os.path.join(d, "bench.db"), KEY, clock=lambda: NOW)
        t = time.perf_counter()
        ids = [store.create_profile(
            f"user_{i}", "1990-01-02", bio="a short bio of a few words",
            interests=["music", f"topic{i % 7}", "films"], language="en",
            discoverable=True)[0].id for i in range(users)]
        create = (time.perf_counter() - t) / users
        gets = users * 10
        t = time.perf_counter()
        for i in range(gets):
            store.get_profile(ids[i % users])
        get = (time.perf_counter() - t) / gets
        browses = 50
        t = time.perf_counter()
        for i in range(browses):
            store.browse(ids[i % users], interest="music" if i % 2 else None)
        browse = (time.perf_counter() - t) / browses
        store.close()
    return create, get, browse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = [run(args.users) for _ in range(args.repeats)]
    for name, values in zip(("create", "get", f"browse ({args.users} listed)"), zip(*runs)):
        print(f"{name}: {statistics.median(values) * 1e6:.0f} us per call"
              f" (min {min(values) * 1e6:.0f}, max {max(values) * 1e6:.0f})")


if __name__ == "__main__":
    main()
