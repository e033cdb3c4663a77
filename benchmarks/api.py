"""REST API benchmark: profile reads/s and privacy-request submissions/s on one core.

    python -m benchmarks.api [--duration 3] [--repeats 3] [--concurrency 16]
                             [--profiles 200] [--json]

The server (the /api/v1 app alone, on uvicorn + uvloop, with a fresh SQLite file
and key in a temporary directory) runs in a subprocess pinned with
os.sched_setaffinity to one CPU; the client (httpx.AsyncClient, keep-alive,
``--concurrency`` requests in flight over as many connections) runs in this
process pinned to another CPU when there is one.

* **profile reads/s**: ``GET /api/v1/profiles/{id}`` with a bearer token, spread
  over ``--profiles`` users created beforehand (not timed). Each read
  authenticates, which updates last_seen_at: one committed SQLite write (WAL,
  synchronous=FULL) per read.
* **privacy-request submissions/s**: ``POST /api/v1/privacy-requests`` of type
  ``correction`` (the one type that changes nothing else, so every run does the
  same work). Each submission also kicks the background completion
  (``store.process_pending`` in a worker thread, coalesced), which shares the core.

Each phase runs ``--duration`` seconds; figures are the median of ``--repeats``
runs (min-max alongside), with the server's CPU use over the phase (from
/proc/PID/stat; ~100% means the server core was the limit, well below means the
client was). The whole run is bounded: about (2 x repeats x duration) + 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

API = "/api/v1"
ADULT = "1990-05-17"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(port: int, db: str, key_file: str, cpu: int) -> None:
    """The server side: the API app alone, on one CPU."""
    os.sched_setaffinity(0, {cpu})
    import uvicorn
    from starlette.applications import Starlette

    from mediaserver.api import create_api
    from mediaserver.api.limits import UNLIMITED
    from mediaserver.store import Store, load_or_create_data_key

    store = Store(db, load_or_create_data_key(key_file))
    # one client address sends everything: the per-address limits would answer 429s
    app = Starlette(routes=[create_api(store, rates=UNLIMITED)])
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                    loop="uvloop")
    finally:
        store.close()


@contextmanager
def served_api(tmp: str, server_cpu: int, client_cpu: int) -> Iterator[tuple[str, int]]:
    """Run `--serve` in a child pinned to server_cpu, on a fresh database in tmp;
    pin this process to client_cpu once it answers. Yields (base URL, its pid)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.api", "--serve", "--port", str(port),
         "--db", f"{tmp}/bench.db", "--key", f"{tmp}/bench.key", "--cpu", str(server_cpu)],
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url + API + "/openapi.json", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.1)
        if client_cpu != server_cpu:
            os.sched_setaffinity(0, {client_cpu})
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def phase(
    http: httpx.AsyncClient,
    duration: float,
    concurrency: int,
    make: Any,
    pid: int,
) -> dict[str, float]:
    """Requests from `concurrency` workers for `duration` s: requests/s and server CPU."""
    done = 0
    errors = 0
    stop_at = 0.0

    async def worker(i: int) -> None:
        nonlocal done, errors
        n = i
        while time.perf_counter() < stop_at:
            method, url, kwargs, expect = make(n)
            n += concurrency
            r = await http.request(method, url, **kwargs)
            if r.status_code == expect:
                done += 1
            else:
                errors += 1

    cpu0 = cpu_seconds(pid)
    start = time.perf_counter()
    stop_at = start + duration
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pid) - cpu0
    if errors:
        raise RuntimeError(f"{errors} requests got an unexpected status")
    return {"per_s": done / elapsed, "server_cpu": cpu / elapsed}


async def run_client(
    url: str, pid: int, duration: float, repeats: int, concurrency: int, n_profiles: int
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url + API, limits=limits, timeout=30) as http:
        users: list[dict[str, Any]] = []
        for i in range(n_profiles):
            r = await http.post("/profiles", json={
                "username": f"bench_{i}", "date_of_birth": ADULT, "bio": "benchmark user",
                "interests": ["music", "films"], "language": "en"})
            r.raise_for_status()
            users.append(r.json())
        auth = [{"Authorization": f"Bearer {u['token']}"} for u in users]

        def read(n: int) -> tuple[str, str, dict[str, Any], int]:
            i = n % len(users)
            return "GET", f"/profiles/{users[i]['id']}", {"headers": auth[i]}, 200

        def submit(n: int) -> tuple[str, str, dict[str, Any], int]:
            i = n % len(users)
            return ("POST", "/privacy-requests",
                    {"headers": auth[i], "json": {"type": "correction"}}, 202)

        # warm-up (connections open, caches hot); not counted
        await phase(http, min(0.5, duration), concurrency, read, pid)
        results: dict[str, Any] = {}
        for name, make in (("profile_reads", read), ("privacy_submissions", submit)):
            runs = [await phase(http, duration, concurrency, make, pid) for _ in range(repeats)]
            rates = [r["per_s"] for r in runs]
            results[name] = {
                "per_s": round(statistics.median(rates), 1),
                "min": round(min(rates), 1),
                "max": round(max(rates), 1),
                "server_cpu": round(statistics.median(r["server_cpu"] for r in runs), 2),
            }
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--profiles", type=int, default=200, help="users created first")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--db", default="", help=argparse.SUPPRESS)
    parser.add_argument("--key", default="", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.port, args.db, args.key, args.cpu)
        return 0

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = cpus[0], cpus[-1]
    with (
        tempfile.TemporaryDirectory(prefix="bench-api-") as tmp,
        served_api(tmp, server_cpu, client_cpu) as (url, pid),
    ):
        results = asyncio.run(run_client(url, pid, args.duration, args.repeats,
                                         args.concurrency, args.profiles))
    report = {
        "server_cpu": server_cpu,
        "client_cpu": client_cpu if client_cpu != server_cpu else None,
        "duration_s": args.duration,
        "repeats": args.repeats,
        "concurrency": args.concurrency,
        **results,
    }
    if args.json:
        print(json.dumps(report))
    else:
        for name in ("profile_reads", "privacy_submissions"):
            r = results[name]
            print(f"{name:22} {r['per_s']:9.1f}/s  (min {r['min']:.1f}, max {r['max']:.1f}; "
                  f"server CPU {r['server_cpu'] * 100:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
