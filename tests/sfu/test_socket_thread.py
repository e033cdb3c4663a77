"""The router's socket thread (Router.start_thread, --socket-thread): a C thread
reads the media socket, forwards without Python, and hands Python only the slow
path through an eventfd. Real loopback sockets and real SRTP at the router level,
then real aiortc calls through an Sfu that runs it. Behaviour only: the speed is
benchmarks/forward.py's (--socket-thread)."""

import os
import select
import socket
import subprocess
import sys
import threading
import time

import pytest
from aiortc.rtp import RtpPacket

from mediaserver._router import SLOW_STUN, Router
from mediaserver.netns import SERVER_IP
from mediaserver.sfu.server import Sfu, SfuConfig
from mediaserver.sfu.udp import open_media_socket
from tests.sfu.test_router_ipv6 import Pair, rtp
from tests.sfu.test_sfu_aiortc import FlatGrey
from tests.support.peers import AiortcPeer, connect_pair, wait_for

STUN = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"t" * 12


class Rig:
    """A router on a loopback socket with its thread running, two peers a and b."""

    def __init__(self) -> None:
        self.server = open_media_socket("127.0.0.1", 0)
        self.port = self.server.getsockname()[1]
        self.a, self.b = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
        for s in (self.a, self.b):
            s.bind(("127.0.0.1", 0))
        self.b.setblocking(False)
        self.router = Router(self.server.fileno(), max_peers=8, max_streams=8, cache_packets=64)
        self.pair = Pair(self.router, self.a.getsockname(), self.b.getsockname())
        self.notify = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.router.start_thread(self.notify)

    def send(self, data: bytes) -> None:
        self.a.sendto(data, ("127.0.0.1", self.port))

    def received(self, count: int, timeout: float = 5.0) -> list[int]:
        got: list[int] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            if not select.select([self.b], [], [], 0.1)[0]:
                continue
            while True:
                try:
                    data = self.b.recv(2048)
                except BlockingIOError:
                    break
                got.append(RtpPacket.parse(self.pair.b_rx.unprotect(data)).sequence_number)
        return got

    def notified(self, timeout: float) -> bool:
        return bool(select.select([self.notify], [], [], timeout)[0])

    def close(self) -> None:
        self.router.stop_thread()
        for s in (self.server, self.a, self.b):
            s.close()
        os.close(self.notify)


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.close()


def test_media_is_forwarded_by_the_thread_without_waking_python(rig):
    for seq in range(200):
        rig.send(rig.pair.a_tx.protect(rtp(seq)))
    assert rig.received(200) == list(range(200))
    counters = rig.router.counters()
    assert counters["forwarded_packets"] == 200
    assert counters["thread_wakeups"] >= 1
    # no drain() was called, and media alone never writes the eventfd
    assert counters["thread_notifies"] == 0
    assert not rig.notified(0.2)
    assert rig.router.pop_slow() == []


def test_the_slow_path_reaches_python_through_the_eventfd(rig):
    rig.send(STUN)
    assert rig.notified(5.0)
    assert os.eventfd_read(rig.notify) == 1
    slow = rig.router.pop_slow()
    assert slow == [(SLOW_STUN, rig.pair.a, rig.a.getsockname(), STUN)]
    # media around it still forwarded, and the queue is empty again
    rig.send(rig.pair.a_tx.protect(rtp(1)))
    assert rig.received(1) == [1]
    assert rig.router.pop_slow() == []
    assert rig.router.counters()["thread_notifies"] == 1


def test_a_stalled_event_loop_costs_a_bounded_queue_and_counted_drops(rig):
    # Python does not pop: the thread queues 2,048 slow datagrams and drops the rest
    for i in range(2100):
        rig.send(STUN)
        if i % 500 == 499:
            time.sleep(0.02)  # within the socket's receive buffer
    deadline = time.monotonic() + 5
    while rig.router.counters()["rx_datagrams"] < 2100 and time.monotonic() < deadline:
        time.sleep(0.01)
    counters = rig.router.counters()
    assert counters["rx_datagrams"] == 2100
    assert counters["drops"]["slow_queue_full"] == 2100 - 2048
    assert len(rig.router.pop_slow()) == 2048
    # one notice for the whole backlog: it was never emptied in between
    assert os.eventfd_read(rig.notify) == 1


