"""ICE-lite, server side: answer STUN Binding requests and keep consent.

The server is a lite agent (RFC 8445 section 2.5): it never sends checks of its
own, it only answers the browser's, and the browser (always controlling) picks the
pair. One :class:`IceLiteServer` serves every session of a worker process on its one
UDP port, so a request is routed to its session by the USERNAME attribute
(RFC 8445 section 7.2.2: ``<our ufrag>:<their ufrag>``).

Nothing is ever sent to an address before it has proved it knows the session's
password (MESSAGE-INTEGRITY, RFC 5389 section 15.4): requests that fail are dropped
silently and counted in :attr:`IceLiteServer.drops`, so the port cannot be used to
reflect or amplify traffic towards a spoofed address.

The class is sans-I/O: bytes and time are arguments, in the style of aioquic::

    ice.receive_datagram(data, addr, now)
    for datagram, addr in ice.datagrams_to_send(now): sock.sendto(datagram, addr)
    while (event := ice.next_event()) is not None: ...
    ice.get_timer() / ice.handle_timer(now)

aioice's STUN codec (:mod:`aioice.stun`) parses and builds the messages.
"""

from __future__ import annotations

import heapq
import itertools
import re
import secrets
import string
import struct
from collections import Counter, deque
from dataclasses import dataclass, field

from aioice import stun

from mediaserver.sfu.address import Address

__all__ = [
    "AddressBound",
    "ConsentExpired",
    "IceEvent",
    "IceLiteServer",
    "generate_credentials",
]


# RFC 7675 section 5.1: consent expires 30 s after the last check that succeeded.
CONSENT_TIMEOUT = 30.0

# A browser validates one address per candidate it gathered (host, srflx, relay,
# IPv4 and IPv6); more than this means NAT rebindings piled up over a long call,
# and the least recently seen address is forgotten.
MAX_ADDRESSES_PER_SESSION = 16

# RFC 8839 section 5.4: ice-char = ALPHA / DIGIT / "+" / "/".
ICE_CHARS = string.ascii_letters + string.digits + "+/"
UFRAG_LENGTH = 8  # 48 random bits; RFC 8445 section 5.3 asks for at least 24
PWD_LENGTH = 24  # 144 random bits; RFC 8445 section 5.3 asks for at least 128
_UFRAG_RE = re.compile(r"[A-Za-z0-9+/]{4,256}")
_PWD_RE = re.compile(r"[A-Za-z0-9+/]{22,256}")

# RFC 5389 section 6: message type layout; section 15.5: FINGERPRINT.
STUN_HEADER_LENGTH = stun.HEADER_LENGTH
STUN_COOKIE = stun.COOKIE
STUN_CLASS_MASK = 0x0110
STUN_METHOD_MASK = 0x3EEF
STUN_FINGERPRINT = 0x8028
STUN_ERROR_ROLE_CONFLICT = (487, "Role Conflict")  # RFC 8445 section 7.3.1.1

# Drop reasons, the keys of IceLiteServer.drops.
DROP_MALFORMED = "stun_malformed"
DROP_BAD_FINGERPRINT = "stun_bad_fingerprint"
DROP_NOT_REQUEST = "stun_not_request"
DROP_NOT_BINDING = "stun_not_binding"
DROP_MISSING_USERNAME = "stun_missing_username"
DROP_MISSING_INTEGRITY = "stun_missing_integrity"
DROP_UNKNOWN_USER = "stun_unknown_user"
DROP_BAD_INTEGRITY = "stun_bad_integrity"
DROP_ROLE_CONFLICT = "stun_role_conflict"
DROP_UNVERIFIED_NOMINATION = "stun_unverified_nomination"
DROP_ADDRESS_IN_USE = "stun_address_in_use"

PROBE_INTERVAL = 1.0
"""At most one return-routability check per session per this many seconds."""
PROBE_LIFETIME = 5.0
"""A check's answer is accepted this long after it was sent."""
PROBE_PRIORITY = 1853824767  # a host candidate's priority (RFC 8445 section 5.1.2.1)


