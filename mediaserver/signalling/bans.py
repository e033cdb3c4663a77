"""Moderators' bans where visitors arrive: checked at `hello` (its account, once
signed in, and its keyed address hash) and again at `start`, on every node.

Where a ban is kept: the store (SQLite) always, which every worker of a machine
shares; the matchmaker too (Redis, under --redis-url), so nodes with their own
database see it. In Redis an account ban is keyed by an HMAC of the account id under
the identity key (the nodes' shared secret), as addresses already are: Redis never
holds an account id or an address.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
from collections import Counter
from datetime import UTC, datetime

from mediaserver.matchmaker import Matchmaker
from mediaserver.signalling.ports import StorePort
from mediaserver.signalling.protocol import ProtocolError
from mediaserver.signalling.visitors import Visitor
from mediaserver.store import StoreError
from mediaserver.store.moderation import Ban

logger = logging.getLogger("mediaserver.signalling.hub")


def until_text(until: float) -> str | None:
    """A ban's end for the client: ISO 8601 UTC, None for good."""
    if math.isinf(until):
        return None
    return (
        datetime.fromtimestamp(until, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


class Bans:
    """Args:
    store: where decisions keep bans; None: accounts (and so moderation) are off.
    queue: the matchmaker (Redis shares bans between nodes; the others keep none).
    identity_key: the nodes' shared secret account ids are hashed under.
    stats: the hub's counters.
    """

    def __init__(
        self, store: StorePort | None, queue: Matchmaker, identity_key: bytes, stats: Counter[str]
    ) -> None:
        self.store = store
        self.queue = queue
        self._identity_key = identity_key
        self.stats = stats

    def key(self, kind: str, subject: str) -> str:
        """The shared key of a ban: `a:` + the address hash (already keyed), or
        `u:` + an HMAC of the account id."""
        if kind == "address":
            return "a:" + subject
        return (
            "u:"
            + hmac.new(
                self._identity_key, b"ban\x00account\x00" + subject.encode(), hashlib.sha256
            ).hexdigest()
        )

    async def check(self, v: Visitor, ref: str) -> None:
        """Raises ProtocolError `banned` (with `until`) when a ban holds on v."""
        until = await self.until(v.user_id, v.reputation)
        if until is None:
            return
        self.stats["refused:banned"] += 1
        text = "for good" if math.isinf(until) else "until " + str(until_text(until))
        raise ProtocolError(
            "banned", f"banned by the moderators {text}", ref, until=until_text(until)
        )

    async def until(self, user_id: str | None, address: str) -> float | None:
        """The end of the longest ban on the account or address (math.inf: for
        good), None when none holds."""
        found: list[float] = []
        if self.store is not None:
            try:
                stored = await asyncio.to_thread(self.store.ban_until, user_id, address)
            except StoreError:
                logger.exception("reading bans failed")
                stored = None
            if stored is not None:
                found.append(stored)
        keys = [self.key("address", address)]
        if user_id is not None:
            keys.append(self.key("account", user_id))
        shared = await self.queue.banned_until(keys)
        if shared is not None:
            found.append(shared)
        return max(found) if found else None

    async def spread(self, bans: list[Ban]) -> None:
        """Share where the bans a decision touched stand with every node."""
        for ban in bans:
            until = None if not ban.active else math.inf if ban.until is None else ban.until
            await self.queue.set_ban(self.key(ban.kind, ban.subject), until)
