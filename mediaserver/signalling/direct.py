"""Direct messages between connections over the signalling WebSocket, for signed-in
pages (hello with a token), and the way news reaches every open page of an account
on any node: a bus message to every live node, each node handing it to its own pages
of that account.

That news (and the control of calls, calls.py) rides the bus as peer events whose
`ev` starts with `user.`: `to` names what it is for (an account, or a call), `by` the
page or node that acts. The hub routes them here before any random pair sees them.

None of this touches random pairs: a page's partner never sees these messages, and a
direct message never names a random handle. The store checks the conversation is the
sender's and its peer an accepted connection, and keeps a copy for each side that
keeps history (mediaserver.store.conversations).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

from mediaserver.node.bus import Bus
from mediaserver.signalling import events, protocol
from mediaserver.signalling.ports import StorePort
from mediaserver.signalling.protocol import Message, ProtocolError
from mediaserver.signalling.visitors import State, Visitor
from mediaserver.store import Invalid, NotFound, StoreError
from mediaserver.store.conversations import NotConnected

logger = logging.getLogger("mediaserver.signalling.hub")

USER_PREFIX = "user."
"""The `ev` prefix of news for an account's pages and of a call's control."""


def user_news(kind: str, to: str, by: str, **fields: Any) -> dict[str, Any]:
    """The bus message of news `kind` about `to` (an account or a call) from `by`."""
    return {"t": events.BUS_TYPE, "to": to, "by": by, "ev": USER_PREFIX + kind, **fields}


def news_kind(msg: dict[str, Any]) -> str | None:
    """The news kind of a bus message (None: not news for an account's pages)."""
    ev = msg.get("ev")
    if msg.get("t") != events.BUS_TYPE or not isinstance(ev, str):
        return None
    return ev[len(USER_PREFIX):] if ev.startswith(USER_PREFIX) else None


def pages_of(visitors: dict[str, Visitor], user_id: str) -> Iterator[Visitor]:
    """This node's open, signed-in pages of an account."""
    for v in list(visitors.values()):
        if v.user_id == user_id and v.state not in (State.NEW, State.GONE):
            yield v


async def to_every_node(bus: Bus, msg: dict[str, Any]) -> list[str]:
    """Send `msg` to every live node (this one inline); the nodes it went to."""
    nodes = sorted(bus.nodes()) or [bus.node_id]
    for node in nodes:
        await bus.send(node, msg)
    return nodes


def signed_in(v: Visitor, kind: str) -> str:
    """v's account id, for a message only signed-in pages may send."""
    if v.user_id is None:
        raise ProtocolError("unauthorized", "sign in (hello with a token) first", kind)
    return v.user_id


async def store_call(kind: str, fn: Any, *args: Any) -> Any:
    """A blocking store call in a thread, its errors as the protocol's."""
    try:
        return await asyncio.to_thread(fn, *args)
    except NotFound:
        raise ProtocolError("not_found", "no such conversation", kind) from None
    except NotConnected:
        raise ProtocolError("not_connected", "not an accepted connection", kind) from None
    except Invalid as exc:
        raise ProtocolError("bad_field", str(exc), kind) from None
    except StoreError:
        logger.exception("store call failed")
        raise ProtocolError("unavailable", "storage is unavailable, try again", kind) from None


def text_of(msg: dict[str, Any], *names: str) -> tuple[str, ...]:
    """String fields of a bus message (ValueError: one is missing or not a string)."""
    values = tuple(msg.get(name) for name in names)
    for name, value in zip(names, values):
        if not isinstance(value, str):
            raise ValueError(f"user bus message {msg.get('ev')!r}: {name} must be a string")
    return tuple(str(value) for value in values)


class DirectMessages:
    """Args:
    bus: the way to every node.
    visitors: the hub's visitors (shared, by id).
    store: the accounts store (None: accounts are off).
    stats: the hub's counters.
    """

    def __init__(
        self, bus: Bus, visitors: dict[str, Visitor], store: StorePort | None,
        stats: Counter[str],
    ) -> None:
        self.bus = bus
        self.visitors = visitors
        self.store = store
        self.stats = stats

    async def on_direct(self, v: Visitor, msg: Message) -> None:
        """`direct`: store it (where kept), ack the sending page, deliver live."""
        user_id = signed_in(v, "direct")
        if self.store is None:
            raise ProtocolError("unauthorized", "profiles are off on this server", "direct")
        sent = await store_call("direct", self.store.send_direct, user_id,
                                msg["conversation_id"], msg["text"])
        self.stats["direct"] += 1
        v.send(protocol.message("direct_sent", conversation_id=msg["conversation_id"],
                                id=sent["message_id"], at=sent["at"]))
        await to_every_node(self.bus, user_news(
            "direct", sent["peer"], v.id, sender=user_id, recipient=sent["peer"], skip=v.id,
            conversation_id=msg["conversation_id"], id=sent["message_id"],
            at=float(sent["at"]), text=msg["text"]))

    def deliver(self, msg: dict[str, Any]) -> None:
        """A `direct` from the bus: to this node's pages of both accounts, except the
        page that sent it."""
        sender, recipient, skip, conversation_id, message_id, text = text_of(
            msg, "sender", "recipient", "skip", "conversation_id", "id", "text")
        at = msg.get("at")
        if not isinstance(at, (int, float)):
            raise ValueError("direct: at must be a number")
        for user, side in ((recipient, "them"), (sender, "me")):
            for page in pages_of(self.visitors, user):
                if page.id != skip:
                    page.send(protocol.message(
                        "direct", conversation_id=conversation_id, id=message_id, at=at,
                        text=text, **{"from": side}))
