"""Every message between nodes, and between a worker and its coordinator, as a
frozen dataclass; one codec to and from the msgpack map on the wire.

A message goes on the wire as a map, its type in `t` and its fields by name
(`{"t": "down", "node": "a.w1"}`).

`to_wire(message)` makes that map, `from_wire(map)` checks it and makes the message
again; anything else (an unknown `t`, a missing field, a field of the wrong type, an
extra field) is a ValueError that says which. `pack`/`unpack`: the same to and from
msgpack bytes (what the seal in auth.py wraps).

Three families:
    bus bodies      what nodes say to each other: a peer event, the media
                    requests and their notices, the metrics request.
    bus envelopes   a body as it crosses the bus: an event, a request that
                    waits for a reply, the reply (BusEvent, BusRequest, BusReply).
    coordinator     a worker and the coordinator of its machine (framing.py
                    puts them on the Unix socket): relaying bus bytes, load
                    reports, the live workers, matches and ticket calls.

Who sends what: bus.py (envelopes), media.py (media requests), the signalling hub
(peer events, through Bus.send with a dict; their payload, `ev` and its fields, is the
hub's and crosses here unchecked), coordinator.py (coordinator messages).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, Union

import msgpack

Wire = dict[str, Any]
"""A message as a msgpack/JSON map: `t` and the fields."""

M = TypeVar("M", bound="NodeMessage")


class NodeMessage:
    """Base of every message here: its wire type is TYPE."""

    TYPE: ClassVar[str] = ""


_KINDS: dict[str, type[NodeMessage]] = {}


def _message(cls: type[M]) -> type[M]:
    """Register a message class under its TYPE (one class per type)."""
    assert cls.TYPE and cls.TYPE not in _KINDS, cls.TYPE
    _KINDS[cls.TYPE] = cls
    return cls


# ---- node registry ------------------------------------------------------------------


@dataclass
class NodeInfo:
    """What a node announces about itself (refreshed every 2 s).

    Not frozen, unlike the messages: the hub counts a session it places on a
    node at once (`sessions += 1`), before that node's next report.
    """

    id: str
    """The node's id (letters, digits, `_.-`)."""
    announced_ip: str = "127.0.0.1"
    """The addresses its media (UDP) is reached on: one IPv4 and/or one IPv6, comma-separated."""
    udp_port: int = 0
    """Its media port."""
    sessions: int = 0
    """Media sessions it holds."""
    capacity: int = 4096
    """Media sessions it takes at most."""

    @property
    def has_room(self) -> bool:
        return self.sessions + 2 <= self.capacity  # room for a pair

    @property
    def load(self) -> float:
        return self.sessions / max(1, self.capacity)

    def encode(self) -> bytes:
        """The msgpack map of its fields (a registry entry's payload)."""
        data: bytes = msgpack.packb(_fields_to_wire(self))
        return data

    @classmethod
    def decode(cls, data: bytes) -> NodeInfo:
        """What `encode` made (ValueError: not a NodeInfo)."""
        return _fields_from_wire(cls, _unpack_map(data))


# ---- bus bodies ---------------------------------------------------------------------


@_message
@dataclass(frozen=True, slots=True)
class PeerEvent(NodeMessage):
    """One visitor's action, for its partner (maybe on another node)."""

    TYPE = "peer"
    to: str
    """The peer id it is for."""
    by: str
    """The peer id it comes from."""
    ev: str
    """What happened: chat, typing, pair, media, left... (the hub's vocabulary)."""
    fields: dict[str, Any] = field(default_factory=dict)
    """The event's own fields (the hub's); on the wire beside `to`, `by`, `ev`."""


@_message
@dataclass(frozen=True, slots=True)
class CreateSession(NodeMessage):
    """Request: a media session here for an SDP offer (or, with `restart`, its ICE restart)."""

    TYPE = "create"
    sdp: str
    """The visitor's SDP offer."""
    owner: str
    """The peer id of the visitor it is for (told when the session closes)."""
    restart: str | None = None
    """The id of the visitor's session whose ICE the offer restarts."""


