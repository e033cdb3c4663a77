"""SQLite storage, privacy requests and retention: `Store` (store/db.py) is the one
object the server holds; each domain lives in its own module (profiles, auth,
privacy, social, chat), every error in store/errors.py, the limits the REST layer
and the signalling protocol share in store/limits.py."""

from mediaserver.store.core import Profile
from mediaserver.store.crypto import load_data_key, load_or_create_data_key
from mediaserver.store.db import Store
from mediaserver.store.errors import (
    Conflict,
    Invalid,
    NotFound,
    StoreError,
    Throttled,
    Unauthorized,
)
from mediaserver.store.limits import (
    LANGUAGE_MAX,
    LANGUAGE_MIN,
    MAX_BIO,
    MAX_INTEREST_LEN,
    MAX_INTERESTS,
    MAX_LINK_LEN,
    MAX_LINKS,
    MAX_LOCATION,
    OBJECTION_PURPOSES,
    PASSWORD_MAX,
    PASSWORD_MIN,
    REPORT_REASONS,
    REQUEST_TYPES,
    USERNAME_MAX,
    USERNAME_MIN,
)
from mediaserver.store.privacy import PrivacyRequest
from mediaserver.store.schema import SCHEMA_VERSION

__all__ = [
    "LANGUAGE_MAX",
    "LANGUAGE_MIN",
    "MAX_BIO",
    "MAX_INTERESTS",
    "MAX_INTEREST_LEN",
    "MAX_LINKS",
    "MAX_LINK_LEN",
    "MAX_LOCATION",
    "OBJECTION_PURPOSES",
    "PASSWORD_MAX",
    "PASSWORD_MIN",
    "REPORT_REASONS",
    "REQUEST_TYPES",
    "SCHEMA_VERSION",
    "USERNAME_MAX",
    "USERNAME_MIN",
    "Conflict",
    "Invalid",
    "NotFound",
    "PrivacyRequest",
    "Profile",
    "Store",
    "StoreError",
    "Throttled",
    "Unauthorized",
    "load_data_key",
    "load_or_create_data_key",
]
