"""Several nodes and workers, as separate `mediaserver` processes: pairs across
them, media through the pair's node (aiortc peers), and recovery when a node or a
worker is killed. Runs in the private network namespace (make test)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mediaserver.netns import SERVER_IP
from tests.support.http_client import http_get
from tests.support.peers import AiortcPeer, wait_for
from tests.support.redis_server import CLUSTER_SECRET, RedisServer
from tests.support.signalling_client import Client

pytestmark = pytest.mark.netns

MEDIASERVER = [sys.executable, "-m", "mediaserver.cli"]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_udp_range(n: int) -> int:
    """A base port with n free UDP ports after it."""
    for _ in range(50):
        base = free_port(socket.SOCK_DGRAM)
        if base + n > 65535:
            continue
        socks = []
        try:
            for i in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("0.0.0.0", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port range")


class Node:
    """One `mediaserver` process (JSON logs in a file)."""

    def __init__(self, tmp: Path, name: str, *args: str) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = free_port()
        self.log = tmp / f"{name}.log"
        argv = ["--host", "127.0.0.1", "--port", str(self.port), "--announced-ip", SERVER_IP,
                "--db", str(tmp / f"{name}.db"), "--data-key-file", str(tmp / f"{name}.key"),
                "--log-format", "json", "--skip-cooldown", "0", *args]
        self._log = open(self.log, "w")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(MEDIASERVER + argv, stdout=self._log, stderr=self._log)
        self.http = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}/ws"

    def get(self, path: str) -> tuple[int, str]:
        return http_get(self.http + path)

    async def wait_nodes(self, n: int, timeout: float = 15) -> None:
        """Until /healthz answers and the node sees n live nodes (itself included)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            status, body = await asyncio.to_thread(self.get, "/healthz")
            if status == 200 and json.loads(body)["nodes"] == n:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} never saw {n} nodes: {self.log.read_text()[-2000:]}")

    async def metrics(self) -> dict[str, Any]:
        status, text = await asyncio.to_thread(self.get, "/metrics")
        assert status == 200
        return {f.name: f for f in text_string_to_metric_families(text)}

    def records(self) -> list[dict[str, Any]]:
        self._log.flush()
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


async def _close_peer(peer: AiortcPeer) -> None:
    # aiortc's close waits forever for a receiver whose RTCP task never started
    # (its server node was killed mid-handshake); its decoder thread would then keep
    # the test process from exiting, so stop the decoders directly
    try:
        await asyncio.wait_for(peer.close(), 5)
    except TimeoutError:
        for transceiver in peer.pc.getTransceivers():
            transceiver.receiver._RTCRtpReceiver__stop_decoder()


class Visitor:
    """A WebSocket client and an aiortc peer acting as the browser does: offers
    after `queued`, answers `reoffer` with a fresh RTCPeerConnection."""

    def __init__(self, url: str, source: str) -> None:
        self.url, self.source = url, source
        self.client: Client | None = None
        self.peer: AiortcPeer | None = None
        self.log: list[tuple[float, dict[str, Any]]] = []
        self.answer_ports: list[int] = []
        self._pump: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self.client = await Client.open(self.url, source=self.source)
        await self.client.hello()
        self._pump = asyncio.create_task(self._run())

    async def start(self) -> None:
        assert self.client is not None
        await self.client.send("start")
        await self.wait_for("queued")

    async def _offer(self) -> None:
        assert self.client is not None
        if self.peer is not None:
            await _close_peer(self.peer)
        self.peer = AiortcPeer(160, 120)
        await self.client.send("offer", sdp=await self.peer.offer())

    async def _run(self) -> None:
        assert self.client is not None
        while True:
            msg = await self.client._pending.get()
            self.log.append((time.monotonic(), msg))
            kind = msg["type"]
            if (kind == "queued" and self.peer is None) or kind == "reoffer":
                await self._offer()  # the first offer, or a fresh one for the pair's node
            elif kind == "answer" and self.peer is not None:
                self.answer_ports.append(int(re.search(r"a=candidate:\S+ 1 udp \d+ \S+ (\d+)", msg["sdp"])[1]))
                await self.peer.accept(msg["sdp"])

    def kinds(self) -> list[str]:
        return [m["type"] for _, m in self.log]

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 10) -> float:
        """Until the count-th message of this kind arrived; its arrival time."""
        ok = await wait_for(lambda: self.kinds().count(kind) >= count, timeout, 0.02)
        assert ok, f"no {kind} #{count} in {self.kinds()}"
        return [t for t, m in self.log if m["type"] == kind][count - 1]

    def frames(self) -> int:
        return self.peer.frames("video") if self.peer is not None else 0

    async def media_flows(self, timeout: float = 20) -> None:
        """Video from the current partner keeps arriving (10 more frames decoded)."""
        start = self.frames() if self.peer is not None else 0
        peer = self.peer
        ok = await wait_for(
            lambda: self.peer is not peer or self.frames() >= start + 10, timeout
        )
        if self.peer is not peer:  # re-offered meanwhile: count on the new connection
            ok = await wait_for(lambda: self.frames() >= 10, timeout)
        assert ok, f"{self.source}: {self.frames()} frames, messages {self.kinds()}"

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        if self.client is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.client.close(), 5)
        if self.peer is not None:
            await _close_peer(self.peer)


