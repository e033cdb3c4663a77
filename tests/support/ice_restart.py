"""A network change and an ICE restart for an aiortc peer (tests/support/peers.py).

aiortc and aioice have no restartIce(): this does by hand what a browser does when
its network changes. `lose_network` is the old network going away: the peer's
aioice Connection is closed (its sockets with it), what the peer sends is lost and
nothing reaches it. `restart_offer` gathers a new aioice Connection on a new local
address with new credentials and returns the peer's offer again with those
credentials and candidate (the same DTLS fingerprint, m-sections and SSRCs, as
pc.restartIce() makes); `complete_restart` takes the server's answer and runs ICE
on the new Connection. The peer's DTLS transport, its SRTP keys and its RTP senders
and receivers never notice: they read one queue, which the new Connection fills,
and send through the new Connection once it is nominated.

This reaches into aiortc's RTCIceTransport and aioice's Connection (private
attributes, checked against aiortc 1.16 and aioice 0.13): it is test equipment.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from aioice import Connection
from aiortc import sdp as aiortc_sdp
from aiortc.rtcicetransport import RTCIceTransport, candidate_to_aioice

from mediaserver.netns import SERVER_IP
from tests.support.peers import AiortcPeer, wait_for
from tests.support.signalling_client import Client, running_server, start_and_match


@dataclass
class Moving:
    """The state of one peer's move to a new network."""

    transport: RTCIceTransport
    queue: asyncio.Queue[tuple[bytes, int] | None]
    """What the DTLS transport reads: the old Connection's queue, then the new one's."""
    connection: Connection | None = None
    """The Connection on the new network (from restart_offer)."""


def _ice_transport(peer: AiortcPeer) -> RTCIceTransport:
    transports = {t.sender.transport for t in peer.pc.getTransceivers()}
    (dtls,) = transports  # BUNDLE: one transport for audio and video
    transport: RTCIceTransport = dtls.transport
    return transport


async def lose_network(peer: AiortcPeer) -> Moving:
    """The peer's network goes away: its ICE Connection and sockets are closed, what
    it sends from now on is lost (as on a dead interface: no error), and its DTLS
    transport keeps waiting for data, which `complete_restart` brings back."""
    transport = _ice_transport(peer)
    old: Connection = transport._connection
    queue = old._queue

    async def read() -> bytes:
        item = await queue.get()
        if item is None:
            raise ConnectionError("the ICE connection closed")
        return item[0]

    moving = Moving(transport, queue)

    async def send(data: bytes) -> None:
        # lost until the new network's pair is nominated: then it carries everything
        # (as a browser switches to its selected pair), before connect() returns
        new = moving.connection
        if new is not None and new._nominated:
            await new.send(data)

    transport._recv = read  # type: ignore[method-assign]
    transport._send = send  # type: ignore[method-assign]
    old._queue = asyncio.Queue()  # its close() must not end the DTLS transport's reads
    await old.close()
    return moving


async def restart_offer(peer: AiortcPeer, moving: Moving, host: str) -> str:
    """Gather a new Connection on local address `host` (new ufrag, pwd and port) and
    return the peer's offer again with them: what restartIce() would send."""
    old_sdp = peer.pc.localDescription.sdp
    connection = Connection(ice_controlling=True, use_ipv6=False)
    connection._local_candidates = await connection.get_component_candidates(1, [host])
    connection._local_candidates_start = connection._local_candidates_end = True
    assert connection.local_candidates, f"cannot bind to {host}"
    connection._queue = moving.queue  # the DTLS transport reads what it receives
    moving.connection = connection
    candidates = "".join(f"a=candidate:{c.to_sdp()}\r\n" for c in connection.local_candidates)
    offer = re.sub(r"a=candidate:[^\r\n]*\r\n", "", old_sdp)
    offer = re.sub(r"a=end-of-candidates\r\n", "", offer)
    offer = re.sub(r"a=ice-ufrag:\S+", f"a=ice-ufrag:{connection.local_username}", offer)
    offer = re.sub(r"a=ice-pwd:\S+", f"a=ice-pwd:{connection.local_password}", offer)
    # each m-section's candidates follow its c= line
    offer = re.sub(r"(c=IN IP4 [^\r\n]*\r\n)", lambda m: m[1] + candidates, offer)
    return re.sub(r"c=IN IP4 [0-9.]+", f"c=IN IP4 {host}", offer)


