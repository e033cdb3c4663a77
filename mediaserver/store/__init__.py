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
    "load_data_key",
    "load_or_create_data_key",
]
