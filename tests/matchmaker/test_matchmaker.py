"""One suite for every matchmaker: in-process, and Redis (a real redis-server).

Time is a fake clock. The randomized test drives each implementation and a
brute-force model of the rules in mediaserver/matchmaker/base.py side by side.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

from mediaserver.matchmaker import (
    InProcessMatchmaker,
    Match,
    Matchmaker,
    MatchPolicy,
    MatchRefused,
    Ticket,
    create_matchmaker,
)
from tests.support.redis_server import RedisServer

IMPLEMENTATIONS = ["memory", "redis"]


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


@dataclass
class Env:
    """Makes matchmakers of one kind on a shared fake clock, and closes them."""

    kind: str
    redis_url: str | None
    clock: FakeClock = field(default_factory=FakeClock)
    matches: list[Match] = field(default_factory=list)
    namespace: str = field(default_factory=lambda: f"test:{uuid.uuid4().hex}:")
    made: list[Matchmaker] = field(default_factory=list)

    async def make(
        self,
        policy: MatchPolicy | None = None,
        matches: list[Match] | None = None,
    ) -> Matchmaker:
        policy = policy or MatchPolicy()
        sink = self.matches if matches is None else matches
        mm: Matchmaker
        if self.kind == "memory":
            mm = InProcessMatchmaker(policy, sink.append, self.clock)
        else:
            from mediaserver.matchmaker.redis import RedisMatchmaker

            assert self.redis_url is not None
            mm = RedisMatchmaker(
                self.redis_url,
                policy,
                sink.append,
                self.clock,
                prefix=self.namespace,
                channel=self.namespace + "matches",
            )
            await mm.start()
        self.made.append(mm)
        return mm

    def take(self) -> list[Match]:
        out, self.matches[:] = list(self.matches), []
        return out

    async def aclose(self) -> None:
        for mm in self.made:
            await mm.close()


@pytest.fixture(params=IMPLEMENTATIONS)
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    e = Env(request.param, url)
    yield e
    await e.aclose()


def T(
    peer: str,
    identity: str | None = None,
    interests: tuple[str, ...] = (),
    language: str | None = None,
    age: bool = True,
) -> Ticket:
    return Ticket(peer, identity or "id-" + peer, frozenset(interests), language, age)


# -- FIFO, pairing, one ticket per peer ----------------------------------------


async def test_arrival_pairs_with_waiter_at_once(env: Env) -> None:
    mm = await env.make()
    await mm.enqueue(T("a"))
    assert env.take() == []
    assert await mm.queue_length() == 1
    await mm.enqueue(T("b"))
    assert env.take() == [Match("a", "b", ())]
    assert await mm.queue_length() == 0


async def test_fifo_oldest_waiter_first(env: Env) -> None:
    mm = await env.make()
    # Tickets of one identity never pair with each other, so they queue up.
    for p in ("x1", "x2", "x3"):
        env.clock.advance(1)
        await mm.enqueue(T(p, "X"))
    assert await mm.queue_length() == 3
    for p in ("y1", "y2", "y3"):
        await mm.enqueue(T(p))
    assert env.take() == [Match("x1", "y1", ()), Match("x2", "y2", ()), Match("x3", "y3", ())]


async def test_same_identity_never_paired(env: Env) -> None:
    mm = await env.make()
    await mm.enqueue(T("tab1", "X"))
    await mm.enqueue(T("tab2", "X", interests=("music",)))
    env.clock.advance(100)
    await mm.tick()
    assert env.take() == []
    assert await mm.queue_length() == 2


async def test_reenqueue_replaces_ticket_and_its_place(env: Env) -> None:
    mm = await env.make()
    await mm.enqueue(T("p", "X", interests=("chess",)))
    await mm.enqueue(T("r", "X"))
    await mm.enqueue(T("p", "X"))  # replaces: no interests now, and a new place
    assert await mm.queue_length() == 2
    await mm.enqueue(T("z"))
    assert env.take() == [Match("r", "z", ())]
    await mm.enqueue(T("z2"))
    assert env.take() == [Match("p", "z2", ())]


async def test_peer_never_matched_with_itself(env: Env) -> None:
    mm = await env.make()
    await mm.enqueue(T("p"))
    await mm.enqueue(T("p"))
    assert env.take() == []
    assert await mm.queue_length() == 1


async def test_cancel(env: Env) -> None:
    mm = await env.make()
    await mm.enqueue(T("a"))
    await mm.cancel("a")
    await mm.cancel("a")
    await mm.cancel("never-queued")
    assert await mm.queue_length() == 0
    await mm.enqueue(T("b"))
    assert env.take() == []
    assert await mm.queue_length() == 1


async def test_queue_length(env: Env) -> None:
    mm = await env.make()
    assert await mm.queue_length() == 0
    for i in range(5):
        await mm.enqueue(T(f"x{i}", "X", interests=(f"i{i}",)))
    assert await mm.queue_length() == 5
    await mm.enqueue(T("y", interests=("i2",)))
    assert await mm.queue_length() == 4
    await mm.cancel("x0")
    assert await mm.queue_length() == 3


# -- interests -------------------------------------------------------------------


async def test_shared_interest_preferred_then_anyone_after_wait(env: Env) -> None:
    mm = await env.make(MatchPolicy(interest_wait=3.0))
    await mm.enqueue(T("anyone"))
    env.clock.advance(0.5)
    await mm.enqueue(T("m1", interests=("music", "art")))
    assert env.take() == []  # m1 waits for a shared interest
    await mm.enqueue(T("m2", interests=("music", "art", "film")))
    assert env.take() == [Match("m1", "m2", ("art", "music"))]

    await mm.enqueue(T("c", interests=("chess",)))
    env.clock.advance(2.9)
    await mm.tick()
    assert env.take() == []
    env.clock.advance(0.1)
    await mm.tick()
    assert env.take() == [Match("anyone", "c", ())]


async def test_interest_match_takes_oldest_sharing_waiter(env: Env) -> None:
    mm = await env.make()
    await mm.enqueue(T("x1", "X", interests=("film",)))
    await mm.enqueue(T("x2", "X", interests=("art",)))
    await mm.enqueue(T("x3", "X", interests=("music",)))
    await mm.enqueue(T("y", interests=("music", "art")))
    assert env.take() == [Match("x2", "y", ("art",))]


async def test_no_interest_arrival_skips_waiter_in_its_window(env: Env) -> None:
    mm = await env.make()
    await mm.enqueue(T("keen", interests=("music",)))
    await mm.enqueue(T("plain1"))
    assert env.take() == []
    env.clock.advance(3.0)
    await mm.tick()  # keen's window is over: it takes the oldest open waiter
    assert env.take() == [Match("keen", "plain1", ())]
    await mm.enqueue(T("keen2", interests=("music",)))
    env.clock.advance(3.0)
    await mm.tick()
    await mm.enqueue(T("plain2"))  # keen2 is open to anyone now
    assert env.take() == [Match("keen2", "plain2", ())]


async def test_window_ends_without_tick_at_next_arrival(env: Env) -> None:
    mm = await env.make()
    await mm.enqueue(T("keen", interests=("music",)))
    env.clock.advance(5.0)
    await mm.enqueue(T("plain"))  # time passes first, then the arrival
    assert env.take() == [Match("keen", "plain", ())]


async def test_two_expired_windows_pair_with_each_other(env: Env) -> None:
    mm = await env.make()
    await mm.enqueue(T("a", interests=("music",)))
    env.clock.advance(1.0)
    await mm.enqueue(T("b", interests=("chess",)))
    env.clock.advance(2.0)
    await mm.tick()
    assert env.take() == []  # a is open, b is still in its window
    env.clock.advance(1.0)
    await mm.tick()
    assert env.take() == [Match("a", "b", ())]


async def test_language_counts_as_interest(env: Env) -> None:
    mm = await env.make()
    await mm.enqueue(T("en1", language="en"))
    await mm.enqueue(T("fr1", language="fr"))
    await mm.enqueue(T("plain"))
    assert env.take() == []
    await mm.enqueue(T("en2", language="en", interests=("music",)))
    # The language is not reported as a shared interest.
    assert env.take() == [Match("en1", "en2", ())]


async def test_zero_interest_wait_means_anyone_at_once(env: Env) -> None:
    mm = await env.make(MatchPolicy(interest_wait=0.0))
    await mm.enqueue(T("plain"))
    await mm.enqueue(T("keen", interests=("music",)))
    assert env.take() == [Match("plain", "keen", ())]


# -- skips, blocks, reports, age -------------------------------------------------


@pytest.mark.parametrize("direction", ["a skipped b", "b skipped a"])
async def test_skip_cooldown_both_directions_and_expiry(env: Env, direction: str) -> None:
    mm = await env.make(MatchPolicy(skip_cooldown=30.0))
    if direction == "a skipped b":
        await mm.record_skip("A", "B")
    else:
        await mm.record_skip("B", "A")
    await mm.enqueue(T("a", "A"))
    await mm.enqueue(T("b", "B"))
    assert env.take() == []
    env.clock.advance(29.9)
    await mm.tick()
    assert env.take() == []
    env.clock.advance(0.1)
    await mm.tick()
    assert env.take() == [Match("a", "b", ())]


async def test_skip_passes_over_to_next_waiter(env: Env) -> None:
    mm = await env.make()
    await mm.enqueue(T("a", "A"))
    await mm.enqueue(T("c", "C", interests=("x",)))
    await mm.record_skip("A", "B")
    await mm.enqueue(T("b", "B"))
    assert env.take() == []  # a is skipped, c is in its window
    await mm.enqueue(T("d", "D"))
    assert env.take() == [Match("a", "d", ())]
    env.clock.advance(3.0)
    await mm.tick()
    assert env.take() == [Match("c", "b", ())]


async def test_skip_after_cooldown_expired_before_enqueue(env: Env) -> None:
    mm = await env.make()
    await mm.record_skip("A", "B")
    env.clock.advance(31)
    await mm.enqueue(T("a", "A"))
    await mm.enqueue(T("b", "B"))
    assert env.take() == [Match("a", "b", ())]


async def test_block_lasts_block_ttl(env: Env) -> None:
    mm = await env.make(MatchPolicy(block_ttl=3600.0))
    await mm.record_block("B", "A")
    await mm.enqueue(T("a", "A"))
    await mm.enqueue(T("b", "B"))
    env.clock.advance(31)
    await mm.tick()
    assert env.take() == []
    # a skip (shorter) does not shorten the block
    await mm.record_skip("A", "B")
    env.clock.advance(3600 - 31 - 0.5)
    await mm.tick()
    assert env.take() == []
    env.clock.advance(0.5)
    await mm.tick()
    assert env.take() == [Match("a", "b", ())]


async def conflict_records(env: Env, mm: Matchmaker) -> int:
    """Skips and blocks the matchmaker stores (memory: identities with one; Redis: keys)."""
    if env.kind == "memory":
        assert isinstance(mm, InProcessMatchmaker)
        return len(mm._conflicts)
    from mediaserver.matchmaker.redis import RedisMatchmaker

    assert isinstance(mm, RedisMatchmaker)
    return len([k async for k in mm._redis.scan_iter(match=env.namespace + "c*")])


async def test_forget_drops_a_visits_skips_and_blocks(env: Env) -> None:
    mm = await env.make(MatchPolicy(block_ttl=86400.0))
    await mm.record_block("A", "B")
    await mm.record_skip("C", "A")
    await mm.record_block("B", "C")
    await mm.forget("A")  # A's visit ended
    await mm.enqueue(T("a", "A"))
    await mm.enqueue(T("b", "B"))
    assert env.take() == [Match("a", "b", ())]
    await mm.enqueue(T("c", "C"))
    await mm.enqueue(T("b2", "B"))
    assert env.take() == []  # B and C's block stays: neither visit ended
    await mm.forget("C")
    await mm.forget("B")
    await mm.forget("nobody")  # a visit that never blocked anyone
    assert await conflict_records(env, mm) == 0


async def test_blocks_do_not_pile_up_with_visits(env: Env) -> None:
    from mediaserver.matchmaker.memory import _COMPACT_MIN

    mm = await env.make(MatchPolicy(block_ttl=86400.0))
    visits = 1500
    for i in range(visits):  # each visit blocks someone, then ends
        await mm.record_block(f"v{i}", f"w{i}")
        await mm.forget(f"v{i}")
    assert await conflict_records(env, mm) == 0
    if isinstance(mm, InProcessMatchmaker):  # nor do their entries in the expiry heap
        assert len(mm._conflict_expiries) <= _COMPACT_MIN < visits


async def test_age_refused_and_earlier_ticket_withdrawn(env: Env) -> None:
    mm = await env.make()
    await mm.enqueue(T("p", "X"))
    with pytest.raises(MatchRefused) as info:
        await mm.enqueue(T("p", "X", age=False))
    assert info.value.reason == "age"
    assert await mm.queue_length() == 0
    await mm.enqueue(T("q"))
    assert env.take() == []


async def test_report_threshold_distinct_reporters(env: Env) -> None:
    mm = await env.make(MatchPolicy(report_threshold=3, report_window=3600, refuse_for=600))
    await mm.record_report("R1", "BAD")
    await mm.record_report("R2", "BAD")
    await mm.record_report("R2", "BAD")  # the same reporter again: still two
    await mm.record_report("BAD", "BAD")  # nobody reports themselves
    await mm.enqueue(T("bad", "BAD"))
    await mm.cancel("bad")
    await mm.record_report("R3", "BAD")
    with pytest.raises(MatchRefused) as info:
        await mm.enqueue(T("bad", "BAD"))
    assert info.value.reason == "reported"
    assert await mm.queue_length() == 0
    await mm.enqueue(T("other"))
    assert env.take() == []
    env.clock.advance(599)
    with pytest.raises(MatchRefused):
        await mm.enqueue(T("bad", "BAD"))
    env.clock.advance(1)
    await mm.enqueue(T("bad", "BAD"))  # the refusal ran out
    assert env.take() == [Match("other", "bad", ())]


async def test_refusal_follows_the_reputation_not_the_visit(env: Env) -> None:
    # the hub's use: identity = the visit (skips/blocks), reputation = the address
    mm = await env.make(MatchPolicy(report_threshold=2))
    for reporter in ("addr-1", "addr-2"):
        await mm.record_report(reporter, "addr-bad")
    with pytest.raises(MatchRefused):
        await mm.enqueue(Ticket("visit-9", "visit-9", age_confirmed=True, reputation="addr-bad"))
    # two visits from one address (one household) may meet each other
    await mm.enqueue(Ticket("v1", "v1", age_confirmed=True, reputation="addr-home"))
    await mm.enqueue(Ticket("v2", "v2", age_confirmed=True, reputation="addr-home"))
    assert env.take() == [Match("v1", "v2", ())]


async def test_report_window(env: Env) -> None:
    mm = await env.make(MatchPolicy(report_threshold=2, report_window=100))
    await mm.record_report("R1", "BAD")
    env.clock.advance(100)  # R1's report is out of the window now
    await mm.record_report("R2", "BAD")
    await mm.enqueue(T("bad", "BAD"))
    await mm.cancel("bad")
    env.clock.advance(50)
    await mm.record_report("R1", "BAD")  # R1 again, within R2's window
    with pytest.raises(MatchRefused):
        await mm.enqueue(T("bad", "BAD"))


async def test_report_blocks_the_pair(env: Env) -> None:
    mm = await env.make()
    await mm.record_report("R", "BAD")
    await mm.enqueue(T("bad", "BAD"))
    await mm.enqueue(T("r", "R"))
    env.clock.advance(3600)
    await mm.tick()
    assert env.take() == []


async def test_refused_enqueue_withdraws_earlier_ticket(env: Env) -> None:
    mm = await env.make(MatchPolicy(report_threshold=1))
    await mm.enqueue(T("bad", "BAD"))
    await mm.record_report("R", "BAD")
    with pytest.raises(MatchRefused):
        await mm.enqueue(T("bad", "BAD"))
    assert await mm.queue_length() == 0


async def test_on_match_error_is_logged_not_raised(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(m: Match) -> None:
        raise RuntimeError("boom")

    mm = await env.make()
    mm._on_match = boom
    with caplog.at_level(logging.ERROR, logger="mediaserver.matchmaker"):
        await mm.enqueue(T("a"))
        await mm.enqueue(T("b"))
    assert "on_match failed" in caplog.text
    assert await mm.queue_length() == 0


# -- the model -------------------------------------------------------------------


def _keys(t: Ticket) -> set[tuple[str, str]]:
    keys = {("i", i) for i in t.interests}
    if t.language is not None:
        keys.add(("l", t.language))
    return keys


class Model:
    """The rules of base.py, brute force: try every pair."""

    def __init__(self, policy: MatchPolicy) -> None:
        self.p = policy
        self.waiting: list[tuple[Ticket, float]] = []  # arrival order
        self.conflicts: dict[frozenset[str], float] = {}
        self.reports: dict[str, dict[str, float]] = {}
        self.refused: dict[str, float] = {}

    def allowed(self, x: Ticket, tx: float, y: Ticket, ty: float, now: float) -> bool:
        if x.identity == y.identity:
            return False
        until = self.conflicts.get(frozenset((x.identity, y.identity)))
        if until is not None and until > now:
            return False
        shared = bool(_keys(x) & _keys(y))
        for t, t0 in ((x, tx), (y, ty)):
            if _keys(t) and now < t0 + self.p.interest_wait and not shared:
                return False
        return True

    def stabilize(self, now: float) -> list[Match]:
        out: list[Match] = []
        while True:
            pair = None
            for i, (x, tx) in enumerate(self.waiting):
                for j, (y, ty) in enumerate(self.waiting):
                    if i != j and self.allowed(x, tx, y, ty, now):
                        pair = (i, j)
                        break
                if pair:
                    break
            if pair is None:
                return out
            (x, _), (y, _) = self.waiting[pair[0]], self.waiting[pair[1]]
            assert pair[0] < pair[1]
            shared = tuple(sorted(x.interests & y.interests))
            out.append(Match(x.peer, y.peer, shared))
            del self.waiting[pair[1]]
            del self.waiting[pair[0]]

    def cancel(self, peer: str) -> None:
        self.waiting = [(t, t0) for t, t0 in self.waiting if t.peer != peer]

    def enqueue(self, ticket: Ticket, now: float) -> list[Match]:
        self.cancel(ticket.peer)
        if not ticket.age_confirmed:
            raise MatchRefused("age")
        if self.refused.get(ticket.identity, -1.0) > now:
            raise MatchRefused("reported")
        out = self.stabilize(now)
        self.waiting.append((ticket, now))
        return out + self.stabilize(now)

    def conflict(self, a: str, b: str, until: float) -> None:
        if a != b:
            key = frozenset((a, b))
            self.conflicts[key] = max(self.conflicts.get(key, -1.0), until)

    def report(self, reporter: str, reported: str, now: float) -> None:
        if reporter == reported:
            return
        self.conflict(reporter, reported, now + self.p.block_ttl)
        reporters = self.reports.setdefault(reported, {})
        reporters[reporter] = now
        for r in [r for r, t in reporters.items() if t <= now - self.p.report_window]:
            del reporters[r]
        if len(reporters) >= self.p.report_threshold:
            self.refused[reported] = now + self.p.refuse_for


# More with MATCHMAKER_SEEDS=500 (seconds for memory, about a minute for Redis).
PROPERTY_SEEDS = range(int(os.environ.get("MATCHMAKER_SEEDS", "16")))
PROPERTY_STEPS = 250


@pytest.mark.parametrize("seed", PROPERTY_SEEDS)
async def test_randomized_against_model(env: Env, seed: int) -> None:
    rng = random.Random(seed)
    policy = MatchPolicy(
        interest_wait=rng.choice([3.0, 3.0, 0.0, 10.0]),
        skip_cooldown=30.0,
        block_ttl=300.0,
        report_window=100.0,
        report_threshold=2,
        refuse_for=200.0,
    )
    mm = await env.make(policy)
    model = Model(policy)
    crowd = rng.choice([6, 12, 12, 30])
    peers = [f"p{i}" for i in range(crowd)]
    identity = {p: f"id{i % (crowd * 2 // 3)}" for i, p in enumerate(peers)}
    identities = sorted(set(identity.values()))
    queued: set[str] = set()  # the test's own record: enqueued, not since matched or left

    for step in range(PROPERTY_STEPS):
        now = env.clock.now
        r = rng.random()
        expected: list[Match] = []
        if r < 0.45:
            peer = rng.choice(peers)
            ticket = Ticket(
                peer,
                identity[peer],
                frozenset(i for i in "abc" if rng.random() < 0.25),
                rng.choice([None, None, None, "en", "fr"]),
                rng.random() < 0.97,
            )
            refused = None
            try:
                expected = model.enqueue(ticket, now)
            except MatchRefused as e:
                refused = e.reason
            queued.discard(peer)
            if refused is None:
                await mm.enqueue(ticket)
                queued.add(peer)
            else:
                with pytest.raises(MatchRefused) as info:
                    await mm.enqueue(ticket)
                assert info.value.reason == refused
        elif r < 0.55:
            peer = rng.choice(peers)
            model.cancel(peer)
            queued.discard(peer)
            await mm.cancel(peer)
        elif r < 0.70:
            a, b = rng.choice(identities), rng.choice(identities)
            kind = rng.choice(["skip", "skip", "block", "report"])
            if kind == "skip":
                model.conflict(a, b, now + policy.skip_cooldown)
                await mm.record_skip(a, b)
            elif kind == "block":
                model.conflict(a, b, now + policy.block_ttl)
                await mm.record_block(a, b)
            else:
                model.report(a, b, now)
                await mm.record_report(a, b)
        else:
            env.clock.advance(rng.choice([0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 10.0, 30.0, 120.0]))
            expected = model.stabilize(env.clock.now)
            await mm.tick()

        got = env.take()
        # Invariants that hold whatever the model says: only queued peers are
        # paired, each at most once; never the same identity; a waited longer.
        for m in got:
            assert m.a in queued and m.b in queued, (step, m)
            queued -= {m.a, m.b}
            assert identity[m.a] != identity[m.b]
        # The model: no forbidden pair, and the oldest allowed pair first.
        assert got == expected, (seed, step)
        assert await mm.queue_length() == len(model.waiting) == len(queued)


# -- Redis only: several nodes ---------------------------------------------------


async def _wait_for(matches: list[Match], n: int, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while len(matches) < n:
            await asyncio.sleep(0.005)


async def test_two_nodes_share_one_queue(redis_url: str) -> None:
    env = Env("redis", redis_url)
    try:
        heard1: list[Match] = []
        heard2: list[Match] = []
        node1 = await env.make(matches=heard1)
        node2 = await env.make(matches=heard2)
        await node1.enqueue(T("a"))
        assert await node2.queue_length() == 1
        await node2.enqueue(T("b"))
        assert heard2 == [Match("a", "b", ())]  # the node that made it: at once
        await _wait_for(heard1, 1)
        assert heard1 == [Match("a", "b", ())]  # the other: over pub/sub

        # A window that ends is handled by whichever node ticks.
        await node2.enqueue(T("keen", interests=("music",)))
        await node1.enqueue(T("plain"))
        env.clock.advance(3.0)
        await node1.tick()
        assert heard1[1:] == [Match("keen", "plain", ())]
        await _wait_for(heard2, 2)
        assert heard2[1:] == [Match("keen", "plain", ())]

        # Skips recorded on one node hold on the other.
        await node1.record_skip("A", "B")
        await node2.enqueue(T("x", "A"))
        await node1.enqueue(T("y", "B"))
        await asyncio.sleep(0.05)
        assert len(heard1) == len(heard2) == 2
        assert await node1.queue_length() == 2
    finally:
        await env.aclose()


async def test_listener_only_node_hears_matches(redis_url: str) -> None:
    env = Env("redis", redis_url)
    try:
        heard: list[Match] = []
        await env.make(matches=heard)  # started, never enqueues
        worker = await env.make(matches=[])
        await worker.enqueue(T("a"))
        await worker.enqueue(T("b"))
        await _wait_for(heard, 1)
        assert heard == [Match("a", "b", ())]
    finally:
        await env.aclose()


async def test_create_matchmaker(redis_url: str) -> None:
    mm = create_matchmaker(None, MatchPolicy(), lambda m: None)
    assert isinstance(mm, InProcessMatchmaker)
    await mm.close()
    from mediaserver.matchmaker.redis import RedisMatchmaker

    mm = create_matchmaker(redis_url, MatchPolicy(), lambda m: None)
    assert isinstance(mm, RedisMatchmaker)
    await mm.start()
    assert await mm.queue_length() == 0
    await mm.close()


async def test_node_hears_matches_after_its_subscription_is_killed(redis_url: str) -> None:
    import redis.asyncio as aioredis

    env = Env("redis", redis_url)
    admin = aioredis.Redis.from_url(redis_url)
    try:
        heard: list[Match] = []
        await env.make(matches=heard)
        worker = await env.make(matches=[])
        killed = await admin.client_kill_filter(_type="pubsub")
        assert killed >= 2
        # Matches made while a node resubscribes are lost to it: retry until heard.
        async with asyncio.timeout(10):
            i = 0
            while not heard:
                i += 1
                await worker.enqueue(T(f"a{i}"))
                await worker.enqueue(T(f"b{i}"))
                await asyncio.sleep(0.05)
        assert heard[-1] == Match(f"a{i}", f"b{i}", ())
    finally:
        await admin.aclose()
        await env.aclose()