@dataclass(frozen=True)
class AddressBound:
    """A peer address passed a connectivity check for a session."""

    key: str
    """The session's id, as given to :meth:`IceLiteServer.add_session`."""

    addr: Address
    """The source address of the check: DTLS and SRTP from it belong to the session."""

    nominated: bool
    """True when the check carried USE-CANDIDATE: media goes to this address now."""


@dataclass(frozen=True)
class ConsentExpired:
    """No valid check arrived for ``consent_timeout``: the session was removed."""

    key: str
    """The session's id, as given to :meth:`IceLiteServer.add_session`."""


IceEvent = AddressBound | ConsentExpired


def generate_credentials() -> tuple[str, str]:
    """Return a fresh random ``(ufrag, pwd)`` pair for a session's local side.

    Both are made of ice-chars (RFC 8839 section 5.4) from :mod:`secrets`: an
    8-character ufrag and a 24-character password.
    """
    ufrag = "".join(secrets.choice(ICE_CHARS) for _ in range(UFRAG_LENGTH))
    pwd = "".join(secrets.choice(ICE_CHARS) for _ in range(PWD_LENGTH))
    return ufrag, pwd


@dataclass(eq=False)
class _Session:
    key: str
    local_ufrag: str
    remote_ufrag: str
    integrity_key: bytes
    added: float
    last_seen: float | None = None
    # Insertion order is recency order: the first entry is the least recent.
    addresses: dict[Address, None] = field(default_factory=dict)
    nominated: Address | None = None
    remote_key: bytes | None = None
    """The peer's ice-pwd (from its offer): signs our checks to a new address."""
    probe: tuple[bytes, Address, float] | None = None
    """(transaction id, address, sent at) of our check to a newly nominated address."""
    withheld: stun.Message | None = None
    """The latest nomination from the probed address, unanswered until it answers
    our check; then answered at once, so the peer need not wait for its retry."""
    verified: Address | None = None
    """An address shown to be the peer's: it returned our DTLS cookie, or it answered
    our check. Once set, media leaves it only for another address shown the same way."""

    def deadline(self, timeout: float) -> float:
        return (self.added if self.last_seen is None else self.last_seen) + timeout