async def _close_all(visitors: list[Visitor]) -> None:
    for v in visitors:
        await v.close()


async def test_nodes_on_redis_pair_across_nodes_and_survive_a_killed_node(tmp_path):
    with RedisServer() as redis:
        nodes = [
            Node(tmp_path / n, n, "--workers", "1", "--redis-url", redis.url,
                 "--cluster-secret", CLUSTER_SECRET, "--node-id", n, "--udp-port", "0")
            for n in ("na", "nb", "nc")
        ]
        visitors: list[Visitor] = []
        try:
            for node in nodes:
                await node.wait_nodes(3)
            na, nb, nc = nodes
            x = Visitor(na.ws, "127.0.0.2")
            y = Visitor(nb.ws, "127.0.0.3")
            w = Visitor(nc.ws, "127.0.0.4")
            visitors += [x, y, w]

            # x waits alone with its media on node a; y, on node b, is matched with it,
            # and y's offer goes to the pair's node: a
            await x.connect()
            await x.start()
            assert await wait_for(lambda: len(x.answer_ports) == 1, 10)
            await y.connect()
            await y.start()
            await x.wait_for("matched")
            await y.wait_for("matched")
            # one node holds the pair's media (y may have offered to its own node
            # before the pair was confirmed: then it was asked for a new offer)
            assert await wait_for(lambda: y.answer_ports[-1:] == x.answer_ports, 10)
            await x.media_flows()
            await y.media_flows()
            sessions = {n.name: json.loads(n.get("/healthz")[1])["sessions"] for n in nodes}
            assert sessions == {"na": 2, "nb": 0, "nc": 0}
            # chat crosses nodes too
            await x.client.send("chat", text="hello from a")
            assert await wait_for(lambda: any(m.get("text") == "hello from a" for _, m in y.log), 5)

            # w waits on node c with its media there; x stops: y is queued again and
            # meets w, whose node places the pair on c, so y is asked for a new offer
            await w.connect()
            await w.start()
            assert await wait_for(lambda: len(w.answer_ports) == 1, 10)
            await x.client.send("stop")
            await x.wait_for("stopped")
            await y.wait_for("matched", 2)
            await w.wait_for("matched")
            assert await wait_for(lambda: y.answer_ports[-1:] == w.answer_ports, 10)
            assert w.answer_ports != x.answer_ports
            assert "reoffer" in y.kinds()[y.kinds().index("partner_left"):]
            await y.media_flows()
            await w.media_flows()

            # node c dies: y (whose pair's media was there) is told within 5 s and
            # queued again; it meets x, who was waiting, with media on a live node
            await x.client.send("start")
            await x.wait_for("queued", 2)
            killed_at = time.monotonic()
            nc.proc.kill()
            told = await y.wait_for("partner_left", 2, timeout=10)
            assert told - killed_at < 5.0
            await y.wait_for("matched", 3, timeout=10)
            await x.wait_for("matched", 2, timeout=10)
            await x.media_flows()
            await y.media_flows()
            # w's WebSocket went with its node; it comes back through another
            assert await wait_for(lambda: w.client.ws.close_code is not None, 5)
            await w.close()
            w2 = Visitor(na.ws, "127.0.0.5")
            visitors.append(w2)
            await w2.connect()
            await w2.start()
            for node in (na, nb):
                await node.wait_nodes(2)
        except BaseException:
            for node in nodes:
                print(node.name, node.log.read_text()[-3000:])
            print("w", w.kinds())
            raise
        finally:
            await _close_all(visitors)
            for node in nodes:
                node.stop()


async def _worker_of(node: Node, before: dict[str, float]) -> tuple[str, dict[str, float]]:
    """Which worker's WebSocket count went up since `before`."""
    for _ in range(50):
        families = await node.metrics()
        now = {s.labels["worker"]: s.value
               for s in families["mediaserver_websocket_connections"].samples}
        grown = [w for w, n in now.items() if n > before.get(w, 0)]
        if grown:
            return grown[0], now
        await asyncio.sleep(0.05)
    raise AssertionError("no worker gained the connection")


