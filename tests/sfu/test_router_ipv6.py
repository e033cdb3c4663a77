"""The C router keyed on IPv6 socket addresses: through Router.feed() (no socket),
and over one dual-stack loopback socket that takes IPv4 and IPv6 peers at once."""

import os
import socket

import pytest
from aiortc.rtp import RtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver._router import SLOW_STUN, Router
from mediaserver._srtp import PROFILE_AEAD_AES_128_GCM, Srtp
from mediaserver.sfu.udp import UdpEndpoint, open_media_socket
from tests.sfu.test_router import keys

PROFILE = PROFILE_AEAD_AES_128_GCM
STUN = b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + b"\x00" * 12  # a binding request header


def rtp(seq: int, payload: bytes = b"v" * 100, ssrc: int = 1234) -> bytes:
    return bytes(
        RtpPacket(payload_type=96, sequence_number=seq, ssrc=ssrc, payload=payload).serialize()
    )


class Pair:
    """Two peers of one router, each publishing to the other (keys as in test_router)."""

    def __init__(self, router: Router, a: tuple[str, int], b: tuple[str, int]):
        self.router = router
        self.a, self.b = router.add_peer(), router.add_peer()
        router.bind_address(self.a, *a)
        router.bind_address(self.b, *b)
        router.set_srtp(self.a, PROFILE, *keys(1, PROFILE), *keys(3, PROFILE))
        router.set_srtp(self.b, PROFILE, *keys(7, PROFILE), *keys(5, PROFILE))
        to_b = router.add_out_stream(self.b, 0xB, 90000)
        to_a = router.add_out_stream(self.a, 0xA, 90000)
        router.add_route(self.a, 96, to_b, 96)
        router.add_route(self.b, 96, to_a, 96)
        self.a_tx, self.a_rx = Srtp(PROFILE, *keys(1, PROFILE)), Srtp(PROFILE, *keys(3, PROFILE))
        self.b_tx, self.b_rx = Srtp(PROFILE, *keys(7, PROFILE)), Srtp(PROFILE, *keys(5, PROFILE))


def test_ipv6_peers_forward_both_ways():
    a, b = ("fd77::2", 5000), ("2001:db8:ffff:1::7", 6000)
    w = Pair(Router(-1, max_peers=4, max_streams=4, cache_packets=64), a, b)
    assert w.router.family == socket.AF_INET6  # socketless: dual-stack
    sent, slow = w.router.feed(w.a_tx.protect(rtp(1, b"to b")), *a, 0.0)
    assert slow == [] and [addr for _, addr in sent] == [b]
    assert RtpPacket.parse(w.b_rx.unprotect(sent[0][0])).payload == b"to b"
    sent, _ = w.router.feed(w.b_tx.protect(rtp(1, b"to a")), *b, 0.0)
    assert [addr for _, addr in sent] == [a]
    assert RtpPacket.parse(w.a_rx.unprotect(sent[0][0])).payload == b"to a"
    # the slow path names an IPv6 peer in its compressed form
    _, slow = w.router.feed(STUN, "fd77:0:0:0:0:0:0:2", 5000, 0.0)
    assert slow == [(SLOW_STUN, w.a, a, STUN)]
    assert w.router.counters()["forwarded_packets"] == 2


def test_an_ipv4_peer_has_one_key_as_text_or_as_mapped_ipv6():
    a, b = ("10.0.0.1", 5000), ("fd77::2", 6000)
    w = Pair(Router(-1, max_peers=4, max_streams=4, cache_packets=64), a, b)
    # what a dual-stack socket reports for an IPv4 peer: ::ffff:10.0.0.1
    sent, _ = w.router.feed(w.a_tx.protect(rtp(1)), "::ffff:10.0.0.1", 5000, 0.0)
    assert [addr for _, addr in sent] == [b]
    sent, _ = w.router.feed(w.b_tx.protect(rtp(1)), *b, 0.0)
    assert [addr for _, addr in sent] == [a]  # dotted quad, as Python keys it
    _, slow = w.router.feed(STUN, "::ffff:10.0.0.1", 5000, 0.0)
    assert slow == [(SLOW_STUN, w.a, a, STUN)]


