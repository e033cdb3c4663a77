"""Sign-in benchmark: sign-ins per second on one core with the chosen Argon2
parameters, and the memory each one costs.

    taskset -c 0 python -m benchmarks.accounts [--duration 5] [--repeats 3] [--json]
    python -m benchmarks.accounts --http          # also over HTTP (server on one CPU)

* **argon2 verifies/s**: ``PasswordHasher.verify`` of the right password, nothing else:
  the floor every sign-in pays (argon2-cffi's recommended parameters unless the
  --time-cost/--memory-kib/--parallelism flags say otherwise).
* **store sign-ins/s**: ``Store.sign_in`` on a real SQLite file (WAL,
  synchronous=FULL): throttle bookkeeping, one Argon2 verify, a new session token
  committed. Round-robin over --users accounts, each with a password.
* **HTTP sign-ins/s** (``--http``): ``POST /api/v1/sessions`` against the API on
  uvicorn in a subprocess pinned to one CPU, the client on another, --concurrency
  requests in flight; with the server's CPU use.
* **memory per sign-in**: the growth of peak RSS (VmHWM) of a fresh process across
  one verify, and across N verifies at once in N threads (how it scales; the API runs at
  most ``HEAVY_WORKERS`` at once).

This process pins itself to one CPU (the first it may use, or --cpu): run it under
``taskset -c 0`` for a fixed core. Figures are medians of --repeats runs (min-max).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import argon2

PASSWORD = "correct horse battery staple"
ADULT = "1990-05-17"


def hasher_from(args: argparse.Namespace) -> argon2.PasswordHasher:
    default = argon2.PasswordHasher()
    return argon2.PasswordHasher(
        time_cost=args.time_cost or default.time_cost,
        memory_cost=args.memory_kib or default.memory_cost,
        parallelism=args.parallelism or default.parallelism,
    )


def rate(fn: Any, duration: float) -> float:
    """Calls of fn per second over `duration` seconds (at least 3 calls)."""
    n = 0
    start = time.perf_counter()
    while True:
        fn(n)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= duration and n >= 3:
            return n / elapsed


def summary(values: list[float], digits: int = 1) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits)}


def memory_probe(encoded: str, threads: int) -> None:
    """Child process: print the peak-RSS growth (KiB) across `threads` verifies at once.
    VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec."""

    def peak_kib() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmHWM in /proc/self/status")

    ph = argon2.PasswordHasher()  # verify reads the parameters from the hash itself
    before = peak_kib()
    workers = [threading.Thread(target=ph.verify, args=(encoded, PASSWORD))
               for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    after = peak_kib()
    print(after - before)


def memory_per_sign_in(encoded: str, threads: int, runs: int) -> list[float]:
    """MiB of peak RSS growth, per verify, over `runs` fresh processes."""
    out = []
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.accounts", "--probe-memory", encoded,
             "--probe-threads", str(threads)],
            capture_output=True, text=True, check=True, timeout=120,
        )
        out.append(int(proc.stdout.strip()) / 1024 / threads)
    return out


def store_phase(args: argparse.Namespace, tmp: str) -> tuple[list[float], str, Any]:
    from mediaserver.store import Store, load_or_create_data_key

    store = Store(f"{tmp}/bench.db", load_or_create_data_key(f"{tmp}/bench.key"),
                  hasher=hasher_from(args))
    names = []
    for i in range(args.users):
        profile, _ = store.create_profile(f"bench_{i}", ADULT, password=PASSWORD)
        names.append(profile.username)
    encoded = store._conn.execute("SELECT password_hash FROM users LIMIT 1").fetchone()[0]

    def sign_in(n: int) -> None:
        store.sign_in(names[n % len(names)], PASSWORD, address="10.0.0.1")

    sign_in(0)  # warm-up
    runs = [rate(sign_in, args.duration) for _ in range(args.repeats)]
    return runs, encoded, store


def http_phase(args: argparse.Namespace, tmp: str, cpus: list[int]) -> dict[str, Any]:
    import httpx

    from benchmarks.api import API, cpu_seconds, served_api

    server_cpu, client_cpu = cpus[0], cpus[-1]
    with served_api(tmp, server_cpu, client_cpu) as (base, pid):
        url = base + API

        async def run() -> list[tuple[float, float]]:
            limits = httpx.Limits(max_connections=args.concurrency)
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
                async def one_run() -> tuple[float, float]:
                    done = 0
                    stop_at = time.perf_counter() + args.duration

                    async def worker(i: int) -> None:
                        nonlocal done
                        n = i
                        while time.perf_counter() < stop_at:
                            r = await http.post("/sessions", json={
                                "username": f"bench_{n % args.users}", "password": PASSWORD})
                            if r.status_code != 201:
                                raise RuntimeError(f"sign-in answered {r.status_code}: {r.text}")
                            done += 1
                            n += args.concurrency

                    cpu0, start = cpu_seconds(pid), time.perf_counter()
                    await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
                    elapsed = time.perf_counter() - start
                    return done / elapsed, (cpu_seconds(pid) - cpu0) / elapsed

                await one_run()  # warm-up
                return [await one_run() for _ in range(args.repeats)]

        runs = asyncio.run(run())
    return {**summary([r for r, _ in runs]),
            "server_cpu": round(statistics.median(c for _, c in runs), 2),
            "server_on_cpu": server_cpu,
            "client_on_cpu": client_cpu if client_cpu != server_cpu else None,
            "concurrency": args.concurrency}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accounts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--users", type=int, default=20, help="accounts signed in round-robin")
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: first)")
    parser.add_argument("--time-cost", type=int, default=0, help="Argon2 t (default: argon2-cffi's)")
    parser.add_argument("--memory-kib", type=int, default=0, help="Argon2 m in KiB")
    parser.add_argument("--parallelism", type=int, default=0, help="Argon2 p")
    parser.add_argument("--threads", type=int, default=4,
                        help="verifies at once for the memory scaling figure")
    parser.add_argument("--http", action="store_true", help="also sign in over HTTP")
    parser.add_argument("--concurrency", type=int, default=4, help="--http: requests in flight")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--probe-memory", default="", help=argparse.SUPPRESS)
    parser.add_argument("--probe-threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe_memory:
        memory_probe(args.probe_memory, args.probe_threads)
        return 0

    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[0] if args.cpu is None else args.cpu
    os.sched_setaffinity(0, {cpu})
    ph = hasher_from(args)
    encoded_default = ph.hash(PASSWORD)
    verify_runs = [rate(lambda n: ph.verify(encoded_default, PASSWORD), args.duration)
                   for _ in range(args.repeats)]
    with tempfile.TemporaryDirectory(prefix="bench-accounts-") as tmp:
        store_runs, encoded, store = store_phase(args, tmp)
        store.close()
        mem_one = memory_per_sign_in(encoded, 1, args.repeats)
        mem_many = memory_per_sign_in(encoded, args.threads, args.repeats)
        http = http_phase(args, tmp, cpus) if args.http else None
    report: dict[str, Any] = {
        "cpu": cpu,
        "argon2": {"type": "argon2id", "time_cost": ph.time_cost,
                   "memory_kib": ph.memory_cost, "parallelism": ph.parallelism},
        "duration_s": args.duration,
        "repeats": args.repeats,
        "argon2_verifies_per_s": summary(verify_runs),
        "store_sign_ins_per_s": summary(store_runs),
        "ms_per_sign_in": round(1000 / statistics.median(store_runs), 1),
        "memory_mib_per_sign_in": summary(mem_one),
        f"memory_mib_per_sign_in_{args.threads}_at_once": summary(mem_many),
    }
    if http is not None:
        report["http_sign_ins_per_s"] = http
    if args.json:
        print(json.dumps(report))
    else:
        a = report["argon2"]
        print(f"Argon2id t={a['time_cost']} m={a['memory_kib']} KiB p={a['parallelism']}, "
              f"one CPU ({cpu}), median of {args.repeats} x {args.duration:g} s")
        for key in ("argon2_verifies_per_s", "store_sign_ins_per_s"):
            r = report[key]
            print(f"  {key:34} {r['median']:8.1f}  [{r['min']}-{r['max']}]")
        print(f"  {'ms per sign-in':34} {report['ms_per_sign_in']:8.1f}")
        for key in ("memory_mib_per_sign_in", f"memory_mib_per_sign_in_{args.threads}_at_once"):
            r = report[key]
            print(f"  {key:34} {r['median']:8.1f}  [{r['min']}-{r['max']}]")
        if http is not None:
            print(f"  {'http_sign_ins_per_s':34} {http['median']:8.1f}  "
                  f"[{http['min']}-{http['max']}], server CPU {http['server_cpu'] * 100:.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
