"""Logging for operators: text or JSON lines, and no IP addresses unless asked.

Events are logged as a short name plus fields, e.g.
``logger.info("pair_ended", extra={"reason": "next"})``; the JSON format puts the
fields beside ts, level, logger and event.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

# attributes every LogRecord has; the rest came in through `extra`
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_IPV6 = re.compile(
    r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){3,7}[0-9A-Fa-f]{1,4}(?![\w:])"
    r"|(?<![\w:])[0-9A-Fa-f:]*::[0-9A-Fa-f:.]*[0-9A-Fa-f](?![\w:])"
)


def mask_ips(text: str) -> str:
    return _IPV6.sub("[ip]", _IPV4.sub("[ip]", text))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in _fields(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:  # already formatted (and masked) by IpFilter
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = _fields(record)
        if extra:
            head, sep, tail = line.partition("\n")
            head += " " + " ".join(f"{k}={v}" for k, v in extra.items())
            line = head + sep + tail
        return line


_TRACEBACKS = logging.Formatter()


class IpFilter(logging.Filter):
    """Masks IP addresses in the message, its fields, and an exception's traceback
    (handler level)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_ips(record.getMessage())
        record.args = None
        if record.exc_info:
            # a traceback's messages and reprs carry addresses too: formatted here,
            # masked, and handed on as exc_text (which formatters print instead)
            record.exc_text = mask_ips(_TRACEBACKS.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = mask_ips(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_ips(record.stack_info)
        for key, value in _fields(record).items():
            if isinstance(value, str):
                setattr(record, key, mask_ips(value))
        return True


_handler: logging.Handler | None = None


def setup(level: str, fmt: str, log_ips: bool = False) -> None:
    """Configure the root logger (called again on SIGHUP for level and format)."""
    global _handler
    root = logging.getLogger()
    if _handler is None:
        _handler = logging.StreamHandler()
        root.addHandler(_handler)
    _handler.filters.clear()
    if not log_ips:
        _handler.addFilter(IpFilter())
    _handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.asgi", "uvicorn.access"):
        logging.getLogger(name).setLevel(level.upper())
