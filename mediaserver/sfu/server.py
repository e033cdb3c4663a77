"""The SFU's API for the rest of the server.

    sfu = Sfu(SfuConfig(announced_ip="203.0.113.7"))
    await sfu.start()
    a = sfu.create_session(offer_a)      # a.answer goes back to peer A
    b = sfu.create_session(offer_b)
    sfu.connect(a.id, b.id)              # A's audio and video to B
    sfu.connect(b.id, a.id)
    ...
    sfu.disconnect(a.id, b.id); sfu.close_session(a.id)

Events (sfu/events.py) go to the callbacks given to `subscribe`. The per-packet
work happens in ext/_router.pyx; this class handles what needs a decision: STUN,
DTLS, RTCP, and timers. It holds no socket (sans-I/O, like aioquic's
QuicConnection): `start()` makes a UdpEndpoint (sfu/udp.py) that owns the socket
and drives it. Without one, a test gives it a socketless Router and a clock, and
moves datagrams itself:

    sfu = Sfu(config, router=Router(), clock=lambda: now)
    sfu.receive_datagram(data, addr, now)   # through Router.feed, then the slow path
    for data, addr in sfu.datagrams_to_send(now): ...
    if (deadline := sfu.get_timer()) is not None and deadline <= now:
        sfu.handle_timer(now)
"""

from __future__ import annotations

import asyncio
import errno
import logging
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from mediaserver._router import SLOW_DTLS, SLOW_MEDIA, SLOW_RTCP, SLOW_STUN, Router
from mediaserver.ai_filters.pipeline import EffectStream
from mediaserver.sfu import rtcp
from mediaserver.sfu.address import Address
# the config, errors, events and session types live in their modules and are
# re-exported: callers import the Sfu's API from here
from mediaserver.sfu.config import CACHE_BYTES_PER_PACKET as CACHE_BYTES_PER_PACKET
from mediaserver.sfu.config import SfuConfig as SfuConfig
from mediaserver.sfu.dtls import (
    DtlsCertificate,
    DtlsClosed,
    DtlsConnected,
    DtlsFailed,
)
from mediaserver.sfu.errors import SFU_ERRORS as SFU_ERRORS
from mediaserver.sfu.errors import EffectsBusy as EffectsBusy
from mediaserver.sfu.errors import EffectUnavailable as EffectUnavailable
from mediaserver.sfu.errors import NoVideo as NoVideo
from mediaserver.sfu.errors import RestartRejected as RestartRejected
from mediaserver.sfu.errors import ServerFull as ServerFull
from mediaserver.sfu.errors import SfuError as SfuError
from mediaserver.sfu.events import CoverFailed as CoverFailed
from mediaserver.sfu.events import KeyframeNeeded as KeyframeNeeded
from mediaserver.sfu.events import SessionClosed as SessionClosed
from mediaserver.sfu.events import SessionConnected as SessionConnected
from mediaserver.sfu.events import SfuEvent as SfuEvent
from mediaserver.sfu.feedback import sort_feedback
from mediaserver.sfu.ice import AddressBound, ConsentExpired, IceLiteServer
from mediaserver.sfu.placement import (
    Negotiated,
    add_tracks,
    negotiate,
    out_stream_count,
    random_ssrc,
)
from mediaserver.sfu.reports import REPORT_INTERVAL, receiver_report, remb_bitrate, sender_reports
from mediaserver.sfu.restart import restart
from mediaserver.sfu.router import payload_type_map
from mediaserver.sfu.session import Session as Session
from mediaserver.sfu.session import SessionState as SessionState
from mediaserver.sfu.stills import Stills
from mediaserver.sfu.udp import UdpEndpoint
from mediaserver.sfu.video_taps import VideoTaps

logger = logging.getLogger(__name__)

TICK = 0.1  # timer resolution: DTLS retransmits, consent, RTCP reports
# Keys of Sfu.stats that count dropped datagrams (reported in counters()["drops"]),
# and NACK entries left unanswered (mediaserver/sfu/nack.py)
SLOW_PATH_DROPS = frozenset({"dtls_unknown_address", "nack_duplicate", "nack_over_budget"})


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


