"""Signing in and two-factor at the store level: Store.sign_in, the throttle, known
devices, and TOTP (enrol, confirm, sign in with a code or a recovery code, disable).
Real SQLite files, a fake clock, real Argon2 (cheap parameters) and real TOTP codes."""

from collections.abc import Iterator

import argon2
import pyotp
import pytest

from mediaserver.store import Conflict, Invalid, NotFound, Store, Throttled, Unauthorized
from mediaserver.store.auth import TOTP_STEP
from mediaserver.store.throttle import THROTTLE_FREE_ACCOUNT
from tests.support.store import KEY, Clock, make

PASSWORD = "correct horse battery"


@pytest.fixture
def store(path: str, clock: Clock) -> Iterator[Store]:
    # real Argon2id, parameters small enough for a test
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    s = Store(path, KEY, clock=clock, hasher=hasher)
    yield s
    s.close()


def code_at(secret: str, clock: Clock, steps: int = 0) -> str:
    """The TOTP code an authenticator app shows at the store's time (+ steps)."""
    return pyotp.TOTP(secret, interval=TOTP_STEP).at(clock.t + steps * TOTP_STEP)


# -- sign-in ----------------------------------------------------------------------------

def test_sign_in_gives_a_session_that_authenticates(store, clock):
    p, _ = make(store, password=PASSWORD)
    token, expires_at, profile = store.sign_in("alice", PASSWORD, address="192.0.2.1")
    assert profile.id == p.id and profile.has_password
    assert expires_at == clock.t + store.session_ttl
    assert store.authenticate(token).id == p.id
    store.sign_out(token)
    with pytest.raises(NotFound):
        store.authenticate(token)


def test_sign_in_username_is_case_insensitive(store):
    p, _ = make(store, "Alice_2", password=PASSWORD)
    assert store.sign_in("alice_2", PASSWORD)[2].id == p.id


def test_wrong_password_and_unknown_user_answer_alike(store):
    make(store, password=PASSWORD)
    with pytest.raises(Unauthorized) as wrong:
        store.sign_in("alice", "not the password")
    with pytest.raises(Unauthorized) as unknown:
        store.sign_in("nobody_here", PASSWORD)
    assert wrong.value.code == unknown.value.code == "invalid_credentials"
    assert str(wrong.value) == str(unknown.value)
    # both paths ran exactly one Argon2 verification (same work, same time)
    assert store.password_verifications == 2


def test_an_account_without_a_password_cannot_sign_in(store):
    make(store)
    with pytest.raises(Unauthorized) as exc:
        store.sign_in("alice", PASSWORD)
    assert exc.value.code == "invalid_credentials"


def test_failures_throttle_the_account_then_time_frees_it(store, clock):
    make(store, password=PASSWORD)
    for _ in range(THROTTLE_FREE_ACCOUNT):
        with pytest.raises(Unauthorized):
            store.sign_in("alice", "wrong password", address=f"192.0.2.{_}")
    # locked now, even with the right password and from another address
    with pytest.raises(Throttled) as exc:
        store.sign_in("alice", PASSWORD, address="198.51.100.7")
    assert exc.value.retry_after >= 1 and exc.value.code == "too_many_attempts"
    clock.t += exc.value.retry_after
    token, _, _ = store.sign_in("alice", PASSWORD, address="198.51.100.7")
    assert store.authenticate(token).username == "alice"
    # success starts the account's count over: the free failures are back
    for _ in range(THROTTLE_FREE_ACCOUNT):
        with pytest.raises(Unauthorized):
            store.sign_in("alice", "wrong password")


def test_a_known_device_passes_a_locked_account(store):
    p, _ = make(store, password=PASSWORD)
    device = store.device_token(p.id)
    for _ in range(THROTTLE_FREE_ACCOUNT):
        with pytest.raises(Unauthorized):
            store.sign_in("alice", "wrong password")
    with pytest.raises(Throttled):
        store.sign_in("alice", PASSWORD)
    # another account's device token is worth nothing here
    other, _ = make(store, "bob_2", password=PASSWORD)
    with pytest.raises(Throttled):
        store.sign_in("alice", PASSWORD, device=store.device_token(other.id))
    # the owner's device has its own bucket: the attacker's failures do not bind it
    token, _, profile = store.sign_in("alice", PASSWORD, device=device)
    assert profile.id == p.id and store.authenticate(token).id == p.id
    # and the owner being in starts the account's count over
    store.sign_in("alice", PASSWORD)


def test_sign_in_rejects_non_strings(store):
    make(store, password=PASSWORD)
    with pytest.raises(Unauthorized):
        store.sign_in(None, PASSWORD)  # type: ignore[arg-type]
    with pytest.raises(Unauthorized):
        store.sign_in("alice", 12345678)  # type: ignore[arg-type]