@_message
@dataclass(frozen=True, slots=True)
class ConnectSessions(NodeMessage):
    """Request: forward one session's media to another."""

    TYPE = "connect"
    pub: str
    """The session whose media is forwarded."""
    sub: str
    """The session it is forwarded to."""


@_message
@dataclass(frozen=True, slots=True)
class DisconnectSessions(NodeMessage):
    """Request: stop what ConnectSessions started (`pub` to `sub`)."""

    TYPE = "disconnect"
    pub: str
    sub: str


@_message
@dataclass(frozen=True, slots=True)
class CloseSession(NodeMessage):
    """Request: close a media session (its owner is not told: it asked)."""

    TYPE = "close"
    session: str
    """The session id."""


@_message
@dataclass(frozen=True, slots=True)
class SetEffect(NodeMessage):
    """Request: process a session's video with an effect (or none)."""

    TYPE = "effect"
    session: str
    """The session id."""
    name: str | None
    """The effect; None: none (with `cover`: withhold the video)."""
    cover: bool = False
    """Mutual reveal's face cover: fails closed (the video is withheld)."""


@_message
@dataclass(frozen=True, slots=True)
class CaptureStill(NodeMessage):
    """Request: a JPEG of a session's next keyframe (reply: {"jpeg": bytes})."""
    TYPE = "still"
    session: str


@_message
@dataclass(frozen=True, slots=True)
class MediaClosed(NodeMessage):
    """Event: a session closed on its node; for its owner's home node."""

    TYPE = "media_closed"
    peer: str
    """The owner's peer id."""
    session: str
    """The session id."""
    reason: str
    """Why it closed."""
    node: str
    """The node the session was on."""


@_message
@dataclass(frozen=True, slots=True)
class CoverFailed(NodeMessage):
    """Event: a session's face cover broke (its video is withheld)."""

    TYPE = "cover_failed"
    peer: str
    """The owner's peer id."""
    session: str
    """The session id."""


@_message
@dataclass(frozen=True, slots=True)
class MetricsRequest(NodeMessage):
    """Request: this worker's metrics exposition (reply: {"text": ...})."""

    TYPE = "metrics"


BusBody = Union[
    PeerEvent, CreateSession, ConnectSessions, DisconnectSessions, CloseSession, SetEffect,
    CaptureStill, MediaClosed, CoverFailed, MetricsRequest,
]  # fmt: skip
BUS_BODIES: tuple[type[NodeMessage], ...] = typing.get_args(BusBody)


# ---- bus envelopes ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BusEvent:
    """An event from another node: handled in the order sent, one at a time.

    On the wire: the body's map with `from`.
    """

    sender: str
    """The node that sent it."""
    body: BusBody


@dataclass(frozen=True, slots=True)
class BusRequest:
    """A request from another node, which waits for the reply.

    On the wire: the body's map with `from` and `rid`.
    """

    sender: str
    """The node that asked (the reply goes there)."""
    request_id: str
    """Pairs the reply with the request (`rid` on the wire)."""
    body: BusBody


@dataclass(frozen=True, slots=True)
class BusReply:
    """The answer to a BusRequest: {"t": "reply", "rid", "body", "from"}."""

    sender: str
    """The node that answered."""
    request_id: str
    """The request's id."""
    body: Wire
    """The handler's answer (the asker's to read), {"error": ...} if it failed."""


BusEnvelope = Union[BusEvent, BusRequest, BusReply]


def body_from_dict(msg: Wire) -> BusBody:
    """A bus body from the dict a handler sends or gets (`from`, `rid` ignored).

    Raises:
        ValueError: an unknown type, or fields that do not fit it.
    """
    body = {k: v for k, v in msg.items() if k not in ("from", "rid")}
    message = from_wire(body)
    if not isinstance(message, BUS_BODIES):
        raise ValueError(f"{message.TYPE!r} is not a bus message")
    return message  # type: ignore[return-value]


def body_to_dict(body: BusBody, sender: str | None = None) -> Wire:
    """The dict a handler gets: the body's map, with `from` when it came over the bus."""
    wire = to_wire(body)
    if sender is not None:
        wire["from"] = sender
    return wire