def test_every_slow_datagram_reaches_python_once_while_both_sides_run(rig):
    """The thread appends to the slow queue while Python empties it: under the
    router's lock each datagram is handed over once, in order, or counted as a
    drop of the bounded queue (a loaded machine may starve the popping loop);
    none vanishes and none comes twice."""
    count = 20_000
    # the sender is another process: no GIL shared with the popping loop
    sender = subprocess.Popen([sys.executable, "-c", SENDER, str(rig.port), str(count)])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            got += [data for _, _, _, data in rig.router.pop_slow()]
            counters = rig.router.counters()
            if (
                counters["rx_datagrams"] == count
                and len(got) + counters["drops"]["slow_queue_full"] == count
            ):
                break
    finally:
        sender.wait(timeout=30)
    dropped = rig.router.counters()["drops"]["slow_queue_full"]
    numbers = [int.from_bytes(data[8:12], "big") for data in got]
    assert numbers == sorted(set(numbers))  # in order, none twice
    assert len(got) + dropped == count  # and none vanished
    assert len(got) > 2 * 2048  # more than the queue holds went through while both ran


SENDER = """
import socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(count):
    s.sendto(b"\\x00\\x01\\x00\\x00!\\x12\\xa4B" + i.to_bytes(4, "big") + b"t" * 8, ("127.0.0.1", port))
    if i % 64 == 63:
        time.sleep(0.0005)  # within the socket's receive buffer
"""


def test_drain_and_a_second_thread_are_refused_and_stop_hands_back_the_socket(rig):
    with pytest.raises(RuntimeError, match="socket thread reads this socket"):
        rig.router.drain(0.0)
    with pytest.raises(RuntimeError, match="running already"):
        rig.router.start_thread(rig.notify)
    assert rig.router.thread_running
    rig.router.stop_thread()
    assert not rig.router.thread_running
    rig.router.stop_thread()  # nothing to stop: no error
    rig.send(rig.pair.a_tx.protect(rtp(7)))
    assert select.select([rig.server], [], [], 5)[0]
    rig.router.drain(time.monotonic())
    assert rig.received(1) == [7]
    rig.router.start_thread(rig.notify)  # and it can run again
    rig.send(rig.pair.a_tx.protect(rtp(8)))
    assert rig.received(1) == [8]


def test_a_socketless_router_has_no_thread():
    router = Router(-1, max_peers=2, max_streams=2, cache_packets=64)
    with pytest.raises(ValueError, match="no socket"):
        router.start_thread(0)


def test_python_may_change_routes_and_peers_while_the_thread_forwards(rig):
    """Every Python call takes the router's lock: re-routing, adding and removing
    peers and reading statistics while a sender keeps the thread busy neither
    crashes nor sends a packet twice under one SRTP index."""
    router, pair = rig.router, rig.pair
    stop = threading.Event()
    sent = 0

    def publish() -> None:
        nonlocal sent
        while not stop.is_set() and sent < 60_000:
            rig.send(pair.a_tx.protect(rtp(sent & 0xFFFF)))
            sent += 1

    sender = threading.Thread(target=publish)
    sender.start()
    changes = 0
    try:
        deadline = time.monotonic() + 1.5
        to_b = router.out_stats(0)
        assert to_b["peer"] == pair.b
        while time.monotonic() < deadline:
            router.remove_route(pair.a, 0)
            extra = router.add_peer()
            router.bind_address(extra, "127.0.0.9", 4000 + changes % 1000)
            out = router.add_out_stream(extra, 0xE, 90000)
            router.add_route(pair.a, 96, out, 96)
            router.in_stats(pair.a)
            router.counters()
            router.remove_peer(extra)
            router.add_route(pair.a, 96, 0, 96)
            router.pop_slow()
            changes += 1
    finally:
        stop.set()
        sender.join()
    assert changes > 100
    got = rig.received(sent, timeout=2.0)
    counters = router.counters()
    # the b_rx context replay-checks every index: a packet sent twice under one
    # index would have raised in unprotect; every one b got is distinct
    assert len(got) == len(set(got))
    assert counters["drops"]["protect_index_used"] == 0
    assert counters["forwarded_packets"] >= len(got) > 0
    # and it still forwards normally afterwards
    rig.send(pair.a_tx.protect(rtp(sent & 0xFFFF)))
    assert rig.received(1) == [sent & 0xFFFF]


