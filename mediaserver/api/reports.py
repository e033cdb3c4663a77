"""/reports: report a profile by handle (an `underage` report goes to an operator)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediaserver.api.context import ApiContext
from mediaserver.api.errors import ApiError
from mediaserver.api.operations import Endpoints
from mediaserver.api.schemas import (
    AUTH_ERRORS,
    BEARER,
    BODY_ERRORS,
    HANDLE,
    error,
    json_body,
    json_response,
    object_schema,
    rate_limited,
)
from mediaserver.api.wire import MAX_HANDLE, json_fields, read_json
from mediaserver.store import REPORT_REASONS

MAX_REASON = 32
"""Bound on the reason as sent (the store's reasons are shorter)."""

ENDPOINTS = Endpoints(schemas={
    "ReportCreate": object_schema({
        "handle": HANDLE,
        "reason": {"type": "string", "enum": list(REPORT_REASONS)},
    }, ["handle", "reason"]),
    "Report": object_schema({
        "id": {"type": "string", "description": "What an operator confirms"},
        "handle": HANDLE,
        "reason": {"type": "string"},
    }, ["id", "handle", "reason"], closed=False),
})


@ENDPOINTS.operation("POST", "/reports", {
    "operationId": "report_account",
    "summary": "Report a profile by handle (`underage` goes to an operator)",
    "security": BEARER,
    "requestBody": json_body("ReportCreate"),
    "responses": {"201": json_response("Report", "Recorded"), **AUTH_ERRORS,
                  "404": error("No such handle"), **BODY_ERRORS,
                  **rate_limited("report")},
})
async def report_account(request: Request, ctx: ApiContext) -> Response:
    ctx.limit(request, "report")
    profile = await ctx.authenticate(request)
    body = json_fields(
        await read_json(request), {"handle": MAX_HANDLE, "reason": MAX_REASON},
        ("handle", "reason"),
    )
    if body["reason"] not in REPORT_REASONS:
        raise ApiError(
            422, "invalid", f"reason must be one of {', '.join(REPORT_REASONS)}",
            "reason",
        )
    report_id = await ctx.call(
        ctx.store.report_account, profile.id, body["handle"], body["reason"]
    )
    return JSONResponse(
        {"id": report_id, "handle": body["handle"], "reason": body["reason"]},
        status_code=201,
    )