def pack_envelope(envelope: BusEnvelope) -> bytes:
    """The msgpack bytes of an envelope (what a node seals and publishes)."""
    if isinstance(envelope, BusReply):
        wire: Wire = {
            "t": "reply", "rid": envelope.request_id, "body": envelope.body,
            "from": envelope.sender,
        }  # fmt: skip
    else:
        wire = to_wire(envelope.body)
        wire["from"] = envelope.sender
        if isinstance(envelope, BusRequest):
            wire["rid"] = envelope.request_id
    data: bytes = msgpack.packb(wire)
    return data


def unpack_envelope(data: bytes) -> BusEnvelope:
    """What `pack_envelope` made.

    Raises:
        ValueError: not msgpack, not a map, no `from`, an unknown body type, or
            fields that do not fit it.
    """
    wire = _unpack_map(data)
    sender = wire.get("from")
    if not isinstance(sender, str):
        raise ValueError("bus message without a sender ('from')")
    if wire.get("t") == "reply":
        rid, body = wire.get("rid"), wire.get("body")
        if not isinstance(rid, str) or not isinstance(body, dict):
            raise ValueError("reply needs 'rid' (str) and 'body' (map)")
        return BusReply(sender, rid, body)
    rid = wire.get("rid")
    message = body_from_dict(wire)
    if rid is None:
        return BusEvent(sender, message)
    if not isinstance(rid, str):
        raise ValueError("'rid' must be a str")
    return BusRequest(sender, rid, message)


# ---- a worker and its coordinator ----------------------------------------------------


@_message
@dataclass(frozen=True, slots=True)
class Hello(NodeMessage):
    """Worker -> coordinator, first: who this connection is."""

    TYPE = "hello"
    node: str
    """The worker's node id."""


@_message
@dataclass(frozen=True, slots=True)
class RelayTo(NodeMessage):
    """Worker -> coordinator: bus bytes for another worker."""

    TYPE = "to"
    node: str
    """The worker they are for."""
    data: bytes
    """A packed bus envelope."""


@_message
@dataclass(frozen=True, slots=True)
class Relayed(NodeMessage):
    """Coordinator -> worker: bus bytes another worker sent it."""

    TYPE = "msg"
    data: bytes
    """A packed bus envelope."""


@_message
@dataclass(frozen=True, slots=True)
class LoadReport(NodeMessage):
    """Worker -> coordinator, every INFO_EVERY: its NodeInfo."""

    TYPE = "info"
    info: NodeInfo
    """The worker's id, address and load."""


@_message
@dataclass(frozen=True, slots=True)
class LiveNodes(NodeMessage):
    """Coordinator -> every worker, every NODES_EVERY: the workers alive."""

    TYPE = "nodes"
    infos: tuple[NodeInfo, ...]
    """Each live worker's last load report."""


@_message
@dataclass(frozen=True, slots=True)
class NodeDown(NodeMessage):
    """Coordinator -> every worker: a worker's connection dropped (it died)."""

    TYPE = "down"
    node: str
    """The worker that is gone."""


@_message
@dataclass(frozen=True, slots=True)
class MatchFound(NodeMessage):
    """Coordinator -> every worker: two queued visitors are a pair."""

    TYPE = "match"
    a: str
    """One peer id (it offers the media)."""
    b: str
    """The other peer id."""
    shared: tuple[str, ...] = ()
    """The interests they share."""


@_message
@dataclass(frozen=True, slots=True)
class Enqueue(NodeMessage):
    """Call: queue a visitor's ticket in the shared queue."""

    TYPE = "enqueue"
    call_id: int
    """Pairs the CallResult with the call."""
    peer: str
    """The visitor's peer id."""
    identity: str
    """Who it is for skips and blocks (account or address hash)."""
    reputation: str
    """Who it is for reports."""
    interests: tuple[str, ...]
    """Its interests, sorted."""
    language: str | None
    """Its preferred language (None: any)."""
    age_confirmed: bool
    """It confirmed its age (the queue refuses it otherwise)."""


