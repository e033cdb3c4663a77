"""/profiles/{id}/blocks: the handles you blocked (neither of you lists the other)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediaserver.api.context import ApiContext
from mediaserver.api.operations import Endpoints
from mediaserver.api.schemas import (
    AUTH_ERRORS,
    BEARER,
    BODY_ERRORS,
    HANDLE,
    ID_PARAM,
    NOT_FOUND,
    json_body,
    json_response,
    object_schema,
)
from mediaserver.api.wire import MAX_HANDLE, json_fields, read_json

_OWN = {"security": BEARER}
ENDPOINTS = Endpoints(schemas={
    "BlockCreate": object_schema({"handle": HANDLE}, ["handle"]),
    "Block": object_schema({"handle": HANDLE}, ["handle"], closed=False),
    "BlockList": object_schema({"blocked": {"type": "array", "items": HANDLE}}, ["blocked"],
                               False),
})


@ENDPOINTS.operation("POST", "/profiles/{id}/blocks", {
    "operationId": "block",
    "summary": "Block a profile by handle: neither lists the other",
    **_OWN,
    "requestBody": json_body("BlockCreate"),
    "responses": {"201": json_response("Block", "Blocked"), **AUTH_ERRORS, **NOT_FOUND,
                  **BODY_ERRORS},
}, (ID_PARAM,))
async def add_block(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    body = json_fields(await read_json(request), {"handle": MAX_HANDLE}, ("handle",))
    await ctx.call(ctx.store.block, profile.id, body["handle"])
    return JSONResponse({"handle": body["handle"]}, status_code=201)


@ENDPOINTS.operation("GET", "/profiles/{id}/blocks", {
    "operationId": "list_blocks", "summary": "Handles you blocked", **_OWN,
    "responses": {"200": json_response("BlockList", "Blocked handles"), **AUTH_ERRORS,
                  **NOT_FOUND},
}, (ID_PARAM,))
async def list_blocks(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    return JSONResponse({"blocked": await ctx.call(ctx.store.blocked_handles, profile.id)})


@ENDPOINTS.operation("DELETE", "/profiles/{id}/blocks/{handle}", {
    "operationId": "unblock", "summary": "Lift a block", **_OWN,
    "responses": {"204": {"description": "Lifted"}, **AUTH_ERRORS, **NOT_FOUND},
}, (ID_PARAM, {"name": "handle", "in": "path", "required": True,
               "schema": {"type": "string"}}))
async def remove_block(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    await ctx.call(ctx.store.unblock, profile.id, request.path_params["handle"])
    return Response(status_code=204)
