"""Matchmaker benchmark: operations per second with a long queue, and match latency.

    python -m benchmarks.matchmaker [--sizes 1000,10000,100000] [--only memory|redis]
                                    [--ops 50000] [--redis-ops 20000]
                                    [--concurrency 64] [--latency-samples 1000]
                                    [--repeats 3] [--asyncio] [--json]

For each implementation (in-process, and Redis on a redis-server started here on
127.0.0.1 with no persistence) and each queue size N, the queue first holds N
*background* tickets that can never match the probe traffic: each has its own
identity and its own interest, and stays within its interest window (the
policy's interest_wait is an hour here). Then, with the queue size held steady:

* **match op/s** (the headline): one op = one ``enqueue`` that pairs at once
  with a waiter, ``on_match`` included. In rounds: a *pool* of M waiters is
  enqueued (not timed), waiter i listing the one interest "pool-i" (so no two
  pool waiters can meet within the window), then M probes are enqueued (timed),
  probe i listing "pool-i": each pairs with its pool waiter, found through the
  interest index, and the queue goes from N + M back to N (M = 1,000
  in-process, 2,000 Redis).
* **mixed op/s**: one op = one ``enqueue`` call of a ticket without interests
  (the common case), arriving in pairs: the first of a pair waits, the second
  pairs with it (half the ops "queue", half "match"); the queue stays at N or
  N + 1.
* **floor op/s**, the baseline run beside it on the same load (BENCHMARKS.md):
  in-process, a bare FIFO pairer (an OrderedDict and a Match per pair, no
  rules); Redis, one EVALSHA of ``return ARGV[1]`` per op through redis-py at
  the same concurrency (what a node pays for a round trip without batching).
  "x floor" = match op/s / floor op/s.
* **CPU us/op**: CPU time of this process, and of redis-server
  (/proc/PID/task/*/schedstat), over the timed match phase, per op.
* **latency**: from the start of the second peer's ``enqueue`` to the
  ``on_match`` call for the pair, one pair at a time (no queueing): in-process;
  Redis on the node that enqueued (one round trip); Redis on another node, which
  hears the match over pub/sub (two "nodes" in this process).

Redis operations run from ``--concurrency`` tasks at once, as a node's many
WebSocket connections would; the Redis matchmaker batches the operations that
are in flight together into one script call. Each figure is the median of
``--repeats`` runs on the same queue (min-max alongside). Loopback only; runs
stop by themselves (about 50 s with the defaults on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import glob
import json
import os
import statistics
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from mediaserver.matchmaker import InProcessMatchmaker, Match, Matchmaker, MatchPolicy, Ticket

POLICY = MatchPolicy(interest_wait=3600.0)
MEMORY_ROUND = 1_000
REDIS_ROUND = 2_000


# ---- measuring --------------------------------------------------------------------


def redis_cpu(pid: int | None) -> float:
    """Seconds of CPU run by every thread of process ``pid`` (0 if None)."""
    if pid is None:
        return 0.0
    total = 0
    for task in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(task) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


@dataclass
class Phase:
    ops: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    server_cpu: float = 0.0

    def add(self, ops: int, wall: float, cpu: float, server_cpu: float) -> None:
        self.ops += ops
        self.wall += wall
        self.cpu += cpu
        self.server_cpu += server_cpu

    @property
    def rate(self) -> float:
        return self.ops / self.wall if self.wall else 0.0


async def timed(ops: int, run: Awaitable[None], phase: Phase, pid: int | None) -> None:
    """Run ``run`` (made, not started, before the clock starts) and add it to ``phase``."""
    s0, c0, w0 = redis_cpu(pid), time.process_time(), time.perf_counter()
    await run
    w1, c1, s1 = time.perf_counter(), time.process_time(), redis_cpu(pid)
    phase.add(ops, w1 - w0, c1 - c0, s1 - s0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Tickets:
    """Fresh peer ids and identities, made before the timed parts."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.n = 0

    def make(self, count: int) -> list[Ticket]:
        out = []
        for _ in range(count):
            self.n += 1
            peer = f"{self.tag}{self.n}"
            out.append(Ticket(peer, "id-" + peer, age_confirmed=True))
        return out

    def pairs(self, count: int) -> tuple[list[Ticket], list[Ticket]]:
        """``count`` waiters and ``count`` probes, waiter i and probe i sharing an interest."""
        waiters, probes = [], []
        for _ in range(count):
            self.n += 1
            interest = frozenset({f"pool-{self.n}"})
            peer = f"{self.tag}{self.n}"
            waiters.append(Ticket(peer + "w", "id-w" + peer, interest, age_confirmed=True))
            probes.append(Ticket(peer + "p", "id-p" + peer, interest, age_confirmed=True))
        return waiters, probes


class Enqueuer(Protocol):
    async def enqueue(self, ticket: Ticket) -> None: ...


async def run_concurrently(mm: Enqueuer, tickets: list[Ticket], concurrency: int) -> None:
    if concurrency <= 1:
        for t in tickets:
            await mm.enqueue(t)
        return
    it = iter(tickets)

    async def worker() -> None:
        for t in it:
            await mm.enqueue(t)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


