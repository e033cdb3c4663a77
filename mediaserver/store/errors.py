"""Every error the store raises on purpose, each with a `.code`: the API error code
the REST layer answers with (the one home of these classes)."""

from __future__ import annotations

import math


class StoreError(Exception):
    """Base of every error the store raises on purpose (REST: 503, the storage is
    unavailable, when no subclass says more)."""

    code = "unavailable"


class NotFound(StoreError):
    """Unknown id, or not this user's (REST maps to 404)."""

    code = "not_found"


class Conflict(StoreError):
    """E.g. username taken (REST: 409)."""

    code = "conflict"


class Unauthorized(StoreError):
    """Wrong credentials (REST: 401). `code` is the API error code: the same one,
    invalid_credentials, for an unknown user and a wrong password."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Throttled(StoreError):
    """Too many failed sign-ins for this account or address (REST: 429)."""

    code = "too_many_attempts"

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"too many failed sign-ins; try again in {self.retry_after} s")


class Invalid(StoreError):
    """A value the store refuses (REST: 422); .field names the field."""

    code = "invalid"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
