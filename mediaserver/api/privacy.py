"""/privacy-requests: access, correction (with the fields to correct), deletion,
opt-out, consent withdrawal, restriction and objection (to a purpose), completed in
the background (processing.Processor)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediaserver.api.context import ApiContext
from mediaserver.api.errors import ApiError
from mediaserver.api.operations import Endpoints
from mediaserver.api.profiles import IDENTIFYING, profile_fields
from mediaserver.api.schemas import (
    AUTH_ERRORS,
    BEARER,
    BODY_ERRORS,
    CURRENT_PASSWORD,
    GPC_PARAM,
    ID_PARAM,
    NOT_FOUND,
    NULLABLE_TIME,
    TIME,
    json_body,
    json_response,
    rate_limited,
)
from mediaserver.api.wire import PREFIX, field_name, iso, read_json
from mediaserver.store import OBJECTION_PURPOSES, REQUEST_TYPES, PrivacyRequest


def request_json(r: PrivacyRequest, full: bool) -> dict[str, Any]:
    """A privacy request; `full`: with its outcome (and export, once there is one)."""
    out: dict[str, Any] = {
        "id": r.id,
        "type": r.type,
        "status": r.status,
        "received_at": iso(r.received_at),
        "due_at": iso(r.due_at),
        "purpose": r.purpose,
        "on_hold": r.on_hold,
    }
    if full:
        out["completed_at"] = iso(r.completed_at)
        out["reason"] = r.reason
        if r.export is not None:
            out["export"] = r.export
    return out


_REQUEST_PROPS: dict[str, Any] = {
    "id": {"type": "string"},
    "type": {"type": "string", "enum": list(REQUEST_TYPES)},
    "status": {
        "type": "string",
        "enum": ["received", "verified", "completed", "rejected"],
    },
    "received_at": TIME,
    "due_at": {**TIME, "description": "received_at + 45 days"},
    "purpose": {"type": ["string", "null"], "enum": [*OBJECTION_PURPOSES, None],
                "description": "An objection's purpose"},
    "on_hold": {"type": "boolean",
                "description": "A deletion waiting for a legal hold's release (it stays open)"},
}
ENDPOINTS = Endpoints(schemas={
    "PrivacyRequestCreate": {
        "type": "object",
        "required": ["type"],
        "additionalProperties": False,
        "properties": {
            "type": _REQUEST_PROPS["type"],
            "fields": {
                "$ref": "#/components/schemas/ProfileUpdate",
                "description": "correction only: the fields to correct, as PATCH takes "
                               "them (checked now, applied when the request completes)",
            },
            "purpose": {"type": "string", "enum": list(OBJECTION_PURPOSES),
                        "description": "objection only (required): the processing to stop"},
            "current_password": CURRENT_PASSWORD,
        },
    },
    "PrivacyRequestAccepted": {
        "type": "object",
        "required": list(_REQUEST_PROPS),
        "properties": _REQUEST_PROPS,
    },
    "PrivacyRequest": {
        "type": "object",
        "required": [*_REQUEST_PROPS, "completed_at", "reason"],
        "properties": {
            **_REQUEST_PROPS,
            "completed_at": NULLABLE_TIME,
            "reason": {"type": ["string", "null"], "description": "why it was rejected"},
            "export": {
                "type": "object",
                "description": "A completed access request: everything held about the user",
            },
        },
    },
    "PrivacyRequestList": {
        "type": "object",
        "required": ["requests"],
        "properties": {
            "requests": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/PrivacyRequest"},
            }
        },
    },
})


@ENDPOINTS.operation("POST", "/privacy-requests", {
    "operationId": "submit_privacy_request",
    "summary": "Ask for access, correction, deletion, opt-out, consent withdrawal, "
               "restriction or objection",
    "description": "Verified by the token; completes shortly after (poll the GET). A "
                   "restriction keeps the data stored only (not listed, matched, shared "
                   "or kept from chat) until DELETE /profiles/{id}/restriction; an "
                   "objection stops one purpose until DELETE "
                   "/profiles/{id}/objections/{purpose}. A deletion under a legal hold "
                   "stays open (`on_hold`) until the hold is released.",
    "security": BEARER,
    "requestBody": json_body("PrivacyRequestCreate"),
    "responses": {
        "202": json_response("PrivacyRequestAccepted", "Accepted"),
        **AUTH_ERRORS,
        **BODY_ERRORS,
        **rate_limited("privacy_request"),
    },
}, (GPC_PARAM,))
async def submit_request(request: Request, ctx: ApiContext) -> Response:
    ctx.limit(request, "privacy_request")
    profile = await ctx.authenticate(request)
    body = await read_json(request)
    for key in body:
        if key not in ("type", "fields", "purpose", "current_password"):
            raise ApiError(422, "invalid", f"unknown field {key!r}", field_name(key))
    if "type" not in body:
        raise ApiError(422, "invalid", "type is required", "type")
    kind = body["type"]
    if not isinstance(kind, str) or kind not in REQUEST_TYPES:
        raise ApiError(
            422, "invalid", f"type must be one of {', '.join(REQUEST_TYPES)}", "type"
        )
    extra: dict[str, Any] = {}
    if "fields" in body:
        if kind != "correction" or not isinstance(body["fields"], dict) or not body["fields"]:
            raise ApiError(422, "invalid", "fields: a correction's non-empty object of "
                           "profile fields", "fields")
        extra["fields"] = profile_fields(body["fields"], ())
        if IDENTIFYING.intersection(extra["fields"]):  # as PATCH asks
            await ctx.recent_auth(profile, request, body.get("current_password"))
    if "purpose" in body or kind == "objection":
        purpose = body.get("purpose")
        if kind != "objection" or not isinstance(purpose, str) \
                or purpose not in OBJECTION_PURPOSES:
            raise ApiError(422, "invalid", "purpose: an objection's, one of "
                           + ", ".join(OBJECTION_PURPOSES), "purpose")
        extra["purpose"] = purpose
    req: PrivacyRequest = await ctx.call(ctx.store.submit_request, profile.id, kind, **extra)
    ctx.processor.kick()  # completes "shortly after"; the periodic task is the backstop
    return JSONResponse(
        request_json(req, full=False),
        status_code=202,
        headers={"Location": f"{PREFIX}/privacy-requests/{req.id}"},
    )


@ENDPOINTS.operation("GET", "/privacy-requests", {
    "operationId": "list_privacy_requests",
    "summary": "Your own privacy requests",
    "description": "Without `export`: GET the request itself for it.",
    "security": BEARER,
    "responses": {
        "200": json_response("PrivacyRequestList", "The requests"),
        **AUTH_ERRORS,
    },
}, (GPC_PARAM,))
async def list_requests(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate(request)
    reqs: list[PrivacyRequest] = await ctx.call(ctx.store.list_requests, profile.id)
    return JSONResponse({"requests": [request_json(r, full=True) for r in reqs]})


@ENDPOINTS.operation("GET", "/privacy-requests/{id}", {
    "operationId": "get_privacy_request",
    "summary": "One of your privacy requests; `export` once an access request completes",
    "security": BEARER,
    "responses": {
        "200": json_response("PrivacyRequest", "The request"),
        **AUTH_ERRORS,
        **NOT_FOUND,
    },
}, (ID_PARAM, GPC_PARAM))
async def get_request(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate(request)
    req: PrivacyRequest = await ctx.call(
        ctx.store.get_request, profile.id, request.path_params["id"]
    )
    return JSONResponse(request_json(req, full=True))
