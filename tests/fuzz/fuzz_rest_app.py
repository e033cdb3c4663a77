"""The whole REST app (/api/v1): Starlette, the handlers and a real SQLite store.

The slow REST target (fuzz_rest_body is the fast one). Requests go straight to the
ASGI app on one event loop, no sockets. Input: records (tests.fuzz.common.records), one
request each. A payload that starts with a request line, ``METHOD /path\n``, is sent
to that path (under /api/v1; ``{id}`` is the fuzz profile's id, other ``{...}``
stay as they are) with the rest as the body; otherwise the tag picks the route
from routes.ROUTE_TABLE (tag % its length) and the payload is the body. Bits 4-5
of the tag pick the Authorization (none, the fuzz profile's valid token, a
malformed one, Basic), bits 6-7 the Content-Type (JSON, JPEG, PNG, text). Seeds:
the requests of tests/api/test_api.py's flows, with request lines.

Bug: a 500 response, an exception out of the app, or an ERROR logged by the API
or the store (the internal error handler and the privacy-request processor log
real bugs there).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import re
import shutil
import tempfile
from typing import Any

from tests.fuzz.common import main, records

routes: Any = None
store: Any = None
app: Any = None
loop: asyncio.AbstractEventLoop | None = None
profile: dict[str, str] = {}
errors_logged: list[str] = []

CONTENT_TYPES = (b"application/json", b"image/jpeg", b"image/png", b"text/plain")
REQUEST_LINE = re.compile(rb"([A-Z]{3,7}) (/[\x21-\x7e]*)\n")


class _Recorder(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            errors_logged.append(self.format(record))


def load() -> None:
    global routes, store, app, loop
    from starlette.applications import Starlette

    from mediaserver.api import create_api
    from mediaserver.api.limits import UNLIMITED
    from mediaserver.api import routes as routes_module
    from mediaserver.store import Store

    routes = routes_module
    # under $TMPDIR: tests.fuzz.run points it at a directory on tmpfs (SQLite's fsyncs are
    # then free) that it removes afterwards, as libFuzzer's exit skips atexit
    directory = tempfile.mkdtemp(prefix="fuzz-rest-")
    atexit.register(shutil.rmtree, directory, True)
    store = Store(os.path.join(directory, "fuzz.db"), os.urandom(32))
    app = Starlette(routes=[create_api(store, rates=UNLIMITED)])  # reach past the limits
    loop = asyncio.new_event_loop()
    handler = _Recorder()
    for name in ("mediaserver", "mediaserver.api", "mediaserver.store"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("mediaserver").setLevel(logging.ERROR)
    logging.getLogger("mediaserver").propagate = False


def _ensure_profile() -> None:
    from mediaserver.store import NotFound, StoreError

    if profile:
        try:
            store.authenticate(profile["token"])
            return
        except (NotFound, StoreError):
            pass
    created, token = store.create_profile(
        username=f"fuzz{os.urandom(6).hex()}", date_of_birth="1990-05-17"
    )
    # a moderator, so the moderation desk's handlers run past their 404
    store.set_moderator(created.username, True)
    # a report to decide on ({id} below is the profile's: a 404, still parsed)
    store.file_chat_report("spam", reported_address="f" * 64, reported_user_id=None,
                           reporter_address="e" * 64, reporter_user_id=None,
                           chat=[{"from": "reported", "text": "fuzz"}])
    profile.update(id=created.id, token=token)


async def _call(method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("latin-1", "replace"),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(0)
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def test_one_input(data: bytes) -> None:
    assert loop is not None
    _ensure_profile()
    table = routes.ROUTE_TABLE
    for tag, payload in records(data, limit=8):
        line = REQUEST_LINE.match(payload)
        if line is not None:
            method, template = line[1].decode(), line[2].decode()
            body = payload[line.end() :]
        else:
            method, template = table[tag % len(table)]
            body = payload
        path = routes.PREFIX + template.replace("{id}", profile["id"])
        headers = [(b"host", b"localhost")]
        auth = (tag >> 4) & 3
        if auth == 1:
            headers.append((b"authorization", b"Bearer " + profile["token"].encode()))
        elif auth == 2:
            headers.append((b"authorization", b"Bearer " + body[:40].replace(b"\n", b"")))
        elif auth == 3:
            headers.append((b"authorization", b"Basic eDp5"))
        headers.append((b"content-type", CONTENT_TYPES[(tag >> 6) & 3]))
        headers.append((b"content-length", str(len(body)).encode()))
        status = loop.run_until_complete(_call(method, path, headers, body))
        if status >= 500 and status != 503 or status == 0:
            raise AssertionError(f"{method} {template} answered {status}: {errors_logged[-1:]}")
        if errors_logged:
            raise AssertionError(f"{method} {template} logged: {errors_logged[-1]}")
        if method == "DELETE" and status == 204:
            profile.clear()
            _ensure_profile()


if __name__ == "__main__":
    main(test_one_input, load, instrument=["mediaserver", "starlette"])
