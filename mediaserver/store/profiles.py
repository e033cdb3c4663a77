"""Profiles and their tokens: create, authenticate, read, update, delete."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterable
from typing import Any

from mediaserver.store import controls, controls_store, shares
from mediaserver.store.contact import (
    accepted_version,
    validate_email,
    validate_name,
    write_contact,
)
from mediaserver.store.core import Profile, StoreCore, hash_token
from mediaserver.store.errors import Conflict, Invalid, NotFound
from mediaserver.store.sealed_fields import seal_profile_fields
from mediaserver.store.limits import (
    age_on,
    validate_bio,
    validate_bool,
    validate_dob,
    validate_interests,
    validate_language,
    validate_links,
    validate_location,
    validate_password,
    validate_username,
)

LAST_SEEN_RESOLUTION = 60.0  # authenticate() rewrites last_seen_at at most this often


class ProfileStore(StoreCore):
    """Profiles and their tokens (a part of Store)."""

    def _validate_dob(self, value: object) -> str:
        return validate_dob(value, self._today(), self.min_age)

    def create_profile(
        self,
        username: str,
        date_of_birth: str,
        bio: str = "",
        interests: Iterable[str] = (),
        language: str | None = None,
        chat_history_consent: bool = False,
        discoverable: bool = False,
        password: str | None = None,
        links: Iterable[str] = (),
        location: str | None = None,
        show_links: bool = False,
        show_location: bool = False,
        name: str | None = None,
        email: str | None = None,
        policy_version: str | None = None,
    ) -> tuple[Profile, str]:
        """A new profile and its first token: (profile, token). With a password the
        token is an expiring session; without, the account's only (lasting) key.
        With an e-mail address, a verification code is mailed (store/contact.py);
        `policy_version` (default: the current one) is recorded as accepted.

        Raises:
            Invalid: a field the store refuses (.field names it).
            Conflict: the username is taken (case-insensitively)."""
        username = validate_username(username)
        dob = self._validate_dob(date_of_birth)
        bio = validate_bio(bio)
        interest_list = validate_interests(
            list(interests) if isinstance(interests, (set, frozenset)) else interests
        )
        language = validate_language(language)
        consent = validate_bool("chat_history_consent", chat_history_consent)
        listed = validate_bool("discoverable", discoverable)
        link_list = validate_links(list(links) if not isinstance(links, str) else links)
        place = validate_location(location)
        shown = (int(validate_bool("show_links", show_links)),
                 int(validate_bool("show_location", show_location)))
        contact: dict[str, Any] = {}
        if name is not None:
            contact["name"] = validate_name(name)
        if email is not None:
            contact["email"] = validate_email(email)
        # hashed before the transaction: the store's lock is not held for Argon2's work
        password_hash = None if password is None else self.hasher.hash(
            validate_password(password))
        user_id = secrets.token_urlsafe(12)
        token = secrets.token_urlsafe(32)
        sealed = seal_profile_fields(self._key, user_id, {
            "username": username, "date_of_birth": dob, "bio": bio,
            "interests": interest_list, "language": language, "links": link_list,
            "location": place})
        with self._tx() as conn:
            now = self._now()
            try:
                conn.execute(
                    f"INSERT INTO users (id, {', '.join(sealed)}, created_at, updated_at,"
                    " last_seen_at, chat_history_consent, discoverable, password_hash,"
                    " show_links, show_location)"
                    f" VALUES (?, {', '.join('?' for _ in sealed)}, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (user_id, *sealed.values(),
                     now, now, now, int(consent), int(listed), password_hash, *shown),
                )
            except sqlite3.IntegrityError:
                raise Conflict("username is taken") from None
            if contact:
                write_contact(conn, self._key, now, user_id, contact)
            accepted = accepted_version(conn, policy_version)
            if accepted is not None:
                conn.execute("UPDATE users SET policy_version = ? WHERE id = ?",
                             (accepted, user_id))
            # With a password the account has another way in: the token is a session
            # like a sign-in's (it expires, a password change ends it). Without one it
            # is the only key, and does not expire.
            conn.execute(
                "INSERT INTO tokens (token_hash, user_id, created_at, kind, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (hash_token(token), user_id, now,
                 "profile" if password_hash is None else "session",
                 None if password_hash is None else now + self.session_ttl),
            )
            if consent:
                conn.execute(
                    "INSERT INTO consents (user_id, kind, granted, source, at)"
                    " VALUES (?, 'chat_history', 1, 'profile', ?)",
                    (user_id, now),
                )
            return self._get_profile(conn, user_id), token

    def authenticate(self, token: str) -> Profile:
        """The profile a token belongs to; being seen clears an inactivity flag.

        Raises:
            NotFound: unknown or expired token."""
        if not isinstance(token, str) or not token:
            raise NotFound("unknown token")
        with self._tx() as conn:
            row = conn.execute(
                "SELECT t.user_id, u.last_seen_at, u.flagged_at, t.expires_at, t.last_used_at"
                " FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?",
                (hash_token(token),),
            ).fetchone()
            if row is None:
                raise NotFound("unknown token")
            user_id, last_seen, flagged_at, expires_at, last_used = row
            now = self._now()
            if expires_at is not None and expires_at <= now:
                raise NotFound("expired token")  # retention deletes the row
            # Seen again: clears an inactivity flag. last_seen_at is only rewritten once
            # it is LAST_SEEN_RESOLUTION old, so a burst of requests is not a burst of
            # fsynced writes (retention works in days).
            if flagged_at is not None or now - last_seen >= LAST_SEEN_RESOLUTION:
                conn.execute(
                    "UPDATE users SET last_seen_at = ?, flagged_at = NULL WHERE id = ?",
                    (now, user_id),
                )
            if last_used is None or now - last_used >= LAST_SEEN_RESOLUTION:
                conn.execute("UPDATE tokens SET last_used_at = ? WHERE token_hash = ?",
                             (now, hash_token(token)))  # the sessions list shows it
            return self._get_profile(conn, user_id)

    def age(self, profile: Profile) -> int:
        """The profile's age in whole years today (by the store's clock): e.g. for the
        18+ gate of random video chat when --min-age lets younger accounts in."""
        return age_on(profile.date_of_birth, self._today())

    def get_profile(self, user_id: str) -> Profile:
        """The profile by id (NotFound if there is none)."""
        with self._tx(write=False) as conn:
            return self._get_profile(conn, user_id)

    def update_profile(self, user_id: str, **fields: Any) -> Profile:
        """Change the given fields (UPDATABLE); returns the updated profile.
        Overwritten personal data and withdrawn chat are scrubbed from the WAL."""
        values, consent = check_updates(self, fields)
        with self._tx() as conn:
            scrub = write_updates(self, conn, user_id, values, consent)
            after = self._get_profile(conn, user_id)
        if scrub:
            self._scrub_wal()  # the old values' (or deleted chat's) page images
        return after

    def delete_user(self, user_id: str) -> str | None:
        """Delete the account and all its data now (the audit log keeps an entry
        without personal data). Under a legal hold nothing is deleted: a deletion
        request is opened instead (or the open one kept), to complete once the hold
        is released; returns its id (None: deleted now)."""
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            if controls.held(conn, user_id):
                return controls_store.waiting_deletion(self, conn, user_id)
            self._delete_user(conn, user_id, reason="profile_delete", request_id=None)
        self._scrub_wal()
        return None


UPDATABLE = (
    "username", "bio", "interests", "language", "date_of_birth", "chat_history_consent",
    "discoverable", "links", "location", "show_links", "show_location", "name", "email",
)
PERSONAL = ("username", "bio", "interests", "language", "date_of_birth", "links", "location")
"""Fields whose old value is personal data: overwriting one scrubs the WAL."""
_FLAGS = ("discoverable", "show_links", "show_location")
CONTACT = ("name", "email")
"""Fields kept by store/contact.py (sealed in their own columns, e-mail verified)."""


def check_updates(store: StoreCore, fields: dict[str, Any]) -> tuple[dict[str, Any], bool | None]:
    """The profile changes `fields` asks for, validated (Invalid names the field):
    (column values with the personal ones still plain, the chat consent or None).
    Shared by PATCH and a correction request."""
    for name in fields:
        if name not in UPDATABLE:
            raise Invalid(name, "unknown field")
    checks: dict[str, Any] = {
        "username": validate_username, "bio": validate_bio,
        "interests": validate_interests, "language": validate_language,
        "date_of_birth": lambda v: validate_dob(v, store._today(), store.min_age),
        "links": validate_links, "location": validate_location,
        # None clears a contact field
        "name": lambda v: None if v is None else validate_name(v),
        "email": lambda v: None if v is None else validate_email(v),
    }
    values: dict[str, Any] = {}
    for name, check in checks.items():
        if name in fields:
            values[name] = check(fields[name])
    for name in _FLAGS:
        if name in fields:
            values[name] = int(validate_bool(name, fields[name]))
    consent: bool | None = None
    if "chat_history_consent" in fields:
        consent = validate_bool("chat_history_consent", fields["chat_history_consent"])
    return values, consent


def write_updates(
    store: StoreCore, conn: sqlite3.Connection, user_id: str, values: dict[str, Any],
    consent: bool | None,
) -> bool:
    """Write check_updates' result in the caller's transaction (Conflict: username
    taken). Returns whether old personal data or chat needs scrubbing from the WAL."""
    values = dict(values)
    personal = {name: values.pop(name) for name in PERSONAL if name in values}
    contact = {name: values.pop(name) for name in CONTACT if name in values}
    before = store._get_profile(conn, user_id)
    values.update(seal_profile_fields(store._key, user_id, personal))
    if before.discoverable and values.get("discoverable") == 0:
        # leaving the listing: photo URLs handed out (listed or shared) stop working
        conn.execute("UPDATE photos SET public_id = ? WHERE user_id = ?",
                     (secrets.token_urlsafe(16), user_id))
        shares.revoke_all(conn, user_id)
    if values:
        values["updated_at"] = store._now()
        assignments = ", ".join(f"{name} = ?" for name in values)
        try:
            conn.execute(
                f"UPDATE users SET {assignments} WHERE id = ?",
                (*values.values(), user_id),
            )
        except sqlite3.IntegrityError:
            raise Conflict("username is taken") from None
    if contact:
        write_contact(conn, store._key, store._now(), user_id, contact)
    chat_deleted = 0
    if consent is not None:
        chat_deleted = store._set_consent(conn, user_id, consent, "profile")
    return bool(chat_deleted or personal or contact)
