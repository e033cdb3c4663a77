"""REST under /api/v1: profiles, accounts (sign-in, two-factor, photo, browsing,
blocks, reports) and privacy requests; JSON (photos: image bodies), bearer tokens.

Every store call is blocking SQLite and runs in a worker thread
(``asyncio.to_thread``); the store serialises itself with a lock. Argon2 and image
decoding run in threads too, a bounded number at once (each costs tens of MiB).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route

from mediaserver.api.limits import AddressLimits, Rate
from mediaserver.client_address import Network, address_key, connection_ip
from mediaserver.api.errors import (
    ApiError,
    api_error_handler,
    http_error_handler,
    internal_error_handler,
)
from mediaserver.store import (
    REPORT_REASONS,
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
from mediaserver.store.photos import MAX_PHOTO_BYTES, TYPES, PhotoError, clean_photo
from mediaserver.store.throttle import MAX_DEVICE_TOKEN

logger = logging.getLogger("mediaserver.api")

PREFIX = "/api/v1"
MAX_BODY = 16 * 1024
"""Largest request body accepted, in bytes (413 too_large beyond)."""
PROCESS_INTERVAL = 5.0
"""Seconds between runs of the periodic privacy-request processing."""
RETENTION_INTERVAL = 3600.0
"""Seconds between retention runs in the server."""
REQUEST_TYPES = ("access", "correction", "deletion", "opt_out", "withdraw_consent")

# size bounds on the profile fields (the store checks the meaning)
MAX_USERNAME = 64
MAX_BIO = 2000
MAX_INTERESTS = 32
MAX_INTEREST = 64
MAX_LANGUAGE = 35
MAX_PASSWORD = 256
HEAVY_WORKERS = max(1, min(4, os.cpu_count() or 1))
"""Argon2 hashes (64 MiB each) and photo decodes running at once, at most (on one
core: 2, since account creation always has its own)."""
CREATE_WORKERS = 1
"""Of those, the ones account creation may use: its own pool, so a flood of sign-ups
never queues ahead of a sign-in."""
SHARED_WORKERS = max(1, HEAVY_WORKERS - CREATE_WORKERS)
"""The rest: sign-ins, password changes and photo decodes."""


def iso(t: float | None) -> str | None:
    """Unix seconds -> ISO 8601 UTC, e.g. 2026-11-25T16:13:31.123Z."""
    if t is None:
        return None
    return (
        datetime.fromtimestamp(t, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def profile_json(p: Profile) -> dict[str, Any]:
    return {
        "id": p.id,
        "username": p.username,
        "date_of_birth": p.date_of_birth,
        "bio": p.bio,
        "interests": list(p.interests),
        "language": p.language,
        "chat_history_consent": p.chat_history_consent,
        "opted_out": p.opted_out,
        "discoverable": p.discoverable,
        "has_password": p.has_password,
        "two_factor": p.two_factor,
        "photo_url": f"{PREFIX}/profiles/{p.id}/photo" if p.photo_id else None,
        "created_at": iso(p.created_at),
        "updated_at": iso(p.updated_at),
        "last_seen_at": iso(p.last_seen_at),
    }


def request_json(r: PrivacyRequest, full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": r.id,
        "type": r.type,
        "status": r.status,
        "received_at": iso(r.received_at),
        "due_at": iso(r.due_at),
    }
    if full:
        out["completed_at"] = iso(r.completed_at)
        out["reason"] = r.reason
        if r.export is not None:
            out["export"] = r.export
    return out


# ---- body parsing and validation -------------------------------------------------


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object: 415 / 413 / 400 / 422 otherwise."""
    ctype = request.headers.get("content-type", "")
    if ctype.split(";", 1)[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type", "the body must be application/json")
    raw = await read_bytes(request, MAX_BODY)
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ApiError(400, "bad_json", "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid", "the body must be a JSON object")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _text(value: Any, field: str, max_len: int, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ApiError(422, "invalid", f"{field} must be a string", field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(422, "invalid", f"{field} is not valid text", field) from None
    if "\x00" in value:
        raise ApiError(422, "invalid", f"{field} must not contain NUL", field)
    if len(value) > max_len:
        raise ApiError(422, "invalid", f"{field} must be at most {max_len} characters", field)
    if not allow_empty and not value.strip():
        raise ApiError(422, "invalid", f"{field} must not be empty", field)
    return value


def _check(field: str, value: Any) -> Any:
    """One profile field, type- and size-checked; the store checks the rest."""
    if field == "username":
        return _text(value, field, MAX_USERNAME, allow_empty=False)
    if field == "date_of_birth":
        text = _text(value, field, 10, allow_empty=False)
        try:
            if len(text) != 10:
                raise ValueError
            date.fromisoformat(text)
        except ValueError:
            raise ApiError(
                422, "invalid", "date_of_birth must be a date, YYYY-MM-DD", field
            ) from None
        return text
    if field == "bio":
        return _text(value, field, MAX_BIO)
    if field == "language":
        if value is None:
            return None
        return _text(value, field, MAX_LANGUAGE, allow_empty=False)
    if field == "interests":
        if not isinstance(value, list):
            raise ApiError(422, "invalid", "interests must be a list of strings", field)
        if len(value) > MAX_INTERESTS:
            raise ApiError(
                422, "invalid", f"interests must hold at most {MAX_INTERESTS} items", field
            )
        return [_text(item, field, MAX_INTEREST, allow_empty=False) for item in value]
    if field == "password":
        return _text(value, field, MAX_PASSWORD, allow_empty=False)
    if field in ("chat_history_consent", "discoverable"):
        if not isinstance(value, bool):
            raise ApiError(422, "invalid", f"{field} must be true or false", field)
        return value
    raise ApiError(422, "invalid", f"unknown field {field!r}", field)  # pragma: no cover


PROFILE_FIELDS = (
    "username",
    "date_of_birth",
    "bio",
    "interests",
    "language",
    "chat_history_consent",
    "discoverable",
    "password",
)


def profile_fields(
    body: dict[str, Any], required: tuple[str, ...], creating: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in body:
        if key not in PROFILE_FIELDS:
            raise ApiError(422, "invalid", f"unknown field {key!r}", _field_name(key))
        if key == "password" and not creating:
            raise ApiError(
                422, "invalid", "change the password with PUT .../password", "password"
            )
    for key in required:
        if key not in body:
            raise ApiError(422, "invalid", f"{key} is required", key)
    for key in PROFILE_FIELDS:
        if key in body:
            out[key] = _check(key, body[key])
    return out


IDENTIFYING = frozenset({"username", "date_of_birth"})
"""PATCH fields that need the password or a fresh sign-in (as two-factor changes do)."""


def has_body(request: Request) -> bool:
    """Whether a request that may come without a body (e.g. POST .../totp) has one."""
    if request.headers.get("content-type") or request.headers.get("transfer-encoding"):
        return True
    return request.headers.get("content-length", "0").strip() not in ("", "0")


def json_fields(
    body: dict[str, Any], allowed: dict[str, int], required: tuple[str, ...]
) -> dict[str, str]:
    """String fields of a small JSON body: name -> max length; unknown or missing
    fields are 422s naming the field."""
    for key in body:
        if key not in allowed:
            raise ApiError(422, "invalid", f"unknown field {key!r}", _field_name(key))
    for key in required:
        if key not in body:
            raise ApiError(422, "invalid", f"{key} is required", key)
    return {
        key: _text(value, key, allowed[key], allow_empty=False) for key, value in body.items()
    }


async def read_bytes(request: Request, limit: int) -> bytes:
    """The raw body, at most `limit` bytes (413 too_large beyond, before reading it
    all when Content-Length says so)."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError(400, "bad_request", "invalid Content-Length") from None
        if declared > limit:
            raise ApiError(413, "too_large", f"the body must be at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the body must be at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _field_name(key: str) -> str:
    """An unknown key, made safe to echo back (it can be anything a client sent)."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return key.encode("utf-8", "replace").decode("utf-8")[:100]
    return key[:100]


# ---- the API ---------------------------------------------------------------------


class Processor:
    """Runs store.process_pending in a worker thread, coalescing kicks: while a run
    is going, further kicks mark one more run, never a pile of threads."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def kick(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                await asyncio.to_thread(self.store.process_pending)
            except Exception:
                logger.exception("processing privacy requests failed")
            if not self._again:
                return

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)


async def background_tasks(
    store: Store,
    interval: float = PROCESS_INTERVAL,
    retention_interval: float = RETENTION_INTERVAL,
) -> None:
    """The server's timer: completes pending privacy requests every `interval`
    seconds and runs retention every `retention_interval`. Runs until cancelled."""
    loop = asyncio.get_running_loop()
    next_retention = loop.time()
    while True:
        try:
            await asyncio.to_thread(store.process_pending)
        except Exception:
            logger.exception("processing privacy requests failed")
        if loop.time() >= next_retention:
            next_retention = loop.time() + retention_interval
            try:
                counts = await asyncio.to_thread(store.run_retention)
                logger.info("retention: %s", counts)
            except Exception:
                logger.exception("retention run failed")
        await asyncio.sleep(interval)


Handler = Callable[[Request], Awaitable[Response]]


def create_api(
    store: Store,
    trusted_proxies: tuple[Network, ...] = (),
    rates: dict[str, Rate] | None = None,
) -> Mount:
    """The REST API as one Mount at /api/v1 (its own error handling inside).

    Args:
        trusted_proxies: --trusted-proxy (the client address behind a proxy).
        rates: per-address limits by name (default limits.RATES; a test lowers them).
    """
    processor = Processor(store)
    limit = AddressLimits(rates).check

    async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
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
            field = "username" if "username" in str(exc).lower() else None
            raise ApiError(409, "conflict", str(exc) or "conflict", field) from None
        except Invalid as exc:
            raise ApiError(422, "invalid", str(exc), exc.field) from None
        except StoreError:
            logger.exception("store unavailable")
            raise ApiError(503, "unavailable", "storage is unavailable, try again") from None

    heavy = asyncio.Semaphore(SHARED_WORKERS)
    creating = asyncio.Semaphore(CREATE_WORKERS)
    # photos decode on threads of their own: a decode's freed 100+ MiB stays in its
    # thread's malloc arena, so every extra thread that ever decoded raises the peak
    decoders = ThreadPoolExecutor(SHARED_WORKERS, thread_name_prefix="photo-decode")

    async def call_heavy(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A call that hashes a password or decodes an image: bounded concurrency
        keeps memory bounded under a flood (64 MiB per Argon2 hash)."""
        async with heavy:
            return await call(fn, *args, **kwargs)

    def bearer(request: Request) -> str:
        header = request.headers.get("authorization", "")
        return header.partition(" ")[2].strip()

    async def authenticate(request: Request) -> Profile:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        challenge = {"WWW-Authenticate": 'Bearer realm="mediaserver"'}
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthorized", "a bearer token is required", headers=challenge)
        if len(token) > 512 or not token.isascii():
            raise ApiError(401, "unauthorized", "invalid token", headers=challenge)
        try:
            profile: Profile = await asyncio.to_thread(store.authenticate, token)
        except (NotFound, Invalid):
            raise ApiError(
                401,
                "unauthorized",
                "invalid token",
                headers={"WWW-Authenticate": 'Bearer realm="mediaserver", error="invalid_token"'},
            ) from None
        if request.headers.get("sec-gpc", "").strip() == "1" and not profile.opted_out:
            await call(store.record_opt_out, profile.id, "gpc")
            profile = await call(store.get_profile, profile.id)
        return profile

    def own(profile: Profile, request: Request) -> None:
        """Another user's id is answered exactly like an unknown one."""
        if request.path_params["id"] != profile.id:
            raise ApiError(404, "not_found", "no such profile")

    async def create_profile(request: Request) -> Response:
        limit(request, "create_account")
        fields = profile_fields(
            await read_json(request), ("username", "date_of_birth"), creating=True
        )
        if "password" in fields:
            async with creating:
                profile, token = await call(store.create_profile, **fields)
        else:
            profile, token = await call(store.create_profile, **fields)
        if request.headers.get("sec-gpc", "").strip() == "1":
            await call(store.record_opt_out, profile.id, "gpc")
            profile = await call(store.get_profile, profile.id)
        body = {**profile_json(profile), "token": token}
        return JSONResponse(
            body, status_code=201, headers={"Location": f"{PREFIX}/profiles/{profile.id}"}
        )

    async def get_profile(request: Request) -> Response:
        profile = await authenticate(request)
        own(profile, request)
        return JSONResponse(profile_json(profile))

    async def recent_auth(profile: Profile, request: Request, password: object) -> None:
        """The password, or a sign-in younger than a few minutes (the store decides)."""
        if password is not None:
            password = _text(password, "current_password", MAX_PASSWORD, allow_empty=False)
            await call_heavy(store.require_recent_auth, profile.id, bearer(request), password)
        else:
            await call(store.require_recent_auth, profile.id, bearer(request), None)

    async def patch_profile(request: Request) -> Response:
        profile = await authenticate(request)
        own(profile, request)
        body = await read_json(request)
        password = body.pop("current_password", None)
        fields = profile_fields(body, ())
        if IDENTIFYING.intersection(fields):
            await recent_auth(profile, request, password)
        if fields:
            profile = await call(store.update_profile, profile.id, **fields)
        return JSONResponse(profile_json(profile))

    async def delete_profile(request: Request) -> Response:
        profile = await authenticate(request)
        own(profile, request)
        await call(store.delete_user, profile.id)
        return Response(status_code=204)

    async def submit_request(request: Request) -> Response:
        limit(request, "privacy_request")
        profile = await authenticate(request)
        body = await read_json(request)
        for key in body:
            if key != "type":
                raise ApiError(422, "invalid", f"unknown field {key!r}", _field_name(key))
        if "type" not in body:
            raise ApiError(422, "invalid", "type is required", "type")
        kind = body["type"]
        if not isinstance(kind, str) or kind not in REQUEST_TYPES:
            raise ApiError(
                422, "invalid", f"type must be one of {', '.join(REQUEST_TYPES)}", "type"
            )
        req: PrivacyRequest = await call(store.submit_request, profile.id, kind)
        processor.kick()  # completes "shortly after"; the periodic task is the backstop
        return JSONResponse(
            request_json(req, full=False),
            status_code=202,
            headers={"Location": f"{PREFIX}/privacy-requests/{req.id}"},
        )

    async def get_request(request: Request) -> Response:
        profile = await authenticate(request)
        req: PrivacyRequest = await call(
            store.get_request, profile.id, request.path_params["id"]
        )
        return JSONResponse(request_json(req, full=True))

    async def list_requests(request: Request) -> Response:
        profile = await authenticate(request)
        reqs: list[PrivacyRequest] = await call(store.list_requests, profile.id)
        return JSONResponse({"requests": [request_json(r, full=True) for r in reqs]})

    # ---- accounts ---------------------------------------------------------------

    async def sign_in(request: Request) -> Response:
        body = json_fields(
            await read_json(request),
            {"username": MAX_USERNAME, "password": MAX_PASSWORD, "otp": 64,
             "device": MAX_DEVICE_TOKEN},
            ("username", "password"),
        )
        address = address_key(connection_ip(request))
        token, expires_at, profile = await call_heavy(
            store.sign_in, body["username"], body["password"], body.get("otp"), address,
            body.get("device"),
        )
        return JSONResponse(
            {"token": token, "expires_at": iso(expires_at), "id": profile.id,
             "device": store.device_token(profile.id)},
            status_code=201,
            headers={"Cache-Control": "no-store"},
        )

    async def sign_out(request: Request) -> Response:
        await authenticate(request)
        await call(store.sign_out, bearer(request))
        return Response(status_code=204)

    async def set_password(request: Request) -> Response:
        profile = await authenticate(request)
        own(profile, request)
        body = json_fields(
            await read_json(request),
            {"password": MAX_PASSWORD, "current_password": MAX_PASSWORD},
            ("password",),
        )
        await call_heavy(
            store.set_password, profile.id, body["password"], body.get("current_password"),
            bearer(request),
        )
        return Response(status_code=204)

    async def totp_enrol(request: Request) -> Response:
        profile = await authenticate(request)
        own(profile, request)
        body = await read_json(request) if has_body(request) else {}
        body = json_fields(body, {"current_password": MAX_PASSWORD}, ())
        await recent_auth(profile, request, body.get("current_password"))
        secret, uri = await call(store.totp_enrol, profile.id)
        png = await asyncio.to_thread(_qr_png, uri)
        return JSONResponse(
            {"secret": secret, "otpauth_uri": uri, "qr_png_base64": png},
            status_code=201,
            headers={"Cache-Control": "no-store"},
        )

    async def totp_confirm(request: Request) -> Response:
        profile = await authenticate(request)
        own(profile, request)
        body = json_fields(await read_json(request), {"code": 64}, ("code",))
        codes = await call(store.totp_confirm, profile.id, body["code"])
        return JSONResponse(
            {"two_factor": True, "recovery_codes": codes}, headers={"Cache-Control": "no-store"}
        )

    async def totp_disable(request: Request) -> Response:
        profile = await authenticate(request)
        own(profile, request)
        body = json_fields(
            await read_json(request), {"code": 64, "current_password": MAX_PASSWORD},
            ("code",),
        )
        await recent_auth(profile, request, body.get("current_password"))
        await call(store.totp_disable, profile.id, body["code"])
        return JSONResponse({"two_factor": False})

    async def put_photo(request: Request) -> Response:
        limit(request, "photo_upload")
        profile = await authenticate(request)
        own(profile, request)
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype not in TYPES:
            raise ApiError(
                415, "unsupported_media_type", "send image/jpeg, image/png or image/webp"
            )
        data = await read_bytes(request, MAX_PHOTO_BYTES)
        async with heavy:
            try:
                jpeg, width, height = await asyncio.get_running_loop().run_in_executor(
                    decoders, clean_photo, data, ctype)
            except PhotoError as exc:
                raise ApiError(exc.status, exc.code, exc.message, "photo") from None
        await call(store.set_photo, profile.id, jpeg, width, height)
        return JSONResponse(
            {"photo_url": f"{PREFIX}/profiles/{profile.id}/photo", "width": width,
             "height": height},
            status_code=201,
        )

    async def get_photo(request: Request) -> Response:
        profile = await authenticate(request)
        own(profile, request)
        jpeg = await call(store.get_photo, profile.id)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private"})

    async def delete_photo(request: Request) -> Response:
        profile = await authenticate(request)
        own(profile, request)
        await call(store.delete_photo, profile.id)
        return Response(status_code=204)

    async def public_photo(request: Request) -> Response:
        # the unguessable id is the permission: it is only handed out in a listing
        # of a discoverable profile, or (its own id per share) in a card its owner
        # chose to share
        jpeg = await call(store.public_photo, request.path_params["id"])
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private"})

    async def list_shares(request: Request) -> Response:
        profile = await authenticate(request)
        own(profile, request)
        live = await call(store.photo_shares, profile.id)
        return JSONResponse({"shares": [
            {"id": share["id"], "photo_url": f"{PREFIX}/photos/{share['id']}",
             "created_at": iso(share["created_at"]), "expires_at": iso(share["expires_at"])}
            for share in live
        ]})

    async def withdraw_share(request: Request) -> Response:
        profile = await authenticate(request)
        own(profile, request)
        await call(store.withdraw_photo_share, profile.id, request.path_params["share_id"])
        return Response(status_code=204)

    async def browse(request: Request) -> Response:
        profile = await authenticate(request)
        params = request.query_params
        for key in params:
            if key not in ("interest", "language", "cursor"):
                raise ApiError(422, "invalid", f"unknown parameter {key!r}", _field_name(key))
        args = {k: _text(params[k], k, 256, allow_empty=False) for k in params}
        cards, cursor = await call(
            store.browse, profile.id, args.get("interest"), args.get("language"),
            args.get("cursor"),
        )
        return JSONResponse({"profiles": cards, "next_cursor": cursor})

    async def add_block(request: Request) -> Response:
        profile = await authenticate(request)
        own(profile, request)
        body = json_fields(await read_json(request), {"handle": MAX_USERNAME}, ("handle",))
        await call(store.block, profile.id, body["handle"])
        return JSONResponse({"handle": body["handle"]}, status_code=201)

    async def list_blocks(request: Request) -> Response:
        profile = await authenticate(request)
        own(profile, request)
        return JSONResponse({"blocked": await call(store.blocked_handles, profile.id)})

    async def remove_block(request: Request) -> Response:
        profile = await authenticate(request)
        own(profile, request)
        await call(store.unblock, profile.id, request.path_params["handle"])
        return Response(status_code=204)

    async def report_account(request: Request) -> Response:
        limit(request, "report")
        profile = await authenticate(request)
        body = json_fields(
            await read_json(request), {"handle": MAX_USERNAME, "reason": 32},
            ("handle", "reason"),
        )
        if body["reason"] not in REPORT_REASONS:
            raise ApiError(
                422, "invalid", f"reason must be one of {', '.join(REPORT_REASONS)}",
                "reason",
            )
        report_id = await call(store.report_account, profile.id, body["handle"], body["reason"])
        return JSONResponse(
            {"id": report_id, "handle": body["handle"], "reason": body["reason"]},
            status_code=201,
        )

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(document)

    async def docs(request: Request) -> Response:
        from mediaserver.edges import DOCS_CONTENT_SECURITY_POLICY

        # its own policy: the page's one <style> is inline (the app's policy forbids it)
        return HTMLResponse(
            docs_html, headers={"Content-Security-Policy": DOCS_CONTENT_SECURITY_POLICY}
        )

    routes = [
        Route("/profiles", create_profile, methods=["POST"], name="create_profile"),
        Route("/profiles", browse, methods=["GET"], name="browse"),
        Route("/sessions", sign_in, methods=["POST"], name="sign_in"),
        Route("/sessions/current", sign_out, methods=["DELETE"], name="sign_out"),
        Route("/profiles/{id}/password", set_password, methods=["PUT"], name="set_password"),
        Route("/profiles/{id}/totp", totp_enrol, methods=["POST"], name="totp_enrol"),
        Route("/profiles/{id}/totp/confirm", totp_confirm, methods=["POST"]),
        Route("/profiles/{id}/totp/disable", totp_disable, methods=["POST"]),
        Route("/profiles/{id}/photo", put_photo, methods=["PUT"], name="put_photo"),
        Route("/profiles/{id}/photo", get_photo, methods=["GET"], name="get_photo"),
        Route("/profiles/{id}/photo", delete_photo, methods=["DELETE"], name="delete_photo"),
        Route("/photos/{id}", public_photo, methods=["GET"], name="public_photo"),
        Route("/profiles/{id}/shares", list_shares, methods=["GET"], name="list_shares"),
        Route("/profiles/{id}/shares/{share_id}", withdraw_share, methods=["DELETE"]),
        Route("/profiles/{id}/blocks", add_block, methods=["POST"], name="add_block"),
        Route("/profiles/{id}/blocks", list_blocks, methods=["GET"], name="list_blocks"),
        Route("/profiles/{id}/blocks/{handle}", remove_block, methods=["DELETE"]),
        Route("/reports", report_account, methods=["POST"], name="report_account"),
        Route("/profiles/{id}", get_profile, methods=["GET"], name="get_profile"),
        Route("/profiles/{id}", patch_profile, methods=["PATCH"], name="patch_profile"),
        Route("/profiles/{id}", delete_profile, methods=["DELETE"], name="delete_profile"),
        Route("/privacy-requests", submit_request, methods=["POST"], name="submit_request"),
        Route("/privacy-requests", list_requests, methods=["GET"], name="list_requests"),
        Route("/privacy-requests/{id}", get_request, methods=["GET"], name="get_request"),
        Route("/openapi.json", openapi_json, methods=["GET"], name="openapi"),
        Route("/docs", docs, methods=["GET"], name="docs"),
    ]
    from mediaserver.api.openapi import build_document, render_docs

    document = build_document()
    docs_html = render_docs(document)

    app = Starlette(
        routes=_merge_methods(routes),
        exception_handlers={
            ApiError: api_error_handler,
            HTTPException: http_error_handler,
            Exception: internal_error_handler,
        },
    )
    app.state.processor = processor
    # connection_ip reads this app's state: inside the Mount, request.app is this app
    app.state.trusted_proxies = trusted_proxies
    mount = Mount(PREFIX, app=app, name="api")
    # Starlette's "(?P<path>.*)" stops at a newline (%0A in a path): such a request
    # would miss the API and get the outer app's plain-text 404; keep it ours.
    mount.path_regex = re.compile(mount.path_regex.pattern, re.DOTALL)
    return mount


def _merge_methods(routes: list[Route]) -> list[Route]:
    """Routes sharing a path become one Route that dispatches on the method, so a
    method no route takes is a 405 with an Allow listing all of them (Starlette
    matches the first route by path alone)."""
    by_path: dict[str, dict[str, Handler]] = {}
    for route in routes:
        for method in route.methods or ():
            if method != "HEAD":
                by_path.setdefault(route.path, {})[method] = route.endpoint
    merged: list[Route] = []
    for path, handlers in by_path.items():
        merged.append(Route(path, _dispatch(handlers), methods=list(handlers)))
    return merged


def _dispatch(handlers: dict[str, Handler]) -> Handler:
    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        try:
            return await handlers[method](request)
        except (ApiError, HTTPException):
            raise
        except Exception as exc:  # noqa: BLE001
            # a real bug: answered here (the connection stays usable), logged in full
            return await internal_error_handler(request, exc)

    return endpoint


def _qr_png(uri: str) -> str:
    """The otpauth:// URI as a QR code PNG, base64 (for an <img> data: URL)."""
    import io

    import segno

    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="png", scale=5, border=4)
    return base64.b64encode(out.getvalue()).decode("ascii")


ROUTE_TABLE: tuple[tuple[str, str], ...] = (
    ("POST", "/profiles"),
    ("GET", "/profiles"),
    ("POST", "/sessions"),
    ("DELETE", "/sessions/current"),
    ("PUT", "/profiles/{id}/password"),
    ("POST", "/profiles/{id}/totp"),
    ("POST", "/profiles/{id}/totp/confirm"),
    ("POST", "/profiles/{id}/totp/disable"),
    ("PUT", "/profiles/{id}/photo"),
    ("GET", "/profiles/{id}/photo"),
    ("DELETE", "/profiles/{id}/photo"),
    ("GET", "/photos/{id}"),
    ("GET", "/profiles/{id}/shares"),
    ("DELETE", "/profiles/{id}/shares/{share_id}"),
    ("POST", "/profiles/{id}/blocks"),
    ("GET", "/profiles/{id}/blocks"),
    ("DELETE", "/profiles/{id}/blocks/{handle}"),
    ("POST", "/reports"),
    ("GET", "/profiles/{id}"),
    ("PATCH", "/profiles/{id}"),
    ("DELETE", "/profiles/{id}"),
    ("POST", "/privacy-requests"),
    ("GET", "/privacy-requests"),
    ("GET", "/privacy-requests/{id}"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
)
"""Every (method, path under /api/v1) the API serves; the OpenAPI test checks both ways."""
