"""What crosses the wire: the URL prefix, reading and type-checking JSON bodies, ISO
times. Every failure is an ApiError naming the field (the store checks meaning)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from mediaserver.api.errors import ApiError

PREFIX = "/api/v1"
MAX_BODY = 16 * 1024
"""Largest request body accepted, in bytes (413 too_large beyond)."""
MAX_HANDLE = 64
"""Bound on a username or handle naming an account (sign-in, block, report): looser
than the store's USERNAME_MAX on purpose, so an over-long one gets the store's own
answer (invalid credentials, not found) like any other unknown name."""


def iso(t: float | None) -> str | None:
    """Unix seconds -> ISO 8601 UTC, e.g. 2026-11-25T16:13:31.123Z."""
    if t is None:
        return None
    return (
        datetime.fromtimestamp(t, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


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


def has_body(request: Request) -> bool:
    """Whether a request that may come without a body (e.g. POST .../totp) has one."""
    if request.headers.get("content-type") or request.headers.get("transfer-encoding"):
        return True
    return request.headers.get("content-length", "0").strip() not in ("", "0")


def text_field(value: Any, field: str, max_len: int, allow_empty: bool = True) -> str:
    """A string field: valid text, no NUL, at most `max_len` characters."""
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


def json_fields(
    body: dict[str, Any], allowed: dict[str, int], required: tuple[str, ...]
) -> dict[str, str]:
    """String fields of a small JSON body: name -> max length; unknown or missing
    fields are 422s naming the field."""
    for key in body:
        if key not in allowed:
            raise ApiError(422, "invalid", f"unknown field {key!r}", field_name(key))
    for key in required:
        if key not in body:
            raise ApiError(422, "invalid", f"{key} is required", key)
    return {
        key: text_field(value, key, allowed[key], allow_empty=False)
        for key, value in body.items()
    }


def field_name(key: str) -> str:
    """An unknown key, made safe to echo back (it can be anything a client sent)."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return key.encode("utf-8", "replace").decode("utf-8")[:100]
    return key[:100]
