"""The in-process matchmaker (the default, one node).

Data structures, chosen so that the common arrival (no interests, no skips or
blocks with the waiters in front of it) costs a few dict operations whatever the
queue length:

* every index is an ``OrderedDict`` peer -> waiter in arrival order, so "the
  oldest waiter in this index" is its first item, and removal is O(1);
* ``_open_keyless``: waiters without interests or language (open from the start);
  ``_open_expired``: waiters with interests whose interest window has ended.
  Windows are all the same length, so they end in arrival order and both
  indexes stay sorted by appending;
* ``_by_interest`` / ``_by_language``: every waiter listing that interest or
  language, whatever its window;
* ``_rechecks``: a heap of (time, waiter) for the moments when a waiter may gain
  a partner without any arrival: its interest window ends, or a skip/block that
  kept it from a waiter expires. Nothing else can make a new pair, so ``tick``
  only looks at those waiters (see base.py for the rules).

An arrival looks at the open indexes (no interests, or window over) or at its
interests' indexes (window running), merged by arrival order when there are
several, and takes the first waiter of another identity with no active
skip/block: the oldest allowed one.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import OrderedDict
from collections.abc import Iterator

from .base import Clock, Match, Matchmaker, MatchPolicy, MatchRefused, OnMatch, Ticket

__all__ = ["InProcessMatchmaker"]

_INF = float("inf")
_COMPACT_MIN = 1024  # expiry entries below which forgotten ones are left to expire

_Index = OrderedDict[str, "_Waiter"]


class _Waiter:
    __slots__ = (
        "alive",
        "identity",
        "keyed",
        "open",
        "peer",
        "recheck",
        "seq",
        "ticket",
        "window_end",
    )

    def __init__(self, ticket: Ticket, seq: int, keyed: bool, window_end: float) -> None:
        self.ticket = ticket
        self.peer = ticket.peer
        self.identity = ticket.identity
        self.seq = seq
        self.keyed = keyed
        self.window_end = window_end
        self.open = not keyed
        self.recheck = _INF
        self.alive = True


def _seq(w: _Waiter) -> int:
    return w.seq


def _shared(x: Ticket, y: Ticket) -> tuple[str, ...]:
    if x.interests and y.interests:
        return tuple(sorted(x.interests & y.interests))
    return ()


class InProcessMatchmaker(Matchmaker):
    """The queue in this process's memory; ``on_match`` is called synchronously.

    Args:
        policy: the matching rules' knobs.
        on_match: called once per match, before ``enqueue``/``tick`` returns.
        clock: seconds as a float; ``time.time`` by default.
    """

    def __init__(self, policy: MatchPolicy, on_match: OnMatch, clock: Clock = time.time) -> None:
        super().__init__(policy, on_match, clock)
        self._seq = 0
        self._counter = itertools.count()
        self._waiters: dict[str, _Waiter] = {}
        self._open_keyless: _Index = OrderedDict()
        self._open_expired: _Index = OrderedDict()
        self._by_interest: dict[str, _Index] = {}
        self._by_language: dict[str, _Index] = {}
        self._rechecks: list[tuple[float, int, _Waiter]] = []
        # identity -> other identity -> skip/block active until (both directions stored)
        self._conflicts: dict[str, dict[str, float]] = {}
        self._conflict_expiries: list[tuple[float, int, str, str]] = []
        self._compact_at = _COMPACT_MIN  # expiry heap size that triggers a compaction
        # reported identity -> reporter identity -> time of its latest report
        self._reports: dict[str, dict[str, float]] = {}
        self._refused: dict[str, float] = {}
        self._report_expiries: list[tuple[float, int, str]] = []

    # -- the interface ---------------------------------------------------------

    async def enqueue(self, ticket: Ticket) -> None:
        now = self._now()
        peer = ticket.peer
        old = self._waiters.get(peer)
        if old is not None:
            self._remove(old)
        if not ticket.age_confirmed:
            raise MatchRefused("age")
        if self._refused:
            until = self._refused.get(ticket.reputation_key)
            if until is not None and until > now:
                raise MatchRefused("reported")
        rechecks = self._rechecks
        matches = self._run_due(now) if rechecks and rechecks[0][0] <= now else []

        self._seq += 1
        w: _Waiter | None = None
        if not ticket.interests and ticket.language is None:
            # The common case: no interests; only open waiters may take it.
            sources = [self._open_keyless]
            if self._open_expired:
                sources.append(self._open_expired)
            partner, conflict_end = self._scan(sources, ticket.identity, now)
        else:
            w = _Waiter(ticket, self._seq, True, now + self.policy.interest_wait)
            if w.window_end <= now:
                w.open = True
            partner, conflict_end = self._scan(self._sources(w), ticket.identity, now)

        if partner is not None:
            self._remove(partner)
            matches.append(Match(partner.peer, peer, _shared(partner.ticket, ticket)))
        else:
            if w is None:
                w = _Waiter(ticket, self._seq, False, -_INF)
            self._insert(w)
            self._schedule(w, conflict_end)
        if matches:
            self._emit(matches)

    async def cancel(self, peer: str) -> None:
        w = self._waiters.get(peer)
        if w is not None:
            self._remove(w)

    async def record_skip(self, identity: str, other_identity: str) -> None:
        now = self._now()
        self._add_conflict(identity, other_identity, now + self.policy.skip_cooldown)

    async def record_block(self, identity: str, other_identity: str) -> None:
        now = self._now()
        self._add_conflict(identity, other_identity, now + self.policy.block_ttl)

    async def record_report(self, reporter_identity: str, reported_identity: str) -> None:
        if reporter_identity == reported_identity:
            return
        now = self._now()
        policy = self.policy
        self._add_conflict(reporter_identity, reported_identity, now + policy.block_ttl)
        reporters = self._reports.setdefault(reported_identity, {})
        reporters[reporter_identity] = now
        self._trim_reports(reported_identity, reporters, now)
        heapq.heappush(
            self._report_expiries,
            (now + policy.report_window, next(self._counter), reported_identity),
        )
        if len(reporters) >= policy.report_threshold:
            until = now + policy.refuse_for
            self._refused[reported_identity] = until
            heapq.heappush(self._report_expiries, (until, next(self._counter), reported_identity))

    async def forget(self, identity: str) -> None:
        others = self._conflicts.pop(identity, None)
        for other in others or ():
            m = self._conflicts.get(other)
            if m is not None:
                m.pop(identity, None)
                if not m:
                    del self._conflicts[other]
        expiries = self._conflict_expiries
        if len(expiries) > self._compact_at:
            # the forgotten pairs' entries would otherwise wait out block_ttl in the heap
            live = self._conflicts
            expiries[:] = [e for e in expiries if e[3] in live.get(e[2], ())]
            heapq.heapify(expiries)
            self._compact_at = max(_COMPACT_MIN, 2 * len(expiries))

    async def tick(self) -> None:
        now = self._now()
        if self._rechecks and self._rechecks[0][0] <= now:
            matches = self._run_due(now)
            if matches:
                self._emit(matches)
        self._collect(now)

    async def queue_length(self) -> int:
        return len(self._waiters)

    async def close(self) -> None:
        for w in list(self._waiters.values()):
            self._remove(w)
        self._rechecks.clear()

    # -- the queue -------------------------------------------------------------

    def _sources(self, w: _Waiter) -> list[_Index]:
        """The indexes holding every waiter that ``w`` may meet now (and more)."""
        sources: list[_Index] = []
        if w.open:
            if self._open_keyless:
                sources.append(self._open_keyless)
            if self._open_expired:
                sources.append(self._open_expired)
        t = w.ticket
        for interest in t.interests:
            index = self._by_interest.get(interest)
            if index:
                sources.append(index)
        if t.language is not None:
            index = self._by_language.get(t.language)
            if index:
                sources.append(index)
        return sources

    def _scan(
        self, sources: list[_Index], identity: str, now: float
    ) -> tuple[_Waiter | None, float]:
        """The oldest waiter in ``sources`` that ``identity`` may meet now.

        Returns it (or None) and the earliest end of the skips/blocks that made
        it pass over waiters (inf if none): when a waiter may become allowed.
        """
        conflict_end = _INF
        it: Iterator[_Waiter]
        if len(sources) == 1:
            it = iter(sources[0].values())
        elif not sources:
            return None, conflict_end
        else:
            # A waiter in several of these indexes comes out several times; checking
            # it again gives the same answer.
            it = heapq.merge(*(s.values() for s in sources), key=_seq)
        conflicts = self._conflicts.get(identity)
        for w in it:
            if w.identity == identity:
                continue
            if conflicts is not None:
                until = conflicts.get(w.identity)
                if until is not None and until > now:
                    conflict_end = min(conflict_end, until)
                    continue
            return w, conflict_end
        return None, conflict_end

    def _insert(self, w: _Waiter) -> None:
        peer = w.peer
        self._waiters[peer] = w
        if not w.keyed:
            self._open_keyless[peer] = w
            return
        t = w.ticket
        for interest in t.interests:
            index = self._by_interest.get(interest)
            if index is None:
                index = self._by_interest[interest] = OrderedDict()
            index[peer] = w
        if t.language is not None:
            index = self._by_language.get(t.language)
            if index is None:
                index = self._by_language[t.language] = OrderedDict()
            index[peer] = w
        if w.open:
            self._append_expired(w)

    def _remove(self, w: _Waiter) -> None:
        w.alive = False
        peer = w.peer
        del self._waiters[peer]
        if not w.keyed:
            del self._open_keyless[peer]
            return
        if w.open:
            del self._open_expired[peer]
        t = w.ticket
        for interest in t.interests:
            index = self._by_interest[interest]
            del index[peer]
            if not index:
                del self._by_interest[interest]
        if t.language is not None:
            index = self._by_language[t.language]
            del index[peer]
            if not index:
                del self._by_language[t.language]

    def _append_expired(self, w: _Waiter) -> None:
        expired = self._open_expired
        if expired and next(reversed(expired.values())).seq > w.seq:
            # Only if windows stopped ending in arrival order (they do not, as the
            # clock is held monotonic); keep the index sorted anyway.
            ordered = sorted([*expired.values(), w], key=_seq)
            expired.clear()
            expired.update((x.peer, x) for x in ordered)
        else:
            expired[w.peer] = w

    def _schedule(self, w: _Waiter, conflict_end: float) -> None:
        """Re-examine ``w`` when its window ends or a skip/block it met expires."""
        at = conflict_end
        if not w.open and w.window_end < at:
            at = w.window_end
        if at < _INF:
            w.recheck = at
            heapq.heappush(self._rechecks, (at, next(self._counter), w))

    def _run_due(self, now: float) -> list[Match]:
        """Pair the waiters that time may have given a partner, greedily.

        The queue was stable (no allowed pair), so every pair allowed now has one
        waiter whose recheck is due. Among those pairs, take the one whose older
        ticket is oldest (then the other's age), as the model in base.py says:
        a heap of each due waiter's best pair, recomputed lazily when its
        partner was taken (its next best pair sorts no earlier).
        """
        rechecks = self._rechecks
        due: list[_Waiter] = []
        while rechecks and rechecks[0][0] <= now:
            at, _, w = heapq.heappop(rechecks)
            if w.alive and w.recheck == at:
                w.recheck = _INF
                due.append(w)
        if not due:
            return []
        due.sort(key=_seq)
        for w in due:
            if not w.open and w.window_end <= now:
                w.open = True
                self._append_expired(w)

        conflict_ends = [_INF] * len(due)
        pairs: list[tuple[int, int, int, _Waiter]] = []
        for i, w in enumerate(due):
            partner, conflict_ends[i] = self._scan(self._sources(w), w.identity, now)
            if partner is not None:
                pairs.append((min(w.seq, partner.seq), max(w.seq, partner.seq), i, partner))
        heapq.heapify(pairs)
        matches: list[Match] = []
        while pairs:
            _, _, i, partner = heapq.heappop(pairs)
            w = due[i]
            if not w.alive:
                continue
            if not partner.alive:
                found, conflict_ends[i] = self._scan(self._sources(w), w.identity, now)
                if found is not None:
                    key = (min(w.seq, found.seq), max(w.seq, found.seq), i, found)
                    heapq.heappush(pairs, key)
                continue
            self._remove(w)
            self._remove(partner)
            a, b = (w, partner) if w.seq < partner.seq else (partner, w)
            matches.append(Match(a.peer, b.peer, _shared(a.ticket, b.ticket)))
        for i, w in enumerate(due):
            if w.alive:
                self._schedule(w, conflict_ends[i])
        return matches

    # -- skips, blocks, reports -------------------------------------------------

    def _add_conflict(self, a: str, b: str, until: float) -> None:
        if a == b:
            return
        for x, y in ((a, b), (b, a)):
            others = self._conflicts.get(x)
            if others is None:
                others = self._conflicts[x] = {}
            if others.get(y, -_INF) < until:
                others[y] = until
        heapq.heappush(self._conflict_expiries, (until, next(self._counter), a, b))

    def _trim_reports(self, reported: str, reporters: dict[str, float], now: float) -> None:
        cutoff = now - self.policy.report_window
        for reporter in [r for r, at in reporters.items() if at <= cutoff]:
            del reporters[reporter]
        if not reporters:
            del self._reports[reported]

    def _collect(self, now: float) -> None:
        """Forget skips, blocks, reports and refusals that have run out."""
        expiries = self._conflict_expiries
        while expiries and expiries[0][0] <= now:
            _, _, a, b = heapq.heappop(expiries)
            others = self._conflicts.get(a)
            if others is not None and others.get(b, _INF) <= now:
                for x, y in ((a, b), (b, a)):
                    m = self._conflicts[x]
                    del m[y]
                    if not m:
                        del self._conflicts[x]
        report_expiries = self._report_expiries
        while report_expiries and report_expiries[0][0] <= now:
            _, _, identity = heapq.heappop(report_expiries)
            reporters = self._reports.get(identity)
            if reporters is not None:
                self._trim_reports(identity, reporters, now)
            until = self._refused.get(identity)
            if until is not None and until <= now:
                del self._refused[identity]
