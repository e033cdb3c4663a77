"""Every per-address key of the hub for IPv6 visitors: the reputation (so the
reports and the refusal they lead to), connections and media sessions per address
are all keyed on the /64, so a device that rotates addresses inside its /64 stays
one visitor to them; IPv4 is keyed on the address, as before."""

import hashlib
import hmac

import pytest

from mediaserver.matchmaker import MatchPolicy
from mediaserver.node.bus import LocalBus
from mediaserver.signalling.visitors import State
from tests.signalling.test_hub import Node
from tests.support.hub_fakes import SharedQueue, VirtualClock

ONE_64 = ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:2:a:b:c:d")
OTHER_64 = "2001:db8:1:3::1"


@pytest.fixture
def clock():
    return VirtualClock()


async def test_one_64_is_one_reputation_and_one_address(clock):
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock)).start()
    visitors = [n.connect(a).visitor for a in ONE_64]
    assert len({v.reputation for v in visitors}) == 1
    assert {v.address for v in visitors} == {"2001:db8:1:2::/64"}
    # the key is an HMAC of the /64, never the address itself
    key = n.hub._identity_key
    expected = hmac.new(key, b"2001:db8:1:2::/64", hashlib.sha256).hexdigest()
    assert visitors[0].reputation == expected
    other = n.connect(OTHER_64).visitor
    assert other.reputation != visitors[0].reputation
    # an IPv4 visitor keeps the key of its address, also as a dual-stack socket names it
    v4 = n.connect("192.0.2.7").visitor
    mapped = n.connect("::ffff:192.0.2.7").visitor
    assert v4.reputation == mapped.reputation and v4.address == mapped.address == "192.0.2.7"
    assert n.connect("192.0.2.8").visitor.reputation != v4.reputation
    await n.hub.close()


async def test_connections_from_count_the_whole_64(clock):
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock)).start()
    conns = [n.connect(a) for a in ONE_64]
    # what /ws asks before admitting a connection from a fresh address of the /64
    assert n.hub.connections_from("2001:db8:1:2::9") == 3
    assert n.hub.connections_from(OTHER_64) == 0
    await n.send(conns[0], "bye")
    assert n.hub.connections_from("2001:db8:1:2::9") == 2
    await n.hub.close()


async def test_reports_refuse_the_whole_64_not_its_neighbours(clock):
    queue = SharedQueue(clock, MatchPolicy(report_threshold=2))
    n = await Node(LocalBus("n1"), clock, queue).start()
    for i in range(2):
        # the reported device comes back from a new address of its /64 each time
        target = await n.visitor(ONE_64[i])
        reporter = await n.visitor(f"192.0.2.{10 + i}")
        await n.send(target, "start")
        await n.send(reporter, "start")
        assert reporter.visitor.state is State.MATCHED, i
        await n.send(reporter, "report", reason="spam")
        await n.send(reporter, "bye")
        await n.send(target, "bye")
    rotated = await n.visitor(ONE_64[2])
    await n.send(rotated, "start")
    assert rotated.sent[-1]["type"] == "error" and rotated.sent[-1]["code"] == "refused"
    neighbour = await n.visitor(OTHER_64)
    await n.send(neighbour, "start")
    assert neighbour.types() == ["queued"]
    await n.hub.close()


async def test_media_sessions_per_address_count_the_whole_64(clock):
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock), max_sessions_per_address=2).start()
    conns = [await n.visitor(a) for a in (*ONE_64, OTHER_64)]
    for c in conns:
        await n.send(c, "start")
        await n.send(c, "offer", sdp="x")
    codes = [next((m.get("code") for m in c.sent if m["type"] == "error"), None) for c in conns]
    assert codes == [None, None, "too_many_sessions", None]
    assert ["answer" in c.types() for c in conns] == [True, True, False, True]
    await n.hub.close()
