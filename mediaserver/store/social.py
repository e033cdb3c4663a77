"""The social side: photos (sealed with the data key), blocks, browsing
discoverable profiles, sharing a profile card, and account reports (underage ones
for an operator)."""

from __future__ import annotations

import base64
import secrets
import sqlite3
from typing import Any

from mediaserver.store import connection_rows, controls, crypto, moderation_rows, shares
from mediaserver.store.core import PHOTO_PATH, Profile, StoreCore
from mediaserver.store.errors import Conflict, Invalid, NotFound
from mediaserver.store.sealed_fields import open_field, username_index
from mediaserver.store.limits import (
    REPORT_REASONS,
    USERNAME,
    age_band,
    age_on,
    validate_interests,
    validate_language,
)

BROWSE_PAGE = 20


def photo_aad(user_id: str) -> bytes:
    return b"photo\x00" + user_id.encode()


def open_photo(key: bytes, user_id: str, nonce: bytes, ciphertext: bytes) -> bytes:
    return crypto.open_sealed(key, nonce, ciphertext, photo_aad(user_id))


def photo_export(conn: sqlite3.Connection, key: bytes, user_id: str) -> dict[str, Any] | None:
    """The user's photo for an access export (decrypted, base64), or None."""
    row = conn.execute(
        "SELECT width, height, updated_at, nonce, ciphertext FROM photos WHERE user_id = ?",
        (user_id,),
    ).fetchone()
    if row is None:
        return None
    return {
        "content_type": "image/jpeg", "width": row[0], "height": row[1],
        "updated_at": row[2],
        "data_base64": base64.b64encode(open_photo(key, user_id, row[3], row[4])).decode(),
    }


def blocked_handles(conn: sqlite3.Connection, key: bytes, user_id: str) -> list[str]:
    """Handles the user blocked, in the order blocked (then by handle)."""
    named = sorted(
        (at, name.casefold(), name) for at, name in (
            (at, open_field(key, uid, "username", sealed)) for at, uid, sealed in conn.execute(
                "SELECT b.at, u.id, u.username_sealed FROM blocks b"
                " JOIN users u ON u.id = b.blocked_id WHERE b.blocker_id = ?", (user_id,))))
    return [name for _, _, name in named]