# ---- the baselines ----------------------------------------------------------------


async def run_floor(op: Callable[[], Awaitable[Any]], ops: int, concurrency: int) -> None:
    it = iter(range(ops))

    async def worker() -> None:
        for _ in it:
            await op()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


class FifoFloor:
    """No rules: pair whoever arrives with the first waiter."""

    def __init__(self, on_match: Callable[[Match], None]) -> None:
        self.waiting: OrderedDict[str, Ticket] = OrderedDict()
        self.on_match = on_match

    async def enqueue(self, ticket: Ticket) -> None:
        if self.waiting:
            _, w = self.waiting.popitem(last=False)
            self.on_match(Match(w.peer, ticket.peer, ()))
        else:
            self.waiting[ticket.peer] = ticket


# ---- one implementation, one queue size --------------------------------------------


@dataclass
class Result:
    match: list[Phase] = field(default_factory=list)
    mixed: list[Phase] = field(default_factory=list)
    floor: list[Phase] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)  # seconds, all repeats
    latency_remote: list[float] = field(default_factory=list)
    fill_seconds: float = 0.0


async def fill(mm: Matchmaker, n: int, concurrency: int) -> None:
    background = [
        Ticket(f"bg{i}", f"bg-id{i}", frozenset({f"topic{i}"}), age_confirmed=True)
        for i in range(n)
    ]
    await run_concurrently(mm, background, concurrency)
    assert await mm.queue_length() == n, "the background tickets must all wait"


