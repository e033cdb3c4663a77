"""What matched visitors do besides media: chat and typing, report and block,
share_profile; and the partner's side of each (the peer events).

The store (profiles, chat history, reports) is optional: without it chat is
relayed and kept nowhere, and share_profile is refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from mediaserver.sfu.server import SfuError
from mediaserver.signalling import events, protocol
from mediaserver.signalling.pairing import Pairing, spawn
from mediaserver.signalling.ports import StorePort
from mediaserver.signalling.protocol import Message, ProtocolError
from mediaserver.signalling.visitors import Visitor, require_partner
from mediaserver.store import StoreError
from mediaserver.store.moderation import DISMISSALS_STOP_COUNTING

logger = logging.getLogger("mediaserver.signalling.hub")


class Conversation:
    """Args:
    pairing: the hub's pairing (peer events, ending a pair).
    store: profiles, chat history and reports; None: accounts are off.
    stats: the hub's counters.
    """

    def __init__(self, pairing: Pairing, store: StorePort | None, stats: Counter[str]) -> None:
        self.pairing = pairing
        self.store = store
        self.stats = stats

    # ---- the visitor's messages --------------------------------------------------------

    async def on_chat(self, v: Visitor, msg: Message) -> None:
        require_partner(v, "chat")
        await self.pairing.tell(v, events.Chat(msg["text"]))
        v.chat_lines.append(("me", msg["text"]))
        self.stats["chat"] += 1
        # chat history only for signed-in users who opted in (the store checks);
        # the partner's node keeps its own visitor's copy
        if v.user_id is not None and v.conversation is not None and self.store is not None:
            spawn(self._keep_chat(v.user_id, v.conversation, "me", msg["text"]))

    async def on_typing(self, v: Visitor, msg: Message) -> None:
        require_partner(v, "typing")
        await self.pairing.tell(v, events.Typing())

    async def on_report(self, v: Visitor, msg: Message) -> None:
        partner = require_partner(v, "report")
        # evidence only when the reporter asks: the pair's last lines, as relayed
        chat = tuple(
            ("reporter" if who == "me" else "reported", text) for who, text in v.chat_lines
        ) if msg.get("include_chat") else ()
        # the partner's node counts it under its visitor's reputation, before
        # re-queueing it, and files it for the moderators
        report = events.Report(
            v.reputation, msg["reason"], v.user_id, chat, bool(msg.get("include_frame"))
        )
        await self.pairing.tell(v, report)
        if v.user_id is not None and self.store is not None:
            # the reporter's own record (part of its access export); nothing about the partner
            await asyncio.to_thread(self.store.record_report, v.user_id, msg["reason"])
        self.stats[f"report:{msg['reason']}"] += 1
        logger.info("report", extra={"reason": msg["reason"]})
        await self.pairing.block(v, partner)
        v.send(protocol.message("reported"))

    async def on_block(self, v: Visitor, msg: Message) -> None:
        await self.pairing.block(v, require_partner(v, "block"))

    async def on_share_profile(self, v: Visitor, msg: Message) -> None:
        """Consent, given by this visitor alone: its partner gets its public card
        (handle, photo URL, bio, interests) and nothing more. A new match starts
        anonymous again."""
        partner = require_partner(v, "share_profile")
        if v.user_id is None or self.store is None:
            raise ProtocolError(
                "unauthorized", "sign in (hello with a token) to share a profile", "share_profile"
            )
        try:
            # records the consent too
            card = await asyncio.to_thread(self.store.share_profile_card, v.user_id)
        except StoreError:
            raise ProtocolError("unauthorized", "your profile is gone", "share_profile") from None
        if v.partner is not partner:
            return  # the pair ended while the card was read: it goes to nobody
        await self.pairing.tell(v, events.ProfileCard(card))
        v.send(protocol.message("profile_shared"))

    # ---- the partner's news ------------------------------------------------------------

    def on_partner_chat(self, me: Visitor, event: events.Chat) -> None:
        me.send(protocol.message("chat", text=event.text))
        if me.partner is not None:
            me.chat_lines.append(("partner", event.text))
        if me.user_id is not None and me.conversation is not None and self.store is not None:
            spawn(self._keep_chat(me.user_id, me.conversation, "stranger", event.text))

    def on_partner_typing(self, me: Visitor) -> None:
        me.send(protocol.message("typing"))

    def on_partner_card(self, me: Visitor, event: events.ProfileCard) -> None:
        me.send(protocol.message("profile_card", card=event.card))

    async def on_reported(self, me: Visitor, event: events.Report) -> None:
        """The partner reported me: count it under me's reputation (reports from
        one address hash count once: the matchmaker counts reporters by it), unless
        moderators dismissed DISMISSALS_STOP_COUNTING of that reporter's reports;
        and keep the report (who was reported: my address hash and account) for
        the moderators, with a still of my video when the reporter asked for one
        (taken now, before anything else: only then is anything decoded)."""
        still = None
        if event.include_frame and self.store is not None:
            still = asyncio.ensure_future(self._take_still(me.media_node, me.session_id))
        if await self._reporter_counts(event.reputation):
            await self.pairing.queue.record_report(event.reputation, me.reputation)
        else:
            # not counted toward a refusal; still never paired again for a while
            self.stats["reports_not_counted"] += 1
            await self.pairing.queue.record_block(event.reputation, me.reputation)
        if self.store is not None:
            spawn(self._file_report(me, event, still))

    async def _reporter_counts(self, reporter: str) -> bool:
        if self.store is None:
            return True
        try:
            dismissed = await asyncio.to_thread(self.store.reporter_dismissals, reporter)
        except StoreError:
            logger.exception("reading a reporter's dismissals failed")
            return True
        return dismissed < DISMISSALS_STOP_COUNTING

    async def _take_still(self, node: str | None, session: str | None) -> tuple[bytes | None, str]:
        """(the JPEG, "") or (None, why there is none)."""
        if node is None or session is None:
            return None, "the reported visitor sent no video"
        try:
            jpeg = await self.pairing.media.capture_still(node, session)
        except SfuError as exc:
            self.stats["report_still_missing"] += 1
            logger.info("report_still_missing", extra={"error": str(exc)})
            return None, str(exc)
        self.stats["report_still"] += 1
        return jpeg, ""

    async def _file_report(
        self, me: Visitor, event: events.Report,
        still: asyncio.Future[tuple[bytes | None, str]] | None = None,
    ) -> None:
        store = self.store
        if store is None:
            return
        chat = [{"from": who, "text": text} for who, text in event.chat]
        frame, frame_missing = (None, None) if still is None else await still
        try:
            await asyncio.to_thread(
                store.file_chat_report, event.reason, reported_address=me.reputation,
                reported_user_id=me.user_id, reporter_address=event.reputation,
                reporter_user_id=event.reporter_user_id, chat=chat or None,
                frame=frame, frame_missing=frame_missing or None)
            self.stats["reports_filed"] += 1
        except StoreError:
            logger.exception("filing a report for review failed")

    async def _keep_chat(self, user_id: str, conversation: str, sender: str, text: str) -> None:
        store = self.store
        if store is None:
            return
        try:
            await asyncio.to_thread(store.store_chat_message, user_id, conversation, sender, text)
        except Exception:
            logger.exception("storing chat history failed")
