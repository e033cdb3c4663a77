"""REST request bodies: mediaserver.api.wire.read_json, then profiles.profile_fields.

The fast REST target: the body-parsing functions called directly, no app. Input:
byte 0 picks the Content-Type (bits 0-1), the Content-Length header (bits 2-3:
absent, right, wrong, not a number), the body's chunking (bit 4: one chunk or
one per 7 bytes) and the required fields (bit 5: those of POST /profiles, or
none as for PATCH); the rest is the body. Seeds: valid and invalid profile bodies
from tests/api/test_api.py and docs.

Bug: any exception but ApiError, an ApiError whose status is not a 4xx the API
documents, or a field name in the error that cannot be encoded as UTF-8 JSON.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fuzz.common import main

wire: Any = None
profiles: Any = None
errors: Any = None
Request: Any = None

CONTENT_TYPES = (
    b"application/json",
    b"application/json; charset=utf-8",
    b"text/plain",
    b"APPLICATION/JSON ;x=1",
)
STATUSES = {400, 413, 415, 422}


def load() -> None:
    global wire, profiles, errors, Request
    from starlette.requests import Request as StarletteRequest

    from mediaserver.api import errors as errors_module
    from mediaserver.api import profiles as profiles_module
    from mediaserver.api import wire as wire_module

    wire, profiles, errors = wire_module, profiles_module, errors_module
    Request = StarletteRequest


def _request(flags: int, body: bytes) -> Any:
    headers = [(b"content-type", CONTENT_TYPES[flags & 3])]
    length = (flags >> 2) & 3
    if length == 1:
        headers.append((b"content-length", str(len(body)).encode()))
    elif length == 2:
        headers.append((b"content-length", str(len(body) // 2 + 20000 * (len(body) & 1)).encode()))
    elif length == 3:
        headers.append((b"content-length", body[:8] or b"x"))
    step = 7 if flags & 0x10 else max(len(body), 1)
    chunks = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/profiles",
        "headers": headers,
        "query_string": b"",
    }
    return Request(scope, receive)


def _run(coroutine: Any) -> Any:
    # read_json never suspends on this receive(): drive it without an event loop
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise AssertionError("read_json suspended")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    flags, body = data[0], data[1:]
    required = ("username", "date_of_birth") if flags & 0x20 else ()
    try:
        parsed = _run(wire.read_json(_request(flags, body)))
        fields = profiles.profile_fields(parsed, required)
    except errors.ApiError as exc:
        if exc.status not in STATUSES:
            raise AssertionError(f"status {exc.status} for a body") from exc
        json.dumps(
            {"error": {"code": exc.code, "message": exc.message, "field": exc.field}},
            ensure_ascii=False,
        ).encode("utf-8")
        return
    for key in required:
        if key not in fields:
            raise AssertionError(f"{key} required but missing from {fields}")


if __name__ == "__main__":
    main(test_one_input, load, instrument=["mediaserver", "starlette"])
