"""How many idle signalling WebSockets one node holds, and memory per connection.

    python -m benchmarks.connections [--connections 10000] [--hold 20] [--workers 1] [--json]
    python -m benchmarks.connections --tls [--connections 2000] [--repeat 3]

Starts the real server (`python -m mediaserver.cli` on 127.0.0.1), opens
--connections WebSockets to it from loopback addresses 127.0.x.y (at most 256
handshakes at once), sends `hello` on each and waits for `welcome`, then holds
them all idle for --hold seconds while the server pings each every 1.5 s (the
client library answers). Reports how many were opened, how many are still open at
the end (a connection the server dropped for a missed pong is counted), the
server's resident memory before and after (all its processes), memory per
connection, and the server's CPU while holding them (the keepalive cost).
Loopback only; bounded in time; kills the server it started.

--tls: the same, A/B in one run: WS on plain HTTP against WSS with --tls-cert (a
self-signed test certificate made in a temporary directory), each --repeat times
(a fresh server each time), reporting the median memory per connection of each and
the difference (what TLS adds to an idle connection: OpenSSL's SSL object and its
buffers, Python's SSLProtocol).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import ssl
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.loadgen import server_cpu, visitor_host

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and its child processes (the workers)."""
    total = 0
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    total += sum(rss_bytes(int(c)) for c in f.read().split())
    return total


def start_server(
    workers: int, tmp: str, tls: tuple[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """The server on a free loopback port; tls: (cert, key) files for HTTPS/WSS."""
    port = free_port()
    extra = ["--tls-cert", tls[0], "--tls-key", tls[1]] if tls else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "mediaserver.cli", "--host", "127.0.0.1", "--port", str(port),
         "--udp-port", "0", "--log-level", "warning", "--workers", str(workers),
         "--db", f"{tmp}/db", "--data-key-file", f"{tmp}/key", *extra],
        cwd=ROOT, stdin=subprocess.DEVNULL,
    )
    scheme = "https" if tls else "http"
    context = ssl.create_default_context(cafile=tls[0]) if tls else None
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(
                f"{scheme}://127.0.0.1:{port}/healthz", timeout=1, context=context
            ).close()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the server did not start") from None
            time.sleep(0.05)


async def hold(
    url: str, n: int, seconds: float, pid: int, context: ssl.SSLContext | None = None
) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    sem = asyncio.Semaphore(256)
    conns: list[Any] = []
    failures: list[str] = []

    async def open_one(i: int) -> None:
        async with sem:
            try:
                ws = await connect(url, local_addr=(visitor_host(i % 2000), 0),
                                   open_timeout=30, ping_interval=None, max_size=None,
                                   ssl=context)
                await ws.send(json.dumps({"v": 1, "type": "hello", "age_confirmed": True}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if reply.get("type") != "welcome":
                    raise RuntimeError(reply)
                conns.append(ws)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                failures.append(f"{type(exc).__name__}: {exc}"[:120])

    rss_before = rss_bytes(pid)
    t0 = time.monotonic()
    await asyncio.gather(*(open_one(i) for i in range(n)))
    open_s = time.monotonic() - t0
    await asyncio.sleep(2)  # settle
    rss_open = rss_bytes(pid)
    cpu0, w0 = server_cpu(pid), time.monotonic()
    await asyncio.sleep(seconds)
    cpu = (server_cpu(pid) - cpu0) / (time.monotonic() - w0)
    rss_held = rss_bytes(pid)
    still_open = sum(1 for ws in conns if ws.close_code is None)
    for ws in conns:
        with contextlib.suppress(Exception):
            ws.transport.abort()
    opened = len(conns)
    return {
        "connections": n,
        "opened": opened,
        "open_at_end": still_open,
        "failures": len(failures),
        "failure_examples": sorted(set(failures))[:5],
        "open_seconds": round(open_s, 2),
        "hold_seconds": seconds,
        "server_rss_before_mib": round(rss_before / 2**20, 1),
        "server_rss_held_mib": round(rss_held / 2**20, 1),
        "bytes_per_connection": round((max(rss_open, rss_held) - rss_before) / max(1, opened)),
        "server_cpu_while_idle": round(cpu, 3),
    }


def run_once(args: argparse.Namespace, tls: tuple[str, str] | None) -> dict[str, Any]:
    """One server, --connections held for --hold seconds, then stopped."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mediaserver-conns-") as tmp:
        proc, port = start_server(args.workers, tmp, tls)
        context = ssl.create_default_context(cafile=tls[0]) if tls else None
        scheme = "wss" if tls else "ws"
        try:
            return asyncio.run(hold(f"{scheme}://127.0.0.1:{port}/ws", args.connections,
                                    args.hold, proc.pid, context))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def compare_tls(args: argparse.Namespace) -> dict[str, Any]:
    """WS vs WSS, alternating, --repeat times each: median bytes per idle connection."""
    import tempfile

    from tests.support.certs import make_cert

    per: dict[str, list[int]] = {"ws": [], "wss": []}
    cpu: dict[str, list[float]] = {"ws": [], "wss": []}
    complete = True
    with tempfile.TemporaryDirectory(prefix="mediaserver-cert-") as certdir:
        cert = make_cert(Path(certdir), hosts=("127.0.0.1",))
        for _ in range(args.repeat):
            for kind, tls in (("ws", None), ("wss", (str(cert.cert), str(cert.key)))):
                r = run_once(args, tls)
                complete &= r["open_at_end"] == r["connections"]
                per[kind].append(r["bytes_per_connection"])
                cpu[kind].append(r["server_cpu_while_idle"])
                print(f"{kind:>4}: {r['opened']} opened, {r['open_at_end']} open at end, "
                      f"{r['bytes_per_connection']} bytes per connection", file=sys.stderr)
    ws, wss = statistics.median(per["ws"]), statistics.median(per["wss"])
    return {
        "connections": args.connections,
        "repeat": args.repeat,
        "ws_bytes_per_connection": per["ws"],
        "wss_bytes_per_connection": per["wss"],
        "ws_median": round(ws),
        "wss_median": round(wss),
        "tls_adds_bytes": round(wss - ws),
        "wss_over_ws": round(wss / ws, 2) if ws else None,
        "ws_cpu_idle_median": round(statistics.median(cpu["ws"]), 3),
        "wss_cpu_idle_median": round(statistics.median(cpu["wss"]), 3),
        "all_held": complete,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--hold", type=float, default=20.0, help="seconds held idle")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--tls", action="store_true",
                        help="compare WS with WSS (--tls-cert): median of --repeat runs each")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each with --tls")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < args.connections + 100:
        print(f"the file limit ({hard}) is below --connections", file=sys.stderr)
        return 2
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.tls:
        c = compare_tls(args)
        for k, v in c.items():
            print(f"{k:>24}  {v}")
        if args.json:
            print(json.dumps(c))
        return 0 if c["all_held"] else 1
    r = run_once(args, None)
    r["workers"] = args.workers
    for k, v in r.items():
        print(f"{k:>24}  {v}")
    if args.json:
        print(json.dumps(r))
    return 0 if r["open_at_end"] == r["connections"] else 1


if __name__ == "__main__":
    sys.exit(main())