class IceLiteServer:
    """The lite ICE agent of every session on one UDP port.

    Args:
        consent_timeout: seconds without a valid check after which a session is
            removed with :class:`ConsentExpired` (RFC 7675); a session that never
            gets a valid check expires this long after it was added.
    """

    def __init__(self, consent_timeout: float = CONSENT_TIMEOUT) -> None:
        if not consent_timeout > 0:
            raise ValueError(f"consent_timeout must be positive, not {consent_timeout!r}")
        self.consent_timeout = consent_timeout
        self.drops: Counter[str] = Counter()
        """Datagrams dropped, by reason (the ``DROP_*`` constants)."""

        self._sessions: dict[str, _Session] = {}
        self._by_ufrag: dict[str, _Session] = {}
        self._by_address: dict[Address, _Session] = {}
        self._events: deque[IceEvent] = deque()
        self._to_send: list[tuple[bytes, Address]] = []
        # Consent deadlines, updated lazily: an entry may be older than its
        # session's real deadline (never newer), and is fixed when it surfaces.
        self._timers: list[tuple[float, int, _Session]] = []
        self._timer_seq = itertools.count()
        self._probes: dict[bytes, _Session] = {}  # transaction id -> session
        self._tie_breaker = secrets.randbits(64)

    # Sessions

    def add_session(
        self,
        key: str,
        local_ufrag: str,
        local_pwd: str,
        remote_ufrag: str,
        *,
        now: float,
        remote_pwd: str | None = None,
    ) -> None:
        """Accept checks for a new session.

        Args:
            key: the caller's name for the session, returned in events.
            local_ufrag: our ufrag, as in the answer; unique among sessions.
            local_pwd: our password, as in the answer: checks must be signed with it.
            remote_ufrag: the peer's ufrag, from its offer.
            now: the current time, in seconds: consent runs from here.
            remote_pwd: the peer's password, from its offer. With it, once the
                peer's address is proven (``confirm_address``), media moves to a
                newly nominated address only after that address answered a check
                of ours (return routability: whoever knows our password could
                otherwise point the session's media at any address); without it,
                a nomination moves media at once.

        Raises:
            ValueError: a credential is not 4+ (ufrag) or 22+ (pwd) ice-chars, or
                the key or the local ufrag is in use.
        """
        _check_credentials(local_ufrag, local_pwd, remote_ufrag)
        if key in self._sessions:
            raise ValueError(f"session {key!r} already exists")
        if local_ufrag in self._by_ufrag:
            raise ValueError(f"local ufrag {local_ufrag!r} is already used by another session")
        session = _Session(
            key=key,
            local_ufrag=local_ufrag,
            remote_ufrag=remote_ufrag,
            integrity_key=local_pwd.encode("ascii"),
            added=now,
            remote_key=remote_pwd.encode("ascii") if remote_pwd else None,
        )
        self._sessions[key] = session
        self._by_ufrag[local_ufrag] = session
        self._push_timer(session)

    def restart_session(
        self,
        key: str,
        local_ufrag: str,
        local_pwd: str,
        remote_ufrag: str,
        remote_pwd: str,
    ) -> None:
        """Swap a session's credentials for those of an ICE restart (RFC 8445
        section 9): from now on only checks signed with `local_pwd` and named
        ``<local_ufrag>:<remote_ufrag>`` are answered; the old ones are refused as
        unknown. The addresses and the proven one stay: media keeps going to the
        nominated address until a new one is nominated, and a new address still
        gets media only after it answers our check (signed with `remote_pwd`).

        Raises:
            ValueError: an unknown key, a malformed credential, or a local ufrag
                used by another session.
        """
        session = self._sessions.get(key)
        if session is None:
            raise ValueError(f"no session {key!r}")
        _check_credentials(local_ufrag, local_pwd, remote_ufrag)
        if not _PWD_RE.fullmatch(remote_pwd):
            raise ValueError("remote_pwd is not 22 to 256 ice-chars (RFC 8839 section 5.4)")
        if self._by_ufrag.get(local_ufrag, session) is not session:
            raise ValueError(f"local ufrag {local_ufrag!r} is already used by another session")
        if session.probe is not None:
            # signed with the old password: its answer would not check
            self._probes.pop(session.probe[0], None)
            session.probe = session.withheld = None
        del self._by_ufrag[session.local_ufrag]
        session.local_ufrag = local_ufrag
        session.remote_ufrag = remote_ufrag
        session.integrity_key = local_pwd.encode("ascii")
        session.remote_key = remote_pwd.encode("ascii")
        self._by_ufrag[local_ufrag] = session

    def remove_session(self, key: str) -> None:
        """Forget a session and its addresses; unknown keys are ignored."""
        session = self._sessions.pop(key, None)
        if session is None:
            return
        if session.probe is not None:
            self._probes.pop(session.probe[0], None)
        del self._by_ufrag[session.local_ufrag]
        for addr in session.addresses:
            if self._by_address.get(addr) is session:
                del self._by_address[addr]
        # Its timer entry is skipped when it surfaces (the session is gone).

    def confirm_address(self, key: str, addr: Address) -> None:
        """Record that the peer of session `key` is reachable at `addr`.

        The caller knows it from a DTLS cookie returned from `addr` or a DTLS
        handshake completed with it (the peer read what we sent there). Until then
        a nomination moves the session at once: nothing but a HelloVerifyRequest,
        smaller than the ClientHello it answers, goes to an address not shown
        this way. Unknown keys are ignored.
        """
        session = self._sessions.get(key)
        if session is not None:
            session.verified = addr

    def __contains__(self, key: object) -> bool:
        return key in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def session_for_address(self, addr: Address) -> str | None:
        """The session whose checks came from ``addr``, or None."""
        session = self._by_address.get(addr)
        return None if session is None else session.key

    def nominated_address(self, key: str) -> Address | None:
        """The address the peer nominated for the session (media goes there), or None."""
        return self._sessions[key].nominated

    def last_seen(self, key: str) -> float | None:
        """When the session's last valid check arrived, or None if none has."""
        return self._sessions[key].last_seen

    # Datagrams

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Handle one datagram that the demultiplexer classed as STUN (RFC 7983).

        Never raises on bad input: whatever is not a valid check for a known session
        is dropped and counted in :attr:`drops`.
        """
        reason = _check_framing(data)
        if reason is not None:
            self.drops[reason] += 1
            return

        # RFC 5389 section 6: the class bits are C1 (0x0100) and C0 (0x0010).
        message_type = (data[0] << 8) | data[1]
        if message_type == (stun.Method.BINDING | stun.Class.RESPONSE) and self._probes:
            self._on_response(data, addr, now)
            return
        if message_type & STUN_CLASS_MASK != stun.Class.REQUEST:
            # Indications and responses: a lite agent sends no requests, so no
            # response is ours, and consent indications do not exist.
            self.drops[DROP_NOT_REQUEST] += 1
            return
        if message_type & STUN_METHOD_MASK != stun.Method.BINDING:
            self.drops[DROP_NOT_BINDING] += 1
            return

        try:
            request = stun.parse_message(data)
        except (ValueError, struct.error):
            # An attribute of the wrong size or encoding (aioice raises both).
            self.drops[DROP_MALFORMED] += 1
            return

        # RFC 5389 section 10.1.2: USERNAME and MESSAGE-INTEGRITY are both required,
        # the username must be known, then the HMAC must match.
        username = request.attributes.get("USERNAME")
        if username is None:
            self.drops[DROP_MISSING_USERNAME] += 1
            return
        if "MESSAGE-INTEGRITY" not in request.attributes:
            self.drops[DROP_MISSING_INTEGRITY] += 1
            return
        local_ufrag, _, remote_ufrag = username.partition(":")
        session = self._by_ufrag.get(local_ufrag)
        if session is None or remote_ufrag != session.remote_ufrag:
            self.drops[DROP_UNKNOWN_USER] += 1
            return
        if not request.check_message_integrity(session.integrity_key):
            self.drops[DROP_BAD_INTEGRITY] += 1
            return

        # From here on the sender knows the password: answering it is safe.
        if "ICE-CONTROLLED" in request.attributes:
            # RFC 8445 section 7.3.1.1: both sides think they are controlled. A lite
            # agent never takes the controlling role (section 6.1.1), so it keeps
            # its role and tells the peer to switch.
            self.drops[DROP_ROLE_CONFLICT] += 1
            self._respond(request, addr, session, error=STUN_ERROR_ROLE_CONFLICT)
            return

        owner = self._by_address.get(addr)
        if owner is not None and owner is not session and owner.verified == addr:
            # Another session's proven peer is at this address: a check for this
            # session from it is most likely faked by this session's owner, to cut
            # that peer off. (A NAT reusing the port of a live session is rare and
            # lasts until that session's media times out.)
            self.drops[DROP_ADDRESS_IN_USE] += 1
            return
        nominated = "USE-CANDIDATE" in request.attributes
        if (
            nominated
            and session.remote_key is not None
            and session.verified is not None
            and addr != session.verified
        ):
            # media would move from the peer's proven address to one nobody has
            # shown is the peer's (the owner of the session can sign a check from
            # a faked source): ask that address first, and answer nothing (one
            # check out, no bigger than the one in, at most once a second)
            self.drops[DROP_UNVERIFIED_NOMINATION] += 1
            self._send_probe(session, addr, now, len(data))
            if session.probe is not None and session.probe[1] == addr:
                session.withheld = request
            return
        session.last_seen = now
        self._respond(request, addr, session)
        self._bind(session, addr, nominated=nominated)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Return and forget the responses queued since the last call."""
        datagrams, self._to_send = self._to_send, []
        return datagrams

    def next_event(self) -> IceEvent | None:
        """Return the oldest pending event, or None."""
        return self._events.popleft() if self._events else None

    # Timers

    def get_timer(self) -> float | None:
        """The time at which :meth:`handle_timer` must next be called, or None."""
        timers = self._timers
        while timers:
            deadline, _, session = timers[0]
            if self._sessions.get(session.key) is not session:
                heapq.heappop(timers)  # removed, or replaced under the same key
                continue
            actual = session.deadline(self.consent_timeout)
            if actual == deadline:
                return deadline
            # A check moved the deadline since this entry was pushed.
            heapq.heapreplace(timers, (actual, next(self._timer_seq), session))
        return None

    def handle_timer(self, now: float) -> None:
        """Expire the sessions whose consent ran out by ``now`` (RFC 7675 section 5.1)."""
        while (deadline := self.get_timer()) is not None and deadline <= now:
            session = heapq.heappop(self._timers)[2]
            self.remove_session(session.key)
            self._events.append(ConsentExpired(key=session.key))

    # Internals

    def _push_timer(self, session: _Session) -> None:
        deadline = session.deadline(self.consent_timeout)
        heapq.heappush(self._timers, (deadline, next(self._timer_seq), session))

    def _respond(
        self,
        request: stun.Message,
        addr: Address,
        session: _Session,
        error: tuple[int, str] | None = None,
    ) -> None:
        # RFC 8445 section 7.3.1.4 (success) / 7.3.1.1 (487): same transaction id,
        # signed with our password, with a FINGERPRINT (section 7.3).
        if error is None:
            response = stun.Message(
                message_method=stun.Method.BINDING,
                message_class=stun.Class.RESPONSE,
                transaction_id=request.transaction_id,
            )
            # an ICE-TCP connection's port carries TCP_PORT_FLAG (sfu/tcp.py)
            response.attributes["XOR-MAPPED-ADDRESS"] = (addr[0], addr[1] & 0xFFFF)
        else:
            response = stun.Message(
                message_method=stun.Method.BINDING,
                message_class=stun.Class.ERROR,
                transaction_id=request.transaction_id,
            )
            response.attributes["ERROR-CODE"] = error
        response.add_message_integrity(session.integrity_key)  # adds FINGERPRINT too
        self._to_send.append((bytes(response), addr))

    def _send_probe(self, session: _Session, addr: Address, now: float, size: int) -> None:
        if session.probe is not None:
            if now - session.probe[2] < PROBE_INTERVAL:
                return
            self._probes.pop(session.probe[0], None)
            session.probe = session.withheld = None
        assert session.remote_key is not None
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        request.attributes["USERNAME"] = f"{session.remote_ufrag}:{session.local_ufrag}"
        request.attributes["PRIORITY"] = PROBE_PRIORITY
        request.attributes["ICE-CONTROLLED"] = self._tie_breaker  # a lite agent is controlled
        request.add_message_integrity(session.remote_key)
        probe = bytes(request)
        if len(probe) > size:
            # a check stripped of PRIORITY and ICE-CONTROLLING (no browser sends
            # one): our check would be bigger than it, so send none
            return
        session.probe = (request.transaction_id, addr, now)
        self._probes[request.transaction_id] = session
        self._to_send.append((probe, addr))

    def _on_response(self, data: bytes, addr: Address, now: float) -> None:
        """The answer to a check of ours: the address is the peer's, media may go there."""
        session = self._probes.get(data[8:20])
        if session is None or session.probe is None or session.probe[1] != addr:
            self.drops[DROP_NOT_REQUEST] += 1
            return
        if now - session.probe[2] > PROBE_LIFETIME:
            self.drops[DROP_NOT_REQUEST] += 1
            return
        try:
            response = stun.parse_message(data)
        except (ValueError, struct.error):
            self.drops[DROP_MALFORMED] += 1
            return
        assert session.remote_key is not None
        if "MESSAGE-INTEGRITY" not in response.attributes or not response.check_message_integrity(
            session.remote_key
        ):
            self.drops[DROP_BAD_INTEGRITY] += 1
            return
        self._probes.pop(response.transaction_id, None)
        withheld, session.probe, session.withheld = session.withheld, None, None
        session.last_seen = now
        session.verified = addr
        if withheld is not None:
            self._respond(withheld, addr, session)
        self._bind(session, addr, nominated=True)

    def _bind(self, session: _Session, addr: Address, nominated: bool) -> None:
        addresses = session.addresses
        new = addr not in addresses
        if new:
            owner = self._by_address.get(addr)
            if owner is not None and owner is not session:
                # The address moved to another session (a port reused by the NAT).
                del owner.addresses[addr]
                if owner.nominated == addr:
                    owner.nominated = None
            if len(addresses) >= MAX_ADDRESSES_PER_SESSION:
                self._forget_oldest_address(session)
            self._by_address[addr] = session
        else:
            del addresses[addr]  # re-inserted below as the most recent
        addresses[addr] = None

        if nominated and session.nominated != addr:
            session.nominated = addr
            self._events.append(AddressBound(key=session.key, addr=addr, nominated=True))
        elif new:
            self._events.append(AddressBound(key=session.key, addr=addr, nominated=False))

    def _forget_oldest_address(self, session: _Session) -> None:
        for old in session.addresses:
            if old != session.nominated:
                del session.addresses[old]
                del self._by_address[old]
                return


