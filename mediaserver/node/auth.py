"""Signed messages between nodes: HMAC-SHA256 under the shared --cluster-secret.

Anyone who can write to Redis could otherwise register a node, answer offers
and forge events. Every bus message and every node registry entry is sealed:

    +-------+---------------+------------------------------------------------+
    | MSN1  | tag, 32 bytes | msgpack [purpose, sender, recipient, time, body] |
    +-------+---------------+------------------------------------------------+

    tag = HMAC-SHA256(key, "MSN1" | msgpack [...])

The tag covers everything after it. `purpose` keeps a registry entry from being
replayed as a bus message, `recipient` pins a message to one node's channel,
and `time` (the sender's wall clock) bounds replays to a short window; within
it, a tag already seen is dropped too (`once`).

Sans-I/O: time is an argument, nothing here reads a clock or a socket.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from dataclasses import dataclass

import msgpack

MAGIC = b"MSN1"
TAG_BYTES = 32
WINDOW = 30.0
"""Seconds a message may be old (or early: clocks differ a little) when it
arrives; node clocks under NTP agree far better than this."""
MAX_SEEN = 200_000
"""Tags remembered for replay detection; past this the oldest are forgotten."""
MIN_SECRET_BYTES = 16

PURPOSE_BUS = "bus"
PURPOSE_NODE = "node"
PURPOSE_MATCH = "match"

REASONS = ("unsigned", "bad_signature", "malformed", "misdirected", "expired", "replayed")
"""Why a sealed message was dropped (the `reason` label of the metric)."""


class Rejected(ValueError):
    """A message that is not sealed, or not sealed right, for this node now."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        """One of REASONS."""


@dataclass(frozen=True, slots=True)
class Opened:
    """A message whose seal checked out."""

    sender: str
    """The node that sealed it."""
    recipient: str
    sent_at: float
    """The sender's clock when it sealed it (seconds since the epoch)."""
    payload: bytes


class Sealer:
    """Seals and opens node messages with one cluster secret.

    Args:
        secret: the --cluster-secret (at least MIN_SECRET_BYTES bytes).
        window: seconds a message stays acceptable after (and before) its time.
    """

    def __init__(self, secret: bytes, window: float = WINDOW) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"a cluster secret must be at least {MIN_SECRET_BYTES} bytes")
        # a key of its own, so the secret could sign something else without confusion
        self._key = hmac.new(secret, b"mediaserver cluster v1", hashlib.sha256).digest()
        self.window = window
        self._seen: dict[bytes, float] = {}  # tag -> when it expires, in arrival order

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, MAGIC + body, hashlib.sha256).digest()

    def seal(self, purpose: str, sender: str, recipient: str, payload: bytes, now: float) -> bytes:
        body: bytes = msgpack.packb([purpose, sender, recipient, now, payload])
        return MAGIC + self._tag(body) + body

    def open(
        self,
        data: bytes,
        purpose: str,
        now: float,
        *,
        recipient: str | None = None,
        once: bool = True,
        max_age: float | None = None,
    ) -> Opened:
        """Check a sealed message and return it.

        Args:
            purpose: what it must have been sealed for (PURPOSE_BUS, PURPOSE_NODE).
            recipient: the node it must be addressed to; None: any.
            once: drop a message seen before (bus messages; not registry
                entries, which are read again and again).
            max_age: seconds it may be old; None: the window.

        Raises:
            Rejected: with the reason it was dropped.
        """
        if len(data) <= len(MAGIC) + TAG_BYTES or not data.startswith(MAGIC):
            raise Rejected("unsigned")
        tag = data[len(MAGIC) : len(MAGIC) + TAG_BYTES]
        body = data[len(MAGIC) + TAG_BYTES :]
        if not hmac.compare_digest(tag, self._tag(body)):
            raise Rejected("bad_signature")
        try:
            p, sender, to, sent_at, payload = msgpack.unpackb(body)
            if not (
                isinstance(p, str) and isinstance(sender, str) and isinstance(to, str)
                and isinstance(sent_at, float) and math.isfinite(sent_at)
                and isinstance(payload, bytes)
            ):  # fmt: skip
                raise ValueError("field types")
        except (ValueError, TypeError, msgpack.UnpackException):
            raise Rejected("malformed") from None
        if p != purpose or (recipient is not None and to != recipient):
            raise Rejected("misdirected")
        age = now - sent_at
        if not -self.window <= age <= (self.window if max_age is None else max_age):
            raise Rejected("expired")
        if once:
            self._forget(now)
            if tag in self._seen:
                raise Rejected("replayed")
            self._seen[tag] = sent_at + self.window
            if len(self._seen) > MAX_SEEN:
                del self._seen[next(iter(self._seen))]
        return Opened(sender, to, sent_at, payload)

    def seal_text(self, purpose: str, sender: str, text: str, now: float) -> str:
        """A broadcast (recipient "*") as base64 text, for a channel read as text."""
        return base64.b64encode(self.seal(purpose, sender, "*", text.encode(), now)).decode()

    def open_text(self, data: str, purpose: str, now: float) -> Opened:
        """Open what `seal_text` made.

        Raises:
            Rejected: as `open`; "unsigned" for text that is not base64.
        """
        try:
            sealed = base64.b64decode(data, validate=True)
        except ValueError:
            raise Rejected("unsigned") from None
        return self.open(sealed, purpose, now)

    def _forget(self, now: float) -> None:
        """Drop the tags of messages that would be rejected as expired anyway."""
        seen = self._seen
        while seen:
            first = next(iter(seen))
            if seen[first] >= now:
                break
            del seen[first]


def load_secret(path: str, flag: str = "--cluster-secret-file") -> bytes:
    """A secret in a file, the cluster's or TURN's (surrounding whitespace stripped;
    `flag` names the file's flag in errors).

    Raises:
        ValueError: one line: unreadable, not a regular file, readable by group or
            others, or larger than 4 KiB.
    """
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise ValueError(f"{flag} {path!r}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{flag} {path!r} is not a regular file")
        if st.st_mode & 0o077:
            raise ValueError(
                f"{flag} {path!r} has permissions {stat.S_IMODE(st.st_mode):04o}: it must "
                "not be readable or writable by group or others (chmod 600)"
            )
        data = os.read(fd, 4097)
    finally:
        os.close(fd)
    if len(data) > 4096:
        raise ValueError(f"{flag} {path!r} holds more than 4096 bytes")
    return data.strip()
