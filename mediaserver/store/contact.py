"""A profile's name and e-mail address (sealed like the other personal fields; the
address unique through its own blind index), e-mail verification and password reset
by mailed codes, the owner's view of its sessions, and the policy versions."""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import re
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any

from mediaserver.store import crypto
from mediaserver.store.core import StoreCore, hash_token
from mediaserver.store.errors import Conflict, Invalid, NotFound, Throttled
from mediaserver.store.limits import DAY, validate_password
from mediaserver.store.notices import add_notice, open_row
from mediaserver.store.sealed_fields import open_field, seal_field
from mediaserver.store.throttle import THROTTLE_FORGET

NAME_MAX = 80
EMAIL_MAX = 254
CODE_TTL = DAY  # a mailed code lasts 24 h
CODE_ATTEMPTS = 5  # wrong tries before the code is void (a new one must be asked)
RESET_FAILURES = 10  # wrong reset codes per address a day, then 429 (known or not)
DEVICE_MAX = 64
POLICY_VERSION_MAX = 32
POLICY_URL_MAX = 500
# a practical address: no spaces, quotes, brackets or control characters (they would
# reach a mail header); a domain of dot-separated labels
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
_VERSION = re.compile(r"[A-Za-z0-9._-]{1,32}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def validate_name(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid("name", "must be a string")
    value = value.strip()
    if not 1 <= len(value) <= NAME_MAX:
        raise Invalid("name", f"1-{NAME_MAX} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise Invalid("name", "must not contain control characters")
    return value


def validate_email(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid("email", "must be a string")
    value = value.strip()
    if len(value) > EMAIL_MAX or not _EMAIL.fullmatch(value):
        raise Invalid("email", f"an e-mail address (at most {EMAIL_MAX} characters)")
    return value


def email_index(key: bytes, email: str) -> str:
    """The blind index of an address (its own derived key; case-folded)."""
    index_key = hmac.new(key, b"blind-index\x00users.email", hashlib.sha256).digest()
    return hmac.new(index_key, email.strip().casefold().encode("utf-8"),
                    hashlib.sha256).hexdigest()


def _code_hash(key: bytes, user_id: str, purpose: str, code: str) -> str:
    # keyed: a million codes are quick to try against a plain hash
    return hmac.new(key, f"email-code\x00{purpose}\x00{user_id}\x00{code}".encode(),
                    hashlib.sha256).hexdigest()


def new_code(conn: sqlite3.Connection, key: bytes, now: float, user_id: str,
             purpose: str) -> str:
    """A fresh 6-digit code for `purpose` (verify, reset), replacing an older one."""
    code = f"{secrets.randbelow(10**6):06d}"
    conn.execute(
        "INSERT INTO email_codes (user_id, purpose, code_hash, expires_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(user_id, purpose) DO UPDATE SET code_hash = excluded.code_hash,"
        " expires_at = excluded.expires_at, attempts = 0",
        (user_id, purpose, _code_hash(key, user_id, purpose, code), now + CODE_TTL))
    return code


def check_code(conn: sqlite3.Connection, key: bytes, now: float, user_id: str,
               purpose: str, code: object) -> bool:
    """Whether `code` is the user's live code (used up if so); a wrong one counts,
    and CODE_ATTEMPTS wrong ones void the code."""
    row = conn.execute(
        "SELECT code_hash, expires_at, attempts FROM email_codes WHERE user_id = ?"
        " AND purpose = ?", (user_id, purpose)).fetchone()
    if row is None:
        return False
    if row[1] <= now or row[2] >= CODE_ATTEMPTS:
        conn.execute("DELETE FROM email_codes WHERE user_id = ? AND purpose = ?",
                     (user_id, purpose))
        return False
    ok = isinstance(code, str) and hmac.compare_digest(
        row[0], _code_hash(key, user_id, purpose, code))
    if ok or row[2] + 1 >= CODE_ATTEMPTS:
        conn.execute("DELETE FROM email_codes WHERE user_id = ? AND purpose = ?",
                     (user_id, purpose))
    else:
        conn.execute("UPDATE email_codes SET attempts = attempts + 1 WHERE user_id = ?"
                     " AND purpose = ?", (user_id, purpose))
    return ok


def write_contact(conn: sqlite3.Connection, key: bytes, now: float, user_id: str,
                  fields: dict[str, Any]) -> None:
    """Set `name` and/or `email` (validated already; None clears) in the caller's
    transaction. A new address is unverified and gets a code by mail.

    Raises:
        Conflict: the address belongs to another account (field email)."""
    conn.execute("UPDATE users SET updated_at = ? WHERE id = ?", (now, user_id))
    if "name" in fields:
        name = fields["name"]
        conn.execute("UPDATE users SET name_sealed = ? WHERE id = ?",
                     (None if name is None else seal_field(key, user_id, "name", name), user_id))
    if "email" not in fields:
        return
    email = fields["email"]
    row = conn.execute("SELECT email_index, email_sealed, email_verified FROM users"
                       " WHERE id = ?", (user_id,)).fetchone()
    index = None if email is None else email_index(key, email)
    if row is not None and row[0] == index:
        if email is None:
            return  # none before, none now
        # the same address (maybe in another case): keep its verification
        conn.execute("UPDATE users SET email_sealed = ? WHERE id = ?",
                     (seal_field(key, user_id, "email", email), user_id))
        return
    try:
        conn.execute(
            "UPDATE users SET email_sealed = ?, email_index = ?, email_verified = 0 WHERE id = ?",
            (None if email is None else seal_field(key, user_id, "email", email), index,
             user_id))
    except sqlite3.IntegrityError:
        raise Conflict("email is taken") from None
    conn.execute("DELETE FROM email_codes WHERE user_id = ?", (user_id,))
    if row is not None and row[1] is not None and row[2]:
        # the verified address hears of it: a stolen session cannot move the account
        # (and its password resets) to another address unnoticed
        add_notice(conn, key, now, user_id, "email_changed", "Your e-mail address was changed",
                   "The e-mail address of your account was changed. If it was not you, "
                   "sign in, set your address back and change your password.",
                   to=open_field(key, user_id, "email", row[1]))
    if email is not None:
        mail_verification_code(conn, key, now, user_id, email)


def mail_verification_code(conn: sqlite3.Connection, key: bytes, now: float, user_id: str,
                           email: str) -> None:
    """A new verification code (the old one stops working), mailed to `email`; the
    inbox says one was sent, never the code."""
    code = new_code(conn, key, now, user_id, "verify")
    add_notice(
        conn, key, now, user_id, "verify_email", "Verify your e-mail address",
        "We sent a 6-digit code to your e-mail address; enter it to verify the "
        "address (it expires in 24 hours).",
        mail_body=f"Your verification code is {code}\n\nIt expires in 24 hours. "
                  "If you did not ask for it, ignore this mail.\n",
        to=email)


def contact_export(conn: sqlite3.Connection, key: bytes, user_id: str) -> dict[str, Any]:
    """The contact fields and the inbox, decrypted, for the access export."""
    row = conn.execute(
        "SELECT name_sealed, email_sealed, email_verified, policy_version FROM users"
        " WHERE id = ?", (user_id,)).fetchone()
    notices = [
        {"kind": kind, "at": at, "read_at": read_at,
         **open_row(key, "notices", notice_id, sealed)}
        for notice_id, kind, at, read_at, sealed in conn.execute(
            "SELECT id, kind, at, read_at, sealed FROM notices WHERE user_id = ?"
            " ORDER BY at, rowid", (user_id,))
    ]
    return {
        "name": None if row[0] is None else open_field(key, user_id, "name", row[0]),
        "email": None if row[1] is None else open_field(key, user_id, "email", row[1]),
        "email_verified": bool(row[2]),
        "policy_version_accepted": row[3],
        "notices": notices,
    }


@dataclass(frozen=True)
class Contact:
    """What the owner's profile shows besides the Profile."""

    name: str | None
    email: str | None
    email_verified: bool
    policy_accepted: str | None
    policy_current: str | None


@dataclass(frozen=True)
class Session:
    id: str
    device: str | None
    created_at: float
    last_seen_at: float | None
    expires_at: float | None
    current: bool


@dataclass(frozen=True)
class Policy:
    version: str
    effective_date: str
    url: str


def current_policy(conn: sqlite3.Connection) -> Policy | None:
    row = conn.execute(
        "SELECT version, effective_date, url FROM policy_versions"
        " ORDER BY published_at DESC, rowid DESC LIMIT 1").fetchone()
    return None if row is None else Policy(*row)


def accepted_version(conn: sqlite3.Connection, version: object) -> str | None:
    """The policy version a sign-up accepts: the one named (it must exist), else the
    current one (None when none was ever published)."""
    if version is None:
        policy = current_policy(conn)
        return None if policy is None else policy.version
    if not isinstance(version, str) or conn.execute(
            "SELECT 1 FROM policy_versions WHERE version = ?", (version,)).fetchone() is None:
        raise Invalid("policy_version", "no such policy version")
    return version


def _device_aad(session_id: str) -> bytes:
    return b"tokens\x00device\x00" + session_id.encode()


class ContactStore(StoreCore):
    """Contact fields, verification, password reset, sessions, policy (a part of Store)."""

    def contact(self, user_id: str) -> Contact:
        with self._tx(write=False) as conn:
            self._get_profile(conn, user_id)
            row = conn.execute(
                "SELECT name_sealed, email_sealed, email_verified, policy_version FROM users"
                " WHERE id = ?", (user_id,)).fetchone()
            policy = current_policy(conn)
        return Contact(
            name=None if row[0] is None else open_field(self._key, user_id, "name", row[0]),
            email=None if row[1] is None else open_field(self._key, user_id, "email", row[1]),
            email_verified=bool(row[2]),
            policy_accepted=row[3],
            policy_current=None if policy is None else policy.version,
        )

    def verify_email(self, user_id: str, code: str) -> None:
        """Mark the address verified with the mailed code.

        Raises:
            Invalid: wrong, expired or used-up code (field code)."""
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            ok = check_code(conn, self._key, self._now(), user_id, "verify", code)
            if ok:
                conn.execute("UPDATE users SET email_verified = 1 WHERE id = ?", (user_id,))
        if not ok:  # raised after the commit: the counted attempt stays counted
            raise Invalid("code", "wrong or expired code")

    def resend_verification(self, user_id: str) -> None:
        """Mail a new code to the account's address.

        Raises:
            Conflict: no address, or it is verified already."""
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            row = conn.execute("SELECT email_sealed, email_verified FROM users WHERE id = ?",
                               (user_id,)).fetchone()
            if row[0] is None or row[1]:
                raise Conflict("no unverified e-mail address to verify")
            mail_verification_code(conn, self._key, self._now(), user_id,
                                   open_field(self._key, user_id, "email", row[0]))

    def request_password_reset(self, email: object) -> None:
        """Mail a reset code when `email` is an account's verified address; otherwise
        nothing, the same way (the caller cannot tell which)."""
        if not isinstance(email, str) or len(email) > EMAIL_MAX:
            return
        with self._tx() as conn:
            now = self._now()
            row = conn.execute(
                "SELECT id, email_sealed FROM users WHERE email_index = ? AND email_verified = 1",
                (email_index(self._key, email),)).fetchone()
            if row is None:
                return
            user_id = row[0]
            code = new_code(conn, self._key, now, user_id, "reset")
            add_notice(
                conn, self._key, now, user_id, "password_reset", "Password reset",
                "A password reset was asked for your account; a code went to your "
                "e-mail address. If it was not you, your password still works.",
                mail_body=f"Your password reset code is {code}\n\nIt expires in 24 hours. "
                          "If you did not ask for it, ignore this mail: your password "
                          "still works.\n")

    def reset_password(self, email: object, code: object, password: object) -> None:
        """Set the password with a mailed reset code; every session ends and the owner
        gets a notice. An unknown address and a wrong code answer alike.

        Raises:
            Invalid: field password (refused), or code (wrong, expired, unknown address)."""
        new = validate_password(password)
        new_hash = self.hasher.hash(new)  # on every path: the answer takes as long
        wrong = Invalid("code", "wrong or expired code")
        if not isinstance(email, str) or len(email) > EMAIL_MAX:
            raise wrong
        throttle = self._throttle_key("reset", email.strip().casefold())
        with self._tx() as conn:
            now = self._now()
            failures = conn.execute(
                "SELECT failures, last_failure_at FROM login_throttle WHERE key = ?",
                (throttle,)).fetchone()
            if failures is not None and now - failures[1] < THROTTLE_FORGET and (
                    failures[0] >= RESET_FAILURES):
                raise Throttled(failures[1] + THROTTLE_FORGET - now)
            row = conn.execute(
                "SELECT id FROM users WHERE email_index = ? AND email_verified = 1",
                (email_index(self._key, email),)).fetchone()
            ok = row is not None and check_code(conn, self._key, now, row[0], "reset", code)
            if not ok:  # counted per address, known or not: both answers write the same
                conn.execute(
                    "INSERT INTO login_throttle (key, failures, last_failure_at) VALUES (?, 1, ?)"
                    " ON CONFLICT(key) DO UPDATE SET failures = CASE WHEN ? - last_failure_at"
                    f" < {THROTTLE_FORGET} THEN failures + 1 ELSE 1 END,"
                    " last_failure_at = excluded.last_failure_at", (throttle, now, now))
            else:
                conn.execute("DELETE FROM login_throttle WHERE key = ?", (throttle,))
                user_id = row[0]
                profile = self._get_profile(conn, user_id)
                conn.execute("UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?",
                             (new_hash, now, user_id))
                conn.execute("DELETE FROM tokens WHERE user_id = ?", (user_id,))
                conn.execute("DELETE FROM login_throttle WHERE key = ?",
                             (self._throttle_key("user", profile.username),))
                add_notice(conn, self._key, now, user_id, "password_changed",
                           "Your password was reset",
                           "Your password was reset with a code sent to your e-mail "
                           "address; every session was signed out.")
        if not ok:
            raise wrong

    # -- sessions ----------------------------------------------------------------------

    def signed_in(self, token: str, device: str) -> None:
        """Label the session `token` just opened (a device label, never the address)
        and notice the owner of the new sign-in."""
        device = device[:DEVICE_MAX]
        with self._tx() as conn:
            row = conn.execute("SELECT user_id, session_id FROM tokens WHERE token_hash = ?",
                               (hash_token(token),)).fetchone()
            if row is None:
                raise NotFound("unknown token")
            user_id, session_id = row[0], row[1] or secrets.token_hex(12)
            now = self._now()
            nonce, sealed = crypto.seal(self._key, device.encode(), _device_aad(session_id))
            conn.execute(
                "UPDATE tokens SET session_id = ?, device_sealed = ?, last_used_at = ?"
                " WHERE token_hash = ?", (session_id, nonce + sealed, now, hash_token(token)))
            when = _dt.datetime.fromtimestamp(now, tz=_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
            add_notice(conn, self._key, now, user_id, "new_sign_in", "New sign-in",
                       f"New sign-in to your account: {device}, {when}. If it was not "
                       "you, end that session and change your password.")

    def list_sessions(self, user_id: str, token: str) -> list[Session]:
        """The account's live sessions (and its creation token), oldest first;
        `current` marks the one `token` is."""
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            # tokens made since the last listing get their id now
            conn.execute("UPDATE tokens SET session_id = lower(hex(randomblob(12)))"
                         " WHERE user_id = ? AND session_id IS NULL", (user_id,))
            rows = conn.execute(
                "SELECT session_id, device_sealed, created_at, last_used_at, expires_at,"
                " token_hash = ? FROM tokens WHERE user_id = ? AND (expires_at IS NULL"
                " OR expires_at > ?) ORDER BY created_at, rowid",
                (hash_token(token), user_id, self._now())).fetchall()
        out = []
        for session_id, device, created, used, expires, current in rows:
            label = None
            if device is not None:
                blob = bytes(device)
                label = crypto.open_sealed(self._key, blob[:crypto.NONCE_BYTES],
                                           blob[crypto.NONCE_BYTES:],
                                           _device_aad(session_id)).decode()
            out.append(Session(session_id, label, created, used, expires, bool(current)))
        return out

    def revoke_session(self, user_id: str, session_id: str) -> None:
        """End one of the account's sessions (NotFound for anyone else's). The creation
        token of an account without a password is its only key: kept (Conflict)."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT t.kind, u.password_hash IS NOT NULL FROM tokens t JOIN users u"
                " ON u.id = t.user_id WHERE t.user_id = ? AND t.session_id = ?",
                (user_id, session_id)).fetchone()
            if row is None:
                raise NotFound("no such session")
            if row[0] == "profile" and not row[1]:
                raise Conflict("this token is the account's only way in: set a password first")
            conn.execute("DELETE FROM tokens WHERE user_id = ? AND session_id = ?",
                         (user_id, session_id))

    # -- policy -----------------------------------------------------------------------

    def current_policy(self) -> Policy | None:
        with self._tx(write=False) as conn:
            return current_policy(conn)

    def accept_policy(self, user_id: str, version: str) -> None:
        """Record that the owner accepts `version`, which must be the current one."""
        with self._tx() as conn:
            self._get_profile(conn, user_id)
            policy = current_policy(conn)
            if policy is None or version != policy.version:
                raise Invalid("version", "not the current policy version")
            conn.execute("UPDATE users SET policy_version = ? WHERE id = ?",
                         (version, user_id))

    def publish_policy(self, version: str, effective_date: str, url: str,
                       text: str = "") -> int:
        """Record a new policy version and notice every account (inbox and mail);
        returns how many were noticed.

        Raises:
            Invalid: a bad version, date or URL. Conflict: the version exists."""
        if not isinstance(version, str) or not _VERSION.fullmatch(version):
            raise Invalid("version", "1-32 characters: letters, digits, . _ -")
        try:
            if not _DATE.fullmatch(effective_date):
                raise ValueError
            _dt.date.fromisoformat(effective_date)
        except (TypeError, ValueError):
            raise Invalid("effective_date", "expected YYYY-MM-DD") from None
        if not isinstance(url, str) or len(url) > POLICY_URL_MAX or any(c.isspace() for c in url):
            raise Invalid("url", f"a URL of at most {POLICY_URL_MAX} characters")
        with self._tx() as conn:
            now = self._now()
            try:
                conn.execute(
                    "INSERT INTO policy_versions (version, effective_date, url, published_at,"
                    " text) VALUES (?, ?, ?, ?, ?)", (version, effective_date, url, now, text))
            except sqlite3.IntegrityError:
                raise Conflict(f"policy version {version} exists") from None
            users = [r[0] for r in conn.execute("SELECT id FROM users ORDER BY created_at")]
            where = f" ({url})" if url else ""
            for user_id in users:
                add_notice(conn, self._key, now, user_id, "policy", "Our policy has changed",
                           f"Version {version} of the policy takes effect on "
                           f"{effective_date}{where}. You will be asked to accept it at "
                           "your next sign-in.")
        return len(users)

