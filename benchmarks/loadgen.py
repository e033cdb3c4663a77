"""Load generator: N synthetic visitors through the real signalling and media path.

    python -m benchmarks.loadgen [--visitors 20] [--duration 10] [--next-every 10]
                                 [--fps 30] [--video-kbps 1000] [--json] [--plot FILE]
    python -m benchmarks.loadgen --capacity [--max-seconds 300] [--plot docs/loadgen.png]
    python -m benchmarks.loadgen --calls 5,10,20 --plot load.png
    python -m benchmarks.loadgen --generator-bench      # packets/s of one generator core
    mediaserver-loadgen ...                             # the same, as a console script

Starts the real server (`python -m mediaserver.cli` on 127.0.0.1, any free UDP
port), or targets a running one with --url ws://127.0.0.1:PORT/ws --server-pid PID.
Each visitor is one WebSocket (from its own loopback address, 127.0.x.y) speaking
protocol v1 (hello, start, offer -> answer, matched / partner_left, next, stop,
bye) and one UDP socket doing what a browser does: STUN with USE-CANDIDATE against
the ICE-lite server, DTLS (client), then SRTP audio (50 packets/s of ~100 bytes, PT
111) and video (--fps frames/s at --video-kbps, frames split into packets of at most
1,200 bytes with the marker on the last; a keyframe --keyframe-factor times larger
after the server's PLI/FIR, which it relays on every new match), an SRTCP receiver
report every second and a consent check every 5 s. Visitors press next every
--next-every seconds (each one randomized, 0.5x to 1.5x) and stop at the end.

The packet loops are C (benchmarks/peers/_loadgen.pyx, class Visitors: one sender
thread, one receiver thread, batched sendmmsg/recvmmsg, no GIL). Every payload
carries the sender's index, its pair generation (0 while not matched; a new
number for each match, set when `matched` arrives and cleared before `next` or on
`partner_left`) and its send time, so:

- loss counts only packets sent while matched: for each (visitor, generation),
  packets sent vs packets of it its partner received, read 0.5 s after the match
  ended;
- latency is the receiver's kernel receive timestamp minus the send time (p50/p99);
- jitter is RFC 3550's interarrival jitter per received stream (mean, ms);
- time to first media is from `matched` to the first packet from the new partner;
- server CPU per forwarded packet is the server's CPU time (/proc/PID/task/*/
  schedstat, all threads) over the window divided by the RTP packets the visitors
  received (every one of them went through the server); server wake-ups per packet
  is, over the same packets, how often its threads were woken
  (voluntary_ctxt_switches of /proc/PID/task/*/status, workers included).

Figures cover the measurement window: after every visitor is connected and a short
warm-up, for --duration seconds. A progress bar and line per second go to stderr;
--json prints one JSON object on the last line of stdout. Loopback only; every run
is bounded in time and kills the server it started on exit or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.peers import loadgen
from benchmarks.peers.webrtc import (
    HandshakeError,
    KeepAlive,
    SyntheticPeer,
    check_loopback,
    handshake,
)

ROOT = Path(__file__).resolve().parent.parent
HIST_BUCKETS = 200_000
SETTLE = 0.5  # seconds after a match ends before its packets are counted
CHUNK = 32  # visitors handshaking at once (DTLS in Python: keep under the media timeout)


def visitor_host(i: int) -> str:
    """Visitor i's loopback source address: 127.0.0.2 ... 127.0.0.251, 127.0.1.2 ..."""
    return f"127.0.{i // 250}.{2 + i % 250}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_cpu(pid: int) -> float:
    """CPU seconds of every thread of `pid` and of its child processes (the
    workers of `--workers N`), from schedstat (ns precision)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    children: list[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(c) for c in f.read().split()]
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9 + sum(server_cpu(c) for c in children)


def server_wakeups(pid: int) -> int:
    """Times every thread of `pid` and of its child processes was woken: the sum of
    voluntary_ctxt_switches (each one a wait that ended) in /proc/PID/task/*/status."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    children: list[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(c) for c in f.read().split()]
        except (OSError, ValueError, IndexError):
            pass
    return total + sum(server_wakeups(c) for c in children)


def worker_cpu(pid: int) -> list[float]:
    """CPU seconds of each child process of `pid` (one per worker), in pid order."""
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    children += [int(c) for c in f.read().split()]
    return [server_cpu(c) for c in sorted(children)]


def hist_percentiles(hist: np.ndarray, points: tuple[float, ...]) -> list[float | None]:
    """Percentiles in ms of a 1 us-bucket histogram (bucket upper edges)."""
    total = int(hist.sum())
    if total == 0:
        return [None for _ in points]
    cum = np.cumsum(hist)
    ranks = [max(1, math.ceil(p / 100 * total)) for p in points]
    return [float(np.searchsorted(cum, r) + 1) / 1000 for r in ranks]


# ---- the server -------------------------------------------------------------------


class Server:
    """`python -m mediaserver.cli` on 127.0.0.1, killed on close()."""

    def __init__(self, extra: list[str] | None = None) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "mediaserver.cli", "--host", "127.0.0.1",
               "--port", str(self.port), "--udp-port", "0", "--announced-ip", "127.0.0.1",
               "--log-level", "warning", *(extra or [])]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.05)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- one run -------------------------------------------------------------------------


@dataclass
class Options:
    fps: float = 30.0
    video_kbps: float = 1000.0
    keyframe_factor: float = 6.0
    audio_bytes: int = 100
    next_every: float = 10.0
    warmup: float = 1.0
    progress: bool = True


@dataclass
class Visitor:
    index: int
    peer: SyntheticPeer
    ws: Any = None
    handle: str = ""
    partner: int | None = None
    gen: int = 0  # current pair generation in the payload (0: not counting)
    gens: int = 0  # generations used so far
    next_at: float = math.inf
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    answer: asyncio.Future | None = None
    welcomed: asyncio.Event = field(default_factory=asyncio.Event)
    first_pending: tuple[int, int] | None = None  # (partner index, matched ns)
    handshaken: bool = False
    offering: bool = False  # an offer is out and its answer not used yet


class Run:
    def __init__(self, url: str, server_pid: int | None, n: int, duration: float,
                 opts: Options, seed: int | None = None) -> None:
        from mediaserver.sfu.dtls import DtlsCertificate

        self.url, self.pid, self.n, self.duration, self.opts = url, server_pid, n, duration, opts
        self.rng = random.Random(seed)
        module = loadgen.load()
        self.eng = module.Visitors(n, opts.fps, opts.video_kbps, opts.keyframe_factor,
                                   opts.audio_bytes)
        cert = DtlsCertificate.generate()
        self.cert = cert
        self.visitors = [Visitor(i, SyntheticPeer(i, "sendrecv", cert, host=visitor_host(i)))
                         for i in range(n)]
        self.reoffers = 0  # `reoffer` answered with a new peer before media started
        self.late_reoffers = 0  # `reoffer` after media started: that visitor stops
        self.by_handle: dict[str, int] = {}
        self.measuring = False
        self.matches = 0  # `matched` messages in the window (2 per pair)
        self.matches_total = 0  # and since the visitors connected
        self.nexts = 0
        self.sent_matched = 0
        self.got_matched = 0
        self.first_media: list[float] = []
        self.errors: list[str] = []
        self.keepalives: list[KeepAlive] = []
        self.threads: list[threading.Thread] = []

    # -- signalling --

    async def _send(self, v: Visitor, kind: str, **fields: Any) -> None:
        await v.ws.send(json.dumps({"v": 1, "type": kind, **fields}))

    async def _reader(self, v: Visitor) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            async for frame in v.ws:
                msg = json.loads(frame)
                kind = msg.get("type")
                if kind == "welcome":
                    v.handle = msg["handle"]
                    self.by_handle[v.handle] = v.index
                    v.welcomed.set()
                elif kind == "answer" and v.answer is not None and not v.answer.done():
                    v.answer.set_result(msg["sdp"])
                elif kind == "matched":
                    self._matched(v, msg["partner"], loop.time())
                elif kind == "partner_left":
                    self._end_match(v)
                elif kind == "reoffer":
                    self._reoffer(v)
                elif kind == "stopped":
                    v.stopped.set()
                elif kind == "error":
                    self.errors.append(f"{msg.get('code')}: {msg.get('message')}")
                    if v.answer is not None and not v.answer.done() and msg.get("ref") == "offer":
                        v.answer.set_exception(RuntimeError(msg.get("message")))

    def _reoffer(self, v: Visitor) -> None:
        """The pair's media is on another worker or node: offer from a new peer
        (before the handshake; after it, the visitor stops and is counted)."""
        if v.handshaken:
            self.late_reoffers += 1
            self.eng.activate(v.index, False)
            return
        self.reoffers += 1
        v.peer.close()
        v.peer = SyntheticPeer(v.index, "sendrecv", self.cert, host=visitor_host(v.index))
        v.answer = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().create_task(self._offer(v))

    async def _offer(self, v: Visitor) -> None:
        v.offering = True
        peer, answer = v.peer, v.answer
        assert answer is not None
        await self._send(v, "offer", sdp=peer.offer())
        sdp = await asyncio.wait_for(answer, 20)
        if peer is v.peer:
            peer.accept("ws", sdp)
            v.offering = False

    def _matched(self, v: Visitor, partner_handle: str, now: float) -> None:
        self._check_first(v)
        v.partner = self.by_handle.get(partner_handle)
        v.next_at = now + self.opts.next_every * self.rng.uniform(0.5, 1.5)
        self.matches_total += 1
        if self.measuring:
            self.matches += 1
            self._count(v, fresh=True)

    def _count(self, v: Visitor, fresh: bool) -> None:
        """Start counting this visitor's packets as sent while matched; `fresh`: the
        match was just made (time its first media)."""
        v.gens += 1
        v.gen = v.gens
        self.eng.set_gen(v.index, v.gen)
        if fresh and v.partner is not None:
            self.eng.reset_first(v.index)
            v.first_pending = (v.partner, time.monotonic_ns())

    def _end_match(self, v: Visitor) -> None:
        self._check_first(v)
        v.partner = None
        v.next_at = math.inf
        if v.gen:
            gen, v.gen = v.gen, 0
            self.eng.set_gen(v.index, 0)
            asyncio.get_running_loop().call_later(SETTLE, self._settle, v.index, gen)

    def _settle(self, index: int, gen: int) -> None:
        sent, got = self.eng.take_slot(index, gen)
        self.sent_matched += sent
        self.got_matched += got

    def _check_first(self, v: Visitor) -> None:
        if v.first_pending is None:
            return
        partner, t0 = v.first_pending
        who, t = self.eng.first(v.index)
        if who == partner and t >= t0:
            self.first_media.append((t - t0) / 1e6)
            v.first_pending = None

    async def _connect(self, v: Visitor, sem: asyncio.Semaphore) -> None:
        from websockets.asyncio.client import connect

        async with sem:
            v.ws = await connect(self.url, local_addr=(v.peer.host, 0), max_size=None,
                                 open_timeout=20)
            asyncio.get_running_loop().create_task(self._reader(v))
            v.answer = asyncio.get_running_loop().create_future()
            await self._send(v, "hello", age_confirmed=True)
            await asyncio.wait_for(v.welcomed.wait(), 20)
            await self._send(v, "start")
            await self._offer(v)

    def _handshake_chunk(self, chunk: list[Visitor]) -> None:
        """ICE + DTLS for a few visitors (blocking: runs in a worker thread), then
        hand their sockets and keys to the C loops and start sending."""
        peers = [v.peer for v in chunk]
        handshake(peers, timeout=20)
        for v in chunk:
            v.handshaken = True
            p = v.peer
            assert p.keys is not None and p.server_addr is not None
            self.eng.setup(v.index, p.sock.fileno(), p.server_addr[0], p.server_addr[1],
                           p.audio_ssrc, p.video_ssrc)
            self.eng.set_keys(v.index, p.keys.profile, p.keys.tx_key, p.keys.tx_salt,
                              p.keys.rx_key, p.keys.rx_salt)
            self.eng.activate(v.index, True, self.rng.random())
        keepalive = KeepAlive(peers)
        keepalive.start()
        self.keepalives.append(keepalive)

    # -- the run --

    def _snapshot(self) -> dict[str, float]:
        c = self.eng.counters()
        return {"t": time.monotonic(), "sent": c["sent"], "received": c["received"],
                "own_cpu": time.process_time(),
                "cpu": server_cpu(self.pid) if self.pid else 0.0, "matches": self.matches,
                "wakeups": server_wakeups(self.pid) if self.pid else 0,
                "workers": worker_cpu(self.pid) if self.pid else []}

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        for target in (self.eng.run_sender, self.eng.run_receiver):
            thread = threading.Thread(target=target, kwargs={"max_seconds": self.duration + 600},
                                      daemon=True)
            thread.start()
            self.threads.append(thread)
        try:
            return await self._run(loop)
        finally:
            await self._finish()

    async def _run(self, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        t_setup = time.monotonic()
        sem = asyncio.Semaphore(64)
        await asyncio.gather(*(self._connect(v, sem) for v in self.visitors))
        # with several workers a pair's media lives on one: wait for the pairs and
        # any new offers they asked for, so each visitor handshakes with its pair's worker
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            any(v.offering for v in self.visitors)
            or sum(v.partner is not None for v in self.visitors) < self.n - self.n % 2
        ):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        for i in range(0, self.n, CHUNK):
            await loop.run_in_executor(None, self._handshake_chunk, self.visitors[i:i + CHUNK])
        setup_s = time.monotonic() - t_setup
        await asyncio.sleep(self.opts.warmup)
        # the window opens: count from here
        self.eng.histogram(True)
        hist = np.zeros(HIST_BUCKETS, dtype=np.uint64)
        self.measuring = True
        for v in self.visitors:
            if v.partner is not None:
                self._count(v, fresh=False)
        start = last = self._snapshot()
        per_second = []
        end = start["t"] + self.duration
        next_tick = start["t"] + 1.0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            lnow = loop.time()
            for v in self.visitors:
                if v.partner is not None and lnow >= v.next_at and v.ws is not None:
                    v.next_at = math.inf
                    self._end_match(v)
                    self.nexts += 1
                    await self._send(v, "next")
            if now >= next_tick:
                next_tick += 1.0
                recent = np.frombuffer(self.eng.histogram(True), dtype=np.uint32)
                hist += recent
                snap = self._snapshot()
                per_second.append(self._interval(last, snap, recent))
                last = snap
                for v in self.visitors:
                    self._check_first(v)
                if self.opts.progress:
                    self._progress(per_second[-1], now - start["t"])
            await asyncio.sleep(0.02)
        # the window closes: stop counting, let the last packets land
        hist += np.frombuffer(self.eng.histogram(True), dtype=np.uint32)
        final = self._snapshot()
        self.measuring = False
        for v in self.visitors:
            self._check_first(v)
            self._end_match(v)
        jitter_a = [self.eng.jitter(v.index)[0] for v in self.visitors]
        jitter_v = [self.eng.jitter(v.index)[1] for v in self.visitors]
        await asyncio.sleep(SETTLE + 0.1)
        return self._result(start, final, hist, per_second, setup_s, jitter_a, jitter_v)

    def _interval(self, a: dict, b: dict, recent: np.ndarray) -> dict[str, Any]:
        dt = max(1e-9, b["t"] - a["t"])
        received = b["received"] - a["received"]
        p50, p99 = hist_percentiles(recent, (50, 99))
        return {
            "offered_pps": round((b["sent"] - a["sent"]) / dt, 1),
            "received_pps": round(received / dt, 1),
            "matches_per_s": round((b["matches"] - a["matches"]) / 2 / dt, 2),
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "server_cpu": round((b["cpu"] - a["cpu"]) / dt, 3),
            "server_cpu_us_per_packet": round((b["cpu"] - a["cpu"]) / received * 1e6, 2)
            if received else None,
        }

    def _progress(self, s: dict, t: float) -> None:
        loss = 1 - self.got_matched / self.sent_matched if self.sent_matched else 0.0
        p99 = f"{s['latency_p99_ms']:.2f}" if s["latency_p99_ms"] is not None else "-"
        # a bar that fills as the run goes, then the figures of the last second
        done = min(1.0, t / self.duration) if self.duration else 1.0
        bar = "#" * int(20 * done) + "." * (20 - int(20 * done))
        print(f"[{bar}] {t:5.1f}/{self.duration:.0f}s visitors {self.n}  offered {s['offered_pps']:>8.0f}"
              f" pps  received {s['received_pps']:>8.0f} pps  loss {100 * loss:5.2f}%  p99 {p99}"
              f" ms  matches/s {s['matches_per_s']:.1f}  server cpu {100 * s['server_cpu']:.0f}%",
              file=sys.stderr, flush=True)

    def _result(self, start: dict, final: dict, hist: np.ndarray, per_second: list,
                setup_s: float, jitter_a: list, jitter_v: list) -> dict[str, Any]:
        dt = final["t"] - start["t"]
        received = final["received"] - start["received"]
        sent = final["sent"] - start["sent"]
        cpu = final["cpu"] - start["cpu"]
        p50, p99 = hist_percentiles(hist, (50, 99))
        fm = sorted(self.first_media)
        c = self.eng.counters()

        def pct(values: list[float], p: float) -> float | None:
            if not values:
                return None
            return round(values[min(len(values) - 1, int(p / 100 * len(values)))], 3)

        def mean_ms(values: list[float]) -> float:
            return round(sum(values) / len(values) / 1e6, 4) if values else 0.0

        return {
            "visitors": self.n,
            "calls": self.n // 2,
            "duration_s": round(dt, 3),
            "setup_s": round(setup_s, 2),
            "fps": self.opts.fps,
            "video_kbps": self.opts.video_kbps,
            "next_every_s": self.opts.next_every,
            "offered_pps": round(sent / dt, 1),
            "received_pps": round(received / dt, 1),
            "sent": sent,
            "received": received,
            "sent_while_matched": self.sent_matched,
            "received_while_matched": self.got_matched,
            "loss": round(1 - self.got_matched / self.sent_matched, 5)
            if self.sent_matched else None,
            "jitter_audio_ms": mean_ms(jitter_a),
            "jitter_video_ms": mean_ms(jitter_v),
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "matches": self.matches // 2,
            "matches_per_s": round(self.matches / 2 / dt, 3),
            "matches_total": self.matches_total // 2,
            "nexts": self.nexts,
            "first_media_p50_ms": pct(fm, 50),
            "first_media_p99_ms": pct(fm, 99),
            "server_cpu": round(cpu / dt, 4) if self.pid else None,
            "worker_cpu": [round((b - a) / dt, 4) for a, b in zip(start["workers"], final["workers"])],
            "reoffers": self.reoffers,
            "late_reoffers": self.late_reoffers,
            "generator_cpu": round((final["own_cpu"] - start["own_cpu"]) / dt, 4),
            "server_cpu_us_per_packet": round(cpu / received * 1e6, 3)
            if self.pid and received else None,
            "server_wakeups_per_packet": round((final["wakeups"] - start["wakeups"]) / received, 4)
            if self.pid and received else None,
            "keyframes_sent": c["keyframes_sent"],
            "plis_received": c["plis_received"],
            "send_errors": c["send_errors"],
            "srtp_auth_failures": c["srtp_auth_failures"],
            "errors": sorted(set(self.errors))[:10],
            "per_second": per_second,
        }

    async def _finish(self) -> None:
        async def leave(v: Visitor) -> None:
            if v.ws is None:
                return
            with contextlib.suppress(Exception):
                await self._send(v, "stop")
                await asyncio.wait_for(v.stopped.wait(), 2)
            with contextlib.suppress(Exception):
                await self._send(v, "bye")
                await asyncio.wait_for(v.ws.close(), 2)

        for v in self.visitors:
            self.eng.activate(v.index, False)
        await asyncio.gather(*(leave(v) for v in self.visitors))
        self.eng.stop()
        for keepalive in self.keepalives:
            keepalive.stop()
        for thread in self.threads:
            thread.join(timeout=5)
        for v in self.visitors:
            v.peer.close()


def run_once(url: str, pid: int | None, visitors: int, duration: float, opts: Options,
             seed: int | None = None) -> dict[str, Any]:
    if visitors < 2:
        raise ValueError("at least 2 visitors")
    return asyncio.run(Run(url, pid, visitors, duration, opts, seed).run())


# ---- capacity search ------------------------------------------------------------------


def held(r: dict[str, Any], loss_limit: float, p99_limit: float) -> bool:
    return (r["loss"] is not None and r["loss"] <= loss_limit and r["latency_p99_ms"] is not None
            and r["latency_p99_ms"] <= p99_limit)


def capacity(url: str, pid: int | None, args: argparse.Namespace, opts: Options) -> dict[str, Any]:
    """Double the calls until the load is not held, then bisect; bounded by max_seconds."""
    t0 = time.monotonic()
    steps: list[dict[str, Any]] = []
    good: dict[str, Any] | None = None
    bad_calls: int | None = None
    calls = args.start_calls
    while True:
        elapsed = time.monotonic() - t0
        # the next step's wall time, from the last one's (setup grows with the visitors)
        last = steps[-1] if steps else None
        estimate = last["wall_s"] * max(1.0, calls / last["calls"]) if last else args.duration + 5
        if steps and elapsed + estimate > args.max_seconds:
            break
        t_step = time.monotonic()
        try:
            r = run_once(url, pid, 2 * calls, args.duration, opts, args.seed)
        except (HandshakeError, OSError, RuntimeError, asyncio.TimeoutError) as exc:
            # could not even connect that many visitors: not held
            r = {"calls": calls, "visitors": 2 * calls, "loss": None, "latency_p99_ms": None,
                 "offered_pps": 0.0, "received_pps": 0.0, "duration_s": 0.0, "setup_s": 0.0,
                 "failed": f"{type(exc).__name__}: {str(exc)[:200]}"}
        r["wall_s"] = round(time.monotonic() - t_step, 2)
        r["held"] = held(r, args.loss_limit, args.p99_limit_ms)
        steps.append(r)
        verdict = "held" if r["held"] else "NOT held"
        print(f"capacity: {calls} calls -> {verdict} (offered {r['offered_pps']:.0f} pps, "
              f"loss {r['loss']}, p99 {r['latency_p99_ms']} ms)", file=sys.stderr, flush=True)
        if "failed" in r:
            print(f"capacity: {calls} calls -> failed: {r['failed']}", file=sys.stderr, flush=True)
        if r["held"]:
            if good is None or calls > good["calls"]:
                good = r
        else:
            bad_calls = calls if bad_calls is None else min(bad_calls, calls)
        low = good["calls"] if good else 0
        if bad_calls is None:
            calls *= 2
            if calls > args.max_calls:
                break
        else:
            if bad_calls - low <= max(1, low // 10):
                break
            calls = (low + bad_calls) // 2 if low else max(1, bad_calls // 2)
            if calls == low or calls < 1:
                break
    return {
        "capacity_calls": good["calls"] if good else 0,
        "capacity_pps": good["received_pps"] if good else 0,
        "capacity_offered_pps": good["offered_pps"] if good else 0,
        "first_failing_calls": bad_calls,
        "loss_limit": args.loss_limit,
        "p99_limit_ms": args.p99_limit_ms,
        "search_seconds": round(time.monotonic() - t0, 1),
        "at_capacity": {k: v for k, v in good.items() if k != "per_second"} if good else None,
        "steps": [{k: v for k, v in s.items() if k != "per_second"} for s in steps],
    }


# ---- generator speed ------------------------------------------------------------------


def generator_bench(seconds: float = 2.0, visitors: int = 100, kbps: float = 30000.0) -> dict:
    """How many SRTP packets/s one generator core makes: the C sender alone, to a sink
    socket nobody reads, CPU time of its thread."""
    module = loadgen.load()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    eng = module.Visitors(visitors, 30.0, kbps, 1.0, 100)
    socks = []
    for i in range(visitors):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.bind((visitor_host(i), 0))
        socks.append(s)
        eng.setup(i, s.fileno(), "127.0.0.1", port, random.getrandbits(32), random.getrandbits(32))
        eng.set_keys(i, 7, os.urandom(16), os.urandom(12), os.urandom(16), os.urandom(12))
        eng.activate(i, True, random.random())
    timer = threading.Timer(seconds, eng.stop)
    timer.start()
    c0, t0 = time.thread_time(), time.monotonic()
    sent = eng.run_sender(0.001)
    cpu, wall = time.thread_time() - c0, time.monotonic() - t0
    for s in socks:
        s.close()
    sink.close()
    return {"generator_packets": sent, "generator_pps": round(sent / wall),
            "generator_pps_per_cpu_s": round(sent / cpu) if cpu else None,
            "generator_cpu": round(cpu / wall, 3)}


# ---- plot -------------------------------------------------------------------------------


def plot(results: list[dict[str, Any]], path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = sorted((r for r in results if "failed" not in r), key=lambda r: r["offered_pps"])
    x = [r["offered_pps"] / 1000 for r in rs]
    fig, axes = plt.subplots(3, 1, figsize=(6, 7), sharex=True)
    axes[0].plot(x, [r["received_pps"] / 1000 for r in rs], "o-", label="received")
    axes[0].plot(x, x, "--", color="grey", label="offered")
    axes[0].set_ylabel("kpackets/s")
    axes[0].legend()
    axes[1].plot(x, [100 * (r["loss"] or 0) for r in rs], "o-", color="tab:red")
    axes[1].axhline(1.0, ls=":", color="grey")
    axes[1].set_ylabel("loss while matched, %")
    axes[2].plot(x, [r["latency_p50_ms"] or 0 for r in rs], "o-", label="p50")
    axes[2].plot(x, [r["latency_p99_ms"] or 0 for r in rs], "o-", label="p99")
    axes[2].axhline(20.0, ls=":", color="grey")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("one-way latency, ms")
    axes[2].set_xlabel("offered load, kpackets/s (labels: calls)")
    axes[2].legend()
    for r, xi in zip(rs, x):
        axes[0].annotate(str(r["calls"]), (xi, r["received_pps"] / 1000), fontsize=7,
                         textcoords="offset points", xytext=(2, 4))
    fig.suptitle(title or "mediaserver under the load generator")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ---- command line ------------------------------------------------------------------------


def _table(r: dict[str, Any]) -> str:
    keys = ["calls", "offered_pps", "received_pps", "loss", "jitter_audio_ms", "jitter_video_ms",
            "latency_p50_ms", "latency_p99_ms", "matches_per_s", "first_media_p50_ms",
            "first_media_p99_ms", "server_cpu", "worker_cpu", "server_cpu_us_per_packet",
            "server_wakeups_per_packet", "generator_cpu", "reoffers", "late_reoffers"]
    return "\n".join(f"{k:>26}  {r.get(k)}" for k in keys)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mediaserver-loadgen", description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--url", help="a running server's ws://127.0.0.1:PORT/ws (else: start one)")
    parser.add_argument("--server-pid", type=int, help="its pid, for CPU per packet")
    parser.add_argument("--workers", type=int, default=1,
                        help="the started server's --workers (CPU counts its worker processes)")
    parser.add_argument("--visitors", type=int, default=20)
    parser.add_argument("--calls", help="comma-separated numbers of calls (pairs): one run each")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per run")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--video-kbps", type=float, default=1000.0)
    parser.add_argument("--keyframe-factor", type=float, default=6.0)
    parser.add_argument("--audio-bytes", type=int, default=100)
    parser.add_argument("--next-every", type=float, default=10.0,
                        help="seconds between nexts per visitor (randomized 0.5x-1.5x)")
    parser.add_argument("--capacity", action="store_true", help="search the highest load held")
    parser.add_argument("--start-calls", type=int, default=8)
    parser.add_argument("--max-calls", type=int, default=1024)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--loss-limit", type=float, default=0.01)
    parser.add_argument("--p99-limit-ms", type=float, default=20.0)
    parser.add_argument("--generator-bench", action="store_true",
                        help="measure the generator's own packets/s per core and exit")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--plot", help="write a PNG of throughput, loss, latency vs load")
    args = parser.parse_args(argv)

    if args.generator_bench:
        r = generator_bench()
        print("\n".join(f"{k:>26}  {v}" for k, v in r.items()))
        if args.json:
            print(json.dumps(r))
        return 0

    opts = Options(fps=args.fps, video_kbps=args.video_kbps, keyframe_factor=args.keyframe_factor,
                   audio_bytes=args.audio_bytes, next_every=args.next_every,
                   progress=not args.quiet)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with contextlib.suppress(ValueError, OSError):  # two sockets per visitor
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    server = None
    try:
        loadgen.load()  # compile before the server starts
        if args.url:
            from urllib.parse import urlparse

            check_loopback(urlparse(args.url).hostname or "")
            url, pid = args.url, args.server_pid
        else:
            server = Server(["--skip-cooldown", "1", "--match-interest-wait", "0",
                             "--workers", str(args.workers)])
            url, pid = server.url, server.pid
        if args.capacity:
            result = capacity(url, pid, args, opts)
            runs = result["steps"]
            print(f"capacity: {result['capacity_calls']} calls held "
                  f"({result['capacity_pps']:.0f} packets/s received; first failing: "
                  f"{result['first_failing_calls']} calls)")
            if result["at_capacity"]:
                print(_table(result["at_capacity"]))
        elif args.calls:
            runs = [run_once(url, pid, 2 * int(c), args.duration, opts, args.seed)
                    for c in args.calls.split(",")]
            for r in runs:
                print(_table(r), end="\n\n")
            result = {"runs": runs}
        else:
            result = run_once(url, pid, args.visitors, args.duration, opts, args.seed)
            runs = [result]
            print(_table(result))
        if args.plot:
            plot(runs, args.plot)
        if args.json:
            print(json.dumps(result))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
