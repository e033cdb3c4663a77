"""The Store: the one object the server holds for everything it keeps (profiles,
tokens, consents, encrypted chat history, reports, privacy requests with an
append-only audit log, retention; accounts: Argon2id passwords, expiring sessions,
sign-in throttling, TOTP two-factor, photos, blocks, browsing, profile sharing,
underage reports).

A thin facade: each domain lives in its own module, all sharing the connection, the
lock and the transaction helper of store/core.py.
"""

from __future__ import annotations

from mediaserver.store.auth import AuthStore
from mediaserver.store.chat import ChatStore
from mediaserver.store.controls_store import ControlsStore
from mediaserver.store.conversations import ConversationStore
from mediaserver.store.contact import ContactStore
from mediaserver.store.moderation import ModerationStore
from mediaserver.store.notices import NoticeStore
from mediaserver.store.privacy import PrivacyStore
from mediaserver.store.profiles import ProfileStore
from mediaserver.store.social import SocialStore


class Store(
    ProfileStore, AuthStore, PrivacyStore, ConversationStore, SocialStore, ChatStore,
    ControlsStore, NoticeStore, ContactStore, ModerationStore,
):
    """SQLite storage for the whole server (see StoreCore for the arguments).

    Domains: ProfileStore (store/profiles.py), AuthStore (store/auth.py: sign-in,
    sessions, throttling, TOTP), PrivacyStore (store/privacy.py: consents, requests,
    audit log, retention), SocialStore (store/social.py: photos, blocks, browse,
    cards, account reports), ChatStore (store/chat.py), ControlsStore
    (store/controls_store.py: restriction, objections, legal hold, guardians' reports),
    ConversationStore (store/conversations.py, store/connections.py: connections,
    conversations), NoticeStore (store/notices.py: inbox, mail outbox), ContactStore
    (store/contact.py: name, e-mail, codes, sessions, policy), ModerationStore
    (store/moderation.py: moderators, the report queue, decisions, bans, appeals)."""
