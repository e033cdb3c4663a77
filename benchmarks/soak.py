"""Soak: the load generator at about half of capacity for N minutes, with Next.

    python -m benchmarks.soak --minutes 60 [--calls 80] [--next-every 10]
                              [--workers 1] [--plot docs/soak.png] [--json]

Starts the real server (as benchmarks.loadgen does), drives 2 x --calls synthetic
visitors through real signalling and media (SRTP audio and video, a Next every
--next-every seconds each, randomized), and samples once a minute: the server's
resident memory and open file descriptors (all its processes), its CPU per
forwarded packet over that minute, the loss of packets sent while matched, and
the matches made. It then compares the last samples with the first ones: memory
and descriptors must not keep growing and CPU per packet must not drift (the
"flat" verdict and its thresholds are in the JSON). Loopback only; bounded by
--minutes; kills the server it started.

--calls defaults to 80: about half of the capacity the load generator measures
on the 2-core test machine (README, Performance).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from typing import Any

from benchmarks.connections import rss_bytes
from benchmarks.loadgen import Options, Run, Server, server_cpu

SAMPLE = 60.0  # seconds between samples
GROWTH_LIMIT = 0.10  # the last samples may exceed the first ones by this fraction


def open_fds(pid: int) -> int:
    """Open file descriptors of `pid` and of its child processes."""
    n = 0
    with contextlib.suppress(OSError):
        n += len(os.listdir(f"/proc/{pid}/fd"))
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    n += sum(open_fds(int(c)) for c in f.read().split())
    return n


async def sampler(run: Run, pid: int, minutes: float, out: list[dict[str, Any]],
                  sample: float) -> None:
    """Once per `sample` seconds while the window is open: one row."""
    while not run.measuring:
        await asyncio.sleep(0.2)
    t0 = time.monotonic()
    last = {"cpu": server_cpu(pid), "received": run.eng.counters()["received"],
            "sent_m": run.sent_matched, "got_m": run.got_matched, "matches": run.matches}
    while run.measuring:
        await asyncio.sleep(sample)
        if not run.measuring:
            break
        now = {"cpu": server_cpu(pid), "received": run.eng.counters()["received"],
               "sent_m": run.sent_matched, "got_m": run.got_matched, "matches": run.matches}
        received = now["received"] - last["received"]
        sent_m = now["sent_m"] - last["sent_m"]
        row = {
            "minute": round((time.monotonic() - t0) / 60, 2),
            "rss_mib": round(rss_bytes(pid) / 2**20, 1),
            "fds": open_fds(pid),
            "received_pps": round(received / sample, 1),
            "cpu_us_per_packet": round((now["cpu"] - last["cpu"]) / received * 1e6, 3)
            if received else None,
            "loss": round(1 - (now["got_m"] - last["got_m"]) / sent_m, 5) if sent_m else None,
            "matches": (now["matches"] - last["matches"]) // 2,
        }
        out.append(row)
        print(f"soak: minute {row['minute']:6.2f}  rss {row['rss_mib']} MiB  fds {row['fds']}  "
              f"{row['received_pps']:.0f} pps  cpu {row['cpu_us_per_packet']} us/pkt  "
              f"loss {row['loss']}  matches {row['matches']}", file=sys.stderr, flush=True)
        last = now


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Flat: the median of the last third is within GROWTH_LIMIT of the first third's
    (memory, descriptors, CPU per packet; the first sample is warm-up)."""
    body = rows[1:] if len(rows) > 3 else rows
    k = max(1, len(body) // 3)
    out: dict[str, Any] = {"growth_limit": GROWTH_LIMIT}
    flat = True
    for key in ("rss_mib", "fds", "cpu_us_per_packet"):
        first = [r[key] for r in body[:k] if r[key] is not None]
        last = [r[key] for r in body[-k:] if r[key] is not None]
        if not first or not last:
            continue
        a, b = statistics.median(first), statistics.median(last)
        growth = (b - a) / a if a else 0.0
        out[f"{key}_growth"] = round(growth, 4)
        flat = flat and growth <= GROWTH_LIMIT
    out["flat"] = flat
    return out


def plot(rows: list[dict[str, Any]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["minute"] for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(6, 8), sharex=True)
    for ax, key, label in zip(
        axes,
        ("rss_mib", "fds", "cpu_us_per_packet", "loss"),
        ("server memory, MiB", "open descriptors", "CPU per packet, us", "loss while matched, %"),
    ):
        ys = [(r[key] * 100 if key == "loss" else r[key]) if r[key] is not None else float("nan")
              for r in rows]
        ax.plot(x, ys, "o-", markersize=3)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
    axes[-1].set_xlabel("minute")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


async def soak(url: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    opts = Options(next_every=args.next_every, progress=False)
    run = Run(url, pid, 2 * args.calls, args.minutes * 60, opts, seed=1)
    rows: list[dict[str, Any]] = []
    task = asyncio.create_task(sampler(run, pid, args.minutes, rows, args.sample))
    total = await run.run()
    await task
    total.pop("per_second", None)
    return {"calls": args.calls, "minutes": args.minutes, "workers": args.workers,
            "samples": rows, "verdict": verdict(rows), "total": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--calls", type=int, default=80)
    parser.add_argument("--next-every", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sample", type=float, default=SAMPLE, help="seconds between samples")
    parser.add_argument("--plot", help="write a PNG of the samples")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with contextlib.suppress(ValueError, OSError):  # two sockets per visitor
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    server = Server(["--skip-cooldown", "1", "--match-interest-wait", "0",
                     "--workers", str(args.workers)])
    try:
        result = asyncio.run(soak(server.url, server.pid, args))
    finally:
        server.close()
    v = result["verdict"]
    print(f"soak: {len(result['samples'])} samples; flat={v['flat']} "
          f"(growth: rss {v.get('rss_mib_growth')}, fds {v.get('fds_growth')}, "
          f"cpu/packet {v.get('cpu_us_per_packet_growth')})")
    if args.plot:
        plot(result["samples"], args.plot,
             f"soak: {args.calls} calls, Next every ~{args.next_every:.0f} s")
    if args.json:
        print(json.dumps(result))
    return 0 if v["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
