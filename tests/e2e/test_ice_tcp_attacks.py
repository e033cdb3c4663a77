"""Attacks on the ICE-TCP port while a call flows over it: garbage framing, a
connection flood (full connections that never send a valid check), a spoofed SYN
flood, and the memory a half-open connection costs.

The call is two synthetic peers (benchmarks/peers/webrtc.py, transport "tcp": real
ICE, DTLS and SRTP over RFC 4571 frames) on loopback; the attacks come from the
namespace's other address to SERVER_IP (the server listens on every address).
Spoofed SYNs are written with a raw socket: the private namespace only.

    python -m mediaserver.netns -- python -m pytest tests/e2e/test_ice_tcp_attacks.py -q
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import select
import socket
import struct
import threading

import pytest
from aiortc.rtp import RtpPacket

from benchmarks.peers.webrtc import VIDEO_PT, FramedStream, KeepAlive, SyntheticPeer, handshake
from mediaserver._srtp import PROFILE_AEAD_AES_128_GCM, Srtp
from mediaserver.netns import CLIENT_IP, SERVER_IP
from mediaserver.sfu.dtls import DtlsCertificate
from mediaserver.sfu.server import SessionState, Sfu, SfuConfig
from tests.support.peers import wait_for

pytestmark = pytest.mark.netns

HALF_OPEN_BOUND = 16 * 1024
"""Bytes of this process's memory one accepted, never-checked connection may cost:
the router's buffers (3.6 KB), the socket object, the bookkeeping."""


