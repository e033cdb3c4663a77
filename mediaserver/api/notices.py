"""/notices: the caller's inbox (every notice also mailed to a verified address)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediaserver.api.context import ApiContext
from mediaserver.api.errors import ApiError
from mediaserver.api.operations import Endpoints
from mediaserver.api.schemas import (
    AUTH_ERRORS,
    BEARER,
    NOT_FOUND,
    NULLABLE_TIME,
    TIME,
    error,
    json_response,
    object_schema,
)
from mediaserver.api.wire import iso
from mediaserver.store.notices import MAX_NOTICE_PAGE, NOTICE_KINDS

DEFAULT_PAGE = 20
_OWN = {"security": BEARER}

ENDPOINTS = Endpoints(schemas={
    "Notice": object_schema({
        "id": {"type": "string"},
        "kind": {"type": "string", "enum": list(NOTICE_KINDS)},
        "subject": {"type": "string"},
        "body": {"type": "string"},
        "at": TIME,
        "read_at": NULLABLE_TIME,
    }, ["id", "kind", "subject", "body", "at", "read_at"], False),
    "NoticePage": object_schema({
        "notices": {"type": "array", "items": {"$ref": "#/components/schemas/Notice"}},
        "next": {"type": ["string", "null"],
                 "description": "Pass as `cursor` for the next (older) page; null: no more"},
    }, ["notices", "next"], False),
})


@ENDPOINTS.operation("GET", "/notices", {
    "operationId": "list_notices",
    "summary": "Your inbox, newest first, paged by cursor",
    **_OWN,
    "parameters": [
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_NOTICE_PAGE,
                    "default": DEFAULT_PAGE}},
        {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "The `next` of the previous page"},
    ],
    "responses": {"200": json_response("NoticePage", "A page of notices"), **AUTH_ERRORS,
                  "404": error("Unknown cursor"),
                  "422": error("Bad `limit` (`invalid`)")},
})
async def list_notices(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate(request)
    raw = request.query_params.get("limit", str(DEFAULT_PAGE))
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_NOTICE_PAGE):
        raise ApiError(422, "invalid", f"limit must be 1..{MAX_NOTICE_PAGE}", "limit")
    cursor = request.query_params.get("cursor") or None
    notices, following = await ctx.call(ctx.store.list_notices, profile.id, int(raw), cursor)
    return JSONResponse({
        "notices": [{"id": n.id, "kind": n.kind, "subject": n.subject, "body": n.body,
                     "at": iso(n.at), "read_at": iso(n.read_at)} for n in notices],
        "next": following,
    }, headers={"Cache-Control": "no-store"})


@ENDPOINTS.operation("POST", "/notices/{notice_id}/read", {
    "operationId": "mark_notice_read",
    "summary": "Mark one of your notices read",
    **_OWN,
    "responses": {"204": {"description": "Read"}, **AUTH_ERRORS, **NOT_FOUND},
}, ({"name": "notice_id", "in": "path", "required": True, "schema": {"type": "string"}},))
async def mark_read(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate(request)
    await ctx.call(ctx.store.mark_notice_read, profile.id, request.path_params["notice_id"])
    return Response(status_code=204)
