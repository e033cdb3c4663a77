"""Time from a second visitor's start to both receiving `matched`, end to end.

    python -m benchmarks.match_latency [--pairs 200] [--msgpack] [--redis] [--json]

Starts the real server (`python -m mediaserver.cli`, in-process matchmaker, or
with --redis a Redis matchmaker on a redis-server of its own) on loopback, then for each pair: two WebSocket clients say hello,
A presses start, and the clock runs from B's start until the later of the two
`matched` frames arrives. Pairs run one after another (an idle server: this is
the latency a person sees, not a load test). Loopback only; bounded by --pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import urllib.request

import msgpack
from websockets.asyncio.client import connect

from tests.support.signalling_client import free_port


def _encode(msg: dict, binary: bool) -> str | bytes:
    return msgpack.packb(msg) if binary else json.dumps(msg)


def _decode(frame: str | bytes) -> dict:
    return msgpack.unpackb(frame) if isinstance(frame, bytes) else json.loads(frame)


async def _until(ws, kind: str) -> float:
    while True:
        msg = _decode(await ws.recv())
        if msg["type"] == kind:
            return time.perf_counter()


async def one_pair(url: str, binary: bool, n: int) -> float:
    a = await connect(url, local_addr=("127.0.0.2", 0))
    b = await connect(url, local_addr=("127.0.0.3", 0))
    try:
        for ws in (a, b):
            await ws.send(_encode({"v": 1, "type": "hello", "age_confirmed": True}, binary))
            await _until(ws, "welcome")
        await a.send(_encode({"v": 1, "type": "start"}, binary))
        await _until(a, "queued")
        t0 = time.perf_counter()
        await b.send(_encode({"v": 1, "type": "start"}, binary))
        ta, tb = await asyncio.gather(_until(a, "matched"), _until(b, "matched"))
        return max(ta, tb) - t0
    finally:
        await a.close()
        await b.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def run(args: argparse.Namespace) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "mediaserver.cli", "--host", "127.0.0.1", "--port", str(port),
           "--udp-port", "0", "--log-level", "warning", "--workers", str(args.workers)]
    redis = None
    if args.redis:
        from tests.support.redis_server import CLUSTER_SECRET, RedisServer

        redis = RedisServer().start()  # a fresh one: no tickets left from earlier runs
        cmd += ["--redis-url", redis.url, "--cluster-secret", CLUSTER_SECRET]
    server = subprocess.Popen(cmd)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        url = f"ws://127.0.0.1:{port}/ws"
        for i in range(5):  # warm up
            await one_pair(url, args.msgpack, i)
        times = [await one_pair(url, args.msgpack, i) for i in range(args.pairs)]
    finally:
        server.terminate()
        server.wait(timeout=10)
        if redis is not None:
            redis.stop()
    ms = [t * 1000 for t in times]
    return {
        "pairs": len(ms),
        "encoding": "msgpack" if args.msgpack else "json",
        "matchmaker": "redis" if args.redis else "in-process",
        "workers": args.workers,
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--msgpack", action="store_true", help="binary frames instead of JSON")
    parser.add_argument("--redis", action="store_true", help="use a Redis matchmaker (own server)")
    parser.add_argument("--workers", type=int, default=1,
                        help="the server's --workers (2: pairs may span workers)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs must be >= 1")
    result = asyncio.run(run(args))
    print(f"{'pairs':>8} {'encoding':>9} {'matchmaker':>11} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    print(f"{result['pairs']:>8} {result['encoding']:>9} {result['matchmaker']:>11} "
          f"{result['p50_ms']:>8} {result['p99_ms']:>8} {result['max_ms']:>8}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
