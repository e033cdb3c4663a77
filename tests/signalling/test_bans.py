"""Moderators' bans where visitors arrive (signalling/bans.py): `hello` and `start`
answer `banned` with the end time, by account and by keyed address hash; bans shared
between nodes through a real Redis (redis-server started by the test), with a real
SQLite store deciding them."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mediaserver.matchmaker import MatchPolicy
from mediaserver.matchmaker.redis import RedisMatchmaker
from mediaserver.node.bus import LocalBus
from mediaserver.signalling.bans import Bans, until_text
from mediaserver.store import Store
from mediaserver.store.limits import DAY
from tests.signalling.test_hub import Node
from tests.support.hub_fakes import FakeStore, SharedQueue, VirtualClock, profile, settle
from tests.support.redis_server import RedisServer
from tests.support.store import KEY, make

ADDRESS = "198.51.100.9"


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


async def test_banned_address_and_account_get_banned_with_the_end_time(
    clock: VirtualClock,
) -> None:
    store = FakeStore()
    store.add("tok-b", profile("bob"))
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock), store=store).start()
    address_hash = n.connect(ADDRESS).visitor.reputation
    store.bans[address_hash] = 1_800_000_000.0
    conn = n.connect(ADDRESS)
    await n.send(conn, "hello", age_confirmed=True)
    (error,) = conn.sent
    assert error["type"] == "error" and error["code"] == "banned" and error["ref"] == "hello"
    assert error["until"] == "2027-01-15T08:00:00Z" and "2027-01-15" in error["message"]
    assert conn.visitor.state.value == "new"  # not let in: start is out of order
    del store.bans[address_hash]
    # by account, for good: from any address
    store.bans["bob"] = math.inf
    conn = n.connect("192.0.2.77")
    await n.send(conn, "hello", age_confirmed=True, token="tok-b")
    assert conn.sent[-1]["code"] == "banned" and conn.sent[-1]["until"] is None
    # a ban decided after hello holds at the next start
    del store.bans["bob"]
    conn = n.connect("192.0.2.78")
    await n.send(conn, "hello", age_confirmed=True, token="tok-b")
    assert conn.types() == ["welcome"]
    store.bans["bob"] = 1_800_000_000.0
    await n.send(conn, "start")
    assert conn.sent[-1]["code"] == "banned" and conn.sent[-1]["ref"] == "start"
    assert conn.visitor.state.value == "idle"
    assert n.hub.stats["refused:banned"] == 3
    await n.hub.close()


async def test_a_ban_decided_during_a_pair_holds_when_it_ends(clock: VirtualClock) -> None:
    store = FakeStore()
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock), store=store).start()
    a, b = await n.pair(offer=False)
    store.bans[b.visitor.reputation] = 1_800_000_000.0
    # A moves on: B is not queued again but told it is banned
    await n.send(a, "next")
    assert b.types() == ["partner_left", "error"]
    assert b.sent[-1]["code"] == "banned" and b.sent[-1]["until"] == "2027-01-15T08:00:00Z"
    assert b.visitor.state.value == "idle"
    assert a.types() == ["queued"]
    await n.hub.close()


async def test_an_ipv6_ban_holds_on_the_whole_64(clock: VirtualClock) -> None:
    store = FakeStore()
    n = await Node(LocalBus("n1"), clock, SharedQueue(clock), store=store).start()
    store.bans[n.connect("2001:db8:1:2::a").visitor.reputation] = math.inf
    for address, code in (("2001:db8:1:2:ffff::9", "banned"), ("2001:db8:1:3::1", None)):
        conn = n.connect(address)
        await n.send(conn, "hello", age_confirmed=True)
        assert (conn.sent[-1].get("code"), address) == (code, address)
    await n.hub.close()


def test_until_text() -> None:
    assert until_text(math.inf) is None
    assert until_text(0.0) == "1970-01-01T00:00:00Z"


async def test_a_ban_decided_on_one_node_holds_on_another_through_redis(
    redis_url: str, tmp_path: Path
) -> None:
    """Two nodes, each with its own SQLite file, sharing a real Redis: a ban decided
    in node 1's store reaches node 2 through Redis alone; a lifted one goes."""
    stores = [Store(str(tmp_path / f"n{i}.db"), KEY) for i in (1, 2)]
    queues = [
        RedisMatchmaker(redis_url, MatchPolicy(), lambda m: None, prefix="bans-test:")
        for _ in stores
    ]
    bans = [Bans(s, q, b"k" * 32, Counter()) for s, q in zip(stores, queues, strict=True)]
    try:
        prof, _ = make(stores[0], "banned_bob")
        moderator, _ = make(stores[0], "mod_one")
        address = "ab" * 32
        report = stores[0].file_chat_report(
            "nudity",
            reported_address=address,
            reported_user_id=prof.id,
            reporter_address="cd" * 32,
            reporter_user_id=None,
        )
        assert await bans[1].until(prof.id, address) is None
        decision = stores[0].decide(moderator.id, report, "ban", DAY, "")
        await bans[0].spread(decision["bans"])
        until = decision["until"]
        # node 2's own database knows nothing of it; Redis does, by account and address
        assert stores[1].ban_until(prof.id, address) is None
        assert await bans[1].until(prof.id, address) == until
        assert await bans[1].until(None, address) == until
        assert await bans[1].until(prof.id, "ef" * 32) == until
        assert await bans[1].until("someone-else", "ef" * 32) is None
        # Redis holds neither the account id nor the address
        keys = await queues[0]._redis.keys("bans-test:b:*")
        assert len(keys) == 2 and not any(prof.id in k for k in keys)
        # the account appeals; a moderator lifts the ban with a warning instead
        filed = stores[0].appeal(prof.id, "it was not me", decision_id=decision["id"])
        lifted = stores[0].decide(moderator.id, filed["report_id"], "warn", None, "")
        assert all(not b.active for b in lifted["bans"])
        await bans[0].spread(lifted["bans"])
        assert await bans[1].until(prof.id, address) is None
        assert await queues[0]._redis.keys("bans-test:b:*") == []
    finally:
        for q in queues:
            await q.close()
        for s in stores:
            s.close()


async def test_a_visitor_that_leaves_while_its_ban_check_runs_is_not_queued(
    clock: VirtualClock,
) -> None:
    """Re-queueing awaits the ban check (a Redis read on several nodes): a visitor who
    leaves meanwhile must not be queued after all, or its ticket is a ghost the next
    visitor is matched with (and then waits for in vain)."""
    queue = SharedQueue(clock)
    n = await Node(LocalBus("n1"), clock, queue, store=FakeStore()).start()
    a, b = await n.pair(offer=False)
    checking = asyncio.Event()
    release = asyncio.Event()
    real_check = n.hub.pairing.ban_check
    assert real_check is not None

    async def slow_check(v: Any, ref: str) -> None:
        checking.set()
        await release.wait()
        await real_check(v, ref)

    n.hub.pairing.ban_check = slow_check
    moving_on = asyncio.create_task(n.send(a, "next"))  # B is re-queued: its ban
    await asyncio.wait_for(checking.wait(), 5)  # check is under way...
    await n.hub.leave(b.visitor)  # ...when B leaves
    release.set()
    await asyncio.wait_for(moving_on, 5)
    await settle()
    assert b.visitor.state.value == "gone"
    assert await queue.matchmaker.queue_length() == 1  # A alone, no ghost of B
    await n.hub.close()
