"""The Sfu's video taps: the packets of a session's video that the router hands to
Python instead of forwarding them, for an effect (sfu/../ai_filters), a face cover
that cannot run (withheld), or a moderator's still (sfu/stills.py); and the RTP made
from them, injected into the subscribers' streams.

A mixin of Sfu (sfu/server.py), kept apart so each file reads as one subject; the
names it uses from Sfu are declared below for the type checker.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from mediaserver.ai_filters.pipeline import Effect, EffectStream
from mediaserver.sfu.config import SfuConfig
from mediaserver.sfu.errors import EffectsBusy, NoVideo
from mediaserver.sfu.events import CoverFailed, SfuEvent
from mediaserver.sfu.router import payload_type_map
from mediaserver.sfu.session import Session
from mediaserver.sfu.stills import STILL_WAIT, Stills

if TYPE_CHECKING:
    from mediaserver._router import Router
    from mediaserver.sfu.address import Address
    from mediaserver.sfu.udp import UdpEndpoint


class VideoTaps:
    """set_effect, withhold_video and capture_still of Sfu."""

    config: SfuConfig
    sessions: dict[str, Session]
    stats: Counter[str]
    udp: UdpEndpoint | None
    effects: dict[str, EffectStream]
    covers: set[str]
    withheld: set[str]
    stills: Stills
    _executor: ThreadPoolExecutor | None

    if TYPE_CHECKING:

        @property
        def _router(self) -> Router: ...
        def _session(self, session_id: str) -> Session: ...
        def _emit(self, event: SfuEvent) -> None: ...
        def _now(self) -> float: ...
        def _send(self, data: bytes, addr: Address) -> None: ...
        def request_keyframe(self, publisher_id: str) -> None: ...

    def set_effect(self, session_id: str, effect: Effect | None, *, cover: bool = False) -> None:
        """Process the session's outgoing video with `effect` (None: plain
        forwarding again). Its subscribers get the processed stream in the same
        tracks, sequence numbers and timestamps continuing. A `cover` (the face
        cover of mutual reveal) counts against max_cover_streams, any other
        effect against max_effect_streams.

        Raises:
            SfuError: unknown session. NoVideo: the session sends no video.
            EffectsBusy: too many effect streams (or covers).
        """
        session = self._session(session_id)
        video = session.tracks.get("video")
        if video is None or not video.receives or not video.codecs:
            raise NoVideo("the session sends no video")
        router = self._router
        old = self.effects.pop(session_id, None)
        if old is not None:
            old.close()
        self.covers.discard(session_id)
        self.withheld.discard(session_id)
        if effect is not None and cover and len(self.covers) >= self.config.max_cover_streams:
            raise EffectsBusy("face covers busy")  # the caller withholds the video
        opt_in = len(self.effects) - len(self.covers)
        busy = effect is not None and not cover and opt_in >= self.config.max_effect_streams
        if effect is None or busy:
            # the original video again (an opt-in effect that has no room is optional);
            # a still being taken keeps the tap (and forwards the packets on itself)
            for codec in video.codecs:
                router.set_tap(session.peer, codec.payload_type, session_id in self.stills)
            self.request_keyframe(session_id)  # subscribers resume on the original stream
            if busy:
                raise EffectsBusy("effects busy")
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self.config.effects_workers, thread_name_prefix="effects"
            )
        codec = video.codecs[0]  # what the browser sends: the first codec of the answer
        stream = EffectStream(
            effect,
            f"video/{codec.name}",
            codec.payload_type,
            self._executor,
            emit=lambda packets: self._emit_effect(session_id, packets),
            request_keyframe=lambda: self.request_keyframe(session_id),
            on_failure=(lambda: self._on_cover_failed(session_id)) if cover else None,
        )
        self.effects[session_id] = stream
        if cover:
            self.covers.add(session_id)
        for c in video.codecs:
            router.set_tap(session.peer, c.payload_type, True)
        self.request_keyframe(session_id)
        self.stats["effects_started"] += 1

    def _on_cover_failed(self, session_id: str) -> None:
        # its frames were all dropped (nothing uncovered went out); stop the broken
        # stream and say so, so the visitors learn why the video stopped
        if session_id in self.sessions:
            self.withhold_video(session_id)
            self._emit(CoverFailed(session_id))

    def withhold_video(self, session_id: str) -> None:
        """Forward none of the session's video (its audio still flows) until the
        next set_effect: what a face cover that cannot run leaves. The video stays
        tapped with no effect stream, so receive_slow drops it."""
        session = self._session(session_id)
        video = session.tracks.get("video")
        if video is None or not video.receives:
            return
        old = self.effects.pop(session_id, None)
        if old is not None:
            old.close()
        self.covers.discard(session_id)
        self.withheld.add(session_id)
        for codec in video.codecs:
            self._router.set_tap(session.peer, codec.payload_type, True)
        self.stats["video_withheld"] += 1

    async def capture_still(self, session_id: str, timeout: float = STILL_WAIT) -> bytes:
        """A JPEG of the session's next keyframe (asked for): sfu/stills.py."""
        session = self._session(session_id)
        video = session.tracks.get("video")
        if video is None or not video.receives or not video.codecs:
            raise NoVideo("the session sends no video")
        capture = self.stills.begin(session_id, video.codecs[0])
        for c in video.codecs:
            self._router.set_tap(session.peer, c.payload_type, True)
        self.request_keyframe(session_id)
        return await self.stills.wait(session_id, capture, timeout)

    def _still_ended(self, session_id: str) -> None:
        session = self.sessions.get(session_id)  # untap unless an effect or withholding owns it
        if session and session_id not in self.effects and session_id not in self.withheld:
            for codec in session.tracks["video"].codecs:
                self._router.set_tap(session.peer, codec.payload_type, False)

    def _emit_effect(self, publisher_id: str, packets: list[bytes]) -> None:
        stream = self.effects.get(publisher_id)
        if stream is not None:
            self._inject(publisher_id, stream.payload_type, packets)

    def _inject(self, publisher_id: str, payload_type: int, packets: list[bytes]) -> None:
        """Send RTP made (or tapped) in Python to the publisher's subscribers."""
        pub = self.sessions.get(publisher_id)
        if pub is None:
            return
        router, now = self._router, self._now()
        pub_codecs = pub.tracks["video"].codecs
        for sub_id in pub.subscribers:
            sub = self.sessions.get(sub_id)
            track = sub.tracks.get("video") if sub is not None else None
            if track is None or track.out_stream is None:
                continue
            pt_map = dict(payload_type_map(pub_codecs, track.codecs))
            out_pt = pt_map.get(payload_type)
            if out_pt is None:
                continue
            for packet in packets:
                sent = router.inject(pub.peer, packet, track.out_stream, out_pt, now)
                if sent is not None and self.udp is None and sub is not None and sub.address:
                    self._send(sent, sub.address)  # a socketless router sends nothing itself