@_message
@dataclass(frozen=True, slots=True)
class CancelTicket(NodeMessage):
    """Call: take a visitor out of the queue (nothing if it is not in it)."""

    TYPE = "cancel"
    call_id: int
    """Pairs the CallResult with the call."""
    peer: str
    """The visitor's peer id."""


@_message
@dataclass(frozen=True, slots=True)
class RecordSkip(NodeMessage):
    """Call: `identity` skipped `other_identity` (not paired again for a while)."""

    TYPE = "record_skip"
    call_id: int
    """Pairs the CallResult with the call."""
    identity: str
    """Who skipped."""
    other_identity: str
    """Who was skipped."""


@_message
@dataclass(frozen=True, slots=True)
class RecordBlock(NodeMessage):
    """Call: `identity` blocked `other_identity` (never paired again)."""

    TYPE = "record_block"
    call_id: int
    """Pairs the CallResult with the call."""
    identity: str
    """Who blocked."""
    other_identity: str
    """Who was blocked."""


@_message
@dataclass(frozen=True, slots=True)
class RecordReport(NodeMessage):
    """Call: one visitor reported another (lowers its standing in the queue)."""

    TYPE = "record_report"
    call_id: int
    """Pairs the CallResult with the call."""
    identity: str
    """The reporter's reputation identity."""
    other_identity: str
    """The reported one's."""


@_message
@dataclass(frozen=True, slots=True)
class Forget(NodeMessage):
    """Call: forget what the queue remembers of an identity (account deleted)."""

    TYPE = "forget"
    call_id: int
    """Pairs the CallResult with the call."""
    identity: str
    """The identity to forget."""


@_message
@dataclass(frozen=True, slots=True)
class QueueLength(NodeMessage):
    """Call: how many visitors wait (the result's `value`)."""

    TYPE = "queue_length"
    call_id: int
    """Pairs the CallResult with the call."""


@_message
@dataclass(frozen=True, slots=True)
class CallResult(NodeMessage):
    """Coordinator -> the calling worker: how a ticket call went."""

    TYPE = "result"
    call_id: int
    """The call's id."""
    value: int | None = None
    """What it returned (QueueLength), else None."""
    refused: str | None = None
    """The queue refused the ticket: why (MatchRefused's reason)."""
    error: str | None = None
    """The call failed: how."""


TicketCall = Union[Enqueue, CancelTicket, RecordSkip, RecordBlock, RecordReport, Forget, QueueLength]
TICKET_CALLS: tuple[type[NodeMessage], ...] = typing.get_args(TicketCall)
CoordinatorMessage = Union[
    Hello, RelayTo, Relayed, LoadReport, LiveNodes, NodeDown, MatchFound, CallResult, TicketCall
]
COORDINATOR_MESSAGES: tuple[type[NodeMessage], ...] = (
    Hello, RelayTo, Relayed, LoadReport, LiveNodes, NodeDown, MatchFound, CallResult, *TICKET_CALLS,
)  # fmt: skip


# ---- the codec ----------------------------------------------------------------------


def to_wire(message: NodeMessage) -> Wire:
    """The map of a message: {"t": TYPE, field: value...} (a PeerEvent's own
    fields beside the others)."""
    wire: Wire = {"t": message.TYPE}
    if isinstance(message, PeerEvent):
        wire.update(message.fields)
        wire.update(to=message.to, by=message.by, ev=message.ev)
        return wire
    wire.update(_fields_to_wire(message))
    return wire


def from_wire(wire: Any) -> NodeMessage:
    """The message a map holds.

    Raises:
        ValueError: not a map, an unknown `t`, a missing, extra or mistyped field.
    """
    if not isinstance(wire, dict):
        raise ValueError(f"a message is a map, not {type(wire).__name__}")
    kind = wire.get("t")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown message type {kind!r}")
    fields = {k: v for k, v in wire.items() if k != "t"}
    if cls is PeerEvent:
        head = {k: fields.pop(k, None) for k in ("to", "by", "ev")}
        return PeerEvent(**_fields_from_wire_map(PeerEvent, head, exclude=("fields",)),
                         fields=fields)
    return _fields_from_wire(cls, fields)