async def bench_size(
    kind: str,
    size: int,
    args: argparse.Namespace,
    make: Callable[[Callable[[Match], None]], Coroutine[Any, Any, Matchmaker]],
    floor_op: Callable[[], Awaitable[Any]] | None,
    pid: int | None,
) -> Result:
    res = Result()
    heard: list[float] = []
    stamp = time.perf_counter

    def on_match(m: Match) -> None:
        heard.append(stamp())

    mm = await make(on_match)
    remote_heard: list[float] = []
    remote_event = asyncio.Event()

    def on_remote_match(m: Match) -> None:
        remote_heard.append(stamp())
        remote_event.set()

    remote: Matchmaker | None = None
    if kind == "redis":
        remote = await make(on_remote_match)
    concurrency = 1 if kind == "memory" else args.concurrency
    total_ops = args.ops if kind == "memory" else args.redis_ops
    round_size = MEMORY_ROUND if kind == "memory" else REDIS_ROUND
    tickets = Tickets(kind[0])
    try:
        t0 = time.perf_counter()
        await fill(mm, size, 256 if kind == "redis" else 1)
        res.fill_seconds = time.perf_counter() - t0

        for _ in range(args.repeats):
            # match ops: refill a pool (not timed), then probes that each pair
            gc.collect()
            phase = Phase()
            rounds = max(1, total_ops // round_size)
            for _ in range(rounds):
                pool, probes = tickets.pairs(round_size)
                await run_concurrently(mm, pool, concurrency)
                heard.clear()
                await timed(round_size, run_concurrently(mm, probes, concurrency), phase, pid)
                assert len(heard) == round_size, "every probe must pair"
            res.match.append(phase)
            assert await mm.queue_length() == size

            # mixed: pairs of probes, half wait, half pair
            gc.collect()
            phase = Phase()
            mixed = tickets.make(total_ops)
            await timed(total_ops, run_concurrently(mm, mixed, concurrency), phase, pid)
            res.mixed.append(phase)
            assert await mm.queue_length() == size

            # the floor, same op count and concurrency
            gc.collect()
            phase = Phase()
            if kind == "memory":
                floor = FifoFloor(lambda m: None)
                await timed(
                    total_ops, run_concurrently(floor, tickets.make(total_ops), 1), phase, pid
                )
            else:
                assert floor_op is not None
                await timed(total_ops, run_floor(floor_op, total_ops, concurrency), phase, pid)
            res.floor.append(phase)

            # latency, one pair at a time
            for i in range(args.latency_samples):
                first, second = tickets.make(2)
                via = remote if (remote is not None and i % 2) else mm
                await via.enqueue(first)
                heard.clear()
                remote_heard.clear()
                remote_event.clear()
                start = stamp()
                await mm.enqueue(second)
                if via is mm:
                    res.latency.append(heard[0] - start)
                else:
                    await asyncio.wait_for(remote_event.wait(), 5)
                    res.latency_remote.append(remote_heard[0] - start)
    finally:
        await mm.close()
        if remote is not None:
            await remote.close()
    return res


# ---- report ------------------------------------------------------------------------


def summary(res: Result) -> dict[str, Any]:
    def spread(values: list[float]) -> dict[str, float]:
        return {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
        }

    match_rates = [p.rate for p in res.match]
    floor_rates = [p.rate for p in res.floor]
    out: dict[str, Any] = {
        "match_ops_per_s": spread(match_rates),
        "mixed_ops_per_s": spread([p.rate for p in res.mixed]),
        "floor_ops_per_s": spread(floor_rates),
        "match_vs_floor": statistics.median(match_rates) / statistics.median(floor_rates),
        "cpu_us_per_match_op": statistics.median(1e6 * p.cpu / p.ops for p in res.match),
        "server_cpu_us_per_match_op": statistics.median(
            1e6 * p.server_cpu / p.ops for p in res.match
        ),
        "fill_seconds": res.fill_seconds,
    }
    if res.latency:
        out["latency_us"] = {
            "p50": 1e6 * percentile(res.latency, 0.5),
            "p99": 1e6 * percentile(res.latency, 0.99),
            "samples": len(res.latency),
        }
    if res.latency_remote:
        out["latency_other_node_us"] = {
            "p50": 1e6 * percentile(res.latency_remote, 0.5),
            "p99": 1e6 * percentile(res.latency_remote, 0.99),
            "samples": len(res.latency_remote),
        }
    return out


def print_table(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    def pcts(d: dict[str, float] | None) -> str:
        return f"{d['p50']:.0f}/{d['p99']:.0f}" if d else "-"

    def rate(d: dict[str, float]) -> str:
        return f"{d['median']:>9,.0f} ({d['min']:,.0f}-{d['max']:,.0f})"

    head = (
        f"{'impl':<7} {'waiting':>8}  {'match op/s (min-max)':<28} {'mixed op/s':>10} "
        f"{'floor op/s':>10} {'x floor':>7} {'cpu us/op':>9} {'redis us/op':>11} "
        f"{'lat p50/p99 us':>15} {'other node p50/p99':>19}"
    )
    print(head)
    print("-" * len(head))
    for kind, sizes in results.items():
        for size, s in sizes.items():
            lat = s.get("latency_us")
            other = s.get("latency_other_node_us")
            print(
                f"{kind:<7} {int(size):>8,}  {rate(s['match_ops_per_s']):<28} "
                f"{s['mixed_ops_per_s']['median']:>10,.0f} "
                f"{s['floor_ops_per_s']['median']:>10,.0f} {s['match_vs_floor']:>7.2f} "
                f"{s['cpu_us_per_match_op']:>9.2f} {s['server_cpu_us_per_match_op']:>11.2f} "
                f"{pcts(lat):>15} {pcts(other):>19}"
            )


# ---- main --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.matchmaker",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--sizes",
        default="1000,10000,100000",
        help="waiting (background) tickets, comma-separated (default 1000,10000,100000)",
    )
    parser.add_argument("--only", choices=["memory", "redis"], help="one implementation only")
    parser.add_argument(
        "--ops", type=int, default=50_000, help="ops per phase in-process (default 50000)"
    )
    parser.add_argument(
        "--redis-ops", type=int, default=20_000, help="ops per phase on Redis (default 20000)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="Redis: tasks at once (default 64)"
    )
    parser.add_argument(
        "--latency-samples", type=int, default=1000, help="pairs timed one by one (default 1000)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument(
        "--asyncio", action="store_true", help="the stdlib event loop instead of uvloop"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on the last line")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",") if s]
    kinds = [args.only] if args.only else ["memory", "redis"]
    results: dict[str, dict[str, dict[str, Any]]] = {}

    if "memory" in kinds:
        results["memory"] = {}
        for size in sizes:

            async def make_memory(on_match: Callable[[Match], None]) -> Matchmaker:
                return InProcessMatchmaker(POLICY, on_match)

            res = await bench_size("memory", size, args, make_memory, None, None)
            results["memory"][str(size)] = summary(res)

    if "redis" in kinds:
        import redis.asyncio as aioredis

        from mediaserver.matchmaker.redis import RedisMatchmaker
        from tests.support.redis_server import RedisServer

        results["redis"] = {}
        with RedisServer() as server:
            client = aioredis.Redis.from_url(server.url, decode_responses=True)
            floor_script = client.register_script("return ARGV[1]")

            async def floor_op() -> None:
                await floor_script(args=["x"])

            try:
                for size in sizes:
                    await client.flushall()
                    prefix = f"bench{size}:"

                    async def make_redis(
                        on_match: Callable[[Match], None], prefix: str = prefix
                    ) -> Matchmaker:
                        mm = RedisMatchmaker(server.url, POLICY, on_match, prefix=prefix)
                        await mm.start()
                        return mm

                    res = await bench_size("redis", size, args, make_redis, floor_op, server.pid)
                    results["redis"][str(size)] = summary(res)
            finally:
                await client.aclose()
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.asyncio:
        results = asyncio.run(run(args))
    else:
        import uvloop

        results = uvloop.run(run(args))
    print_table(results)
    print(
        f"\n{os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"{'asyncio' if args.asyncio else 'uvloop'}, medians of {args.repeats} runs; "
        f"match op = an enqueue that pairs at once (targets: 200,000/s in-process, "
        f"20,000/s Redis)"
    )
    if args.json:
        print(json.dumps({"matchmaker": results, "repeats": args.repeats}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