def test_addresses_that_differ_only_in_the_high_64_bits_or_the_port_are_other_peers():
    r = Router(-1, max_peers=8, max_streams=8, cache_packets=64)
    addresses = [("2001:db8:1::1", 9), ("2001:db8:2::1", 9), ("2001:db8:1::1", 10), ("10.0.0.1", 9)]
    peers = [r.add_peer() for _ in addresses]
    for peer, addr in zip(peers, addresses):
        r.bind_address(peer, *addr)
    for peer, addr in zip(peers, addresses):
        _, slow = r.feed(STUN, *addr, 0.0)
        assert slow == [(SLOW_STUN, peer, addr, STUN)]
    # ... and an address nobody bound is nobody's
    _, slow = r.feed(STUN, "2001:db8:3::1", 9, 0.0)
    assert slow[0][1] == -1
    # DTLS only from a bound address: counted, not handed up
    assert r.feed(b"\x16\xfe\xfd" + b"\x00" * 10, "2001:db8:3::1", 9, 0.0) == ([], [])
    assert r.counters()["drops"]["dtls_unknown_address"] == 1


def test_rebinding_moves_a_peer_between_families():
    a, b = ("10.0.0.1", 5000), ("fd77::2", 6000)
    w = Pair(Router(-1, max_peers=4, max_streams=4, cache_packets=64), a, b)
    w.router.bind_address(w.a, "fd77::9", 5000)  # the peer's network changed
    assert w.router.feed(w.a_tx.protect(rtp(1)), *a, 0.0)[0] == []
    sent, _ = w.router.feed(w.a_tx.protect(rtp(2)), "fd77::9", 5000, 0.0)
    assert [addr for _, addr in sent] == [b]
    assert w.router.counters()["drops"]["unknown_address"] == 1


def test_ipv6_address_table_survives_churn():
    r = Router(-1, max_peers=64, max_streams=8, cache_packets=64)
    for round_ in range(20):
        peers = [r.add_peer() for _ in range(64)]
        for i, p in enumerate(peers):
            # one /64 per round, addresses inside it and IPv4 ones mixed
            host = f"2001:db8:{round_:x}::{i:x}" if i % 2 else f"10.{round_}.0.{i}"
            r.bind_address(p, host, 1000 + i)
        for i, p in enumerate(peers):
            host = f"2001:db8:{round_:x}::{i:x}" if i % 2 else f"10.{round_}.0.{i}"
            assert r.feed(STUN, host, 1000 + i, 0.0)[1][0][1] == p
        for p in peers:
            r.remove_peer(p)
    assert r.add_peer() == 0


ADDRESSES = st.one_of(
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=4).map(lambda ip: f"::ffff:{ip}"),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(ADDRESSES, st.integers(0, 65535)), min_size=1, max_size=12), st.data())
def test_any_addresses_are_found_as_bound_and_only_then(addresses, data):
    r = Router(-1, max_peers=16, max_streams=4, cache_packets=64)
    keyed = {}  # the router's idea of one address: IPv4 and ::ffff:IPv4 are one
    for host, port in addresses:
        key = (socket.inet_pton(socket.AF_INET6, host if ":" in host else f"::ffff:{host}"), port)
        if key not in keyed:
            peer = r.add_peer()
            r.bind_address(peer, host, port)
            keyed[key] = peer
    for host, port in addresses:
        key = (socket.inet_pton(socket.AF_INET6, host if ":" in host else f"::ffff:{host}"), port)
        assert r.feed(STUN, host, port, 0.0)[1][0][1] == keyed[key]
    # another port of a bound address is nobody's
    host, port = data.draw(st.sampled_from(addresses))
    key = (socket.inet_pton(socket.AF_INET6, host if ":" in host else f"::ffff:{host}"), port ^ 1)
    assert r.feed(STUN, host, port ^ 1, 0.0)[1][0][1] == keyed.get(key, -1)


def test_an_ipv4_router_refuses_ipv6_peers_and_takes_mapped_ones():
    r = Router(-1, max_peers=4, max_streams=4, cache_packets=64, family=socket.AF_INET)
    assert r.family == socket.AF_INET
    p = r.add_peer()
    with pytest.raises(ValueError, match="an IPv6 address on an IPv4 socket: 'fd77::2'"):
        r.bind_address(p, "fd77::2", 5000)
    r.bind_address(p, "::ffff:10.0.0.1", 5000)
    _, slow = r.feed(STUN, "10.0.0.1", 5000, 0.0)
    assert slow == [(SLOW_STUN, p, ("10.0.0.1", 5000), STUN)]