class SocialStore(StoreCore):
    """Photos, blocks, browsing, cards and account reports (a part of Store)."""

    def set_photo(self, user_id: str, jpeg: bytes, width: int, height: int) -> str:
        """Store an already cleaned photo (mediaserver.store.photos), sealed with the
        data key; returns its new listing id (a new one per upload: the old one and
        every shared card's URL stop working)."""
        public_id = secrets.token_urlsafe(16)
        nonce, ciphertext = crypto.seal(self._key, jpeg, photo_aad(user_id))
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            conn.execute(
                "INSERT INTO photos (user_id, public_id, width, height, updated_at, nonce,"
                " ciphertext) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(user_id) DO UPDATE SET"
                " public_id = excluded.public_id, width = excluded.width,"
                " height = excluded.height, updated_at = excluded.updated_at,"
                " nonce = excluded.nonce, ciphertext = excluded.ciphertext",
                (user_id, public_id, width, height, self._now(), nonce, ciphertext),
            )
            shares.revoke_all(conn, user_id)
        self._scrub_wal()  # the old photo's pages
        return public_id

    def _open_photo(self, user_id: str, nonce: bytes, ciphertext: bytes) -> bytes:
        return open_photo(self._key, user_id, nonce, ciphertext)

    def get_photo(self, user_id: str) -> bytes:
        """The user's own photo (NotFound if none)."""
        with self._tx(write=False) as conn:
            self._get_profile(conn, user_id)
            row = conn.execute(
                "SELECT nonce, ciphertext FROM photos WHERE user_id = ?", (user_id,)
            ).fetchone()
        if row is None:
            raise NotFound("no photo")
        return self._open_photo(user_id, row[0], row[1])

    def public_photo(self, public_id: str) -> bytes:
        """A photo by the id its owner's listing or one shared card carried (see
        store/shares.py for when each stops working)."""
        if not isinstance(public_id, str) or not 1 <= len(public_id) <= 64:
            raise NotFound("no photo")
        with self._tx(write=False) as conn:
            row = shares.photo_by_capability(conn, public_id, self._now())
        if row is None:
            raise NotFound("no photo")
        return self._open_photo(*row)

    def photo_shares(self, user_id: str) -> list[dict[str, Any]]:
        """The user's live card shares: id (its photo URL is PHOTO_PATH + id),
        created_at, expires_at."""
        with self._tx(write=False) as conn:
            self._get_profile(conn, user_id)
            return shares.live_shares(conn, user_id, self._now())

    def withdraw_photo_share(self, user_id: str, share_id: str) -> None:
        """That shared card's photo URL stops working now."""
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            if not shares.withdraw(conn, user_id, share_id):
                raise NotFound("no such share")

    def delete_photo(self, user_id: str) -> None:
        """Delete the user's photo; its listing and shared URLs stop working."""
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            if not conn.execute("DELETE FROM photos WHERE user_id = ?", (user_id,)).rowcount:
                raise NotFound("no photo")
            shares.revoke_all(conn, user_id)
        self._scrub_wal()

    # -- blocks, browsing, cards, reports -----------------------------------------------

    def _user_by_handle(
        self, conn: sqlite3.Connection, handle: object, field: str, viewer: Profile
    ) -> str:
        """The id behind a handle the viewer may know of: one across the age line is
        answered like an unknown one (adults and minors never learn of each other)."""
        if not isinstance(handle, str) or not USERNAME.fullmatch(handle):
            raise Invalid(field, "3-32 characters: letters, digits, _ . -")
        row = conn.execute(
            "SELECT id, date_of_birth_sealed FROM users WHERE username_index = ?",
            (username_index(self._key, handle),)).fetchone()
        if row is None or not shares.same_side(
                self._open(row[0], "date_of_birth", row[1]), viewer.date_of_birth,
                self._today()):
            raise NotFound("no such handle")
        return str(row[0])

    def block(self, user_id: str, handle: str) -> None:
        """An account-level block: neither sees the other in listings, in either
        direction. Blocking again is a no-op."""
        with self._tx() as conn:
            me = self._get_profile(conn, user_id)
            other = self._user_by_handle(conn, handle, "handle", me)
            if other == user_id:
                raise Invalid("handle", "you cannot block yourself")
            conn.execute(
                "INSERT OR IGNORE INTO blocks (blocker_id, blocked_id, at) VALUES (?, ?, ?)",
                (user_id, other, self._now()),
            )
            connection_rows.end_between(conn, user_id, other)  # a block ends the connection

    def unblock(self, user_id: str, handle: str) -> None:
        """Lift a block the user made (NotFound if there was none)."""
        with self._tx() as conn:
            me = self._get_profile(conn, user_id)
            other = self._user_by_handle(conn, handle, "handle", me)
            if not conn.execute(
                "DELETE FROM blocks WHERE blocker_id = ? AND blocked_id = ?", (user_id, other)
            ).rowcount:
                raise NotFound("not blocked")

    def blocked_handles(self, user_id: str) -> list[str]:
        """Handles the user has blocked, in the order blocked."""
        with self._tx(write=False) as conn:
            self._get_profile(conn, user_id)
            return blocked_handles(conn, self._key, user_id)

    @staticmethod
    def _card(
        handle: str, photo_id: str | None, bio: str, interests: list[str],
        links: list[str] | None = None, location: str | None = None,
    ) -> dict[str, Any]:
        """The public card: handle, photo URL, bio, interests; links and location
        only when the owner shows them (None: not shown). Nothing else."""
        card: dict[str, Any] = {
            "handle": handle,
            "photo_url": None if photo_id is None else PHOTO_PATH + photo_id,
            "bio": bio,
            "interests": list(interests),
        }
        if links is not None:
            card["links"] = list(links)
        if location is not None:
            card["location"] = location
        return card

    def _shown(
        self, user_id: str, show_links: int, links_sealed: bytes | None, show_location: int,
        location_sealed: bytes | None,
    ) -> dict[str, Any]:
        """The _card arguments for links and location: opened only when shown."""
        out: dict[str, Any] = {}
        if show_links and links_sealed is not None:
            out["links"] = list(self._open(user_id, "links", links_sealed))
        if show_location and location_sealed is not None:
            out["location"] = self._open(user_id, "location", location_sealed)
        return out

    def browse(
        self, viewer_id: str, interest: str | None = None, language: str | None = None,
        cursor: str | None = None, limit: int = BROWSE_PAGE,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Discoverable profiles for the viewer, most shared interests first (then by
        id, for stable pages), without anyone blocked either way or across the age
        line. Returns (cards, the cursor of the next page or None)."""
        if interest is not None:
            wanted = validate_interests([interest])
            interest = wanted[0] if wanted else None
        if language is not None:
            language = validate_language(language)
        after: tuple[int, str] | None = None
        if cursor is not None:
            try:
                shared_text, _, after_id = base64.urlsafe_b64decode(
                    cursor.encode("ascii") + b"=" * (-len(cursor) % 4)).decode().partition(":")
                after = (int(shared_text), after_id)
                if not after_id or after[0] < 0:
                    raise ValueError
            except (ValueError, UnicodeError):
                raise Invalid("cursor", "not a cursor this server gave out") from None
        with self._tx(write=False) as conn:
            viewer = self._get_profile(conn, viewer_id)
            today = self._today()
            rows = conn.execute(
                "SELECT u.id, p.public_id, u.date_of_birth_sealed, u.interests_sealed,"
                " u.language_sealed, u.username_sealed, u.bio_sealed,"
                " u.show_links, u.links_sealed, u.show_location, u.location_sealed,"
                " EXISTS (SELECT 1 FROM objections o WHERE o.user_id = u.id"
                "  AND o.purpose = 'matching_by_interests')"
                " FROM users u LEFT JOIN photos p ON p.user_id = u.id"
                # restricted: stored only, never listed (store/controls.py)
                " WHERE u.discoverable = 1 AND u.restricted_at IS NULL AND u.id != ?"
                " AND NOT EXISTS (SELECT 1 FROM blocks b WHERE (b.blocker_id = ?"
                "  AND b.blocked_id = u.id) OR (b.blocker_id = u.id AND b.blocked_id = ?))",
                (viewer_id, viewer_id, viewer_id),
            ).fetchall()
        # The fields are sealed: the age line, the filters and the ranking run here,
        # over the discoverable candidates (most shared interests first, then by id).
        # an objection to matching by interests (or a restriction: stored only): the
        # viewer's interests rank no one
        mine = (set() if viewer.restricted or "matching_by_interests" in viewer.objections
                else set(viewer.interests))
        ranked: list[tuple[int, str, Any, str, list[str], tuple[Any, ...]]] = []
        for user_id, photo_id, dob_sealed, interests_sealed, language_sealed, *rest in rows:
            dob = self._open(user_id, "date_of_birth", dob_sealed)
            # adults and minors (--min-age below 18) never list each other
            if not shares.same_side(dob, viewer.date_of_birth, today):
                continue
            interests = list(self._open(user_id, "interests", interests_sealed))
            matchable = [] if rest[6] else interests
            if interest is not None and interest not in matchable:
                continue
            if language is not None:
                theirs = self._open(user_id, "language", language_sealed)
                if theirs is None or theirs.casefold() != language.casefold():
                    continue
            shared = sum(1 for name in matchable if name in mine)
            if after is not None and not (
                    shared < after[0] or (shared == after[0] and user_id > after[1])):
                continue
            ranked.append((shared, user_id, photo_id, dob, interests, tuple(rest)))
        ranked.sort(key=lambda entry: (-entry[0], entry[1]))
        cards = [
            {**self._card(self._open(user_id, "username", rest[0]), photo_id,
                          self._open(user_id, "bio", rest[1]), interests,
                          **self._shown(user_id, *rest[2:6])),
             "age_band": age_band(age_on(dob, today))}
            for _, user_id, photo_id, dob, interests, rest in ranked[:limit]
        ]
        next_cursor = None
        if len(ranked) > limit:
            last = ranked[limit - 1]
            next_cursor = base64.urlsafe_b64encode(
                f"{last[0]}:{last[1]}".encode()).decode().rstrip("=")
        return cards, next_cursor

    def share_profile_card(self, user_id: str) -> dict[str, Any]:
        """The user's public card for the stranger they are talking to, and the record
        of that consent. Its photo URL is a capability of this share alone (see
        store/shares.py), never the listing's."""
        with self._tx() as conn:
            profile = self._get_profile(conn, user_id)
            if profile.restricted:
                raise Conflict("processing of this profile is restricted")
            now = self._now()
            conn.execute(
                "INSERT INTO consents (user_id, kind, granted, source, at)"
                " VALUES (?, 'share_profile', 1, 'signalling', ?)",
                (user_id, now),
            )
            share_id = (None if profile.photo_id is None
                        else shares.new_share(conn, user_id, now))
            return self._card(
                profile.username, share_id, profile.bio, profile.interests,
                list(profile.links) if profile.show_links else None,
                profile.location if profile.show_location else None)

    def report_account(self, reporter_id: str, handle: str, reason: str) -> str:
        """Report an account by its handle (seen in a listing or a shared card);
        returns the report id an operator acts on."""
        if reason not in REPORT_REASONS:
            raise Invalid("reason", "must be one of " + ", ".join(REPORT_REASONS))
        # hex, not urlsafe base64: an id starting with "-" reads as an option to
        # `mediaserver accounts confirm-underage ID`
        report_id = secrets.token_hex(12)
        with self._tx() as conn:
            reporter = self._get_profile(conn, reporter_id)
            reported = self._user_by_handle(conn, handle, "handle", reporter)
            if reported == reporter_id:
                raise Invalid("handle", "you cannot report yourself")
            conn.execute(
                "INSERT INTO account_reports (id, reported_user_id, reporter_user_id, reason,"
                " at) VALUES (?, ?, ?, ?, ?)",
                (report_id, reported, reporter_id, reason, self._now()),
            )
            moderation_rows.queue_report(conn, report_id, "account", reason, self._now(),
                                         reported_user_id=reported, reporter_user_id=reporter_id)
        return report_id

    def underage_reports(self) -> list[dict[str, Any]]:
        """Open under-age reports, oldest first, for an operator to review: those of
        accounts (`source` account) and of guardians without one (`source`
        guardian, with their contact_email and details)."""
        with self._tx(write=False) as conn:
            reports = [
                {"report_id": rid, "reported_user_id": uid, "at": at, "source": "account"}
                for rid, uid, at in conn.execute(
                    "SELECT id, reported_user_id, at FROM account_reports"
                    " WHERE reason = 'underage' ORDER BY at, id")
            ] + controls.guardian_reports(conn, self._key)
        return sorted(reports, key=lambda r: (r["at"], r["report_id"]))

    def confirm_underage(self, report_id: str) -> None:
        """An operator confirmed an under-age report (an account's or a guardian's):
        the reported account and all its data go at once; the audit log keeps an
        entry without personal data. Under a legal hold: Conflict, nothing goes."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT reported_user_id, reason FROM account_reports WHERE id = ?",
                (report_id,),
            ).fetchone() or conn.execute(
                "SELECT reported_user_id, 'underage' FROM guardian_reports WHERE id = ?",
                (report_id,),
            ).fetchone()
            if row is None:
                raise NotFound("no such report")
            if row[1] != "underage":
                raise Invalid("report", f"report is for {row[1]!r}, not underage")
            if controls.held(conn, row[0]):
                raise Conflict("the account is under a legal hold: deletion waits")
            self._delete_user(conn, row[0], reason="underage_confirmed", request_id=None)
            # confirmed by an operator: out of the moderators' queue too
            conn.execute("UPDATE moderation_reports SET status = 'decided' WHERE id = ?",
                         (report_id,))
        self._scrub_wal()
