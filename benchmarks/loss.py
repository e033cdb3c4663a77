"""Video through the SFU over a lossy, reordering network, in headless Chromium.

    python -m benchmarks.loss [--json] [--runs 3] [--seconds 8] [--losses 0,5,10,20] [--size 640x480]

Two Chromium pages (the fake camera, 640x480 at 20 fps by default, VP8) call each other
through the SFU (in this process). Between the pages and the SFU sits a UDP relay
(`LossyRelay`) that, on each leg and in each direction, drops the given share of
datagrams at random and reorders the rest as netem's `delay 10ms reorder 25%` does:
a quarter go at once, the others 10 ms later (so one in four overtakes the ones
before it). A packet from one page to the other crosses two legs, so 5% loss per
leg is about 9.75% end to end. The kernel here has no `sch_netem` (`tc qdisc ...
netem` says "unknown qdisc"), hence the relay; it sits on the namespace's veth
address, and the SFU's answer names the relay's port as its candidate.

For each loss rate, after a warm-up (connected, then 3 s), over --seconds:
- fps: frames decoded per second by each page, the lower of the two;
- nacks / plis: NACK and PLI messages the receiving pages sent (inbound-rtp
  nackCount, pliCount), summed over both, per second of the window;
- sfu_nack_received, sfu_retransmitted, sfu_pli_received, sfu_pli_sent: the
  SFU's counters over the same window (NACKs answered from its packet cache are
  `retransmitted`; PLIs are relayed to the publisher);
- sfu_nack_duplicate, sfu_nack_over_budget, sfu_nack_too_soon, sfu_nack_resend_cap: NACKed packets
  the SFU's NACK bounds (mediaserver/sfu/nack.py) left unanswered over the window,
  by reason (meant for attacks);
- freezes: freezeCount (Chromium's decoder stalls) summed over both pages;
- jitter_buffer_ms: the mean time a frame waited in the pages' jitter buffers
  (what waiting for retransmissions costs in latency).
Each figure is the median of --runs runs (a new browser pair and SFU each).
Runs inside mediaserver.netns's private namespace (re-executes itself there).

    python -m benchmarks.loss --redis-recovery [--runs 5] [--json]

measures the other fault of tests/e2e/test_faults.py instead: a `mediaserver
--redis-url ... --workers 1` subprocess and a throwaway redis-server; one visitor
waits, Redis is SIGKILLed, a second visitor arrives during the outage, Redis
starts again, empty, on the same port. recovery_s: from Redis answering PING again
to both visitors told `matched` (median, min, max over --runs), for outages of 1 s
and 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import time
from typing import Any

from mediaserver import netns
from mediaserver.netns import SERVER_IP

Address = tuple[str, int]

STATS_JS = """
async () => {
  const out = {framesDecoded: 0, nackSent: 0, pliSent: 0, freezes: 0, packetsLost: 0,
               packetsReceived: 0, jbDelay: 0, jbEmitted: 0, nackReceived: 0, pliReceived: 0, retransmitted: 0,
               state: window.pc.connectionState};
  for (const s of (await window.pc.getStats()).values()) {
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      out.framesDecoded += s.framesDecoded || 0;
      out.nackSent += s.nackCount || 0;
      out.pliSent += s.pliCount || 0;
      out.freezes += s.freezeCount || 0;
      out.packetsLost += s.packetsLost || 0;
      out.packetsReceived += s.packetsReceived || 0;
      out.jbDelay += s.jitterBufferDelay || 0;
      out.jbEmitted += s.jitterBufferEmittedCount || 0;
    }
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      out.nackReceived += s.nackCount || 0;
      out.pliReceived += s.pliCount || 0;
      out.retransmitted += s.retransmittedPacketsSent || 0;
    }
  }
  return out;
}
"""


class LossyRelay:
    """A UDP relay on `host` in front of the SFU at `upstream`: each client
    address gets its own socket towards the SFU (so the SFU tells the peers
    apart), and every datagram, either way, is dropped with probability `loss`,
    else sent now with probability `reorder`, else `delay` seconds later."""

    def __init__(
        self, upstream: Address, host: str, loss: float, *, reorder: float = 0.25,
        delay: float = 0.010, seed: int = 1,
    ) -> None:  # fmt: skip
        self.upstream, self.host = upstream, host
        self.loss, self.reorder, self.delay = loss, reorder, delay
        self._rnd = random.Random(seed)
        self._public: asyncio.DatagramTransport | None = None
        self._legs: dict[Address, asyncio.DatagramTransport] = {}
        self.port = 0
        self.sent = 0
        self.dropped = 0
        self.reordered = 0

    def _pass(self, transport: asyncio.DatagramTransport, data: bytes, *args: Any) -> None:
        x = self._rnd.random()
        if x < self.loss:
            self.dropped += 1
            return
        self.sent += 1
        if x < self.loss + (1 - self.loss) * self.reorder:
            self.reordered += 1
            transport.sendto(data, *args)
        else:
            asyncio.get_running_loop().call_later(self.delay, self._send, transport, data, *args)

    @staticmethod
    def _send(transport: asyncio.DatagramTransport, data: bytes, *args: Any) -> None:
        if not transport.is_closing():  # the run may have ended meanwhile
            transport.sendto(data, *args)

    async def start(self) -> None:
        relay = self
        loop = asyncio.get_running_loop()

        class Public(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Address) -> None:
                leg = relay._legs.get(addr)
                if leg is None:
                    loop.create_task(relay._open_leg(addr, data))
                    return
                relay._pass(leg, data)

        transport, _ = await loop.create_datagram_endpoint(Public, local_addr=(self.host, 0))
        self._public = transport
        self.port = transport.get_extra_info("sockname")[1]

    async def _open_leg(self, client: Address, first: bytes) -> None:
        relay = self
        loop = asyncio.get_running_loop()

        class Leg(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Address) -> None:
                if relay._public is not None:
                    relay._pass(relay._public, data, client)

        if client in self._legs:
            self._pass(self._legs[client], first)
            return
        transport, _ = await loop.create_datagram_endpoint(
            Leg, local_addr=(self.host, 0), remote_addr=self.upstream
        )
        if client in self._legs:  # opened meanwhile
            transport.close()
        else:
            self._legs[client] = transport
        self._pass(self._legs[client], first)

    def rewrite(self, answer: str) -> str:
        """The SFU's answer with the relay as its candidate."""
        host, port = self.upstream
        out, n = re.subn(
            rf" {re.escape(host)} {port} typ host", f" {self.host} {self.port} typ host", answer
        )
        assert n, "no candidate to rewrite in the answer"
        return out

    def close(self) -> None:
        for t in self._legs.values():
            t.close()
        if self._public is not None:
            self._public.close()


