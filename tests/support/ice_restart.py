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
import re
from dataclasses import dataclass

from aioice import Connection
from aiortc import sdp as aiortc_sdp
from aiortc.rtcicetransport import RTCIceTransport, candidate_to_aioice

from tests.support.peers import AiortcPeer


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
