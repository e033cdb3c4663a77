"""A blocking HTTP GET for tests that run the server as a process."""

from __future__ import annotations

import urllib.error
import urllib.request


def http_get(url: str, timeout: float = 2) -> tuple[int, str]:
    """(status, body) of a GET; (0, "") when nothing answers (not up yet, or killed)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""
