"""Privacy controls the owner lifts, and guardians' reports: DELETE
/profiles/{id}/restriction, /profiles/{id}/objections/{purpose} and
/profiles/{id}/opt-out undo what a restriction, an objection or an opt-out did (store/controls.py says what each stops);
POST /reports/underage lets a parent or guardian without an account report an
under-age profile."""

from __future__ import annotations

import asyncio
import logging

from starlette.background import BackgroundTask
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
    ID_PARAM,
    NOT_FOUND,
    error,
    json_body,
    json_response,
    object_schema,
    rate_limited,
)
from mediaserver.api.wire import MAX_HANDLE, json_fields, read_json
from mediaserver.store import OBJECTION_PURPOSES, Invalid, StoreError
from mediaserver.store.controls_store import check_guardian_report
from mediaserver.store.limits import MAX_EMAIL, MAX_GUARDIAN_DETAILS

logger = logging.getLogger("mediaserver.api")

_OWN = {"security": BEARER}
ENDPOINTS = Endpoints(schemas={
    "GuardianReport": object_schema({
        "handle": HANDLE,
        "contact_email": {"type": "string", "format": "email", "maxLength": MAX_EMAIL,
                          "description": "How an operator reaches you (sealed at rest)"},
        "details": {"type": "string", "minLength": 1, "maxLength": MAX_GUARDIAN_DETAILS,
                    "description": "Why you believe the profile is under age (sealed)"},
    }, ["handle", "contact_email", "details"]),
    "GuardianReportAccepted": object_schema({
        "status": {"type": "string", "enum": ["received"]},
    }, ["status"], closed=False),
})


@ENDPOINTS.operation("DELETE", "/profiles/{id}/restriction", {
    "operationId": "lift_restriction",
    "summary": "Lift the restriction of processing a restriction request put in place",
    **_OWN,
    "responses": {"204": {"description": "Lifted"}, **AUTH_ERRORS,
                  "404": error("Not yours, or no restriction stands")},
}, (ID_PARAM,))
async def lift_restriction(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    await ctx.call(ctx.store.lift_restriction, profile.id)
    return Response(status_code=204)


@ENDPOINTS.operation("DELETE", "/profiles/{id}/objections/{purpose}", {
    "operationId": "lift_objection",
    "summary": "Lift an objection: that processing may resume",
    "description": "Chat history is kept again only once consent is given again.",
    **_OWN,
    "responses": {"204": {"description": "Lifted"}, **AUTH_ERRORS, **NOT_FOUND},
}, (ID_PARAM, {"name": "purpose", "in": "path", "required": True,
               "schema": {"type": "string", "enum": list(OBJECTION_PURPOSES)}}))
async def lift_objection(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    await ctx.call(ctx.store.lift_objection, profile.id, request.path_params["purpose"])
    return Response(status_code=204)


@ENDPOINTS.operation("DELETE", "/profiles/{id}/opt-out", {
    "operationId": "lift_opt_out",
    "summary": "Undo an opt-out of sale and sharing (a `Sec-GPC: 1` request opts out again)",
    **_OWN,
    "responses": {"204": {"description": "Lifted"}, **AUTH_ERRORS,
                  "404": error("Not yours, or no opt-out stands")},
}, (ID_PARAM,))
async def lift_opt_out(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    await ctx.call(ctx.store.lift_opt_out, profile.id)
    return Response(status_code=204)


@ENDPOINTS.operation("POST", "/reports/underage", {
    "operationId": "report_underage_as_guardian",
    "summary": "A parent or guardian (no account needed) reports an under-age profile",
    "description": "Goes to the operators' queue. The answer is the same 202 whether "
                   "the handle is an account's or not.",
    "requestBody": json_body("GuardianReport"),
    "responses": {"202": json_response("GuardianReportAccepted", "Received"),
                  **BODY_ERRORS, **rate_limited("guardian_report")},
})
async def report_underage(request: Request, ctx: ApiContext) -> Response:
    ctx.limit(request, "guardian_report")
    body = json_fields(
        await read_json(request),
        {"handle": MAX_HANDLE, "contact_email": MAX_EMAIL, "details": MAX_GUARDIAN_DETAILS},
        ("handle", "contact_email", "details"),
    )
    try:
        check_guardian_report(body["handle"], body["contact_email"], body["details"])
    except Invalid as exc:
        raise ApiError(422, "invalid", str(exc), exc.field) from None
    # filed after the answer is sent: whether the handle is an account's (a write)
    # or not (none) shows neither in the answer nor in its timing
    return JSONResponse({"status": "received"}, status_code=202, background=BackgroundTask(
        _file_guardian_report, ctx, body["handle"], body["contact_email"], body["details"]))


async def _file_guardian_report(ctx: ApiContext, handle: str, email: str, details: str) -> None:
    try:
        await asyncio.to_thread(ctx.store.report_underage_by_guardian, handle, email, details)
    except StoreError:
        logger.exception("filing a guardian's report failed")
