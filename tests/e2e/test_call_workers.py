"""Messages and a call between two connections whose pages are on different workers
of one `mediaserver --workers 2` (one database): the direct message and the call's
control cross the supervisor's bus, the media flows through the pair's worker, and a
hang-up ends it on both. Runs in the private network namespace (make test)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest

from tests.e2e.test_nodes import Node, _close_peer, _worker_of, free_udp_range
from tests.support.peers import AiortcPeer, wait_for
from tests.support.signalling_client import Client

pytestmark = pytest.mark.netns


class Page:
    """A signed-in page with an aiortc peer acting as the browser does in a call:
    offers on `call_started` (and on `reoffer`), accepts the answer."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.peer: AiortcPeer | None = None
        self.log: list[dict[str, Any]] = []
        self._pump = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            msg = await self.client._pending.get()
            self.log.append(msg)
            if msg["type"] in ("call_started", "reoffer"):
                if self.peer is not None:
                    await _close_peer(self.peer)
                self.peer = AiortcPeer(160, 120)
                await self.client.send("offer", sdp=await self.peer.offer())
            elif msg["type"] == "answer" and self.peer is not None:
                await self.peer.accept(msg["sdp"])

    async def wait(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        ok = await wait_for(lambda: any(m["type"] == kind for m in self.log), timeout, 0.02)
        assert ok, f"no {kind} in {[m['type'] for m in self.log]}"
        return [m for m in self.log if m["type"] == kind][-1]

    def frames(self) -> int:
        return self.peer.frames("video") if self.peer is not None else 0

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.client.close(), 5)
        if self.peer is not None:
            await _close_peer(self.peer)


def rest(node: Node, method: str, path: str, token: str | None = None,
         body: dict[str, Any] | None = None) -> dict[str, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    r = httpx.request(method, node.http + "/api/v1" + path, headers=headers, json=body,
                      timeout=10)
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


async def test_a_message_and_a_call_cross_workers(tmp_path):
    base = free_udp_range(2)
    node = Node(tmp_path, "node", "--workers", "2", "--udp-port", str(base))
    clients: list[Client] = []
    pages: list[Page] = []
    try:
        await node.wait_nodes(2)
        alice = await asyncio.to_thread(rest, node, "POST", "/profiles", None, {
            "username": "alice", "date_of_birth": "1990-05-17", "discoverable": True})
        bobby = await asyncio.to_thread(rest, node, "POST", "/profiles", None, {
            "username": "bobby", "date_of_birth": "1990-05-17", "discoverable": True})
        asked = await asyncio.to_thread(rest, node, "POST", "/connections", alice["token"],
                                        {"handle": "bobby"})
        accepted = await asyncio.to_thread(rest, node, "POST",
                                           f"/connections/{asked['id']}/accept", bobby["token"])
        conversation = accepted["conversation_id"]
        # alice's page on one worker, bobby's on the other (the kernel spreads accepts)
        counts: dict[str, float] = {}
        a = await Client.open(node.ws, source="127.0.1.2")
        clients.append(a)
        await a.hello(token=alice["token"])
        worker_a, counts = await _worker_of(node, counts)
        b = None
        for i in range(60):
            c = await Client.open(node.ws, source=f"127.0.1.{i + 3}")
            clients.append(c)
            worker, counts = await _worker_of(node, counts)
            if worker != worker_a:
                b = c
                break
        assert b is not None, "connections all went one way"
        for c in clients:
            if c not in (a, b):
                await c.close()
        await b.hello(token=bobby["token"])

        # a direct message crosses the bus
        await a.send("direct", conversation_id=conversation, text="from the other worker")
        await a.expect("direct_sent")
        got = await b.expect("direct")
        assert got["text"] == "from the other worker" and got["from"] == "them"

        # a call: ring, answer, media both ways through the pair's worker, hang up
        pa, pb = Page(a), Page(b)
        pages += [pa, pb]
        await a.send("call", conversation_id=conversation)
        call_id = (await pb.wait("call_incoming"))["call_id"]
        await b.send("call_answer", call_id=call_id)
        await pa.wait("call_started")
        await pb.wait("call_started")
        assert await wait_for(lambda: min(pa.frames(), pb.frames()) >= 20, 30), (
            pa.frames(), pb.frames(), [m["type"] for m in pa.log + pb.log])
        await b.send("call_hangup", call_id=call_id)
        for p in (pa, pb):
            ended = await p.wait("call_ended")
            assert ended["reason"] == "hangup"
            assert "queued" not in [m["type"] for m in p.log]
    except BaseException:
        print(node.log.read_text()[-3000:])
        raise
    finally:
        for p in pages:
            await p.close()
        for c in clients:
            with contextlib.suppress(Exception):
                await c.close()
        node.stop()