# ---- whole calls through an Sfu that reads its socket from the thread ---------


@pytest.fixture
async def threaded_sfu():
    server = Sfu(SfuConfig(announced_ip=SERVER_IP, socket_thread=True))
    await server.start()
    assert server._router.thread_running
    yield server
    await server.close()
    assert not server._router.thread_running


@pytest.mark.netns
@pytest.mark.both_loops
async def test_a_call_with_nacks_runs_through_the_thread(threaded_sfu):
    """ICE, DTLS and RTCP come up through the eventfd, media goes through the
    thread; 5% outbound loss makes the subscriber NACK, and Python's resends from
    the cache reach it while the thread forwards."""
    sfu = threaded_sfu
    sfu._router.set_loss(outbound=0.05, seed=7)
    a, b = AiortcPeer(320, 240), AiortcPeer(320, 240)
    try:
        await connect_pair(sfu, a, b)
        ok = await wait_for(
            lambda: (
                min(a.frames("video"), b.frames("video")) >= 60
                and min(a.frames("audio"), b.frames("audio")) >= 50
            ),
            timeout=40,
        )
        assert ok, sfu.counters()
        counters = sfu.counters()
        assert counters["retransmitted"] > 0
        assert counters["drops"]["srtp_auth"] == 0
        router = sfu._router.counters()
        assert router["thread_wakeups"] > 0
        # the event loop woke for the slow path only: far fewer notices than packets
        assert router["thread_notifies"] < router["rx_datagrams"] / 4
    finally:
        await a.close()
        await b.close()


@pytest.mark.netns
@pytest.mark.both_loops
async def test_an_effect_taps_media_through_the_thread(threaded_sfu):
    """Tapped media goes to Python through the slow queue and comes back by
    inject while the thread keeps reading."""
    import numpy as np

    sfu = threaded_sfu
    a, b = AiortcPeer(320, 240, audio=False), AiortcPeer(320, 240, audio=False)

    def luma_spread() -> float:
        frame = b.received["video"].last
        return float(np.std(frame.to_ndarray(format="gray")))

    try:
        sa, _ = await connect_pair(sfu, a, b)
        assert await wait_for(lambda: b.frames("video") >= 10, timeout=20)
        assert luma_spread() > 20
        sfu.set_effect(sa.id, FlatGrey())
        assert await wait_for(lambda: luma_spread() < 3, timeout=15)
        sfu.set_effect(sa.id, None)
        assert await wait_for(lambda: luma_spread() > 20, timeout=15)
    finally:
        await a.close()
        await b.close()


def test_the_thread_is_the_default_and_a_flag_turns_it_off():
    from mediaserver.cli import load_config

    assert SfuConfig().socket_thread
    assert load_config([], {}).socket_thread
    assert not load_config(["--no-socket-thread"], {}).socket_thread
    assert not load_config([], {"MEDIASERVER_SOCKET_THREAD": "0"}).socket_thread


@pytest.mark.netns
@pytest.mark.both_loops
async def test_without_the_thread_the_event_loop_reads_the_socket():
    """--no-socket-thread: the way before (the loop watches the socket, drain())."""
    sfu = Sfu(SfuConfig(announced_ip=SERVER_IP, socket_thread=False))
    await sfu.start()
    a, b = AiortcPeer(320, 240), AiortcPeer(320, 240)
    try:
        assert not sfu._router.thread_running
        await connect_pair(sfu, a, b)
        assert await wait_for(lambda: min(a.frames("video"), b.frames("video")) >= 30, timeout=30)
        router = sfu._router.counters()
        assert router["thread_wakeups"] == 0 and router["batches"] > 0
    finally:
        await a.close()
        await b.close()
        await sfu.close()
