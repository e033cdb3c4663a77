"""The API's one error shape: {"error": {"code", "message", "field"}}, and its handlers."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

logger = logging.getLogger("mediaserver.api")

# HTTP status -> the machine-readable code used when nothing more specific applies
CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "too_many_attempts",
    500: "internal",
    503: "unavailable",
}


class ApiError(Exception):
    """Raised by a handler; becomes a JSON error response."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "field": field}},
        status_code=status,
        headers=headers,
    )


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no such route) and 405 (method not allowed), as JSON."""
    assert isinstance(exc, HTTPException)
    code = CODES.get(exc.status_code, "error")
    message = {
        404: "no such endpoint",
        405: f"method {request.method} not allowed here",
    }.get(exc.status_code, str(exc.detail))
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, code, message, None, headers)


def route_template(request: Request) -> str:
    """The matched route's template (/api/v1/profiles/{id}), never the path itself: a
    path carries ids, handles and photo capabilities, which stay out of the logs."""
    route = request.scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return "(no route)"
    return str(request.scope.get("root_path", "")) + template


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    """A real bug: logged with its traceback, answered with the same shape."""
    logger.error(
        "unhandled error on %s %s", request.method, route_template(request), exc_info=exc
    )
    return error_response(500, "internal", "internal server error")
