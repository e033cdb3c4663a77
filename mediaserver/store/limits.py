"""What the store accepts: the profile, request and report limits (the one home the
REST layer and the signalling protocol share) and the validators that apply them."""

from __future__ import annotations

import datetime as _dt
import re
import urllib.parse

from mediaserver.store.errors import Invalid

DAY = 86400.0
SESSION_TTL = 30 * DAY  # default --session-ttl
REQUEST_TYPES = ("access", "correction", "deletion", "opt_out", "withdraw_consent",
                 "restriction", "objection")
OBJECTION_PURPOSES = ("chat_history", "matching_by_interests")
"""What an `objection` request can turn off (store/controls.py says what stops)."""
OPT_OUT_SOURCES = ("request", "gpc")
REPORT_REASONS = ("spam", "nudity", "harassment", "underage", "other")
"""Reasons an account (REST) or a stranger (signalling) can be reported for."""
MIN_AGE = 18  # default floor (--min-age); anonymous random video chat is 18+
MIN_AGE_FLOOR = 13  # the social side's floor: --min-age can never go below it
USERNAME_MIN = 3
USERNAME_MAX = 32
LANGUAGE_MIN = 2
LANGUAGE_MAX = 16
PASSWORD_MIN = 8
PASSWORD_MAX = 256  # Argon2 takes any length; this bounds the work per request
MAX_BIO = 500
MAX_INTERESTS = 10
MAX_INTEREST_LEN = 32
MAX_REPORT_REASON = 1000
MAX_CHAT_TEXT = 10_000
MAX_LINKS = 5
MAX_LINK_LEN = 2048
MAX_LOCATION = 100
MAX_EMAIL = 254
MAX_GUARDIAN_DETAILS = 2000

USERNAME = re.compile(rf"[A-Za-z0-9_.-]{{{USERNAME_MIN},{USERNAME_MAX}}}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_LANGUAGE = re.compile(r"[A-Za-z0-9_-]+")


def validate_username(value: object, field: str = "username") -> str:
    if not isinstance(value, str):
        raise Invalid(field, "must be a string")
    if not USERNAME.fullmatch(value):
        raise Invalid(field, f"{USERNAME_MIN}-{USERNAME_MAX} characters: letters, digits, _ . -")
    return value


def validate_bio(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid("bio", "must be a string")
    if len(value) > MAX_BIO:
        raise Invalid("bio", f"at most {MAX_BIO} characters")
    if "\x00" in value:
        raise Invalid("bio", "must not contain NUL characters")
    return value


def validate_interests(value: object) -> list[str]:
    """Lower-cased, stripped, deduplicated in order."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise Invalid("interests", "must be a list of strings")
    if len(value) > MAX_INTERESTS:
        raise Invalid("interests", f"at most {MAX_INTERESTS} interests")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise Invalid("interests", "must be a list of strings")
        item = item.strip().lower()
        if not 1 <= len(item) <= MAX_INTEREST_LEN or "\x00" in item:
            raise Invalid("interests", f"each interest is 1-{MAX_INTEREST_LEN} characters")
        if item not in out:
            out.append(item)
    return out


def validate_language(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid("language", "must be a string or null")
    if not LANGUAGE_MIN <= len(value) <= LANGUAGE_MAX or not _LANGUAGE.fullmatch(value):
        raise Invalid("language", f"{LANGUAGE_MIN}-{LANGUAGE_MAX} characters"
                      " (a language tag such as en or pt-BR)")
    return value


def validate_password(value: object, field: str = "password") -> str:
    if not isinstance(value, str):
        raise Invalid(field, "must be a string")
    if not PASSWORD_MIN <= len(value) <= PASSWORD_MAX:
        raise Invalid(field, f"{PASSWORD_MIN}-{PASSWORD_MAX} characters")
    if "\x00" in value:
        raise Invalid(field, "must not contain NUL characters")
    return value


def validate_bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(field, "must be true or false")
    return value


def validate_dob(value: object, today: _dt.date, min_age: int) -> str:
    """A YYYY-MM-DD date of birth of someone min_age..130 years old `today`."""
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise Invalid("date_of_birth", "expected YYYY-MM-DD")
    try:
        dob = _dt.date.fromisoformat(value)
    except ValueError:
        raise Invalid("date_of_birth", "expected YYYY-MM-DD") from None
    age = today.year - dob.year - ((today.month, today.day) < (dob.month, dob.day))
    if age < min_age:
        raise Invalid("date_of_birth", f"must be {min_age} or older")
    if age > 130:
        raise Invalid("date_of_birth", "not a plausible date of birth")
    return value


def age_on(dob: str, today: _dt.date) -> int:
    born = _dt.date.fromisoformat(dob)
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def age_band(age: int) -> str:
    """A coarse band for listings, never the date of birth."""
    for low, high in ((13, 17), (18, 24), (25, 34), (35, 44), (45, 54), (55, 64)):
        if low <= age <= high:
            return f"{low}-{high}"
    return "65+" if age >= 65 else "under 13"


def validate_links(value: object) -> list[str]:
    """Up to MAX_LINKS absolute http(s) URLs with a host, each at most MAX_LINK_LEN
    characters, no spaces or control characters; deduplicated in order."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise Invalid("links", "must be a list of URLs")
    if len(value) > MAX_LINKS:
        raise Invalid("links", f"at most {MAX_LINKS} links")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not 1 <= len(item) <= MAX_LINK_LEN:
            raise Invalid("links", f"each link is a URL of 1-{MAX_LINK_LEN} characters")
        if any(c.isspace() or not c.isprintable() for c in item):
            raise Invalid("links", "a link must not contain spaces or control characters")
        try:
            url = urllib.parse.urlsplit(item)
            host = url.hostname
        except ValueError:
            raise Invalid("links", "not a URL") from None
        if url.scheme.lower() not in ("http", "https") or not host:
            raise Invalid("links", "each link is an http:// or https:// URL with a host")
        if item not in out:
            out.append(item)
    return out


def validate_location(value: object) -> str | None:
    """A coarse place as the owner writes it (city, country), at most MAX_LOCATION
    characters; empty or null clears it."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid("location", "must be a string or null")
    value = value.strip()
    if len(value) > MAX_LOCATION:
        raise Invalid("location", f"at most {MAX_LOCATION} characters")
    if any(not c.isprintable() for c in value):
        raise Invalid("location", "must not contain control characters")
    return value or None


_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")


def validate_email(value: object, field: str = "contact_email") -> str:
    """An address of the usual shape (local@domain.tld), at most MAX_EMAIL characters."""
    if not isinstance(value, str) or len(value) > MAX_EMAIL or not _EMAIL.fullmatch(value):
        raise Invalid(field, f"an e-mail address (at most {MAX_EMAIL} characters)")
    if any(not c.isprintable() for c in value):
        raise Invalid(field, "must not contain control characters")
    return value