async def _stats(page: Any) -> dict[str, Any]:
    return dict(await page.evaluate(STATS_JS))


async def measure(
    browser: Any, loss: float, *, seconds: float = 8.0, warmup: float = 3.0, seed: int = 1,
    setup_timeout: float = 40.0, size: tuple[int, int] = (640, 480),
) -> dict[str, Any]:  # fmt: skip
    """One run: two Chromium pages through a fresh SFU behind a LossyRelay."""
    from mediaserver.sfu.server import Sfu, SfuConfig
    from tests.support.browser import ChromiumPeer

    sfu = Sfu(SfuConfig(announced_ip=SERVER_IP))
    await sfu.start()
    relay = LossyRelay((SERVER_IP, sfu.udp_port), SERVER_IP, loss, seed=seed)
    await relay.start()
    pages: list[ChromiumPeer] = []
    try:
        sessions = []
        for _ in range(2):
            peer = await ChromiumPeer.open(browser)
            pages.append(peer)
            session = sfu.create_session(await peer.offer(*size))
            await peer.accept(relay.rewrite(session.answer))
            sessions.append(session)
        sfu.connect(sessions[0].id, sessions[1].id)
        sfu.connect(sessions[1].id, sessions[0].id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + setup_timeout
        while True:  # both pages decode something: the call is up
            stats = [await _stats(p.page) for p in pages]
            if all(s["framesDecoded"] > 0 for s in stats):
                break
            if loop.time() > deadline:
                raise TimeoutError(f"no video at {loss:.0%} loss: {stats} {sfu.counters()}")
            await asyncio.sleep(0.25)
        await asyncio.sleep(warmup)
        before = [await _stats(p.page) for p in pages]
        c0, t0 = sfu.counters(), time.monotonic()
        await asyncio.sleep(seconds)
        after = [await _stats(p.page) for p in pages]
        c1, t1 = sfu.counters(), time.monotonic()
        span = t1 - t0

        def delta(key: str) -> float:
            return sum(a[key] - b[key] for a, b in zip(after, before, strict=True))

        drops0, drops1 = c0["drops"], c1["drops"]
        assert isinstance(drops0, dict) and isinstance(drops1, dict)

        def sfu_delta(key: str) -> float:
            return float(c1.get(key, 0)) - float(c0.get(key, 0))  # type: ignore[arg-type]

        return {
            "loss": loss,
            "fps": min(
                (a["framesDecoded"] - b["framesDecoded"]) / span
                for a, b in zip(after, before, strict=True)
            ),
            "frames_rising": all(
                a["framesDecoded"] > b["framesDecoded"] for a, b in zip(after, before, strict=True)
            ),
            "nacks": delta("nackSent") / span,
            "plis": delta("pliSent") / span,
            "freezes": delta("freezes"),
            "jitter_buffer_ms": 1000 * delta("jbDelay") / max(1.0, delta("jbEmitted")),
            "sfu_nack_received": sfu_delta("nack_received") / span,
            "sfu_retransmitted": sfu_delta("retransmitted") / span,
            "sfu_pli_received": sfu_delta("pli_received") / span,
            "sfu_pli_sent": sfu_delta("pli_sent") / span,
            **{
                f"sfu_{k}": drops1.get(k, 0) - drops0.get(k, 0)
                for k in ("nack_duplicate", "nack_over_budget", "nack_too_soon", "nack_resend_cap")
            },
            "relay_dropped_share": relay.dropped / max(1, relay.dropped + relay.sent),
            "relay_reordered_share": relay.reordered / max(1, relay.sent),
        }
    finally:
        for p in pages:
            await p.page.close()
        relay.close()
        await sfu.close()


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"loss_percent": round(runs[0]["loss"] * 100)}
    for key in runs[0]:
        if key == "loss":
            continue
        values = [r[key] for r in runs]
        if isinstance(values[0], bool):
            out[key] = all(values)
        else:
            out[key] = round(statistics.median(values), 3)
            out[key + "_range"] = [round(min(values), 3), round(max(values), 3)]
    out["runs"] = len(runs)
    return out


