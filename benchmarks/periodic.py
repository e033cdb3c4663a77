"""Python's own periodic work in one worker: CPU, wake-ups and timers per second.

    python -m benchmarks.periodic [--duration 10] [--visitors 200] [--repeat 1] [--json]

Starts the real server (`python -m mediaserver.cli --count-timers` on 127.0.0.1,
one worker) and measures it for --duration seconds in each of two states:

  idle      nobody connected
  visitors  --visitors WebSockets open on loopback, each said `hello` and got
            `welcome`, none queued or matched (the server pings each; the client
            library answers)

For each: the process's CPU seconds per second (utime+stime of every thread, from
/proc/PID/task/*/schedstat), its voluntary context switches per second (the
wake-ups: the main thread's, and all threads'), and the event loop's timer
callbacks per second by source (the server's --count-timers counts, read from
/metrics before and after). --repeat N runs each state N times on fresh servers,
alternating, and reports the medians. Loopback only; bounded in time; kills the
server it started. Live calls are not measured here: the SFU's share under media
load is benchmarks/forward.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.connections import free_port
from benchmarks.loadgen import visitor_host

ROOT = Path(__file__).resolve().parent.parent
TIMERS = "mediaserver_timer_callbacks_total"


def _threads(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of `pid` (schedstat: ns)."""
    total = 0
    for task in _threads(pid):
        with (
            contextlib.suppress(OSError, ValueError, IndexError),
            open(f"/proc/{pid}/task/{task}/schedstat") as f,
        ):
            total += int(f.read().split()[0])
    return total / 1e9


def _voluntary(path: str) -> int:
    with contextlib.suppress(OSError, ValueError), open(path) as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


def wakeups(pid: int) -> tuple[int, int]:
    """Voluntary context switches: (the main thread's, all threads')."""
    main = _voluntary(f"/proc/{pid}/task/{pid}/status")
    every = sum(_voluntary(f"/proc/{pid}/task/{t}/status") for t in _threads(pid))
    return main, every


def timer_counts(port: int) -> dict[str, float]:
    """The server's fired timer callbacks by source (--count-timers)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == TIMERS:
                counts[sample.labels["source"]] = sample.value
    return counts


def start_server(tmp: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mediaserver.cli",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--udp-port",
            "0",
            "--log-level",
            "warning",
            "--workers",
            "1",
            "--count-timers",
            "--db",
            f"{tmp}/db",
            "--data-key-file",
            f"{tmp}/key",
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the server did not start") from None
            time.sleep(0.05)


async def measure(pid: int, port: int, seconds: float) -> dict[str, Any]:
    """CPU, wake-ups and timers per second over `seconds`, the scrapes excluded."""
    before = await asyncio.to_thread(timer_counts, port)
    await asyncio.sleep(0.5)  # the scrape's own work out of the window
    cpu0, (main0, all0), t0 = cpu_seconds(pid), wakeups(pid), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, (main1, all1), t1 = cpu_seconds(pid), wakeups(pid), time.monotonic()
    await asyncio.sleep(0.5)
    after = await asyncio.to_thread(timer_counts, port)
    wall = t1 - t0
    # the timer window is a second longer than the /proc one (the scrapes' margins)
    twall = wall + 1.0
    by_source = {
        k: round((after[k] - before.get(k, 0.0)) / twall, 2)
        for k in after
        if after[k] - before.get(k, 0.0) > 0
    }
    return {
        "cpu_ms_per_s": round((cpu1 - cpu0) / wall * 1000, 2),
        "wakeups_main_per_s": round((main1 - main0) / wall, 1),
        "wakeups_all_per_s": round((all1 - all0) / wall, 1),
        "timers_per_s": round(sum(by_source.values()), 1),
        "timers_by_source": dict(sorted(by_source.items(), key=lambda kv: -kv[1])),
    }


async def with_visitors(pid: int, port: int, n: int, seconds: float) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    sem = asyncio.Semaphore(64)
    conns: list[Any] = []

    async def open_one(i: int) -> None:
        async with sem:
            ws = await connect(
                f"ws://127.0.0.1:{port}/ws",
                local_addr=(visitor_host(i), 0),
                open_timeout=30,
                ping_interval=None,
            )
            await ws.send(json.dumps({"v": 1, "type": "hello", "age_confirmed": True}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if reply.get("type") != "welcome":
                raise RuntimeError(f"no welcome: {reply}")
            conns.append(ws)

    try:
        await asyncio.gather(*(open_one(i) for i in range(n)))
        await asyncio.sleep(2)  # settle: the handshakes' work out of the window
        result = await measure(pid, port, seconds)
        result["open_at_end"] = sum(1 for ws in conns if ws.close_code is None)
        return result
    finally:
        for ws in conns:
            with contextlib.suppress(Exception):
                ws.transport.abort()


def run_state(state: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mediaserver-periodic-") as tmp:
        proc, port = start_server(tmp)
        try:
            if state == "idle":
                time.sleep(2)
                return asyncio.run(measure(proc.pid, port, args.duration))
            return asyncio.run(with_visitors(proc.pid, port, args.visitors, args.duration))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("cpu_ms_per_s", "wakeups_main_per_s", "wakeups_all_per_s", "timers_per_s"):
        out[key] = round(statistics.median(r[key] for r in runs), 2)
    sources = {s for r in runs for s in r["timers_by_source"]}
    by = {
        s: round(statistics.median(r["timers_by_source"].get(s, 0.0) for r in runs), 2)
        for s in sources
    }
    out["timers_by_source"] = dict(sorted(by.items(), key=lambda kv: -kv[1]))
    if "open_at_end" in runs[0]:
        out["open_at_end"] = min(r["open_at_end"] for r in runs)
    out["runs"] = len(runs)
    return out


def print_table(result: dict[str, Any]) -> None:
    states = result["states"]
    print(f"{'state':<10} {'CPU ms/s':>9} {'wake/s main':>12} {'wake/s all':>11} {'timers/s':>9}")
    for name, s in states.items():
        print(
            f"{name:<10} {s['cpu_ms_per_s']:>9.2f} {s['wakeups_main_per_s']:>12.1f} "
            f"{s['wakeups_all_per_s']:>11.1f} {s['timers_per_s']:>9.1f}"
        )
    for name, s in states.items():
        print(f"\ntimer callbacks per second, {name}:")
        for source, rate in s["timers_by_source"].items():
            if rate >= 0.05:
                print(f"  {rate:>8.2f}  {source}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--visitors", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1, help="fresh servers per state")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.visitors <= 5000 or not 0 < args.duration <= 600 or args.repeat < 1:
        parser.error("--visitors 1..5000, --duration 0..600, --repeat >= 1")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runs: dict[str, list[dict[str, Any]]] = {"idle": [], "visitors": []}
    for _ in range(args.repeat):
        for state, done in runs.items():
            done.append(run_state(state, args))
    result = {
        "duration": args.duration,
        "visitors": args.visitors,
        "states": {name: median_of(r) for name, r in runs.items()},
    }
    print_table(result)
    if args.json:
        print(json.dumps(result))
    held = result["states"]["visitors"].get("open_at_end", 0)
    return 0 if held == args.visitors else 1


if __name__ == "__main__":
    sys.exit(main())