async def complete_restart(moving: Moving, answer: str, timeout: float = 10) -> None:
    """Run ICE on the new Connection against the server's answer; once it is
    nominated, the peer's media goes through it."""
    connection = moving.connection
    assert connection is not None, "restart_offer first"
    description = aiortc_sdp.SessionDescription.parse(answer)
    media = description.media[0]
    assert media.ice is not None and description.media
    connection.remote_is_lite = True
    connection.remote_username = media.ice.usernameFragment
    connection.remote_password = media.ice.password
    for candidate in media.ice_candidates:
        await connection.add_remote_candidate(candidate_to_aioice(candidate))
    await connection.add_remote_candidate(None)
    await asyncio.wait_for(connection.connect(), timeout)
    moving.transport._connection = connection
    moving.transport._send = connection.send  # type: ignore[method-assign]


# ---- a live call to move (tests/e2e/test_ice_restart_live.py, benchmarks/ice_restart.py)


@contextlib.contextmanager
def extra_address(ip: str) -> Iterator[None]:
    """A new local address on the peers' side of the namespace's veth, removed
    again on exit (the namespace outlives the test: other tests count its addresses)."""
    shown = subprocess.run(["ip", "-o", "addr", "show", "dev", "ms1"], capture_output=True,
                           text=True, check=True)  # fmt: skip
    added = f" {ip}/" not in shown.stdout
    if added:
        subprocess.run(["ip", "addr", "add", f"{ip}/24", "dev", "ms1"], check=True)
    try:
        yield
    finally:
        if added:
            subprocess.run(["ip", "addr", "del", f"{ip}/24", "dev", "ms1"], check=True)


@contextlib.asynccontextmanager
async def live_call() -> AsyncIterator[tuple[Any, dict[str, Client], dict[str, AiortcPeer]]]:
    """The server, and two matched visitors whose aiortc peers decode each other."""
    # the media socket on the announced address: bound to 0.0.0.0 it would answer A's
    # new address from whichever local address the kernel picks (all of them are
    # local in the namespace), and ICE refuses a reply from another address
    async with running_server(announced_ip=SERVER_IP, udp_host=SERVER_IP) as server:
        clients = {
            "a": await Client.open(server.url, source="127.0.0.2"),
            "b": await Client.open(server.url, source="127.0.0.3"),
        }
        peers = {"a": AiortcPeer(), "b": AiortcPeer()}
        try:
            for client in clients.values():
                await client.hello()
            await start_and_match(clients["a"], clients["b"])
            for name, client in clients.items():
                await client.send("offer", sdp=await peers[name].offer())
                await peers[name].accept((await client.expect("answer"))["sdp"])
            assert await wait_for(lambda: min(p.frames("video") for p in peers.values()) >= 30, 60)
            yield server, clients, peers
        finally:
            for client in clients.values():
                await client.close()
            for peer in peers.values():
                await peer.close()


def session_of(server: Any, index: int) -> str:
    """The id of the `index`th session made (0: A's)."""
    sessions = sorted(server.sfu.sessions.values(), key=lambda s: s.created_at)
    return sessions[index].id


async def resumed_after(peers: dict[str, AiortcPeer], start: float, timeout: float) -> float:
    """Seconds from `start` until both peers decoded a new video frame."""
    loop = asyncio.get_running_loop()
    before = {name: peer.frames("video") for name, peer in peers.items()}
    while loop.time() - start < timeout:
        if all(peer.frames("video") > before[name] for name, peer in peers.items()):
            return loop.time() - start
        await asyncio.sleep(0.005)
    raise AssertionError(f"media did not resume within {timeout} s: {before}")


async def move_and_restart(
    clients: dict[str, Client], peers: dict[str, AiortcPeer], ip: str, outage: float
) -> tuple[float, float]:
    """Peer A loses its network for `outage` seconds, then restarts ICE from local
    address `ip` over its WebSocket. Returns (offer -> answer, offer -> media resumed
    both ways), in seconds; media must resume within 3 s."""
    moving = await lose_network(peers["a"])
    await asyncio.sleep(outage / 2)
    frozen = {name: peer.frames("video") for name, peer in peers.items()}
    await asyncio.sleep(outage / 2)
    now = {name: peer.frames("video") for name, peer in peers.items()}
    assert now == frozen, f"video went on without a network: {frozen} -> {now}"
    loop = asyncio.get_running_loop()
    offer = await restart_offer(peers["a"], moving, ip)
    start = loop.time()
    await clients["a"].send("offer", sdp=offer)
    answer = (await clients["a"].expect("answer"))["sdp"]
    answered = loop.time() - start
    await complete_restart(moving, answer)
    return answered, await resumed_after(peers, start, timeout=3.0)
