"""Signing in: passwords (Argon2id), sessions, sign-in throttling (per account,
address and known device: store/throttle.py), re-authentication, and TOTP two-factor
(RFC 6238) with recovery codes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sqlite3

import argon2
import pyotp

from mediaserver.store import crypto
from mediaserver.store.core import Profile, StoreCore, hash_token
from mediaserver.store.errors import Conflict, Invalid, NotFound, Throttled, Unauthorized
from mediaserver.store.limits import validate_password
from mediaserver.store.sealed_fields import username_index
from mediaserver.store.throttle import (
    THROTTLE_BASE,
    THROTTLE_CAP,
    THROTTLE_FORGET,
    THROTTLE_FREE_ACCOUNT,
    THROTTLE_FREE_ADDRESS,
    device_id,
    new_device_token,
)

REAUTH_WINDOW = 300.0  # a session this young counts as a fresh sign-in (require_recent_auth)
TOTP_STEP = 30  # RFC 6238 default, what authenticator apps use
TOTP_ISSUER = "mediaserver"
RECOVERY_CODES = 10


def _normal_recovery_code(code: str) -> str:
    return code.replace("-", "").replace(" ", "").upper()


class AuthStore(StoreCore):
    """Passwords, sessions, throttling and two-factor (a part of Store)."""

    def _throttle_wait(self, conn: sqlite3.Connection, key: str, free: int, now: float) -> float:
        """Seconds until `key` may try again (0: now)."""
        row = conn.execute(
            "SELECT failures, last_failure_at FROM login_throttle WHERE key = ?", (key,)
        ).fetchone()
        if row is None or now - row[1] >= THROTTLE_FORGET:
            return 0.0
        failures, last = int(row[0]), float(row[1])
        if failures < free:
            return 0.0
        delay = min(THROTTLE_CAP, THROTTLE_BASE * 2.0 ** (failures - free))
        return max(0.0, last + delay - now)

    def _throttle_add(self, conn: sqlite3.Connection, key: str, delta: int, now: float) -> None:
        row = conn.execute(
            "SELECT failures, last_failure_at FROM login_throttle WHERE key = ?", (key,)
        ).fetchone()
        failures = 0 if row is None or now - row[1] >= THROTTLE_FORGET else int(row[0])
        failures = max(0, failures + delta)
        if failures == 0:
            conn.execute("DELETE FROM login_throttle WHERE key = ?", (key,))
        elif delta > 0:
            conn.execute(
                "INSERT INTO login_throttle (key, failures, last_failure_at) VALUES (?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET failures = excluded.failures,"
                " last_failure_at = excluded.last_failure_at",
                (key, failures, now),
            )
        else:  # giving back a reservation: the count drops, the clock does not restart
            conn.execute("UPDATE login_throttle SET failures = ? WHERE key = ?", (failures, key))

    def _reserve_attempt(
        self, conn: sqlite3.Connection, keys: list[tuple[str, int]], unchecked: tuple[str, ...] = ()
    ) -> None:
        """Refuse while any key is locked; else count this attempt as a failure up
        front, so parallel guesses cannot all slip in before the first one fails.
        Success gives the reservation back. `unchecked` keys are counted, not checked."""
        now = self._now()
        wait = max(self._throttle_wait(conn, key, free, now) for key, free in keys)
        if wait > 0:
            raise Throttled(wait)
        for key in [k for k, _ in keys] + list(unchecked):
            self._throttle_add(conn, key, +1, now)

    def _dummy_hash(self) -> str:
        # An unknown user is checked against this: the same Argon2 work as a wrong
        # password, so the answer takes as long.
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy

    def _verify_password(self, stored: str | None, password: str) -> bool:
        self.password_verifications += 1
        try:
            return bool(self.hasher.verify(stored or self._dummy_hash(), password)) and (
                stored is not None
            )
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    def sign_in(
        self, username: str, password: str, otp: str | None = None, address: str = "",
        device: str | None = None,
    ) -> tuple[str, float, Profile]:
        """A new session token for username + password (+ a TOTP or recovery code when
        two-factor is on). Returns (token, expires_at, profile).

        The account's limit binds unknown clients only (mediaserver.store.throttle):
        a `device` token from an earlier sign-in of this account, or a valid TOTP
        code, gets past it; the address limit binds everyone.

        Raises:
            Throttled: too many recent failures for this account or address.
            Unauthorized: invalid_credentials (unknown user and wrong password alike),
                otp_required, invalid_otp.
        """
        if not isinstance(username, str) or not isinstance(password, str):
            raise Unauthorized("invalid_credentials", "wrong username or password")
        account = self._throttle_key("user", username)
        keys = [(self._throttle_key("addr", address), THROTTLE_FREE_ADDRESS)]
        unchecked: tuple[str, ...] = ()
        with self._tx() as conn:
            row = conn.execute(
                "SELECT id, password_hash, totp_enabled FROM users WHERE username_index = ?",
                (username_index(self._key, username),),
            ).fetchone()
            known = device_id(self._key, row[0], device) if row is not None else None
            if known is not None:  # a known device: its own bucket, not the account's
                keys.append((self._throttle_key("device", known), THROTTLE_FREE_ACCOUNT))
            elif row is not None and row[2] and self._totp_matches(conn, row[0], otp):
                unchecked = (account,)  # a valid code passes the lock, still counted
            else:
                keys.append((account, THROTTLE_FREE_ACCOUNT))
            self._reserve_attempt(conn, keys, unchecked)
        stored: str | None = row[1] if row is not None else None
        # exactly one Argon2 verification on every path, outside the store's lock
        if not self._verify_password(stored, password) or row is None:
            raise Unauthorized("invalid_credentials", "wrong username or password")
        user_id: str = row[0]
        new_hash = self.hasher.hash(password) if self.hasher.check_needs_rehash(stored or "") else None
        token = secrets.token_urlsafe(32)
        failure: Unauthorized | None = None
        with self._tx() as conn:
            now = self._now()
            totp = conn.execute(
                "SELECT totp_enabled FROM users WHERE id = ?", (user_id,)
            ).fetchone()
            if totp is None:  # deleted meanwhile
                failure = Unauthorized("invalid_credentials", "wrong username or password")
            elif totp[0] and otp is None:
                # the password was right: not a failure, but no session without the code
                for key in [k for k, _ in keys] + list(unchecked):
                    self._throttle_add(conn, key, -1, now)
                failure = Unauthorized("otp_required", "two-factor is on: send otp")
            elif totp[0] and not self._second_factor(conn, user_id, otp or ""):
                failure = Unauthorized("invalid_otp", "wrong, expired or already used code")
            else:
                # the owner is in: the account's and this device's counts start over
                for key in [account] + [k for k, _ in keys[1:]]:
                    conn.execute("DELETE FROM login_throttle WHERE key = ?", (key,))
                self._throttle_add(conn, keys[0][0], -1, now)  # the address's reservation
                if new_hash is not None and stored is not None:
                    # parameters changed since this hash was made: upgrade it now that
                    # the password is at hand (only if it was not changed meanwhile)
                    conn.execute(
                        "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
                        (new_hash, user_id, stored),
                    )
                expires_at = now + self.session_ttl
                conn.execute(
                    "INSERT INTO tokens (token_hash, user_id, created_at, kind, expires_at)"
                    " VALUES (?, ?, ?, 'session', ?)",
                    (hash_token(token), user_id, now, expires_at),
                )
                conn.execute(
                    "UPDATE users SET last_seen_at = ?, flagged_at = NULL WHERE id = ?",
                    (now, user_id),
                )
                profile = self._get_profile(conn, user_id)
        if failure is not None:
            raise failure
        return token, expires_at, profile

    def sign_out(self, token: str) -> None:
        """Delete this token. The creation token of an account without a password is
        its only way in, so that one is kept (Conflict)."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT t.kind, u.password_hash IS NOT NULL FROM tokens t"
                " JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?",
                (hash_token(token),),
            ).fetchone()
            if row is None:
                raise NotFound("unknown token")
            if row[0] == "profile" and not row[1]:
                raise Conflict("this token is the account's only way in: set a password first")
            conn.execute("DELETE FROM tokens WHERE token_hash = ?", (hash_token(token),))

    def set_password(
        self, user_id: str, password: str, current_password: str | None = None,
        keep_token: str | None = None,
    ) -> None:
        """Set or change the password. Changing one needs the current password. Every
        other token then ends, the creation token too; `keep_token` stays, as a session
        (expiring after the session TTL) if it was the creation token."""
        new = validate_password(password)
        with self._tx(write=False) as conn:
            self._get_profile(conn, user_id)
            stored = conn.execute(
                "SELECT password_hash FROM users WHERE id = ?", (user_id,)
            ).fetchone()[0]
        if stored is not None:
            if current_password is None:
                raise Invalid("current_password", "required to change the password")
            if not isinstance(current_password, str) or not self._verify_password(
                stored, current_password
            ):
                raise Invalid("current_password", "wrong password")
        new_hash = self.hasher.hash(new)
        with self._tx() as conn:
            changed = conn.execute(
                "UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?"
                " AND password_hash IS ?",
                (new_hash, self._now(), user_id, stored),
            ).rowcount
            if not changed:
                raise Conflict("the password was changed meanwhile; try again")
            kept = hash_token(keep_token) if keep_token else None
            conn.execute("DELETE FROM tokens WHERE user_id = ? AND token_hash IS NOT ?",
                         (user_id, kept))
            conn.execute(
                "UPDATE tokens SET kind = 'session', expires_at = ? WHERE token_hash IS ?"
                " AND user_id = ? AND kind = 'profile'",
                (self._now() + self.session_ttl, kept, user_id),
            )

    def require_recent_auth(
        self, user_id: str, token: str, current_password: object = None
    ) -> None:
        """For a change that could lock the owner out (two-factor, the username, the
        date of birth): the account's password, or a session younger than
        REAUTH_WINDOW. An account without a password passes: its creation token is its
        only key. Wrong passwords count towards the account's sign-in throttle.

        Raises:
            Invalid: current_password missing (and the session not fresh) or wrong.
            Throttled: too many wrong passwords lately.
        """
        with self._tx(write=False) as conn:
            profile = self._get_profile(conn, user_id)
            stored = conn.execute(
                "SELECT password_hash FROM users WHERE id = ?", (user_id,)).fetchone()[0]
            session = conn.execute(
                "SELECT created_at FROM tokens WHERE token_hash = ? AND user_id = ?"
                " AND kind = 'session'", (hash_token(token), user_id)).fetchone()
        if stored is None:
            return
        if current_password is None:
            if session is not None and self._now() - session[0] < REAUTH_WINDOW:
                return
            raise Invalid("current_password", "required: your password (or sign in again: "
                          f"a session younger than {int(REAUTH_WINDOW // 60)} minutes)")
        key = self._throttle_key("user", profile.username)
        with self._tx() as conn:
            self._reserve_attempt(conn, [(key, THROTTLE_FREE_ACCOUNT)])
        ok = isinstance(current_password, str) and self._verify_password(
            stored, current_password)
        if not ok:
            raise Invalid("current_password", "wrong password")
        with self._tx() as conn:
            self._throttle_add(conn, key, -1, self._now())

    # -- two-factor (TOTP, RFC 6238) ------------------------------------------------------

    @staticmethod
    def _totp_aad(user_id: str) -> bytes:
        return b"totp\x00" + user_id.encode()

    def _recovery_hash(self, user_id: str, code: str) -> str:
        # 80 random bits per code: a fast hash is enough (like the tokens)
        return hashlib.sha256(
            f"recovery\x00{user_id}\x00{_normal_recovery_code(code)}".encode()).hexdigest()

    def _match_totp(self, secret: str, code: str, last_step: int) -> int | None:
        """The time step `code` is valid for (now, or one step either side for clock
        drift), if it is later than the last code used (no replay)."""
        if len(code) != 6 or not (code.isascii() and code.isdigit()):
            return None
        totp = pyotp.TOTP(secret, interval=TOTP_STEP)
        now_step = int(self._now()) // TOTP_STEP
        for step in (now_step - 1, now_step, now_step + 1):
            if step > last_step and hmac.compare_digest(totp.generate_otp(step), code):
                return step
        return None

    def _totp_matches(self, conn: sqlite3.Connection, user_id: str, code: object) -> bool:
        """Whether `code` is a valid TOTP code now (not used up: sign-in does that)."""
        row = conn.execute(
            "SELECT totp_nonce, totp_ciphertext, totp_last_step FROM users WHERE id = ?",
            (user_id,),
        ).fetchone()
        if row is None or row[0] is None or not isinstance(code, str):
            return False
        secret = crypto.open_sealed(self._key, row[0], row[1], self._totp_aad(user_id)).decode()
        return self._match_totp(secret, code, int(row[2])) is not None

    def device_token(self, user_id: str) -> str:
        """A known-device token for a client that just signed in to `user_id`."""
        return new_device_token(self._key, user_id)

    def _second_factor(self, conn: sqlite3.Connection, user_id: str, code: str) -> bool:
        """Check (and use up) a TOTP code or a recovery code for an enabled account."""
        row = conn.execute(
            "SELECT totp_nonce, totp_ciphertext, totp_last_step FROM users WHERE id = ?",
            (user_id,),
        ).fetchone()
        if row is None or row[0] is None or not isinstance(code, str) or len(code) > 64:
            return False
        secret = crypto.open_sealed(self._key, row[0], row[1], self._totp_aad(user_id)).decode()
        step = self._match_totp(secret, code, int(row[2]))
        if step is not None:
            conn.execute("UPDATE users SET totp_last_step = ? WHERE id = ?", (step, user_id))
            return True
        used = conn.execute(
            "UPDATE recovery_codes SET used_at = ? WHERE user_id = ? AND code_hash = ?"
            " AND used_at IS NULL",
            (self._now(), user_id, self._recovery_hash(user_id, code)),
        ).rowcount
        return bool(used)

    def totp_enrol(self, user_id: str) -> tuple[str, str]:
        """A new (pending) TOTP secret: (secret, otpauth:// URI). Two-factor turns on
        only with totp_confirm."""
        secret = pyotp.random_base32()  # 160 bits, RFC 4226's recommended length
        with self._tx() as conn:
            profile = self._get_profile(conn, user_id)
            if profile.two_factor:
                raise Conflict("two-factor is already on; turn it off first")
            nonce, ciphertext = crypto.seal(self._key, secret.encode(), self._totp_aad(user_id))
            conn.execute(
                "UPDATE users SET totp_nonce = ?, totp_ciphertext = ?, totp_last_step = 0"
                " WHERE id = ?",
                (nonce, ciphertext, user_id),
            )
        uri = pyotp.TOTP(secret, interval=TOTP_STEP).provisioning_uri(
            name=profile.username, issuer_name=TOTP_ISSUER)
        return secret, uri

    def totp_confirm(self, user_id: str, code: str) -> list[str]:
        """Turn two-factor on with the first valid code; returns the ten recovery codes
        (shown once, stored hashed)."""
        codes = []
        for _ in range(RECOVERY_CODES):
            raw = base64.b32encode(secrets.token_bytes(10)).decode()
            codes.append("-".join(raw[i:i + 4] for i in range(0, 16, 4)))
        with self._tx() as conn:
            profile = self._get_profile(conn, user_id)
            row = conn.execute(
                "SELECT totp_nonce, totp_ciphertext, totp_last_step FROM users WHERE id = ?",
                (user_id,),
            ).fetchone()
            if profile.two_factor:
                raise Conflict("two-factor is already on")
            if row[0] is None:
                raise Conflict("enrol first (POST .../totp)")
            secret = crypto.open_sealed(self._key, row[0], row[1], self._totp_aad(user_id))
            step = self._match_totp(secret.decode(), code, int(row[2]))
            if step is None:
                raise Invalid("code", "wrong or expired code")
            conn.execute(
                "UPDATE users SET totp_enabled = 1, totp_last_step = ? WHERE id = ?",
                (step, user_id),
            )
            conn.execute("DELETE FROM recovery_codes WHERE user_id = ?", (user_id,))
            conn.executemany(
                "INSERT INTO recovery_codes (user_id, code_hash) VALUES (?, ?)",
                [(user_id, self._recovery_hash(user_id, c)) for c in codes],
            )
        return codes

    def totp_disable(self, user_id: str, code: str) -> None:
        """Turn two-factor off: needs a valid TOTP or recovery code."""
        ok = False
        with self._tx() as conn:
            profile = self._get_profile(conn, user_id)
            if not profile.two_factor:
                raise Conflict("two-factor is not on")
            key = self._throttle_key("user", profile.username)
            # wrong codes count towards the account's sign-in throttle
            self._reserve_attempt(conn, [(key, THROTTLE_FREE_ACCOUNT)])
            ok = self._second_factor(conn, user_id, code)
            if ok:
                self._throttle_add(conn, key, -1, self._now())
                conn.execute(
                    "UPDATE users SET totp_enabled = 0, totp_nonce = NULL,"
                    " totp_ciphertext = NULL, totp_last_step = 0 WHERE id = ?",
                    (user_id,),
                )
                conn.execute("DELETE FROM recovery_codes WHERE user_id = ?", (user_id,))
        if not ok:
            raise Invalid("code", "wrong, expired or already used code")
