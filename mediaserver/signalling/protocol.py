"""Signalling protocol v1: decode, validate, encode. No I/O (docs/protocol.md).

Text frames are JSON, binary frames msgpack; both decode to the same dict and pass
the same validation, so the rest of the server never sees the encoding.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from mediaserver.rate_limit import TokenBucket
from mediaserver.store import REPORT_REASONS

VERSION = 1
MAX_FRAME_BYTES = 64 * 1024
CHAT_MAX_CHARS = 1000
MAX_INTERESTS = 10
INTEREST_MAX_CHARS = 32
ID_MAX_CHARS = 64
"""Bound on a conversation or call id a client names."""

Message = dict[str, Any]


class ProtocolError(ValueError):
    """A frame or message the server refuses; becomes an `error` message."""

    def __init__(self, code: str, message: str, ref: str | None = None, **fields: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
        self.fields = fields
        """More fields of the error message (`banned`: `until`)."""


def decode(frame: str | bytes) -> Message:
    """Decode one WebSocket frame into a message object (not yet validated).

    Raises:
        ProtocolError: too_large, bad_json, bad_msgpack or not_an_object.
    """
    size = len(frame.encode() if isinstance(frame, str) else frame)
    if size > MAX_FRAME_BYTES:
        raise ProtocolError("too_large", f"frame of {size} bytes, limit {MAX_FRAME_BYTES}")
    if isinstance(frame, str):
        try:
            obj = json.loads(frame, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:  # deep nesting is a RecursionError
            raise ProtocolError("bad_json", f"invalid JSON: {exc}") from None
    else:
        try:
            obj = msgpack.unpackb(frame, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types
            raise ProtocolError("bad_msgpack", f"invalid msgpack: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("not_an_object", "a message must be an object")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def encode(message: Message, binary: bool) -> str | bytes:
    if binary:
        return bytes(msgpack.packb(message, use_bin_type=True))
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


# ---- validation -------------------------------------------------------------

Check = Callable[[str, Any], Any]


def _string(min_len: int, max_len: int) -> Check:
    def check(name: str, value: Any) -> Any:
        if not isinstance(value, str):
            raise ProtocolError("bad_field", f"{name} must be a string")
        if not min_len <= len(value) <= max_len:
            raise ProtocolError("bad_field", f"{name} must be {min_len}-{max_len} characters")
        _check_unicode(name, value)
        return value

    return check


def _check_unicode(name: str, value: str) -> None:
    # JSON's \ud800 escapes can carry lone surrogates: no UTF-8 (and so no partner's
    # frame, JSON or msgpack) can hold them, so they stop here
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError("bad_field", f"{name} must be valid Unicode text") from None


def _boolean(name: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise ProtocolError("bad_field", f"{name} must be true or false")
    return value


def _interests(name: str, value: Any) -> Any:
    if not isinstance(value, list) or len(value) > MAX_INTERESTS:
        raise ProtocolError("bad_field", f"{name} must be a list of at most {MAX_INTERESTS}")
    out = []
    for item in value:
        if not isinstance(item, str) or not 1 <= len(item.strip()) <= INTEREST_MAX_CHARS:
            raise ProtocolError(
                "bad_field", f"each of {name} must be a string of 1-{INTEREST_MAX_CHARS} characters"
            )
        _check_unicode(name, item)
        out.append(item.strip().lower())
    return sorted(set(out))


def _one_of(*choices: str) -> Check:
    def check(name: str, value: Any) -> Any:
        if value not in choices:
            raise ProtocolError("bad_field", f"{name} must be one of {', '.join(choices)}")
        return value

    return check


@dataclass(frozen=True)
class Field:
    check: Check
    required: bool = True


# Client -> server messages and their fields (unknown extra fields are ignored,
# so newer clients can talk to this server).
CLIENT_MESSAGES: dict[str, dict[str, Field]] = {
    "hello": {
        "age_confirmed": Field(_boolean),
        "interests": Field(_interests, required=False),
        "language": Field(_string(2, 16), required=False),
        "token": Field(_string(1, 256), required=False),
    },
    "start": {},
    "offer": {"sdp": Field(_string(1, MAX_FRAME_BYTES))},
    "next": {},
    "stop": {},
    "chat": {"text": Field(_string(1, CHAT_MAX_CHARS))},
    "typing": {},
    "report": {
        "reason": Field(_one_of(*REPORT_REASONS)),
        # evidence the reporter chooses: the pair's last chat lines go with it
        "include_chat": Field(_boolean, required=False),
        # ... and one still of the partner's video, taken by the server at the report
        "include_frame": Field(_boolean, required=False),
    },
    "block": {},
    "effect": {"name": Field(_string(1, 32)), "on": Field(_boolean)},
    "reveal": {},
    "bye": {},
    "share_profile": {},
    # between connections (signed-in pages only): never part of a random pair
    "direct": {
        "conversation_id": Field(_string(1, ID_MAX_CHARS)),
        "text": Field(_string(1, CHAT_MAX_CHARS)),
    },
    "call": {"conversation_id": Field(_string(1, ID_MAX_CHARS))},
    "call_answer": {"call_id": Field(_string(1, ID_MAX_CHARS))},
    "call_decline": {"call_id": Field(_string(1, ID_MAX_CHARS))},
    "call_hangup": {"call_id": Field(_string(1, ID_MAX_CHARS))},
}


def validate(obj: Message) -> Message:
    """Check version, type and fields; return a clean message (type + fields).

    Raises:
        ProtocolError: unsupported_version, unknown_type or bad_field.
    """
    version = obj.get("v")
    if version != VERSION or isinstance(version, bool):
        raise ProtocolError("unsupported_version", f"v must be {VERSION}")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_MESSAGES:
        raise ProtocolError("unknown_type", f"unknown message type {str(kind)[:40]!r}")
    clean: Message = {"type": kind}
    for name, field in CLIENT_MESSAGES[kind].items():
        if name not in obj:
            if field.required:
                raise ProtocolError("bad_field", f"{name} is required", kind)
            continue
        try:
            clean[name] = field.check(name, obj[name])
        except ProtocolError as exc:
            exc.ref = kind
            raise
    return clean


def message(kind: str, **fields: Any) -> Message:
    """A server -> client message."""
    return {"v": VERSION, "type": kind, **fields}


def error(code: str, text: str, ref: str | None = None, **fields: Any) -> Message:
    return message("error", code=code, message=text, ref=ref, **fields)


def welcome(handle: str, ice_servers: list[dict[str, Any]] | None = None) -> Message:
    """hello accepted: the visitor's random handle and the server's limits, and, when
    the server has TURN (--turn-url), `ice_servers`: a list of RTCIceServer objects
    `{urls: [str], username: str, credential: str}` to pass to RTCPeerConnection as
    `iceServers`. The credentials expire (--turn-ttl) and their username is random for
    every welcome, so it never names the visitor. Absent without TURN."""
    fields: dict[str, Any] = {"handle": handle, "limits": limits()}
    if ice_servers is not None:
        for server in ice_servers:
            assert set(server) == {"urls", "username", "credential"}, server
        fields["ice_servers"] = ice_servers
    return message("welcome", **fields)


WITHHELD = ("yours", "partner")


def video_withheld(whose: str) -> Message:
    """Mutual reveal: a face cover could not run (no capacity, the effects not
    installed, its model does not load), so the server does not forward that video
    at all: `whose` is "yours" (your partner gets no video from you) or "partner"
    (you get none from it). Audio and chat go on."""
    assert whose in WITHHELD
    return message("video_withheld", whose=whose)


# ---- rate limits --------------------------------------------------------------


# per second, burst: generous for people, tight for scripts
RATES: dict[str, tuple[float, float]] = {
    "start": (1.0, 5.0),
    "next": (2.0, 5.0),
    "chat": (3.0, 10.0),
    "typing": (5.0, 10.0),
    "share_profile": (0.5, 3.0),  # each one is a consent row and a card to the partner
    # each one ends a pair and re-queues both, as next does; a report also writes
    # the reporter's record and counts against the partner's address
    "block": (2.0, 5.0),
    "report": (1.0, 3.0),
    "direct": (3.0, 10.0),  # each one is a store write and a fan-out to every node
    "call": (0.5, 3.0),  # each one rings every page of the callee
    "call_answer": (2.0, 5.0),
    "call_decline": (2.0, 5.0),
    "call_hangup": (2.0, 5.0),
    # a first offer, a new one after reoffer or media_closed, or an ICE restart
    # when the page's network changes: each one is an SDP parse and an answer
    "offer": (1.0, 5.0),
}


def limits() -> dict[str, Any]:
    return {
        "chat_max_chars": CHAT_MAX_CHARS,
        "max_frame_bytes": MAX_FRAME_BYTES,
        "rates": {kind: rate for kind, (rate, _) in RATES.items()},
        # the browser builds its report menu from these: one list, here
        "report_reasons": list(REPORT_REASONS),
    }