def pack(message: NodeMessage) -> bytes:
    """The msgpack bytes of a message."""
    data: bytes = msgpack.packb(to_wire(message))
    return data


def unpack(data: bytes) -> NodeMessage:
    """The message in msgpack bytes.

    Raises:
        ValueError: not msgpack, or not a message (see from_wire).
    """
    return from_wire(_unpack_map(data))


def _unpack_map(data: bytes) -> Wire:
    try:
        wire = msgpack.unpackb(data)
    except Exception as exc:  # msgpack raises several kinds for garbage
        raise ValueError(f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(wire, dict):
        raise ValueError(f"a message is a map, not {type(wire).__name__}")
    return wire


def _fields_to_wire(obj: Any) -> Wire:
    out: Wire = {}
    for name, _, _ in _schema(type(obj)):
        value = getattr(obj, name)
        if isinstance(value, NodeInfo):
            value = _fields_to_wire(value)
        elif isinstance(value, tuple):
            value = [_fields_to_wire(v) if isinstance(v, NodeInfo) else v for v in value]
        out[name] = value
    return out


T = TypeVar("T")


def _fields_from_wire(cls: type[T], fields: Wire) -> T:
    return cls(**_fields_from_wire_map(cls, fields))


def _fields_from_wire_map(cls: type[Any], fields: Wire, exclude: tuple[str, ...] = ()) -> Wire:
    """Check `fields` against the dataclass `cls` and convert them for it."""
    out: Wire = {}
    for name, convert, required in _schema(cls):
        if name in fields and name not in exclude:
            try:
                out[name] = convert(fields[name])
            except ValueError as exc:
                raise ValueError(f"{_name(cls)}.{name}: {exc}") from None
        elif required and name not in exclude:
            raise ValueError(f"{_name(cls)}: missing field {name!r}")
    if len(out) != len(fields):
        extra = sorted(str(k) for k in fields if k not in out)
        raise ValueError(f"{_name(cls)}: unknown field {extra[0]!r}")
    return out


def _name(cls: type[Any]) -> str:
    return getattr(cls, "TYPE", "") or cls.__name__


Convert = Callable[[Any], Any]
_SCHEMAS: dict[type[Any], list[tuple[str, Convert, bool]]] = {}


def _schema(cls: type[Any]) -> list[tuple[str, Convert, bool]]:
    """(field name, its converter, required) for each field of the dataclass
    `cls`, worked out once (the hints are read once, not per message)."""
    schema = _SCHEMAS.get(cls)
    if schema is None:
        hints = typing.get_type_hints(cls)
        schema = _SCHEMAS[cls] = [
            (
                f.name,
                _converter(hints[f.name]),
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
        ]
    return schema


def _converter(hint: Any) -> Convert:
    """A function that returns a wire value as the type `hint` says, or raises ValueError."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        (inner_hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = _converter(inner_hint)
        return lambda value: None if value is None else inner(value)
    if origin is tuple:
        item = _converter(typing.get_args(hint)[0])

        def convert_tuple(value: Any) -> Any:
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"expected a list, got {type(value).__name__}")
            return tuple(item(v) for v in value)

        return convert_tuple
    if origin is dict:

        def convert_map(value: Any) -> Any:
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise ValueError("expected a map with str keys")
            return value

        return convert_map
    if hint is NodeInfo:

        def convert_info(value: Any) -> Any:
            if not isinstance(value, dict):
                raise ValueError(f"expected a node info map, got {type(value).__name__}")
            return NodeInfo(**_fields_from_wire_map(NodeInfo, value))

        return convert_info
    kind: type[Any] = hint
    refused = bool if kind is int else type(None)  # a bool is an int to isinstance, not here

    def convert_plain(value: Any) -> Any:
        if not isinstance(value, kind) or isinstance(value, refused):
            raise ValueError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return convert_plain