async def test_workers_share_one_queue_and_a_killed_worker_is_replaced(tmp_path):
    base = free_udp_range(2)
    node = Node(tmp_path, "node", "--workers", "2", "--udp-port", str(base))
    visitors: list[Visitor] = []
    try:
        await node.wait_nodes(2)
        # three visitors on worker 0 and one on worker 1 (the kernel spreads accepts)
        by_worker: dict[str, list[Visitor]] = {"0": [], "1": []}
        counts: dict[str, float] = {}
        for i in range(60):
            v = Visitor(node.ws, f"127.0.1.{i + 2}")
            visitors.append(v)
            await v.connect()
            worker, counts = await _worker_of(node, counts)
            by_worker[worker].append(v)
            if len(by_worker["0"]) >= 3 and by_worker["1"]:
                break
        assert len(by_worker["0"]) >= 3 and by_worker["1"], "connections all went one way"
        p, q, x = by_worker["0"][:3]
        y = by_worker["1"][0]
        for v in visitors:
            if v not in (p, q, x, y):
                await v.close()
        visitors = [p, q, x, y]

        # p and q: the first pair, on an empty server: media on their own worker 0
        await p.start()
        assert await wait_for(lambda: p.answer_ports == [base], 10)
        await q.start()
        await q.wait_for("matched")
        assert await wait_for(lambda: q.answer_ports[-1:] == [base], 10)
        # x waits: its media goes to the least-loaded worker, 1; y (on worker 1) meets
        # x, and the pair's media is on worker 1 while x's WebSocket is on worker 0
        await asyncio.sleep(1.0)  # the coordinator's load report (every 0.5 s)
        await x.start()
        assert await wait_for(lambda: x.answer_ports == [base + 1], 10)
        await y.start()
        await x.wait_for("matched")
        await y.wait_for("matched")
        assert await wait_for(lambda: y.answer_ports[-1:] == [base + 1], 10)
        for v in (p, q, x, y):
            await v.media_flows()

        # kill -9 worker 1 (y's WebSocket, x's and y's media): x is told at once,
        # asked for a new offer and queued again; p and q on worker 0 go on
        pids = {r["worker"]: r["pid"] for r in node.records() if r.get("event") == "worker_started"}
        killed_at = time.monotonic()
        os.kill(pids[1], signal.SIGKILL)
        told = await x.wait_for("partner_left", timeout=5)
        assert told - killed_at < 5.0
        await x.wait_for("queued", 2)
        await x.wait_for("reoffer")
        for v in (p, q):
            await v.media_flows()
            assert "partner_left" not in v.kinds()
        # the supervisor starts worker 1 again
        assert await wait_for(
            lambda: sum(1 for r in node.records() if r.get("event") == "worker_started") == 3, 10
        )
        await node.wait_nodes(2)
        # y comes back (through either worker) and meets x again, media flowing
        await y.close()
        y2 = Visitor(node.ws, "127.0.2.2")
        visitors.append(y2)
        await y2.connect()
        await y2.start()
        await x.wait_for("matched", 2)
        await y2.wait_for("matched")
        await y2.media_flows()
        await x.media_flows()
        # the supervisor drains and exits 0 on SIGTERM
        node.proc.send_signal(signal.SIGTERM)
        await x.client.send("stop")
        await p.client.send("stop")
        assert await asyncio.to_thread(node.proc.wait, 15) == 0
    finally:
        await _close_all(visitors)
        node.stop()


STATUS_HISTORY_JS = """
() => {
  window.statuses = [];
  const el = document.querySelector('#status');
  new MutationObserver(() => window.statuses.push(el.textContent))
    .observe(el, {childList: true, characterData: true, subtree: true});
}
"""


@pytest.mark.timeout(180)
async def test_the_page_reconnects_when_its_worker_dies(tmp_path):
    from playwright.async_api import async_playwright

    from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
    from tests.e2e.test_web_client import DESKTOP, start, wait_status, wait_video

    base = free_udp_range(2)
    node = Node(tmp_path, "node", "--workers", "2", "--udp-port", str(base))
    try:
        await node.wait_nodes(2)
        url = f"http://localhost:{node.port}/"
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                a = await browser.new_page(viewport=DESKTOP)
                b = await browser.new_page(viewport=DESKTOP)
                for page in (a, b):
                    await page.goto(url)
                await start(a)
                await wait_status(a, "looking for someone")
                worker_a, _ = await _worker_of(node, {})
                await start(b)
                for page in (a, b):
                    await wait_status(page, "connected")
                    await wait_video(page)

                # A's worker dies: A's page reconnects by itself (to the live worker,
                # or the restarted one) and queues again; B is told and queued again;
                # they meet again and see each other
                pids = {str(r["worker"]): r["pid"] for r in node.records()
                        if r.get("event") == "worker_started"}
                await a.evaluate(STATUS_HISTORY_JS)
                os.kill(pids[worker_a], signal.SIGKILL)
                # told at once by the coordinator (tests/e2e/test_faults asserts that on
                # the protocol); the page's status follows within a few seconds on a
                # loaded machine (CI: once over 5 s with two Chromium pages and 2 workers)
                await wait_status(b, "stranger left", "looking for someone", timeout=10)
                for page in (a, b):
                    assert await wait_status(page, "connected", timeout=20) == "Connected"
                for page in (a, b):
                    await wait_video(page)
                seen = await a.evaluate("() => window.statuses")
                assert any("reconnecting" in text.lower() for text in seen), seen
            finally:
                await browser.close()
    finally:
        node.stop()
