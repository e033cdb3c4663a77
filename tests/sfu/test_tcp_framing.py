"""ICE-TCP in the C router: RFC 4571 framing (partial frames, several per read,
garbage), framed sends with backpressure, and media between a TCP and a UDP peer.
Real sockets: a socketpair plays the accepted connection, a loopback UDP socket
the router's media socket."""

from __future__ import annotations

import gc
import os
import select
import socket
import struct
from collections.abc import Iterator

import pytest
from aiortc.rtp import RtpPacket

from mediaserver._router import (
    SLOW_STUN,
    TCP_EOF,
    TCP_PORT_FLAG,
    TCP_TOO_BIG,
    Router,
)
from mediaserver._srtp import PROFILE_AEAD_AES_128_GCM, Srtp
from tests.sfu.test_router import keys

PEER = ("192.0.2.7", 50123)
STUN = b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + bytes(range(12))


def frame(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def unframe(stream: bytes) -> tuple[list[bytes], bytes]:
    """Complete frames in `stream`, and what is left of an incomplete one."""
    frames = []
    while len(stream) >= 2:
        (length,) = struct.unpack("!H", stream[:2])
        if len(stream) < 2 + length:
            break
        frames.append(stream[2 : 2 + length])
        stream = stream[2 + length :]
    return frames, stream


class Conn:
    """A router with a UDP socket and one TCP connection; `client` is the peer's end."""

    def __init__(self, max_tcp: int = 4) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.setblocking(False)
        self.router = Router(self.udp.fileno(), max_peers=8, max_streams=8, max_tcp=max_tcp)
        self.server, self.client = socket.socketpair()
        self.server.setblocking(False)
        self.slot, self.address = self.router.tcp_open(self.server.fileno(), *PEER)

    def read(self) -> tuple[int, list[tuple[int, int, tuple[str, int], bytes]]]:
        status = self.router.tcp_read(self.slot, 1.0)
        return status, self.router.pop_slow()

    def close(self) -> None:
        for s in (self.udp, self.server, self.client):
            s.close()


@pytest.fixture
def conn() -> Iterator[Conn]:
    c = Conn()
    yield c
    c.close()


def test_a_connection_is_its_own_address(conn: Conn) -> None:
    assert conn.address == (PEER[0], PEER[1] + TCP_PORT_FLAG)


def test_several_frames_in_one_read_each_reach_the_slow_path(conn: Conn) -> None:
    messages = [STUN[:8] + bytes([i]) * 12 for i in range(5)]
    conn.client.sendall(b"".join(frame(m) for m in messages))
    status, slow = conn.read()
    assert status == 0
    assert [(kind, peer, addr) for kind, peer, addr, _ in slow] == [
        (SLOW_STUN, -1, conn.address)
    ] * 5
    assert [data for *_, data in slow] == messages
    assert conn.router.counters()["tcp_frames"] == 5


def test_frames_split_anywhere_are_reassembled(conn: Conn) -> None:
    messages = [STUN, STUN[:4] + b"x" * 300, STUN[:1] + b"\x01"]
    stream = b"".join(frame(m) for m in messages)
    got = []
    # one byte per read: the length prefix split too
    for i in range(len(stream)):
        conn.client.sendall(stream[i : i + 1])
        status, slow = conn.read()
        assert status == 0
        got += [data for *_, data in slow]
    assert got == messages


def test_more_frames_than_one_batch_keep_their_order(conn: Conn) -> None:
    messages = [STUN[:8] + struct.pack("!I", i) * 3 for i in range(200)]
    conn.client.sendall(b"".join(frame(m) for m in messages))
    _, slow = conn.read()
    assert [data for *_, data in slow] == messages


def test_garbage_frames_are_dropped_and_counted_and_the_connection_stays(conn: Conn) -> None:
    # an unknown first byte, an empty frame, RTP from an unbound address
    conn.client.sendall(frame(b"\xff" * 40) + frame(b"") + frame(b"\x80" + b"\x00" * 30))
    status, slow = conn.read()
    assert (status, slow) == (0, [])
    drops = conn.router.counters()["drops"]
    assert drops["unknown_first_byte"] == 2
    assert drops["unknown_address"] == 1
    conn.client.sendall(frame(STUN))
    assert conn.read()[1][0][3] == STUN


def test_a_frame_over_the_mtu_bound_closes_the_connection(conn: Conn) -> None:
    conn.client.sendall(frame(STUN) + struct.pack("!H", 1501))
    status, slow = conn.read()
    assert status == TCP_TOO_BIG
    assert [data for *_, data in slow] == [STUN]  # what came before it was handled
    assert conn.router.counters()["tcp_too_big"] == 1


def test_end_of_stream(conn: Conn) -> None:
    conn.client.sendall(frame(STUN) + b"\x00")  # and half a length prefix
    conn.client.shutdown(socket.SHUT_WR)
    status, slow = conn.read()
    assert len(slow) == 1
    if status == 0:  # a short read: the end shows on the next (the loop calls again)
        status, slow = conn.read()
    assert (status, slow) == (TCP_EOF, [])


def test_sends_are_framed(conn: Conn) -> None:
    assert conn.router.tcp_send(conn.slot, b"hello")
    assert conn.router.tcp_send(conn.slot, b"")
    assert conn.client.recv(100) == b"\x00\x05hello\x00\x00"


def test_a_slow_reader_loses_whole_frames_and_the_stream_stays_framed(conn: Conn) -> None:
    conn.server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    conn.client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sent = 0
    payloads = [bytes([i % 251]) * (100 + i % 1300) for i in range(2000)]
    for p in payloads:
        sent += conn.router.tcp_send(conn.slot, p)
    drops = conn.router.counters()["drops"]["tcp_backpressure"]
    assert drops > 0 and sent + drops == len(payloads)
    # the reader catches up: every frame that was not dropped arrives whole and in order
    stream = b""
    conn.client.setblocking(False)
    while True:
        try:
            chunk = conn.client.recv(65536)
        except BlockingIOError:
            if not conn.router.tcp_pending(conn.slot):
                break
            assert conn.router.tcp_send(conn.slot, b"last") or True
            continue
        stream += chunk
    frames, rest = unframe(stream)
    assert rest == b""
    frames = [f for f in frames if f != b"last"]
    assert len(frames) == sent
    assert all(f in payloads for f in frames)
    indexes = [payloads.index(f) for f in frames]
    assert indexes == sorted(indexes)


def test_media_between_a_tcp_and_a_udp_peer() -> None:
    """SRTP from a TCP publisher is forwarded to a UDP subscriber, and back over
    TCP, framed: the same per-packet path as UDP."""
    c = Conn()
    try:
        sub_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sub_sock.bind(("127.0.0.1", 0))
        sub_sock.settimeout(2)
        r = c.router
        profile = PROFILE_AEAD_AES_128_GCM
        pub, sub = r.add_peer(), r.add_peer()
        assert r.bind_address(pub, *c.address)
        assert r.bind_address(sub, *sub_sock.getsockname())
        r.set_srtp(pub, profile, *keys(1, profile), *keys(3, profile))
        r.set_srtp(sub, profile, *keys(7, profile), *keys(5, profile))
        r.add_route(pub, 96, r.add_out_stream(sub, 111, 90000), 100)
        r.add_route(sub, 96, r.add_out_stream(pub, 222, 90000), 100)
        pub_tx, sub_rx = Srtp(profile, *keys(1, profile)), Srtp(profile, *keys(5, profile))
        sub_tx, pub_rx = Srtp(profile, *keys(7, profile)), Srtp(profile, *keys(3, profile))

        def rtp(seq: int) -> bytes:
            return bytes(
                RtpPacket(
                    payload_type=96, sequence_number=seq, ssrc=5, payload=b"v" * 200
                ).serialize()
            )

        c.client.sendall(b"".join(frame(pub_tx.protect(rtp(seq))) for seq in range(10)))
        assert c.read() == (0, [])
        got = [RtpPacket.parse(sub_rx.unprotect(sub_sock.recv(2048))) for _ in range(10)]
        assert [(p.ssrc, p.sequence_number) for p in got] == [(111, s) for s in range(10)]

        for seq in range(10):
            sub_sock.sendto(sub_tx.protect(rtp(seq)), c.udp.getsockname())
        r.drain(1.0)
        c.client.settimeout(2)
        stream = b""
        while len(unframe(stream)[0]) < 10:
            stream += c.client.recv(65536)
        back = [RtpPacket.parse(pub_rx.unprotect(f)) for f in unframe(stream)[0]]
        assert [(p.ssrc, p.sequence_number) for p in back] == [(222, s) for s in range(10)]

        # the connection closes: nothing more is sent to its descriptor
        r.tcp_close(c.slot)
        sub_sock.sendto(sub_tx.protect(rtp(10)), c.udp.getsockname())
        r.drain(1.0)
        assert r.counters()["drops"]["dest_not_ready"] == 1
        assert not r.bind_address(pub, *c.address)  # a closed connection cannot be bound
        sub_sock.close()
    finally:
        c.close()


def test_connections_are_bounded() -> None:
    c = Conn(max_tcp=1)
    try:
        a, b = socket.socketpair()
        with pytest.raises(RuntimeError, match="TCP connections"):
            c.router.tcp_open(a.fileno(), "192.0.2.8", 1)
        c.router.tcp_close(c.slot)
        slot, _ = c.router.tcp_open(a.fileno(), "192.0.2.8", 1)
        assert slot == c.slot
        a.close()
        b.close()
    finally:
        c.close()


def test_drain_reads_every_connection_with_data_in_one_call() -> None:
    c = Conn()
    try:
        r = c.router
        ep = r.tcp_epoll()
        pairs = [socket.socketpair() for _ in range(3)]
        slots = []
        for i, (server, _) in enumerate(pairs):
            server.setblocking(False)
            slots.append(r.tcp_open(server.fileno(), "192.0.2.9", 1000 + i)[0])
        pairs[0][1].sendall(frame(STUN) + frame(STUN[:8] + b"\x01" * 12))
        pairs[2][1].sendall(frame(STUN[:8] + b"\x02" * 12))
        pairs[1][1].close()  # end of stream: reported for closing
        assert select.select([ep], [], [], 1)[0] == [ep]
        closes = r.tcp_drain(2.0)
        assert closes == [(slots[1], TCP_EOF)]
        got = sorted((addr[1] - TCP_PORT_FLAG, data[8]) for _, _, addr, data in r.pop_slow())
        assert got == [(1000, STUN[8]), (1000, 1), (1002, 2)]
        assert r.tcp_last_rx(slots[0]) == 2.0
        for slot in slots:
            r.tcp_close(slot)
        assert r.tcp_drain(3.0) == []
        for a, b in pairs:
            a.close()
            b.close()
    finally:
        c.close()


def test_a_router_that_fails_to_start_closes_no_descriptor() -> None:
    # its epoll descriptor is -1 before anything can raise (fd 0 was closed once)
    os.fstat(0)
    with pytest.raises(ValueError):
        Router(cache_packets=3)
    gc.collect()
    os.fstat(0)
