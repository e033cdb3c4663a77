"""Media sessions on any node: the hub's one way to the SFUs.

The hub asks for a session on a node (its own, or the one its pair is placed
on); this module calls the local Sfu directly or sends the request over the bus
to the node that holds it. It also serves those requests for other nodes, and
tells a session's owner (the home node of its visitor) when the session closes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mediaserver.node import messages as m
from mediaserver.node.bus import Bus, BusError, home_node
from mediaserver.sfu.server import (
    SFU_ERRORS,
    CoverFailed,
    EffectUnavailable,
    SessionClosed,
    Sfu,
    SfuError,
    SfuEvent,
)
from mediaserver.sfu.stills import STILL_WAIT

logger = logging.getLogger("mediaserver.node")

OnClosed = Callable[[str, str, str], Awaitable[None]]
"""(owner peer id, session id, reason) for a session of a local visitor."""
OnCoverFailed = Callable[[str, str], Awaitable[None]]
"""(owner peer id, session id): the face cover of a local visitor's video broke."""


class MediaService:
    """Media sessions on this node or another, for the hub; serves the other
    nodes' requests for sessions here.

    Args:
        sfu: this node's SFU.
        bus: the way to the other nodes.
        effects: the video effects this node can run, by name (a factory each).
    """

    def __init__(
        self,
        sfu: Sfu,
        bus: Bus,
        effects: Mapping[str, Callable[[], Any]] | None = None,
    ) -> None:
        self.sfu = sfu
        self.bus = bus
        self.node_id = bus.node_id
        self._effects = effects
        self.owners: dict[str, str] = {}
        """session id -> owner peer id, for the sessions on this node."""
        self.on_closed: OnClosed | None = None
        self.on_cover_failed: OnCoverFailed | None = None
        sfu.subscribe(self._on_sfu_event)

    # ---- the hub's calls -------------------------------------------------------------

    async def create_session(self, node: str, sdp: str, owner: str) -> tuple[str, str]:
        """A session for `owner` on `node`: (session id, SDP answer).

        Raises:
            SfuError: the offer is unusable, or the node is full or unreachable.
        """
        reply = await self._call(node, m.CreateSession(sdp, owner))
        return str(reply["session"]), str(reply["answer"])

    async def restart_ice(self, node: str, session: str, sdp: str) -> str:
        """The answer to an ICE restart offer on `session` (on `node`).

        Raises:
            RestartRejected: the offer changes more than the ICE credentials.
            SfuError: no such session, or the node is unreachable.
        """
        reply = await self._call(node, m.CreateSession(sdp, "", restart=session))
        return str(reply["answer"])

    async def connect(self, node: str, publisher: str, subscriber: str) -> None:
        """Forward session `publisher`'s media to session `subscriber` (both on `node`)."""
        await self._call(node, m.ConnectSessions(publisher, subscriber))

    async def disconnect(self, node: str, publisher: str, subscriber: str) -> None:
        """Stop what `connect` started."""
        await self._call(node, m.DisconnectSessions(publisher, subscriber))

    async def close_session(self, node: str, session: str) -> None:
        """Close a session on `node` (its owner is not told: it asked)."""
        await self._call(node, m.CloseSession(session))

    async def set_effect(
        self, node: str, session: str, name: str | None, *, cover: bool = False
    ) -> None:
        """Process the session's video with effect `name` (None: none). A `cover`
        (mutual reveal's face cover) fails closed: when it cannot run, the node
        withholds the session's video before answering; a cover of None
        withholds it (hidden, with nothing to cover it: between matches).

        Raises:
            EffectsBusy, EffectUnavailable, NoVideo, SfuError (unknown session,
            node unreachable).
        """
        await self._call(node, m.SetEffect(session, name, cover))

    async def capture_still(self, node: str, session: str) -> bytes:
        """A JPEG of the session's next keyframe (moderators' evidence: only for a
        report that asked for it), waiting at most STILL_WAIT for it.

        Raises:
            SfuError: NoVideo, StillsBusy, StillTimeout (sfu/stills.py), an
            unknown session, the keyframe did not decode, the node unreachable.
        """
        reply = await self._call(node, m.CaptureStill(session), timeout=STILL_WAIT + 1)
        jpeg = reply.get("jpeg")
        if not isinstance(jpeg, bytes):
            raise SfuError("no still in the reply")
        return jpeg

    async def handle_still(self, msg: m.Wire) -> m.Wire:
        """Serve a CaptureStill (this node's or another's): {"jpeg"} or the error."""
        try:
            request = m.body_from_dict(msg)
        except ValueError as exc:
            return {"error": f"malformed media request: {exc}"}
        if not isinstance(request, m.CaptureStill):
            return {"error": f"not a still request: {request.TYPE!r}"}
        try:
            return {"jpeg": await self.sfu.capture_still(request.session)}
        except SfuError as exc:
            return {"error": str(exc), "code": exc.code}

    async def _call(self, node: str, request: m.BusBody, timeout: float | None = None) -> m.Wire:
        if node == self.node_id:
            wire = m.to_wire(request)
            is_still = isinstance(request, m.CaptureStill)
            reply = await self.handle_still(wire) if is_still else self.handle(wire)
        else:
            try:
                wait = {} if timeout is None else {"timeout": timeout}
                reply = await self.bus.request(node, m.to_wire(request), **wait)
            except BusError as exc:
                raise SfuError(f"media node unreachable: {exc}") from None
        if "error" in reply:
            raise SFU_ERRORS.get(str(reply.get("code")), SfuError)(str(reply["error"]))
        return reply

    # ---- serving them ----------------------------------------------------------------

    def handle(self, msg: m.Wire) -> m.Wire:
        """One media request (from this node or another, as the hub's handler
        gets it: a dict, see messages.py); errors are returned."""
        try:
            request = m.body_from_dict(msg)
        except ValueError as exc:
            return {"error": f"malformed media request: {exc}"}
        try:
            if isinstance(request, m.CreateSession) and request.restart is not None:
                return {"answer": self.sfu.restart_ice(request.restart, request.sdp)}
            if isinstance(request, m.CreateSession):
                session = self.sfu.create_session(request.sdp)
                self.owners[session.id] = request.owner
                return {"session": session.id, "answer": session.answer}
            if isinstance(request, m.ConnectSessions):
                self.sfu.connect(request.pub, request.sub)
            elif isinstance(request, m.DisconnectSessions):
                self.sfu.disconnect(request.pub, request.sub)
            elif isinstance(request, m.CloseSession):
                self.owners.pop(request.session, None)  # closed on request: nobody to tell
                self.sfu.close_session(request.session)
            elif isinstance(request, m.SetEffect):
                self._set_effect(request.session, request.name, request.cover)
            else:
                return {"error": f"unknown media request {request.TYPE!r}"}
        except SfuError as exc:
            return {"error": str(exc), "code": exc.code}
        return {}

    def _set_effect(self, session: str, name: str | None, cover: bool) -> None:
        try:
            if name is None:
                if cover:
                    self.sfu.withhold_video(session)
                else:
                    self.sfu.set_effect(session, None)
                return
            if self._effects is None or name not in self._effects:
                raise EffectUnavailable(f"unknown effect {name!r}")
            try:
                effect = self._effects[name]()
            except Exception as exc:  # a module or model it needs cannot load
                logger.warning("effect_failed_to_start", extra={"effect": name, "error": str(exc)})
                raise EffectUnavailable(f"the effect {name} cannot start here") from None
            self.sfu.set_effect(session, effect, cover=cover)
        except SfuError:
            if cover and session in self.sfu.sessions:
                self.sfu.withhold_video(session)  # fail closed: no uncovered face
            raise

    def close_owned_by(self, node: str) -> int:
        """Close the sessions whose visitors lived on `node` (it died)."""
        doomed = [s for s, owner in self.owners.items() if home_node(owner) == node]
        for session in doomed:
            self.owners.pop(session, None)
            self.sfu.close_session(session, "owner node down")
        return len(doomed)

    def _on_sfu_event(self, event: SfuEvent) -> None:
        if isinstance(event, CoverFailed):
            cover_owner = self.owners.get(event.session_id)
            if cover_owner is not None:
                self.bus.spawn(self._tell_cover_failed(cover_owner, event.session_id))
            return
        if not isinstance(event, SessionClosed):
            return
        owner = self.owners.pop(event.session_id, None)
        if owner is None:
            return
        self.bus.spawn(self._tell_closed(owner, event.session_id, event.reason))

    async def _tell_closed(self, owner: str, session: str, reason: str) -> None:
        node = home_node(owner)
        if node == self.node_id:
            if self.on_closed is not None:
                await self.on_closed(owner, session, reason)
            return
        await self.bus.send(node, m.to_wire(m.MediaClosed(owner, session, reason, self.node_id)))

    async def _tell_cover_failed(self, owner: str, session: str) -> None:
        node = home_node(owner)
        if node == self.node_id:
            if self.on_cover_failed is not None:
                await self.on_cover_failed(owner, session)
            return
        await self.bus.send(node, m.to_wire(m.CoverFailed(owner, session)))