class Sfu(VideoTaps):
    """The media sessions of one worker and the decisions about them (sans-I/O).

    Args:
        config: settings (SfuConfig()).
        router: a Router without a socket, for a caller that moves datagrams
            itself (tests); None: `start()` makes the UDP endpoint and its router.
        clock: the time of API calls (create_session, connect...), which carry
            none; the entry points take `now`. start() sets the event loop's.
    """

    def __init__(
        self,
        config: SfuConfig | None = None,
        *,
        router: Router | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or SfuConfig()
        self.router = router
        self.clock = clock
        self._outbox: list[tuple[bytes, Address]] = []
        self._wakeup: Callable[[], None] | None = None
        self._next_tick = clock() + TICK
        self.certificate = DtlsCertificate.generate()
        self.ice = IceLiteServer(consent_timeout=self.config.consent_timeout)
        self.sessions: dict[str, Session] = {}
        self._by_peer: dict[int, Session] = {}
        self._callbacks: list[Callable[[SfuEvent], None]] = []
        self._limiter = rtcp.KeyframeRequestLimiter(self.config.keyframe_interval)
        self.udp: UdpEndpoint | None = None
        self.stats: Counter[str] = Counter()
        self.effects: dict[str, EffectStream] = {}
        self.covers: set[str] = set()
        """Sessions of `effects` whose stream is a face cover (counted apart)."""
        self._executor: ThreadPoolExecutor | None = None
        self.withheld: set[str] = set()  # sessions whose video is tapped for nobody
        self.stills = Stills(self.stats, self._still_ended)  # capture_still's
        self.cache_committed = 0
        """Bytes of NACK caches the open sessions may grow to. The router allocates
        a stream's cache with its first packet (so only once connected), but it is
        counted from the offer on: a burst of offers cannot all connect past it."""

    @property
    def stream_cache_bytes(self) -> int:
        return self.config.cache_packets * CACHE_BYTES_PER_PACKET

    @property
    def capacity(self) -> int:
        """Sessions (of audio + video) this SFU takes: max_peers, or fewer when
        their caches would exceed max_media_memory."""
        bound = self.config.max_media_memory
        if not bound:
            return self.config.max_peers
        return min(self.config.max_peers, bound // (2 * self.stream_cache_bytes))

    # ---- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Bind the media port: a UdpEndpoint that owns the socket and drives this Sfu."""
        loop = asyncio.get_running_loop()
        udp = UdpEndpoint(
            self.config.host,
            self.config.udp_port,
            max_peers=self.config.max_peers,
            cache_packets=self.config.cache_packets,
            tcp_port=self.config.tcp_port,
            max_tcp=self.config.max_tcp_connections,
            max_tcp_per_address=self.config.max_tcp_per_address,
            read_hold_us=self.config.read_hold_us,
            socket_thread=self.config.socket_thread,
        )
        unreachable = [ip for ip in self._announced if _family(ip) not in udp.families]
        if unreachable:
            udp.close()
            raise OSError(
                errno.EAFNOSUPPORT,
                f"announced address {unreachable[0]} cannot reach the media socket "
                f"(bound to {self.config.host or 'IPv4 only: this host has no IPv6'})",
            )
        self.udp = udp
        self.router = udp.router
        self.clock = loop.time
        self._next_tick = self.clock() + TICK
        # an ICE-TCP connection stays once a valid check came over it
        self.udp.start(loop, self, lambda addr: self.ice.session_for_address(addr) is not None)

    async def close(self) -> None:
        for session_id in list(self.sessions):
            self.close_session(session_id)
        if self.udp is not None:
            self.udp.close()
            self.udp = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self.stills.shutdown()

    @property
    def udp_port(self) -> int:
        """The port peers send media to: the endpoint's, or (socketless) config.udp_port."""
        if self.udp is not None:
            return self.udp.port
        assert self.router is not None, "start() first"
        return self.config.udp_port

    @property
    def tcp_port(self) -> int | None:
        """The ICE-TCP port in answers: the endpoint's listener's, None when off
        (socketless: config.tcp_port, where a test may name one)."""
        if self.udp is not None:
            return None if self.udp.tcp is None else self.udp.tcp.port
        return self.config.tcp_port or None

    def subscribe(self, callback: Callable[[SfuEvent], None]) -> None:
        self._callbacks.append(callback)

    def _emit(self, event: SfuEvent) -> None:
        for callback in self._callbacks:
            try:
                callback(event)
            except Exception:
                logger.exception("SFU event callback failed")

    def _now(self) -> float:
        return self.clock()

    @property
    def _announced(self) -> tuple[str, ...]:
        return self.config.announced_ips

    @property
    def _router(self) -> Router:
        assert self.router is not None, "start() first"
        return self.router

    # ---- sans-I/O entry points (sfu/udp.py drives them) --------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Take one datagram from `addr` without a socket: the router's C path
        (Router.feed) first, then the slow path for what it hands up. What the
        router forwards goes to datagrams_to_send."""
        forwarded, slow = self._router.feed(data, addr[0], addr[1], now)
        self._outbox.extend(forwarded)
        for kind, peer, source, payload in slow:
            self.receive_slow(kind, peer, source, payload, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """What to send, oldest first, taken out of the queue: STUN replies, DTLS
        flights, SRTCP feedback and reports. A router with a socket sends forwarded
        media and NACK resends itself, in C; without one (receive_datagram),
        forwarded and effect packets come here too, and resends are only counted
        (counters()["retransmitted"])."""
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        """When handle_timer wants to run next (the clock of `now`); None while
        there is no session (nothing to time out, retransmit or report: an idle
        worker is not woken 10 times a second). The first session arms it again."""
        if not self.sessions and self.ice.get_timer() is None:
            return None
        return self._next_tick

    def _rearm_timer(self) -> None:
        # An idle Sfu's endpoint armed no timer (get_timer was None) and asks again
        # only after a tick: work arrived, so the tick starts again TICK from now.
        self._next_tick = self._now() + TICK
        if self.udp is not None:
            self.udp.timer_changed()

    def set_wakeup(self, wakeup: Callable[[], None] | None) -> None:
        """`wakeup` is called when datagrams_to_send gets something to send outside
        receive_*/handle_timer (an API call: connect's keyframe request, say)."""
        self._wakeup = wakeup

    def _send(self, data: bytes, addr: Address) -> None:
        if not self._outbox and self._wakeup is not None:
            self._wakeup()
        self._outbox.append((data, addr))

    def _send_rtcp(self, session: Session, packet: bytes) -> None:
        """SRTCP-protect `packet` for a connected session and queue it."""
        if session.address is None or session.state is not SessionState.CONNECTED:
            return
        self._send(self._router.protect_rtcp(session.peer, packet), session.address)

    # ---- the API -------------------------------------------------------------

    def create_session(self, offer_sdp: str) -> Session:
        """Create a session from a peer's SDP offer; its `answer` goes back to the peer.

        Raises:
            SfuError: the offer is unusable (the message says why), or the
                server is full.
        """
        negotiated = negotiate(
            offer_sdp, self.certificate, self._announced, self.udp_port, self.tcp_port
        )
        router = self._router
        session_id = secrets.token_urlsafe(12)
        streams = out_stream_count(negotiated.answer)
        bound = self.config.max_media_memory
        if bound and self.cache_committed + streams * self.stream_cache_bytes > bound:
            self.stats["refused_media_memory"] += 1
            raise ServerFull("server full: media memory")
        try:
            peer = router.add_peer()
        except RuntimeError as exc:
            raise ServerFull("server full") from exc
        try:
            session = self._add_session(session_id, peer, negotiated)
            self.cache_committed += self._cache_bytes(session)
            return session
        except ValueError as exc:
            # nothing of a refused offer stays: its router peer slot is freed
            self.sessions.pop(session_id, None)
            self._by_peer.pop(peer, None)
            self.ice.remove_session(session_id)
            router.remove_peer(peer)
            raise SfuError(f"bad offer: {exc}") from exc

    def _add_session(self, session_id: str, peer: int, negotiated: Negotiated) -> Session:
        answer = negotiated.answer
        session = Session(
            id=session_id,
            peer=peer,
            local_ufrag=negotiated.ice_ufrag,
            local_pwd=negotiated.ice_pwd,
            answer=answer.sdp,
            dtls=negotiated.dtls,
            tracks=add_tracks(answer, self._router, peer),
            rtcp_ssrc=random_ssrc(),
            created_at=self._now(),
            negotiated=answer,
            cname=negotiated.cname,
        )
        idle = not self.sessions and self.ice.get_timer() is None
        self.sessions[session_id] = session
        self._by_peer[peer] = session
        self.ice.add_session(
            session_id, negotiated.ice_ufrag, negotiated.ice_pwd, answer.remote_ice_ufrag,
            now=self._now(), remote_pwd=answer.remote_ice_pwd,
        )
        self.stats["sessions_created"] += 1
        if idle:
            self._rearm_timer()
        return session

    def restart_ice(self, session_id: str, offer_sdp: str) -> str:
        """Answer an ICE restart offer on a live session (sfu/restart.py); the
        media timeout runs from the first restart of a silence, so the restart has
        that long to bring media back. Raises RestartRejected (the offer changes more than the ICE
        credentials), SfuError (no such session)."""
        session = self._session(session_id)
        _, fingerprint = self.certificate.fingerprint()
        try:
            answer = restart(
                session, self.ice, offer_sdp, fingerprint=fingerprint,
                ip=self._announced, port=self.udp_port, now=self._now(),
                last_rx=self._router.last_rx(session.peer), tcp_port=self.tcp_port,
            )
        except RestartRejected:
            self.stats["ice_restarts_rejected"] += 1
            raise
        self.stats["ice_restarts"] += 1
        return answer

    def connect(self, publisher_id: str, subscriber_id: str) -> None:
        """Forward the publisher's audio and video to the subscriber."""
        pub = self._session(publisher_id)
        sub = self._session(subscriber_id)
        router = self._router
        for kind, pub_track in pub.tracks.items():
            sub_track = sub.tracks.get(kind)
            if sub_track is None or sub_track.out_stream is None or not pub_track.receives:
                continue
            for pub_pt, sub_pt in payload_type_map(pub_track.codecs, sub_track.codecs):
                router.add_route(pub.peer, pub_pt, sub_track.out_stream, sub_pt)
        pub.subscribers.add(sub.id)
        sub.publishers.add(pub.id)
        # the subscriber's decoder needs a keyframe to start on this source; one that
        # is not connected yet asks when it connects (a keyframe sent before would be
        # lost on it, and the limiter would hold the next one back 0.5 s)
        effect = self.effects.get(pub.id)
        if effect is not None:
            effect.force_keyframe = True
        elif sub.state is SessionState.CONNECTED:
            self.request_keyframe(pub.id)

    def disconnect(self, publisher_id: str, subscriber_id: str) -> None:
        """Stop forwarding the publisher's media to the subscriber."""
        pub = self.sessions.get(publisher_id)
        sub = self.sessions.get(subscriber_id)
        if pub is None or sub is None:
            return
        for track in sub.tracks.values():
            if track.out_stream is not None:
                self._router.remove_route(pub.peer, track.out_stream)
        pub.subscribers.discard(sub.id)
        sub.publishers.discard(pub.id)

    def close_session(self, session_id: str, reason: str = "closed") -> None:
        session = self.sessions.get(session_id)
        if session is None:
            return
        for other in list(session.publishers):
            self.disconnect(other, session_id)
        for other in list(session.subscribers):
            self.disconnect(session_id, other)
        del self.sessions[session_id]
        self.stills.close(session_id)
        self.withheld.discard(session_id)
        stream = self.effects.pop(session_id, None)
        if stream is not None:
            stream.close()
        self.covers.discard(session_id)
        self.ice.remove_session(session_id)
        self._by_peer.pop(session.peer, None)
        self._router.remove_peer(session.peer)
        self.cache_committed -= self._cache_bytes(session)
        session.state = SessionState.CLOSED
        self.stats[f"sessions_closed:{reason.split(':')[0]}"] += 1
        self._emit(SessionClosed(session_id, reason))

    def request_keyframe(self, publisher_id: str) -> None:
        """Ask the publisher for a video keyframe (PLI), rate-limited: a request
        the limit holds back is sent when it allows (the timer retries), never lost."""
        pub = self.sessions.get(publisher_id)
        if pub is None:
            return
        ssrc = self._video_ssrc(pub)
        if ssrc is None or pub.state is not SessionState.CONNECTED:
            pub.keyframe_pending = True  # sent once media shows the SSRC
            return
        if self._limiter.allow((pub.id, ssrc), self._now()):
            pub.keyframe_pending = False
            self._send_rtcp(pub, rtcp.build_pli(pub.rtcp_ssrc, ssrc))
            self.stats["pli_sent"] += 1
            self._emit(KeyframeNeeded(pub.id, ssrc))
        else:
            # e.g. an effect or cover just came off: without a keyframe the partner's
            # decoder would apply the plain stream's deltas to the covered picture
            pub.keyframe_pending = True

    def _cache_bytes(self, session: Session) -> int:
        streams = sum(1 for t in session.tracks.values() if t.out_stream is not None)
        return streams * self.stream_cache_bytes

    def _session(self, session_id: str) -> Session:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise SfuError(f"no session {session_id!r}") from None

    def _video_ssrc(self, session: Session) -> int | None:
        video = session.tracks.get("video")
        if video is None:
            return None
        pts = {c.payload_type for c in video.codecs}
        for stream in self._router.in_stats(session.peer):
            if stream["payload_type"] in pts:
                return int(stream["ssrc"])
        return video.offered_ssrcs[0] if video.offered_ssrcs else None

    def counters(self) -> dict[str, object]:
        """Router totals and drops, plus the slow path's counts."""
        out = dict(self._router.counters())
        drops = dict(out["drops"])
        for reason, count in self.ice.drops.items():
            drops[reason] = count
        for reason, count in self.stats.items():
            # slow-path drops are drops; other stats only keep a key there
            # (the router counts DTLS from unknown addresses; Python the rest)
            drops[reason] = drops.get(reason, 0) + (count if reason in SLOW_PATH_DROPS else 0)
            out[reason] = count
        if self.udp is not None and self.udp.tcp is not None:
            # accepted, refused (full, per address), closed and why (sfu/tcp.py)
            out.update(self.udp.tcp.stats)
        out["drops"] = drops
        return out

    # ---- the slow path ---------------------------------------------------------

    def receive_slow(self, kind: int, peer: int, addr: Address, data: bytes, now: float) -> None:
        """Handle one datagram the router handed up (Router.pop_slow or feed): `kind`
        one of SLOW_STUN, SLOW_DTLS, SLOW_RTCP (decrypted), SLOW_MEDIA (tapped RTP)."""
        if kind == SLOW_STUN:
            self._on_stun(data, addr, now)
        elif kind == SLOW_DTLS:
            session = self._by_peer.get(peer)
            if session is None or session.address != addr:
                self.stats["dtls_unknown_address"] += 1
                return
            proven = session.dtls.proven_source
            session.dtls.receive_datagram(data, now, addr)
            if proven is None and session.dtls.proven_source is not None:
                # The peer returned the cookie sent to addr: it receives there. From
                # now on a nomination elsewhere moves the session (and the rest of
                # the handshake) only once the new address answers our check.
                self.ice.confirm_address(session.id, addr)
            self._service_dtls(session, now)
        elif kind == SLOW_RTCP:
            session = self._by_peer.get(peer)
            if session is not None:
                self._on_rtcp(session, data, now)
        elif kind == SLOW_MEDIA and (session := self._by_peer.get(peer)) is not None:
            stream = self.effects.get(session.id)
            if session.id in self.stills:
                self.stills.receive_rtp(session.id, data)
                if stream is None and session.id not in self.withheld and len(data) > 1:
                    # tapped for the still alone: forward it on as the router would
                    self._inject(session.id, data[1] & 0x7F, [data])
            if stream is not None:
                stream.receive_rtp(data)

    def _on_stun(self, data: bytes, addr: Address, now: float) -> None:
        self.ice.receive_datagram(data, addr, now)
        self._service_ice(now)

    def _service_ice(self, now: float) -> None:
        for reply, dest in self.ice.datagrams_to_send(now):
            self._send(reply, dest)
        while (event := self.ice.next_event()) is not None:
            if isinstance(event, AddressBound):
                session = self.sessions.get(event.key)
                if session is None:
                    continue
                if session.address is None or event.nominated:
                    session.address = event.addr
                    self._router.bind_address(session.peer, event.addr[0], event.addr[1])
                    if session.state is SessionState.NEW:
                        session.state = SessionState.CHECKING
                    if session.restart_pending and event.nominated:
                        self._restart_done(session)
            elif isinstance(event, ConsentExpired):
                self.close_session(event.key, "consent expired")

    def _restart_done(self, session: Session) -> None:
        # media goes to the new address now; what went to the old one was lost
        session.restart_pending = False
        self.stats["ice_restarts_completed"] += 1
        for publisher_id in (session.id, *session.publishers):
            self.request_keyframe(publisher_id)

    def _service_dtls(self, session: Session, now: float) -> None:
        if session.address is not None:
            for datagram in session.dtls.datagrams_to_send(now):
                self._send(datagram, session.address)
        while (event := session.dtls.next_event()) is not None:
            if isinstance(event, DtlsConnected):
                self._router.set_srtp(
                    session.peer,
                    event.profile,
                    event.remote_key,
                    event.remote_salt,
                    event.local_key,
                    event.local_salt,
                )
                session.state = SessionState.CONNECTED
                session.connected_at = now
                if session.address is not None:
                    self.ice.confirm_address(session.id, session.address)
                self.stats["sessions_connected"] += 1
                self._emit(SessionConnected(session.id))
                for publisher_id in session.publishers:
                    self.request_keyframe(publisher_id)
            elif isinstance(event, DtlsFailed):
                self.close_session(session.id, f"dtls failed: {event.reason}")
                return
            elif isinstance(event, DtlsClosed):
                self.close_session(session.id, "dtls closed")
                return

    def _on_rtcp(self, session: Session, data: bytes, now: float) -> None:
        try:
            requests = sort_feedback(session, rtcp.parse_feedback(data), now)
        except ValueError:
            self.stats["rtcp_malformed"] += 1
            return
        # only what happened: a zero count would add a key to counters()
        self.stats.update({
            key: count for key, count in (
                ("nack_received", requests.nacks),
                ("nack_packets", requests.nack_packets),
                ("pli_received", requests.keyframe_requests),
            ) if count
        })
        for out_stream in requests.keyframes:
            publisher = self._source_of(out_stream)
            effect = self.effects.get(publisher.id) if publisher is not None else None
            if effect is not None:
                effect.force_keyframe = True  # our encoder makes it
            elif publisher is not None:
                self.request_keyframe(publisher.id)
        for out_stream, lost in requests.nacked.items():
            answer = session.nack_budget.admit(lost, now)
            self.stats["nack_duplicate"] += answer.duplicates
            self.stats["nack_over_budget"] += answer.over_budget
            missing = self._router.resend(out_stream, answer.resend, now) if answer.resend else []
            if missing:
                self._relay_nack(out_stream, missing)

    def _source_of(self, out_stream: int) -> Session | None:
        """The publisher whose media `out_stream` carries now, if any."""
        source = self._router.out_stats(out_stream)["source_peer"]
        return self._by_peer.get(source) if source is not None else None

    def _relay_nack(self, out_stream: int, publisher_seqs: list[int]) -> None:
        """Ask the publisher again for packets that never reached us."""
        publisher = self._source_of(out_stream)
        if publisher is None or publisher.state is not SessionState.CONNECTED:
            return
        source_ssrc = int(self._router.out_stats(out_stream)["source_ssrc"])
        packet = rtcp.build_nack(publisher.rtcp_ssrc, source_ssrc, publisher_seqs)
        self._send_rtcp(publisher, packet)
        self.stats["nack_relayed"] += len(publisher_seqs)

    # ---- timers ----------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """The 0.1 s tick: ICE consent, handshake and media timeouts, DTLS
        retransmissions, held-back keyframe requests, the 1 s RTCP reports. Runs
        whenever called; the next is due TICK after `now` (get_timer)."""
        try:
            self.ice.handle_timer(now)
            self._service_ice(now)
            for session in list(self.sessions.values()):
                if (
                    session.state in (SessionState.NEW, SessionState.CHECKING)
                    and now - session.created_at > self.config.handshake_timeout
                ):
                    self.close_session(session.id, "handshake timeout")
                    continue
                if session.state is SessionState.CHECKING:
                    deadline = session.dtls.get_timer()
                    if deadline is not None and deadline <= now:
                        session.dtls.handle_timer(now)
                        self._service_dtls(session, now)
                elif session.state is SessionState.CONNECTED:
                    last = self._router.last_rx(session.peer)
                    since = max(
                        session.connected_at if last is None else last,
                        session.restarted_at or 0.0,  # a restart gets the whole timeout
                    )
                    if now - since > self.config.media_timeout:
                        self.close_session(session.id, "media timeout")
                        continue
                    if session.keyframe_pending:
                        self.request_keyframe(session.id)
                    if now - session.last_report >= REPORT_INTERVAL:
                        session.last_report = now
                        self._send_reports(session, now)
        except Exception:
            logger.exception("SFU timer failed")
        finally:
            self._next_tick = now + TICK

    def _send_reports(self, session: Session, now: float) -> None:
        """RR (+REMB) for what the peer sends us, SR for what we send it."""
        router = self._router
        subscribers = (self.sessions.get(sub_id) for sub_id in session.subscribers)
        bitrate = remb_bitrate((s for s in subscribers if s is not None), self.config.max_bitrate)
        report = receiver_report(session, router, bitrate, now)
        if report is not None:
            effect = self.effects.get(session.id)
            if effect is not None:
                effect.set_bitrate(bitrate)  # our encoder follows the subscribers too
            self._send_rtcp(session, report)
        for packet in sender_reports(session, router, now, time.time()):
            self._send_rtcp(session, packet)