class Call:
    """A publisher sending 400 packets/s over ICE-TCP, a subscriber counting what it
    decrypts: both from threads, so the test's event loop only runs the server."""

    def __init__(self, pub: SyntheticPeer, sub: SyntheticPeer) -> None:
        assert pub.keys is not None and sub.keys is not None
        self.pub, self.sub = pub, sub
        self.tx = Srtp(pub.keys.profile, pub.keys.tx_key, pub.keys.tx_salt)
        self.rx = Srtp(sub.keys.profile, sub.keys.rx_key, sub.keys.rx_salt)
        self.received = 0
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._send, self._recv)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)

    def _send(self) -> None:
        seq = 0
        while not self._stop.wait(0.01):
            packets = []
            for _ in range(4):
                rtp = RtpPacket(
                    payload_type=VIDEO_PT, sequence_number=seq & 0xFFFF, timestamp=seq * 3000,
                    ssrc=self.pub.video_ssrc, payload=os.urandom(900),
                )  # fmt: skip
                packets.append(self.tx.protect(bytes(rtp.serialize())))
                seq += 1
            assert isinstance(self.pub.sock, FramedStream)
            self.pub.sock.send_frames(packets)

    def _recv(self) -> None:
        sock = self.sub.sock
        while not self._stop.is_set():
            select.select([sock], [], [], 0.05)
            while True:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    break
                if 128 <= data[0] <= 191 and not 192 <= data[1] <= 223:
                    try:
                        self.rx.unprotect(data)
                        self.received += 1
                    except ValueError:  # SrtpError: not what the publisher sent
                        self.errors += 1


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_syn(src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    """An IPv4 + TCP SYN from any address (the kernel fills in the IP checksum)."""
    s, d = socket.inet_aton(src[0]), socket.inet_aton(dst[0])
    tcp = struct.pack("!HHLLBBHHH", src[1], dst[1], random.getrandbits(32), 0, 5 << 4, 0x02,
                      64240, 0, 0)  # fmt: skip
    csum = checksum(struct.pack("!4s4sBBH", s, d, 0, socket.IPPROTO_TCP, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, socket.IPPROTO_TCP, 0,
                     s, d)  # fmt: skip
    return ip + tcp


def syn_stats() -> dict[str, int]:
    """The namespace's TcpExt counters of SYN handling (/proc/net/netstat)."""
    with open("/proc/net/netstat") as f:
        lines = [line.split() for line in f if line.startswith("TcpExt:")]
    names, values = lines[0][1:], lines[1][1:]
    return {n: int(v) for n, v in zip(names, values) if "Syn" in n or "ReqQ" in n or "Listen" in n}


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def connect_many(n: int, port: int) -> list[socket.socket]:
    """n connections from CLIENT_IP to the server's ICE-TCP port (accepted, or
    refused and closed by the server)."""
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((CLIENT_IP, 0))
        s.setblocking(False)
        try:
            s.connect((SERVER_IP, port))
        except BlockingIOError:
            pass
        socks.append(s)
        if len(socks) % 50 == 0:
            await asyncio.sleep(0.01)  # let the server accept
    return socks


@pytest.mark.timeout(120)
async def test_attacks_on_the_tcp_port_leave_a_tcp_call_flowing() -> None:
    sfu = Sfu(SfuConfig(announced_ip="127.0.0.1", tcp_port=0, max_tcp_connections=600))
    await sfu.start()
    assert sfu.udp is not None and sfu.udp.tcp is not None and sfu.tcp_port is not None
    tcp, port = sfu.udp.tcp, sfu.tcp_port
    tcp.check_timeout = 2.0
    cert = DtlsCertificate.generate()
    profiles = (PROFILE_AEAD_AES_128_GCM,)
    pub = SyntheticPeer(0, "send", cert, profiles, audio=False, transport="tcp")
    sub = SyntheticPeer(0, "recv", cert, profiles, audio=False, transport="tcp")
    spoofer = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    held: list[socket.socket] = []
    call: Call | None = None
    keepalive: KeepAlive | None = None
    try:
        for peer in (pub, sub):
            session = sfu.create_session(peer.offer())
            peer.accept(session.id, session.answer)
        await asyncio.to_thread(handshake, [pub, sub], 10)
        assert await wait_for(
            lambda: all(s.state is SessionState.CONNECTED for s in sfu.sessions.values()), 5
        )
        sfu.connect(pub.session_id, sub.session_id)
        assert all(s.address and s.address[1] >= 0x10000 for s in sfu.sessions.values())
        call = Call(pub, sub)
        call.start()
        keepalive = KeepAlive([pub, sub])
        keepalive.start()
        assert await wait_for(lambda: call.received >= 100, 5)

        async def flowing() -> int:
            """Packets the subscriber decrypted over the next second (400 sent)."""
            mark = call.received
            await asyncio.sleep(1.0)
            return call.received - mark

        # 1. garbage framing: oversized frames close at once; frames of garbage are
        # dropped and counted, and their connections go at the check timeout
        garbage = []
        for i in range(40):
            s = socket.create_connection((SERVER_IP, port), source_address=(CLIENT_IP, 0))
            if i % 2:
                s.sendall(b"\xff\xff" + os.urandom(2000))
            else:
                s.sendall(b"".join(struct.pack("!H", 200) + os.urandom(200) for _ in range(20)))
            garbage.append(s)
            if i == 7:
                # the per-address bound: the rest of these are refused at accept
                await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        counters = sfu.counters()
        assert counters["tcp_frame_too_big"] >= 1
        assert counters["tcp_refused_per_address"] >= 1
        assert counters["drops"]["srtp_auth"] == 0
        assert await flowing() >= 300
        assert await wait_for(lambda: len(tcp) == 2, tcp.check_timeout + 3)
        for s in garbage:
            s.close()

        # 2. a connection flood of never-checked connections, the per-address bound
        # lifted so that the total bound and the check timeout are what hold; the
        # memory each costs while it is held
        tcp.max_per_address = 10_000
        before = rss()
        held = await connect_many(500, port)
        assert await wait_for(lambda: len(tcp) == 502, 5), len(tcp)
        per_connection = (rss() - before) / 500
        print(f"half-open ICE-TCP connection: {per_connection:.0f} bytes of process memory")
        assert per_connection < HALF_OPEN_BOUND, per_connection
        more = await connect_many(200, port)  # past max_tcp_connections (600)
        held += more
        assert await wait_for(lambda: sfu.counters().get("tcp_refused_full", 0) >= 100, 5)
        assert len(tcp) <= 600
        assert await flowing() >= 300
        # none of them checks in: all closed, the call's two stay
        assert await wait_for(lambda: len(tcp) == 2, tcp.check_timeout + 3), len(tcp)
        assert sfu.counters()["tcp_unchecked"] >= 500
        for s in held:
            s.close()
        held = []

        # 3. spoofed SYNs from addresses that never answer: the kernel's SYN queue
        # (and its cookies) take them; the call goes on and a new peer still connects
        syn_before = syn_stats()
        # sources on the veth's /24 that no host has: the SYN-ACKs wait for ARP
        # that never answers, so the requests stay queued (the SYN queue fills)
        net = ipaddress.ip_network("10.77.0.0/24")
        for i in range(5000):
            src = str(net[100 + i % 150]), 1024 + i
            spoofer.sendto(tcp_syn(src, (SERVER_IP, port)), (SERVER_IP, 0))
            if i % 500 == 499:
                await asyncio.sleep(0.01)
        assert await flowing() >= 300
        syn_after = syn_stats()
        syn = {k: syn_after[k] - syn_before[k] for k in syn_after if syn_after[k] != syn_before[k]}
        print("SYN flood:", syn)
        assert sum(syn.values()) >= 1000, syn  # the listener saw them
        late = SyntheticPeer(1, "recv", cert, profiles, audio=False, transport="tcp")
        try:
            session = sfu.create_session(late.offer())
            late.accept(session.id, session.answer)
            await asyncio.to_thread(handshake, [late], 10)
            assert await wait_for(lambda: session.state is SessionState.CONNECTED, 5)
        finally:
            late.close()
        assert call.errors == 0
        assert sfu.counters()["drops"]["srtp_auth"] == 0
    finally:
        if keepalive is not None:
            keepalive.stop()
        if call is not None:
            call.stop()
        for s in held:
            s.close()
        spoofer.close()
        pub.close()
        sub.close()
        await sfu.close()
