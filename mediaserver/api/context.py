"""What every handler gets besides the request: the store, the thread pools and
semaphores bounding heavy work, the per-address limits, the privacy-request processor,
and the helpers that authenticate a caller and map store errors to API errors.

Every store call is blocking SQLite and runs in a worker thread (``asyncio.to_thread``);
the store serialises itself with a lock. Argon2 and image decoding run in threads too,
a bounded number at once (each costs tens of MiB).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.requests import Request

from mediaserver.api.errors import ApiError
from mediaserver.api.limits import AddressLimits, Rate
from mediaserver.api.processing import Processor
from mediaserver.api.wire import text_field
from mediaserver.store import (
    PASSWORD_MAX,
    Conflict,
    Invalid,
    NotFound,
    Profile,
    Store,
    StoreError,
    Throttled,
    Unauthorized,
)
from mediaserver.store.moderation import Ban

logger = logging.getLogger("mediaserver.api")

HEAVY_WORKERS = max(1, min(4, os.cpu_count() or 1))
"""Argon2 hashes (64 MiB each) and photo decodes running at once, at most (on one
core: 2, since account creation always has its own)."""
CREATE_WORKERS = 1
"""Of those, the ones account creation may use: its own pool, so a flood of sign-ups
never queues ahead of a sign-in."""
SHARED_WORKERS = max(1, HEAVY_WORKERS - CREATE_WORKERS)
"""The rest: sign-ins, password changes and photo decodes."""


OnBan = Callable[[list[Ban]], Awaitable[None]]
"""Shares where bans stand after a moderation decision with every node."""


class ApiContext:
    """One API instance's shared state, passed to every handler.

    Args:
        store: the accounts store.
        rates: per-address limits by name (default limits.RATES; a test lowers them).
    """

    def __init__(self, store: Store, rates: dict[str, Rate] | None = None) -> None:
        self.store = store
        self.processor = Processor(store)
        self.limits = AddressLimits(rates)
        self.heavy = asyncio.Semaphore(SHARED_WORKERS)
        self.creating = asyncio.Semaphore(CREATE_WORKERS)
        # photos decode on threads of their own: a decode's freed 100+ MiB stays in its
        # thread's malloc arena, so every extra thread that ever decoded raises the peak
        self.decoders = ThreadPoolExecutor(SHARED_WORKERS, thread_name_prefix="photo-decode")
        self.document: dict[str, Any] = {}
        """The OpenAPI document, built from the routes once they exist."""
        self.docs_html = ""
        self.on_ban: OnBan | None = None
        """Set by create_api: shares a decision's bans with every node."""

    def limit(self, request: Request, name: str) -> None:
        """Count the request against its address's allowance `name` (429 beyond)."""
        self.limits.check(request, name)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A store call in a thread, its errors mapped to API errors."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except NotFound:
            raise ApiError(404, "not_found", "not found") from None
        except Throttled as exc:
            raise ApiError(
                429, "too_many_attempts", str(exc),
                headers={"Retry-After": str(exc.retry_after)},
            ) from None
        except Unauthorized as exc:
            raise ApiError(401, exc.code, exc.message) from None
        except Conflict as exc:
            text = str(exc).lower()
            field = "username" if "username" in text else "email" if "email" in text else None
            raise ApiError(409, "conflict", str(exc) or "conflict", field) from None
        except Invalid as exc:
            raise ApiError(422, "invalid", str(exc), exc.field) from None
        except StoreError:
            logger.exception("store unavailable")
            raise ApiError(503, "unavailable", "storage is unavailable, try again") from None

    async def call_heavy(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A call that hashes a password or decodes an image: bounded concurrency
        keeps memory bounded under a flood (64 MiB per Argon2 hash)."""
        async with self.heavy:
            return await self.call(fn, *args, **kwargs)

    async def authenticate(self, request: Request) -> Profile:
        """The caller's profile from its bearer token (401 otherwise); Sec-GPC: 1
        records an opt-out on the way."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        challenge = {"WWW-Authenticate": 'Bearer realm="mediaserver"'}
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthorized", "a bearer token is required", headers=challenge)
        if len(token) > 512 or not token.isascii():
            raise ApiError(401, "unauthorized", "invalid token", headers=challenge)
        try:
            profile: Profile = await asyncio.to_thread(self.store.authenticate, token)
        except (NotFound, Invalid):
            raise ApiError(
                401,
                "unauthorized",
                "invalid token",
                headers={"WWW-Authenticate": 'Bearer realm="mediaserver", error="invalid_token"'},
            ) from None
        if request.headers.get("sec-gpc", "").strip() == "1" and not profile.opted_out:
            await self.call(self.store.record_opt_out, profile.id, "gpc")
            profile = await self.call(self.store.get_profile, profile.id)
        return profile

    async def authenticate_owner(self, request: Request) -> Profile:
        """The caller, who must be the profile {id} in the path: another user's id
        is answered exactly like an unknown one."""
        profile = await self.authenticate(request)
        if request.path_params["id"] != profile.id:
            raise ApiError(404, "not_found", "no such profile")
        return profile

    async def recent_auth(self, profile: Profile, request: Request, password: object) -> None:
        """The password, or a sign-in younger than a few minutes (the store decides)."""
        if password is not None:
            password = text_field(password, "current_password", PASSWORD_MAX, allow_empty=False)
            await self.call_heavy(
                self.store.require_recent_auth, profile.id, bearer(request), password
            )
        else:
            await self.call(self.store.require_recent_auth, profile.id, bearer(request), None)


def bearer(request: Request) -> str:
    """The bearer token as sent (authenticate() has checked it)."""
    header = request.headers.get("authorization", "")
    return header.partition(" ")[2].strip()
