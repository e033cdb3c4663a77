"""Attacks on the media port: what a flood costs a call, what idle sessions cost.

    python -m benchmarks.attacks [--pairs 4 --rate 4000 --duration 5 --repeats 3]
                                 [--flood-rate 20000 --flood-ports 2000 --flood-kind dtls]
                                 [--sessions 10000 --consent-timeout 5]
                                 [--reflection-seconds 16] [--json]

1. Flood. The SFU runs alone in a child process (benchmarks/sfu_harness.py, uvloop)
   on 127.0.0.1. N synthetic publishers and N subscribers (benchmarks/peers/webrtc.py:
   real ICE, DTLS and SRTP, AES-128-GCM; send and receive loops in C, as in
   benchmarks/forward.py) hold N established calls at a fixed packet rate. Each
   repeat measures the calls twice, once alone and once while another process
   sends DTLS ClientHellos (or signed STUN checks for a ufrag it does not know,
   or both) from `--flood-ports` UDP sockets on 127.0.0.1 at `--flood-rate` datagrams/s:
   an off-path attacker hammering the port from many source ports. The order of
   the two alternates between repeats; loss, latency (kernel receive timestamps)
   and the server's CPU are medians over the repeats. The flood is counted by
   the server (drops: dtls_unknown_address, stun_unknown_user).

2. Sessions that never connect. In this process, an Sfu gets `--sessions` offers
   (tests/data/offer_chromium.sdp, each with its own ufrag, through
   Sfu.create_session: what signalling does for each `offer`) and no peer ever
   connects. Reported: create time per session, RSS growth per session, the time
   from the first consent deadline until every session is reaped, the longest
   event-loop stall during the reaping (the forwarding path stops for that long),
   and the RSS left after the reaping.

3. Reflection. The owner of a session (it knows the session's ice-pwd) signs a
   USE-CANDIDATE check and sends it, then a DTLS ClientHello, from a victim's
   address V, before any handshake. Here V is a socket of this process that sends
   those two datagrams and never answers (from the server's side the same as a
   forged source address). Reported: the bytes that came from V, the bytes the
   server sent to V over `--reflection-seconds` (16 s covers OpenSSL's four
   retransmissions of a flight, at 1, 3, 7 and 15 s), and their ratio.

Everything stays on loopback and every phase stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aioice import stun

from benchmarks.forward import (
    BenchmarkError,
    ServerProcess,
    process_cpu,
    run_once,
    server_target_for,
)
from benchmarks.peers import loadgen
from benchmarks.peers.webrtc import (
    LOOPBACK,
    KeepAlive,
    SyntheticPeer,
    drain,
    handshake,
)

ROOT = Path(__file__).resolve().parent.parent
OFFER = (ROOT / "tests" / "data" / "offer_chromium.sdp").read_text()
PROFILE = 0x0007  # AEAD_AES_128_GCM


# ---- the flood (a child process) -------------------------------------------------


def flood_datagrams(kind: str) -> list[bytes]:
    """What the attacker sends: a real ClientHello, a STUN check for an unknown ufrag."""
    from mediaserver.sfu.dtls import DtlsCertificate, DtlsEndpoint

    out = []
    if kind in ("dtls", "mixed"):
        client = DtlsEndpoint(
            DtlsCertificate.generate(), "client", [("sha-256", "00:" * 31 + "00")]
        )
        client.connect(0.0)
        out.extend(client.datagrams_to_send(0.0))
    if kind in ("stun", "mixed"):
        message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        message.attributes["USERNAME"] = "abcd:efgh"
        message.attributes["PRIORITY"] = 1853824767
        message.attributes["ICE-CONTROLLING"] = 1
        message.attributes["USE-CANDIDATE"] = None
        message.add_message_integrity(b"x" * 24)
        out.append(bytes(message))
    return out


def flood_main(port: int, rate: float, ports: int, kind: str, seconds: float) -> int:
    """Child: send `rate` datagrams/s round robin from `ports` sockets for `seconds`."""
    datagrams = flood_datagrams(kind)
    socks = []
    for _ in range(ports):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((LOOPBACK, 0))
        s.setblocking(False)
        socks.append(s)
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # go
    dest = (LOOPBACK, port)
    sent = errors = 0
    start = time.monotonic()
    end = start + seconds
    tick = 0.001
    next_tick = start
    i = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - start) * rate) - sent - errors
        for _ in range(max(0, due)):
            try:
                socks[i % ports].sendto(datagrams[i % len(datagrams)], dest)
                sent += 1
            except OSError:
                errors += 1
            i += 1
        next_tick += tick
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print(
        json.dumps({"sent": sent, "errors": errors, "seconds": time.monotonic() - start}),
        flush=True,
    )
    for s in socks:
        s.close()
    return 0


class Flood:
    """The flooding child process, ready before the measured run, started on go()."""

    def __init__(self, port: int, rate: float, ports: int, kind: str, seconds: float) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.attacks",
                "--flood-child",
                json.dumps([port, rate, ports, kind, seconds]),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            raise BenchmarkError("the flood process did not start")
        self.result: dict[str, Any] = {}

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.proc.wait(timeout=timeout)
        self.result = json.loads(line) if line else {}
        return self.result

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_flood(args: argparse.Namespace) -> dict[str, Any]:
    from mediaserver.sfu.dtls import DtlsCertificate

    module = loadgen.load()
    with contextlib.ExitStack() as stack:
        server = ServerProcess()
        stack.callback(server.close)
        certificate = DtlsCertificate.generate()
        senders = [SyntheticPeer(i, "send", certificate, (PROFILE,)) for i in range(args.pairs)]
        receivers = [SyntheticPeer(i, "recv", certificate, (PROFILE,)) for i in range(args.pairs)]
        peers = senders + receivers
        for peer in peers:
            stack.callback(peer.close)
            reply = server.request("create", offer=peer.offer())
            peer.accept(reply["id"], reply["answer"])
        handshake(peers, timeout=20)
        for s, r in zip(senders, receivers):
            server.request("connect", pub=s.session_id, sub=r.session_id)
        deadline = time.monotonic() + 10
        while not all(
            server.request("sessions")["sessions"].get(p.session_id) == "connected" for p in peers
        ):
            if time.monotonic() > deadline:
                raise BenchmarkError("sessions not connected on the server")
            time.sleep(0.05)
        keepalive = KeepAlive(peers)
        keepalive.start()
        stack.callback(keepalive.stop)
        drain(peers)
        target = server_target_for(module, server, senders, receivers, PROFILE, args.size,
                                   args.pairs)
        run_id = 1
        run_once(target, run_id, args.rate, 0.5, 0.001, 0.5)  # warm-up, not reported
        runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "flood": []}
        for repeat in range(args.repeats):
            order = ("baseline", "flood") if repeat % 2 == 0 else ("flood", "baseline")
            for phase in order:
                run_id += 1
                flood = None
                if phase == "flood":
                    # the flood covers the whole measured run, grace included
                    flood = Flood(
                        server.port,
                        args.flood_rate,
                        args.flood_ports,
                        args.flood_kind,
                        args.duration + 1.0,
                    )
                    stack.callback(flood.close)
                    flood.go()
                cpu0 = process_cpu(server.pid)
                result = run_once(target, run_id, args.rate, args.duration, 0.001, 0.5)
                result["server_cpu_s"] = (process_cpu(server.pid) - cpu0).sched
                if flood is not None:
                    result["flood"] = flood.finish(timeout=args.duration + 10)
                    flood.close()
                result.pop("samples", None)
                result["repeat"] = repeat
                runs[phase].append(result)
        summary: dict[str, Any] = {
            "pairs": args.pairs,
            "rate_pps": args.rate,
            "duration_s": args.duration,
            "repeats": args.repeats,
            "flood_rate": args.flood_rate,
            "flood_ports": args.flood_ports,
            "flood_kind": args.flood_kind,
        }
        for phase, rs in runs.items():
            summary[phase] = {
                key: _spread([r[key] for r in rs])
                for key in (
                    "loss",
                    "latency_p50_us",
                    "latency_p99_us",
                    "forwarded_pps",
                    "server_cpu_s",
                )
            }
            summary[phase]["drops"] = _sum(r["drops"] for r in rs)
        flood_sent = [
            r["flood"].get("sent", 0) / r["flood"].get("seconds", 1) for r in runs["flood"]
        ]
        summary["flood"]["flood_sent_per_s"] = _spread(flood_sent)
        summary["runs"] = runs
        return summary


def _spread(values: list[Any]) -> dict[str, float | None]:
    vs = [float(v) for v in values if v is not None]
    if not vs:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(vs), "min": min(vs), "max": max(vs)}


def _sum(dicts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + int(v)
    return total


# ---- sessions that never connect -------------------------------------------------


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _sessions(n: int, consent_timeout: float) -> dict[str, Any]:
    from mediaserver.sfu.server import SessionClosed, Sfu, SfuConfig

    sfu = Sfu(SfuConfig(host=LOOPBACK, consent_timeout=consent_timeout, max_peers=n + 16))
    await sfu.start()
    loop = asyncio.get_running_loop()
    closed: list[float] = []
    sfu.subscribe(lambda e: closed.append(loop.time()) if isinstance(e, SessionClosed) else None)
    stalls: list[float] = []

    async def ticker() -> None:
        # the event loop's responsiveness: the longest gap between 10 ms sleeps
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            now = loop.time()
            stalls.append(now - last - 0.01)
            last = now

    try:
        offers = [re.sub(r"a=ice-ufrag:\S+", f"a=ice-ufrag:b{i:07d}", OFFER) for i in range(n)]
        gc.collect()
        base = rss()
        start = loop.time()
        first = None
        for i, offer in enumerate(offers):
            sfu.create_session(offer)
            if first is None:
                first = loop.time()
            if i % 500 == 499:
                await asyncio.sleep(0)  # let the timer run, as signalling would
        created = loop.time()
        gc.collect()
        peak = rss()
        tick = asyncio.ensure_future(ticker())
        assert first is not None
        while sfu.sessions and loop.time() < created + consent_timeout + 600:
            await asyncio.sleep(0.05)
        tick.cancel()
        reaped = loop.time()
        gc.collect()
        after = rss()
        return {
            "sessions": n,
            "create_us_per_session": (created - start) * 1e6 / n,
            "rss_bytes_per_session": (peak - base) / n,
            "rss_bytes_per_session_after_reap": (after - base) / n,
            "first_deadline_to_all_reaped_s": reaped - (first + consent_timeout),
            "last_reaped_after_its_deadline_s": (max(closed) - (created + consent_timeout))
            if closed
            else None,
            "reaped": len(closed),
            "left": len(sfu.sessions),
            "longest_loop_stall_ms": max(stalls, default=0.0) * 1e3,
            "consent_timeout_s": consent_timeout,
        }
    finally:
        await sfu.close()


def run_sessions(args: argparse.Namespace) -> dict[str, Any]:
    import uvloop

    return uvloop.run(_sessions(args.sessions, args.consent_timeout))


# ---- reflection to an address that never proved it receives -------------------


async def _reflection(seconds: float) -> dict[str, Any]:
    from mediaserver.sfu.dtls import DtlsCertificate, DtlsEndpoint
    from mediaserver.sfu.server import Sfu, SfuConfig

    # a handshake timeout past the measurement: only DTLS's own timers stop the flight
    sfu = Sfu(SfuConfig(host=LOOPBACK, announced_ip=LOOPBACK, handshake_timeout=seconds + 30))
    await sfu.start()
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind((LOOPBACK, 0))
    victim.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        session = sfu.create_session(re.sub(r"a=ice-ufrag:\S+", "a=ice-ufrag:refl", OFFER))
        ufrag = re.search(r"a=ice-ufrag:(\S+)", session.answer)
        pwd = re.search(r"a=ice-pwd:(\S+)", session.answer)
        assert ufrag and pwd
        check = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        check.attributes["USERNAME"] = f"{ufrag.group(1)}:refl"
        check.attributes["PRIORITY"] = 1853824767
        check.attributes["ICE-CONTROLLING"] = 1
        check.attributes["USE-CANDIDATE"] = None
        check.add_message_integrity(pwd.group(1).encode())
        client = DtlsEndpoint(
            DtlsCertificate.generate(), "client", [("sha-256", "00:" * 31 + "00")]
        )
        client.connect(0.0)
        (hello,) = client.datagrams_to_send(0.0)
        server = (LOOPBACK, sfu.udp_port)
        sent = [bytes(check), hello]
        victim.sendto(sent[0], server)
        await asyncio.sleep(0.1)
        victim.sendto(sent[1], server)
        start = loop.time()
        received: list[tuple[float, int]] = []
        while loop.time() < start + seconds:
            await asyncio.sleep(0.05)
            while True:
                try:
                    received.append((loop.time() - start, len(victim.recv(65535))))
                except BlockingIOError:
                    break
        bytes_in = sum(map(len, sent))
        bytes_out = sum(n for _, n in received)
        return {
            "seconds": seconds,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "ratio": bytes_out / bytes_in,
            "datagrams_out": len(received),
            "largest_datagram_out": max((n for _, n in received), default=0),
            "last_datagram_at_s": received[-1][0] if received else None,
            "session_state": session.state.value,
        }
    finally:
        victim.close()
        await sfu.close()


def run_reflection(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_reflection(args.reflection_seconds))


# ---- command line ------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.attacks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--pairs", type=int, default=4, help="established calls (default 4)")
    parser.add_argument(
        "--rate", type=float, default=4000, help="their packets/s in all (default 4000)"
    )
    parser.add_argument("--size", type=int, default=1000, help="RTP payload bytes (default 1000)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="baseline+flood runs (default 3)")
    parser.add_argument(
        "--flood-rate", type=float, default=20000, help="flood datagrams/s (default 20000)"
    )
    parser.add_argument(
        "--flood-ports", type=int, default=2000, help="flood source ports (default 2000)"
    )
    parser.add_argument(
        "--flood-kind",
        choices=("dtls", "stun", "mixed"),
        default="dtls",
        help="ClientHellos, STUN checks for an unknown ufrag, or both (default dtls)",
    )
    parser.add_argument(
        "--sessions", type=int, default=10000, help="never-connected sessions (default 10000)"
    )
    parser.add_argument(
        "--consent-timeout",
        type=float,
        default=5.0,
        help="seconds before they are reaped (default 5; the server's default is 30)",
    )
    parser.add_argument(
        "--reflection-seconds",
        type=float,
        default=16.0,
        help="how long to count what goes to the victim's address (default 16)",
    )
    parser.add_argument("--skip-flood", action="store_true")
    parser.add_argument("--skip-sessions", action="store_true")
    parser.add_argument("--skip-reflection", action="store_true")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on the last line"
    )
    args = parser.parse_args(argv)
    if min(args.pairs, args.repeats, args.flood_ports, args.sessions) < 1:
        parser.error("--pairs, --repeats, --flood-ports and --sessions must be positive")
    if args.flood_rate * args.duration > 5_000_000 or args.flood_ports > 10000:
        parser.error("flood too large: keep it under 5 million datagrams and 10,000 ports")
    if args.sessions > 50000:
        parser.error("--sessions at most 50000")
    if not 0 < args.reflection_seconds <= 120:
        parser.error("--reflection-seconds must be in (0, 120]")
    return args


def _fmt(s: dict[str, float | None], scale: float = 1.0, spec: str = ".2f") -> str:
    if s["median"] is None:
        return "-"
    return f"{s['median'] * scale:{spec}} [{s['min'] * scale:{spec}}-{s['max'] * scale:{spec}}]"  # type: ignore[operator]


def print_report(out: dict[str, Any]) -> None:
    flood = out.get("flood_test")
    if flood:
        print(
            f"calls: {flood['pairs']} at {flood['rate_pps']:.0f} packets/s, "
            f"{flood['repeats']} x {flood['duration_s']} s; flood: {flood['flood_kind']} from "
            f"{flood['flood_ports']} ports at {flood['flood_rate']:.0f}/s "
            f"(sent {_fmt(flood['flood']['flood_sent_per_s'], 1, '.0f')}/s)"
        )
        print(f"{'':10} {'loss %':>22} {'p50 us':>22} {'p99 us':>22} {'server CPU s':>22}")
        for phase in ("baseline", "flood"):
            p = flood[phase]
            cells = (
                _fmt(p["loss"], 100, ".3f"),
                _fmt(p["latency_p50_us"], 1, ".0f"),
                _fmt(p["latency_p99_us"], 1, ".0f"),
                _fmt(p["server_cpu_s"]),
            )
            print(f"{phase:10} " + " ".join(f"{c:>22}" for c in cells))
        print("server drops during the floods:", flood["flood"]["drops"])
    s = out.get("sessions_test")
    if s:
        print(
            f"{s['sessions']} sessions never connected: "
            f"create {s['create_us_per_session']:.0f} us each, "
            f"RSS {s['rss_bytes_per_session'] / 1024:.1f} KiB each "
            f"({s['rss_bytes_per_session_after_reap'] / 1024:.1f} KiB left after the reap); "
            f"the last reaped {s['last_reaped_after_its_deadline_s']:.2f} s after its deadline "
            f"(consent {s['consent_timeout_s']} s), "
            f"longest loop stall {s['longest_loop_stall_ms']:.0f} ms"
        )
    r = out.get("reflection_test")
    if r:
        print(
            f"reflection: {r['bytes_in']} bytes from the victim's address (a signed "
            f"nomination and a ClientHello), {r['bytes_out']} bytes back in "
            f"{r['datagrams_out']} datagrams over {r['seconds']:.0f} s "
            f"(largest {r['largest_datagram_out']}): ratio {r['ratio']:.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--flood-child"]:
        return flood_main(*json.loads(argv[1]))
    args = parse_args(argv)
    out: dict[str, Any] = {}
    try:
        if not args.skip_flood:
            out["flood_test"] = run_flood(args)
        if not args.skip_sessions:
            out["sessions_test"] = run_sessions(args)
        if not args.skip_reflection:
            out["reflection_test"] = run_reflection(args)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_report(out)
    if args.json:
        print(json.dumps(out, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
