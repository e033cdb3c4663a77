"""What a visitor's outgoing video carries, for the hub: mutual reveal's face
cover until both visitors of the match pressed Reveal, else the effect the visitor
chose, else nothing.

The face cover fails closed. The hub puts it on before it connects the video to
the partner, and when it cannot run (no room in the covers' pool, the effects not
installed, a model that does not load, a pipeline that fails on every frame) the
media node withholds that video (mediaserver.node.media) and both visitors get
`video_withheld`. Errors are told apart by type (mediaserver.sfu.server).

It also handles the visitor's `effect` and `reveal` messages and the partner's
`revealed` and `video_withheld` peer events.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mediaserver.sfu.server import EffectsBusy, NoVideo, SfuError
from mediaserver.signalling import events, protocol
from mediaserver.signalling.ports import MediaPort
from mediaserver.signalling.protocol import Message, ProtocolError
from mediaserver.signalling.visitors import Visitor, require_partner

logger = logging.getLogger("mediaserver.signalling.hub")

COVER = "pixelate_face"
"""The effect that hides faces until both visitors of a match pressed Reveal."""

TellPartner = Callable[[Visitor, events.PeerEvent], Awaitable[None]]
"""Sends a peer event to the visitor's partner (wherever it lives)."""


class VideoEffects:
    """Args:
    media: the hub's way to the SFUs.
    effects: name -> effect class; None: the effects are not installed.
    mutual_reveal: every match starts with both faces covered.
    stats: the hub's counters.
    tell_partner: sends a peer event to a visitor's partner (Pairing.tell).
    """

    def __init__(
        self,
        media: MediaPort,
        effects: Mapping[str, Callable[[], Any]] | None,
        mutual_reveal: bool,
        stats: Counter[str],
        tell_partner: TellPartner,
    ) -> None:
        self.media = media
        self.effects = effects
        self.mutual_reveal = mutual_reveal
        self.stats = stats
        self._tell = tell_partner

    async def apply(self, v: Visitor) -> bool:
        """Put on v's video what it should carry now. Returns whether the effect
        v chose is applied."""
        if v.session_id is None or v.media_node is None:
            return False
        hidden = self.mutual_reveal and v.partner is not None and not (
            v.revealed and v.partner.revealed
        )
        if hidden:
            await self._cover(v, v.media_node, v.session_id)
            return False
        if self.effects is None and not self.mutual_reveal:
            return False  # nothing was ever put on the video
        try:
            # None also ends a withheld video (a cover that could not run) once both revealed
            await self.media.set_effect(v.media_node, v.session_id, v.effect)
        except SfuError as exc:
            if v.effect is not None or not isinstance(exc, NoVideo):
                code = "effects_busy" if isinstance(exc, EffectsBusy) else "effect_unavailable"
                v.send(protocol.error(code, str(exc), "effect"))
            return False
        return v.effect is not None

    async def _cover(self, v: Visitor, node: str, session: str) -> None:
        try:
            await self.media.set_effect(node, session, COVER, cover=True)
        except NoVideo:
            return  # it sends no video: nothing to cover
        except SfuError as exc:  # its node withheld the video
            await self._withheld(v, exc.code)

    async def pair_ended(self, v: Visitor) -> None:
        """Mutual reveal: between matches v's cover gives way to withholding its
        video (nobody sees it then), so waiting or idle visitors hold no cover
        and no CPU. Never uncovered: the old partner's node may not have
        disconnected v's video yet. The next match covers it again."""
        if not self.mutual_reveal or v.session_id is None or v.media_node is None:
            return
        try:
            await self.media.set_effect(v.media_node, v.session_id, None, cover=True)
        except SfuError:
            pass  # no video, or the session or its node is gone: nothing to hold

    async def cover_failed(self, v: Visitor | None, session: str) -> None:
        """v's face cover broke while running (its node withheld the video)."""
        if v is None or v.session_id != session or v.partner is None:
            return  # a cover left from an earlier pair: nobody sees that video now
        await self._withheld(v, "pipeline")

    async def _withheld(self, v: Visitor, why: str) -> None:
        self.stats[f"cover_failed:{why}"] += 1
        logger.warning("cover_failed", extra={"error": why})
        v.send(protocol.video_withheld("yours"))
        await self._tell(v, events.VideoWithheld())

    # ---- the visitor's messages and its partner's news ---------------------------------

    async def on_effect(self, v: Visitor, msg: Message) -> None:
        """`effect`: turn a named effect on or off for v's own video."""
        name, on = msg["name"], msg["on"]
        if on:
            if self.effects is None:
                raise ProtocolError("effect_unavailable", "effects are off on this server", "effect")
            if name not in self.effects:
                known = ", ".join(sorted(self.effects))
                raise ProtocolError("bad_field", f"unknown effect {name!r} (known: {known})", "effect")
            v.effect = name
        elif v.effect == name:
            v.effect = None
        applied = await self.apply(v)
        logger.info("effect", extra={"effect": name, "on": on, "applied": applied and on})
        v.send(protocol.message("effect", name=name, on=on, applied=applied and on))

    async def on_reveal(self, v: Visitor, msg: Message) -> None:
        """`reveal`: v agrees to show its face; uncovered once both agreed."""
        partner = require_partner(v, "reveal")
        if not self.mutual_reveal:
            raise ProtocolError("out_of_order", "mutual reveal is off on this server", "reveal")
        if v.revealed:
            return
        v.revealed = True
        await self._tell(v, events.Revealed())
        if partner.revealed and v.partner is partner:
            v.send(protocol.message("revealed", by="both"))
            await self.apply(v)

    async def on_partner_revealed(self, me: Visitor) -> None:
        """The partner pressed Reveal."""
        if me.partner is None:
            return
        me.partner.revealed = True
        me.send(protocol.message("revealed", by="partner"))
        if me.revealed:
            me.send(protocol.message("revealed", by="both"))
            await self.apply(me)

    def on_partner_withheld(self, me: Visitor) -> None:
        """The partner's cover could not run: me gets no video from it."""
        me.send(protocol.video_withheld("partner"))
