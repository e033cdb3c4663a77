"""Report abuse (issue 18): the automatic refusal weighs reporters. Several reports
from one keyed address hash count once; a reporter whose reports moderators dismissed
DISMISSALS_STOP_COUNTING times stops counting. Hubs with the in-process queue and a
fake store."""

from __future__ import annotations

import pytest

from mediaserver.node.bus import LocalBus
from mediaserver.signalling.visitors import State
from mediaserver.store.moderation import DISMISSALS_STOP_COUNTING
from tests.signalling.test_hub import Node
from tests.support.hub_fakes import FakeStore, SharedQueue, VirtualClock

TARGET = "198.51.100.7"


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


async def report_from(n: Node, target, addresses: list[str]) -> None:
    """Each address in turn: a visitor from it is matched with target and reports it."""
    for i, address in enumerate(addresses):
        n.clock.advance(10)  # start and next have rate limits
        reporter = await n.visitor(address)
        await n.send(target, "start")
        await n.send(reporter, "start")
        assert reporter.visitor.state is State.MATCHED, (i, target.sent[-1:])
        target.take(), reporter.take()
        await n.send(reporter, "report", reason="spam")
        assert reporter.types() == ["queued", "reported"]
        await n.send(reporter, "bye")
        if target.visitor.state is not State.IDLE:
            await n.send(target, "stop")
        target.take()


async def refused(n: Node, target) -> bool:
    n.clock.advance(10)
    await n.send(target, "start")
    last = target.sent[-1]
    if target.visitor.state is State.QUEUED:
        await n.send(target, "stop")
    target.take()
    return last["type"] == "error" and last["code"] == "refused"


async def test_three_reports_from_one_address_do_not_refuse_anyone(clock) -> None:
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock)).start()
    target = await n.visitor(TARGET)
    await report_from(n, target, ["192.0.2.10"] * 3)
    assert not await refused(n, target)
    await n.hub.close()


async def test_three_reports_from_distinct_addresses_refuse(clock) -> None:
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock)).start()
    target = await n.visitor(TARGET)
    await report_from(n, target, ["192.0.2.10", "192.0.2.11", "192.0.2.12"])
    assert await refused(n, target)
    await n.hub.close()


async def test_one_ipv6_64_is_one_reporter(clock) -> None:
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock)).start()
    target = await n.visitor(TARGET)
    await report_from(n, target, ["2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:2:ffff::1"])
    assert not await refused(n, target)
    await n.hub.close()


async def test_a_reporter_dismissed_again_and_again_stops_counting(clock) -> None:
    store = FakeStore()
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock), store=store).start()
    target = await n.visitor(TARGET)
    serial = n.connect("192.0.2.66").visitor.reputation
    store.dismissed[serial] = DISMISSALS_STOP_COUNTING
    await report_from(n, target, ["192.0.2.10", "192.0.2.11", "192.0.2.66"])
    assert not await refused(n, target)
    assert n.hub.stats["reports_not_counted"] == 1
    # every report is still kept for the moderators
    assert [f["reporter_address"] for f in store.filed][-1] == serial and len(store.filed) == 3
    # one dismissal fewer and it counts again
    store.dismissed[serial] = DISMISSALS_STOP_COUNTING - 1
    await report_from(n, target, ["192.0.2.66"])
    assert await refused(n, target)
    await n.hub.close()
