"""A blocking HTTP GET for tests that run the server as a process."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from email.message import Message


def http_get(url: str, timeout: float = 2) -> tuple[int, str]:
    """(status, body) of a GET; (0, "") when nothing answers (not up yet, or killed)."""
    status, _, body = http_request(url, timeout=timeout)
    return status, body


def http_request(
    url: str, headers: dict[str, str] | None = None, timeout: float = 2,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Message, str]:
    """(status, response headers, body) of a GET with these request headers; (0, {}, "")
    when nothing answers. context: for https://, the client context (trusted CAs)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()
    except OSError:
        return 0, Message(), ""
