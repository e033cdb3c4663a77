"""The random-match queue: in-process by default, Redis for several nodes.

    mm = create_matchmaker(config.redis_url, MatchPolicy(), on_match)
    await mm.enqueue(Ticket(peer, identity, interests, language, age_confirmed=True))
    ...                       # every ~0.25 s: await mm.tick()
    await mm.close()

The rules are in base.py; both implementations follow them and share one test
suite (tests/test_matchmaker.py).
"""

from __future__ import annotations

import time

from mediaserver.node.auth import Sealer

from .base import (
    Clock,
    Match,
    Matchmaker,
    MatchPolicy,
    MatchRefused,
    OnMatch,
    RefusalReason,
    Ticket,
)
from .memory import InProcessMatchmaker

__all__ = [
    "Clock",
    "InProcessMatchmaker",
    "Match",
    "MatchPolicy",
    "MatchRefused",
    "Matchmaker",
    "OnMatch",
    "RefusalReason",
    "Ticket",
    "create_matchmaker",
]


def create_matchmaker(
    redis_url: str | None,
    policy: MatchPolicy,
    on_match: OnMatch,
    clock: Clock = time.time,
    secret: bytes | None = None,
) -> Matchmaker:
    """The in-process matchmaker, or the Redis one when ``redis_url`` is set.

    Args:
        redis_url: ``redis://host:port/db`` to share the queue between nodes;
            None (or "") for the in-process queue.
        policy: the matching rules' knobs.
        on_match: called once per match (for Redis: every match any node makes).
        clock: seconds as a float; ``time.time`` by default.
        secret: the nodes' cluster secret: matches on the channel are sealed with
            it (a forged one is dropped); None: plain (one trusted Redis).
    """
    if redis_url:
        from .redis import RedisMatchmaker  # redis-py is only needed here

        sealer = Sealer(secret) if secret is not None else None
        return RedisMatchmaker(redis_url, policy, on_match, clock, sealer=sealer)
    return InProcessMatchmaker(policy, on_match, clock)