# -- two-factor -------------------------------------------------------------------------

def enrolled(store: Store, clock: Clock) -> tuple[str, str, list[str]]:
    """alice with two-factor on: (user id, TOTP secret, recovery codes)."""
    p, _ = make(store, password=PASSWORD)
    secret, uri = store.totp_enrol(p.id)
    assert uri.startswith("otpauth://totp/") and secret in uri
    codes = store.totp_confirm(p.id, code_at(secret, clock))
    return p.id, secret, codes


def test_enrol_is_pending_until_confirmed(store, clock):
    p, _ = make(store, password=PASSWORD)
    secret, _ = store.totp_enrol(p.id)
    assert not store.get_profile(p.id).two_factor
    # pending: signing in needs no code yet
    store.sign_in("alice", PASSWORD)
    with pytest.raises(Invalid) as exc:
        store.totp_confirm(p.id, "000000" if code_at(secret, clock) != "000000" else "111111")
    assert exc.value.field == "code"
    codes = store.totp_confirm(p.id, code_at(secret, clock))
    assert store.get_profile(p.id).two_factor
    assert len(codes) == 10 and len(set(codes)) == 10
    with pytest.raises(Conflict):
        store.totp_enrol(p.id)


def test_confirm_without_enrolling_is_a_conflict(store):
    p, _ = make(store, password=PASSWORD)
    with pytest.raises(Conflict):
        store.totp_confirm(p.id, "123456")


def test_sign_in_with_two_factor_needs_a_fresh_code(store, clock):
    user_id, secret, _ = enrolled(store, clock)
    with pytest.raises(Unauthorized) as missing:
        store.sign_in("alice", PASSWORD)
    assert missing.value.code == "otp_required"
    clock.t += TOTP_STEP  # the confirming code is used up: the next one
    code = code_at(secret, clock)
    token, _, profile = store.sign_in("alice", PASSWORD, otp=code)
    assert profile.id == user_id and profile.two_factor
    assert store.authenticate(token).id == user_id
    # no replay of a code already used
    with pytest.raises(Unauthorized) as replay:
        store.sign_in("alice", PASSWORD, otp=code)
    assert replay.value.code == "invalid_otp"


def test_a_wrong_code_is_invalid_otp(store, clock):
    _, secret, _ = enrolled(store, clock)
    clock.t += TOTP_STEP
    wrong = "000000" if code_at(secret, clock) != "000000" else "111111"
    with pytest.raises(Unauthorized) as exc:
        store.sign_in("alice", PASSWORD, otp=wrong)
    assert exc.value.code == "invalid_otp"


def test_a_recovery_code_signs_in_once(store, clock):
    user_id, _, codes = enrolled(store, clock)
    # written as shown (with dashes) or typed loosely (lower case, spaces)
    loose = codes[0].replace("-", " ").lower()
    token, _, _ = store.sign_in("alice", PASSWORD, otp=loose)
    assert store.authenticate(token).id == user_id
    with pytest.raises(Unauthorized) as again:
        store.sign_in("alice", PASSWORD, otp=codes[0])
    assert again.value.code == "invalid_otp"
    store.sign_in("alice", PASSWORD, otp=codes[1])


def test_a_valid_code_passes_a_locked_account(store, clock):
    user_id, secret, _ = enrolled(store, clock)
    for _ in range(THROTTLE_FREE_ACCOUNT):
        with pytest.raises(Unauthorized):
            store.sign_in("alice", "wrong password")
    with pytest.raises(Throttled):
        store.sign_in("alice", PASSWORD, otp="000000")
    clock.t += TOTP_STEP
    token, _, _ = store.sign_in("alice", PASSWORD, otp=code_at(secret, clock))
    assert store.authenticate(token).id == user_id


def test_disable_needs_a_valid_code(store, clock):
    user_id, _, codes = enrolled(store, clock)
    with pytest.raises(Invalid) as exc:
        store.totp_disable(user_id, "not-a-code")
    assert exc.value.field == "code"
    assert store.get_profile(user_id).two_factor
    store.totp_disable(user_id, codes[3])
    assert not store.get_profile(user_id).two_factor
    # off: a password alone signs in again, and the old recovery codes are gone
    store.sign_in("alice", PASSWORD)
    with pytest.raises(Conflict):
        store.totp_disable(user_id, codes[4])


def test_disable_with_a_totp_code(store, clock):
    user_id, secret, _ = enrolled(store, clock)
    clock.t += TOTP_STEP
    store.totp_disable(user_id, code_at(secret, clock))
    assert not store.get_profile(user_id).two_factor