@pytest.mark.parametrize("host", ["example.org", "fe80::1%ms0", "10.0.0.256", ""])
def test_address_text_that_is_no_address_is_refused(host):
    r = Router(-1, max_peers=4, max_streams=4, cache_packets=64)
    p = r.add_peer()
    with pytest.raises(ValueError, match="not an IP address"):
        r.bind_address(p, host, 5000)
    with pytest.raises(ValueError, match="not an IP address"):
        r.feed(STUN, host, 5000, 0.0)
    with pytest.raises(ValueError, match="must be AF_INET or AF_INET6, not 1"):
        Router(-1, family=socket.AF_UNIX)


def test_drain_over_one_dual_stack_socket_forwards_between_ipv4_and_ipv6_peers():
    server = open_media_socket("::", 0)
    assert server.family == socket.AF_INET6
    port = server.getsockname()[1]
    v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    v4.bind(("127.0.0.1", 0))
    v6.bind(("::1", 0))
    for s in (v4, v6):
        s.settimeout(2)
    try:
        r = Router(server.fileno(), max_peers=4, max_streams=4, cache_packets=64)
        assert r.family == socket.AF_INET6
        a_addr, b_addr = v4.getsockname(), v6.getsockname()[:2]
        w = Pair(r, a_addr, b_addr)
        for round_ in range(3):
            # 70 each way: more than one recvmmsg batch, both families in one batch
            for seq in range(70 * round_, 70 * round_ + 70):
                v4.sendto(w.a_tx.protect(rtp(seq, os.urandom(900))), ("127.0.0.1", port))
                v6.sendto(w.b_tx.protect(rtp(seq, os.urandom(900))), ("::1", port))
            v4.sendto(STUN, ("127.0.0.1", port))
            v6.sendto(STUN, ("::1", port))
            assert r.drain(0.0) == 2
            slow = {(kind, peer, addr) for kind, peer, addr, _ in r.pop_slow()}
            assert slow == {(SLOW_STUN, w.a, a_addr), (SLOW_STUN, w.b, b_addr)}
            got_b = [
                RtpPacket.parse(w.b_rx.unprotect(v6.recv(2048))).sequence_number for _ in range(70)
            ]
            got_a = [
                RtpPacket.parse(w.a_rx.unprotect(v4.recv(2048))).sequence_number for _ in range(70)
            ]
            assert got_a == got_b == list(range(70 * round_, 70 * round_ + 70))
        counters = r.counters()
        assert counters["forwarded_packets"] == 420
        assert counters["drops"]["send_failed"] == 0
        # the slow path's sends reach both families too (SRTCP through sendto)
        assert r.send_rtcp(w.a, bytes([0x80, 201, 0, 1]) + b"\x00\x00\x00\x0b")
        assert r.send_rtcp(w.b, bytes([0x80, 201, 0, 1]) + b"\x00\x00\x00\x0a")
        assert v4.recv(2048) and v6.recv(2048)
    finally:
        for s in (server, v4, v6):
            s.close()


def test_the_endpoint_is_dual_stack_and_sends_slow_path_datagrams_to_both_families():
    endpoint = UdpEndpoint("", 0, max_peers=4, cache_packets=64)
    v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        assert endpoint.families == {socket.AF_INET, socket.AF_INET6}
        v4.bind(("127.0.0.1", 0))
        v6.bind(("::1", 0))
        for s in (v4, v6):
            s.settimeout(2)
        endpoint.sendto(b"four", v4.getsockname())  # ("127.0.0.1", port): as the router names it
        endpoint.sendto(b"six", v6.getsockname()[:2])
        assert v4.recvfrom(64) == (b"four", ("127.0.0.1", endpoint.port))
        assert v6.recv(64) == b"six"
        assert not endpoint.send_errors
    finally:
        endpoint.close()
        v4.close()
        v6.close()


def test_an_ipv4_or_ipv6_bind_takes_only_its_family():
    with open_media_socket("0.0.0.0", 0) as s:
        assert s.family == socket.AF_INET
    with open_media_socket("::1", 0) as s:
        assert s.family == socket.AF_INET6
    endpoint = UdpEndpoint("127.0.0.1", 0, max_peers=4, cache_packets=64)
    try:
        assert endpoint.families == {socket.AF_INET}
        assert endpoint.router.family == socket.AF_INET
    finally:
        endpoint.close()
    endpoint = UdpEndpoint("::1", 0, max_peers=4, cache_packets=64)
    try:
        assert endpoint.families == {socket.AF_INET6}
    finally:
        endpoint.close()
