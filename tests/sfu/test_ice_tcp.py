"""ICE over TCP through a started Sfu on loopback: the passive candidate in the
answer, STUN checks over a framed connection, and the connection limits (per
address, total, unchecked, oversized frames)."""

from __future__ import annotations

import asyncio
import re
import struct

import pytest
from aioice import stun

from mediaserver.config import Config
from mediaserver.sfu.sdp import CANDIDATE_PRIORITY_IPV6, CANDIDATE_PRIORITY_TCP
from mediaserver.sfu.server import Sfu, SfuConfig
from tests.support import DATA

OFFER = (DATA / "offer_chromium.sdp").read_text()
CLIENT_UFRAG, CLIENT_PWD = "gwse", "0/Ae9XPhetpJSkBuUXbcmY1j"  # as in offer_chromium.sdp


@pytest.fixture
async def sfu():
    server = Sfu(SfuConfig(host="127.0.0.1", announced_ip="127.0.0.1", tcp_port=0))
    await server.start()
    assert server.udp is not None and server.udp.tcp is not None
    server.udp.tcp.check_timeout = 1.0
    yield server
    await server.close()


def field(answer: str, name: str) -> str:
    match = re.search(rf"a={name}:(\S+)", answer)
    assert match
    return match.group(1)


def check(answer: str) -> bytes:
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{field(answer, 'ice-ufrag')}:{CLIENT_UFRAG}"
    request.attributes["PRIORITY"] = 1853824767
    request.attributes["ICE-CONTROLLING"] = 0x1234567890ABCDEF
    request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity(field(answer, "ice-pwd").encode())
    data = bytes(request)
    return struct.pack("!H", len(data)) + data


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(100), within) == b""
    except (TimeoutError, ConnectionResetError):
        return False


async def test_answer_has_a_passive_tcp_candidate_below_udp(sfu: Sfu) -> None:
    answer = sfu.create_session(OFFER).answer
    tcp = [line for line in answer.splitlines() if " tcp " in line and "candidate" in line]
    assert tcp
    assert all(line.endswith(f"127.0.0.1 {sfu.tcp_port} typ host tcptype passive") for line in tcp)
    assert all(int(line.split()[3]) == CANDIDATE_PRIORITY_TCP for line in tcp)
    assert CANDIDATE_PRIORITY_TCP < CANDIDATE_PRIORITY_IPV6
    # ... and in the answer to an ICE restart
    session = next(iter(sfu.sessions.values()))
    restart = OFFER.replace("a=ice-ufrag:gwse", "a=ice-ufrag:rst1").replace(
        CLIENT_PWD, "restartpasswordrestartp"
    )
    assert f"{sfu.tcp_port} typ host tcptype passive" in sfu.restart_ice(session.id, restart)


async def test_off_by_default() -> None:
    server = Sfu(SfuConfig(host="127.0.0.1", announced_ip="127.0.0.1"))
    await server.start()
    try:
        assert server.tcp_port is None
        assert " tcp " not in server.create_session(OFFER).answer
    finally:
        await server.close()


async def test_a_valid_check_over_tcp_is_answered_and_binds_the_connection(sfu: Sfu) -> None:
    session = sfu.create_session(OFFER)
    assert sfu.tcp_port is not None
    reader, writer = await connect(sfu.tcp_port)
    writer.write(check(session.answer))
    length = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 2))[0]
    response = stun.parse_message(await reader.readexactly(length))
    assert response.message_class == stun.Class.RESPONSE
    local_port = writer.get_extra_info("sockname")[1]
    # the mapped address is the connection's own port, without the TCP flag
    assert response.attributes["XOR-MAPPED-ADDRESS"] == ("127.0.0.1", local_port)
    assert session.address is not None and session.address[1] & 0xFFFF == local_port
    # a checked connection outlives the check timeout
    assert not await closed_by_server(reader, 2.5)
    writer.close()


async def test_a_connection_without_a_valid_check_is_closed(sfu: Sfu) -> None:
    assert sfu.tcp_port is not None
    reader, writer = await connect(sfu.tcp_port)
    writer.write(b"\x00\x04\x00\x01\x00\x00")  # a frame, but no valid check
    assert await closed_by_server(reader, 3.0)
    assert sfu.counters()["tcp_unchecked"] == 1
    writer.close()


async def test_an_oversized_frame_closes_the_connection(sfu: Sfu) -> None:
    assert sfu.tcp_port is not None
    reader, writer = await connect(sfu.tcp_port)
    writer.write(b"\xff\xff" + b"x" * 100)
    assert await closed_by_server(reader, 1.0)
    counters = sfu.counters()
    assert counters["tcp_frame_too_big"] == 1 and counters["tcp_too_big"] == 1
    writer.close()


async def test_connections_per_address_and_in_total_are_bounded(sfu: Sfu) -> None:
    assert sfu.udp is not None and sfu.udp.tcp is not None and sfu.tcp_port is not None
    tcp = sfu.udp.tcp
    tcp.max_per_address = 3
    conns = [await connect(sfu.tcp_port) for _ in range(4)]
    assert await closed_by_server(conns[3][0], 1.0)
    assert not await closed_by_server(conns[0][0], 0.2)
    assert len(tcp) == 3 and sfu.counters()["tcp_refused_per_address"] == 1
    tcp.max_per_address, tcp.max_connections = 100, 3
    extra = await connect(sfu.tcp_port)
    assert await closed_by_server(extra[0], 1.0)
    assert sfu.counters()["tcp_refused_full"] == 1
    for _, writer in [*conns, extra]:
        writer.close()


def test_tcp_port_is_checked() -> None:
    with pytest.raises(ValueError, match="--tcp-port must be 0..65535"):
        Config(tcp_port=70000).validate()
    with pytest.raises(ValueError, match="--tcp-port \\+ --workers"):
        Config(tcp_port=65535, workers=2).validate()
