"""SQLite storage, privacy requests and retention (see mediaserver/store/db.py)."""

from mediaserver.store.crypto import load_data_key, load_or_create_data_key
from mediaserver.store.db import (
    SCHEMA_VERSION,
    Conflict,
    Invalid,
    NotFound,
    PrivacyRequest,
    Profile,
    Store,
    StoreError,
    Throttled,
    Unauthorized,
)

__all__ = [
    "SCHEMA_VERSION",
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