async def _main(args: argparse.Namespace) -> list[dict[str, Any]]:
    from tests.support.browser import chromium

    losses = [float(x) / 100 for x in args.losses.split(",")]
    width, height = (int(x) for x in args.size.split("x"))
    size = (width, height)
    results = []
    async with chromium() as browser:
        for loss in losses:
            runs = []
            for i in range(args.runs):
                runs.append(
                    await measure(browser, loss, seconds=args.seconds, seed=i + 1, size=size)
                )
                if not args.json:
                    r = runs[-1]
                    print(f"loss {loss:.0%} run {i + 1}: {r['fps']:.1f} fps, "
                          f"{r['nacks']:.1f} NACK/s, {r['plis']:.2f} PLI/s", file=sys.stderr)  # fmt: skip
            results.append(_median(runs))
    return results


def _get(url: str) -> None:
    import urllib.request

    urllib.request.urlopen(url, timeout=1).close()


async def _redis_recovery(runs: int, outage: float) -> list[float]:
    import subprocess
    import tempfile

    from tests.support.redis_server import CLUSTER_SECRET, RedisServer
    from tests.support.signalling_client import Client, free_port

    times = []
    with RedisServer() as redis, tempfile.TemporaryDirectory(prefix="loss-") as tmp:
        port = free_port()
        argv = [sys.executable, "-m", "mediaserver.cli", "--host", "127.0.0.1", "--port", str(port),
                "--udp-port", "0", "--db", f"{tmp}/db", "--data-key-file", f"{tmp}/key",
                "--redis-url", redis.url, "--cluster-secret", CLUSTER_SECRET,
                "--workers", "1", "--skip-cooldown", "0", "--log-level", "error"]  # fmt: skip
        proc = await asyncio.to_thread(
            subprocess.Popen, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            for _ in range(300):
                try:
                    await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/healthz")
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            ws = f"ws://127.0.0.1:{port}/ws"
            for i in range(runs):
                a = await Client.open(ws, source="127.0.0.2")
                b = await Client.open(ws, source="127.0.0.3")
                await a.hello()
                await b.hello()
                await a.send("start")
                await a.expect("queued")
                redis.crash()
                await b.send("start")
                await b.expect("queued")
                await asyncio.sleep(outage)
                await asyncio.to_thread(redis.restart)
                t0 = time.monotonic()
                await a.expect("matched", timeout=30)
                await b.expect("matched", timeout=30)
                times.append(time.monotonic() - t0)
                await a.close()
                await b.close()
                await asyncio.sleep(0.5)
        finally:
            proc.kill()
            proc.wait()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.loss", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--size", default="640x480", help="the fake camera's WIDTHxHEIGHT")
    parser.add_argument("--redis-recovery", action="store_true",
                        help="measure the match queue's recovery from a Redis restart instead")  # fmt: skip
    parser.add_argument("--losses", default="0,5,10,20", help="percent per leg, comma-separated")
    args = parser.parse_args(argv)
    if not netns.inside():
        return netns.main(["--", sys.executable, "-m", "benchmarks.loss", *(argv or sys.argv[1:])])
    if args.redis_recovery:
        rec = {}
        for outage in (1.0, 5.0):
            t = asyncio.run(_redis_recovery(args.runs, outage))
            rec[f"outage_{outage:g}s"] = {
                "recovery_s": round(statistics.median(t), 3),
                "range": [round(min(t), 3), round(max(t), 3)],
                "runs": len(t),
            }
        if args.json:
            print(json.dumps({"benchmark": "redis_recovery", "results": rec}, indent=2))
        else:
            for k, v in rec.items():
                print(f"{k}: matched {v['recovery_s']:.2f} s after Redis is back "
                      f"({v['range'][0]:.2f}-{v['range'][1]:.2f}, {v['runs']} runs)")  # fmt: skip
        return 0
    results = asyncio.run(_main(args))
    if args.json:
        print(json.dumps({"benchmark": "loss", "runs": args.runs, "seconds": args.seconds,
                          "size": args.size,
                          "reorder": 0.25, "delay_ms": 10, "results": results}, indent=2))  # fmt: skip
    else:
        for r in results:
            print(f"{r['loss_percent']:>3}% loss per leg: {r['fps']:5.1f} fps  "
                  f"{r['nacks']:6.1f} NACK/s  {r['plis']:5.2f} PLI/s  "
                  f"(SFU: {r['sfu_retransmitted']:.1f} resent/s, {r['sfu_pli_sent']:.2f} PLI/s sent, "
                  f"NACKed packets cut: {r['sfu_nack_duplicate']:.0f} duplicate, "
                  f"{r['sfu_nack_over_budget']:.0f} over budget, {r['sfu_nack_too_soon']:.0f} too soon, "
                  f"{r['sfu_nack_resend_cap']:.0f} resent enough)")  # fmt: skip
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