def _check_credentials(local_ufrag: str, local_pwd: str, remote_ufrag: str) -> None:
    for name, value, pattern, minimum in (
        ("local_ufrag", local_ufrag, _UFRAG_RE, 4),
        ("local_pwd", local_pwd, _PWD_RE, 22),
        ("remote_ufrag", remote_ufrag, _UFRAG_RE, 4),
    ):
        if not pattern.fullmatch(value):
            raise ValueError(
                f"{name} {value!r} is not {minimum} to 256 ice-chars (RFC 8839 section 5.4)"
            )


def _check_framing(data: bytes) -> str | None:
    """Return a drop reason if ``data`` is not a well-framed STUN message.

    aioice's parser trusts the framing (it checks neither the magic cookie nor
    that attributes fit), so the header and attribute walk is checked here first,
    along with FINGERPRINT (RFC 5389 sections 6, 15 and 15.5).
    """
    #  0                   1                   2                   3
    #  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    # +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    # |0 0|     STUN Message Type     |         Message Length        |
    # +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    # |                         Magic Cookie                          |
    # +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    # |                     Transaction ID (96 bits)                  |
    # +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    size = len(data)
    if size < STUN_HEADER_LENGTH or data[0] & 0xC0:
        return DROP_MALFORMED
    length = (data[2] << 8) | data[3]
    if length % 4 or size != STUN_HEADER_LENGTH + length:
        return DROP_MALFORMED
    if int.from_bytes(data[4:8], "big") != STUN_COOKIE:
        return DROP_MALFORMED

    # Attributes: type (16 bits), length (16 bits), value padded to 4 bytes.
    pos = STUN_HEADER_LENGTH
    while pos < size:
        if pos + 4 > size:
            return DROP_MALFORMED
        attr_type = (data[pos] << 8) | data[pos + 1]
        attr_len = (data[pos + 2] << 8) | data[pos + 3]
        end = pos + 4 + attr_len + (-attr_len % 4)
        if end > size:
            return DROP_MALFORMED
        if attr_type == STUN_FINGERPRINT:
            # RFC 5389 section 15.5: the last attribute, CRC-32 of what precedes
            # it (with the length covering it) XOR 0x5354554e.
            if attr_len != 4 or end != size:
                return DROP_MALFORMED
            expected = stun.message_fingerprint(data[:pos])
            if int.from_bytes(data[pos + 4 : pos + 8], "big") != expected:
                return DROP_BAD_FINGERPRINT
        pos = end
    return None
