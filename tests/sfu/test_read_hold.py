"""The router's read hold (Router.set_read_hold, --read-hold-us): after a wake-up
that found few packets it sleeps once, at most the hold, and reads again. Real
loopback sockets and real SRTP: a publisher thread sends at a steady rate, the test
drains like the event loop does (on readable), the subscriber checks what came.
Behaviour only: everything is forwarded, in order, no later than the hold allows;
the speed is benchmarks/forward.py's (--read-hold-us)."""

import select
import socket
import struct
import threading
import time

import pytest
from aiortc.rtp import RtpPacket

from mediaserver._router import Router
from mediaserver.sfu.udp import UdpEndpoint, open_media_socket
from tests.sfu.test_router_ipv6 import Pair, rtp

# what a loaded 2-core machine may add to a delivery besides the hold: a thread
# preempted between the send and the drain (generous: the claim is that the hold
# adds at most itself, not some multiple of it)
SLACK_NS = 15_000_000


def run_stream(hold_us: int, packets: int, interval: float) -> tuple[Router, list[int], int, int]:
    """Publisher a sends `packets` SRTP packets `interval` s apart through a router
    holding reads for `hold_us`; returns the router, the sequence numbers b got,
    the longest send-to-forward delay (ns) and how many drains it took."""
    server = open_media_socket("127.0.0.1", 0)
    port = server.getsockname()[1]
    a, b = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    b.setblocking(False)
    router = Router(server.fileno(), max_peers=4, max_streams=4, cache_packets=64)
    router.set_read_hold(hold_us)
    pair = Pair(router, a.getsockname(), b.getsockname())
    # protected up front: the sender thread only stamps the send time in
    # (the stamp travels in the RTP payload, so it is inside the SRTP envelope)
    got: list[int] = []
    worst = drains = 0

    def send() -> None:
        start = time.monotonic()
        for seq in range(packets):
            time.sleep(max(0.0, start + seq * interval - time.monotonic()))
            stamp = struct.pack("!Q", time.monotonic_ns())
            a.sendto(pair.a_tx.protect(rtp(seq, stamp)), ("127.0.0.1", port))

    sender = threading.Thread(target=send)
    try:
        sender.start()
        deadline = time.monotonic() + packets * interval + 5
        while len(got) < packets and time.monotonic() < deadline:
            if not select.select([server], [], [], 0.1)[0]:
                continue
            router.drain(0.0)
            drains += 1
            forwarded_at = time.monotonic_ns()
            while True:
                try:
                    packet = RtpPacket.parse(pair.b_rx.unprotect(b.recv(2048)))
                except BlockingIOError:
                    break
                got.append(packet.sequence_number)
                sent_at = struct.unpack("!Q", packet.payload[:8])[0]
                worst = max(worst, forwarded_at - sent_at)
    finally:
        sender.join()
        for s in (server, a, b):
            s.close()
    return router, got, worst, drains


def test_a_hold_drains_everything_in_order_and_adds_at_most_the_hold():
    hold_us, packets = 20_000, 150
    router, got, worst, drains = run_stream(hold_us, packets, interval=0.002)  # 500/s
    assert got == list(range(packets))
    counters = router.counters()
    assert counters["forwarded_packets"] == packets
    assert counters["drops"]["send_failed"] == 0
    # it held (500/s promises 10 packets in 20 ms) and the holds brought packets in
    assert counters["read_holds"] > 0
    assert counters["held_packets"] > counters["read_holds"]
    assert drains < packets / 2  # several packets per wake-up, not one
    # a packet waits for at most one hold: the one after the wake-up before it
    assert worst < hold_us * 1000 + SLACK_NS


def test_no_hold_where_the_rate_would_not_pay_for_its_wake_up():
    # 500/s and a 2 ms cap: one packet expected per hold, less than the two that pay
    # for the hold's own wake-up, so every wake-up reads once as without a hold
    router, got, _, _ = run_stream(2_000, 60, interval=0.002)
    assert got == list(range(60))
    assert router.counters()["read_holds"] == 0


def test_no_hold_by_default():
    router, got, _, _ = run_stream(0, 30, interval=0.002)
    assert got == list(range(30))
    assert router.read_hold_us == 0
    assert router.counters()["read_holds"] == router.counters()["held_packets"] == 0


def test_the_hold_is_bounded_and_reaches_the_router_from_the_endpoint():
    router = Router(-1, max_peers=4, max_streams=4, cache_packets=64)
    for bad in (-1, 100_001):
        with pytest.raises(ValueError, match="read hold must be within 0..100000 us"):
            router.set_read_hold(bad)
    endpoint = UdpEndpoint("127.0.0.1", 0, max_peers=4, cache_packets=64, read_hold_us=300)
    try:
        assert endpoint.router.read_hold_us == 300
    finally:
        endpoint.close()
    with pytest.raises(ValueError, match="read hold"):
        UdpEndpoint("127.0.0.1", 0, max_peers=4, cache_packets=64, read_hold_us=-5)


def test_what_arrives_during_a_hold_is_drained_in_the_same_wake_up_past_one_batch():
    # a 100 ms hold (the most allowed): 150 packets arrive while it sleeps, more than
    # two recvmmsg batches (64), and the same drain call forwards every one of them
    server = open_media_socket("127.0.0.1", 0)
    port = server.getsockname()[1]
    a, b = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    b.setblocking(False)
    router = Router(server.fileno(), max_peers=4, max_streams=4, cache_packets=64)
    router.set_read_hold(100_000)
    pair = Pair(router, a.getsockname(), b.getsockname())
    packets = [pair.a_tx.protect(rtp(seq)) for seq in range(162)]

    def send(seqs: range) -> None:
        for seq in seqs:
            a.sendto(packets[seq], ("127.0.0.1", port))

    def wait_readable() -> None:
        assert select.select([server], [], [], 2)[0]

    def received() -> list[int]:
        got = []
        while True:
            try:
                got.append(RtpPacket.parse(pair.b_rx.unprotect(b.recv(2048))).sequence_number)
            except BlockingIOError:
                return got

    try:
        # the rate estimate: 10 packets (no hold after a wake-up that found 8 or more),
        # then 2 more 60 ms later: ~33/s, so a 100 ms hold expects 3.3 and is taken
        send(range(10))
        wait_readable()
        router.drain(0.0)
        assert router.counters()["read_holds"] == 0
        time.sleep(0.06)
        send(range(10, 12))
        wait_readable()
        time.sleep(0.005)  # both are in
        late = threading.Timer(0.01, send, (range(12, 162),))  # during the hold
        late.start()
        router.drain(0.0)
        late.join()
        counters = router.counters()
        assert counters["read_holds"] == 1
        assert counters["held_packets"] == 150
        assert counters["forwarded_packets"] == 162
        assert received() == list(range(162))
    finally:
        for s in (server, a, b):
            s.close()
