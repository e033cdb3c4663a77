"""A report's still frame, at the hub (fake media and store, in-process bus): asked
of the reported visitor's own session on its media node only when the reporter
ticked include_frame, filed with the report, or filed without it saying why."""

from __future__ import annotations

import pytest

from mediaserver.node.bus import LocalBus
from mediaserver.sfu.errors import SfuError
from tests.signalling.test_hub import Node
from tests.support.hub_fakes import FakeStore, SharedQueue, VirtualClock, until


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


async def test_include_frame_takes_a_still_of_the_reported_video_and_files_it(clock) -> None:
    store = FakeStore()
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock), store=store).start()
    a, b = await n.pair()
    reported_session = b.visitor.session_id
    await n.send(a, "report", reason="nudity", include_frame=True)
    await until(lambda: store.filed)
    # B's session (the reported one), on its node; never A's
    assert n.media.stills == [("n1", reported_session)]
    (filed,) = store.filed
    assert filed["reported_address"] == b.visitor.reputation
    assert filed["frame"] == n.media.still and "frame_missing" not in filed
    assert n.hub.stats["report_still"] == 1
    await n.hub.close()


async def test_without_include_frame_no_still_is_asked_for(clock) -> None:
    store = FakeStore()
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock), store=store).start()
    for include in (None, False):
        clock.advance(10)
        a, b = await n.pair()
        fields = {} if include is None else {"include_frame": include}
        await n.send(a, "report", reason="spam", **fields)
        await n.send(a, "bye")
        await n.send(b, "bye")
    await until(lambda: len(store.filed) == 2)
    assert n.media.stills == []
    assert all("frame" not in f and "frame_missing" not in f for f in store.filed)
    await n.hub.close()


async def test_no_still_in_time_files_the_report_saying_why(clock) -> None:
    store = FakeStore()
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock), store=store).start()
    n.media.still = SfuError("no keyframe within 3 s")
    a, _ = await n.pair()
    await n.send(a, "report", reason="harassment", include_frame=True, include_chat=True)
    await until(lambda: store.filed)
    (filed,) = store.filed
    assert filed["frame_missing"] == "no keyframe within 3 s" and "frame" not in filed
    assert n.hub.stats["report_still_missing"] == 1
    await n.hub.close()
