"""/connections and /conversations: ask a handle to connect, accept, decline or remove;
the conversations with your connections, your copy of their history (kept only with
keep_history on, purged 6 months after the last message unless saved) and its flags.
Messages themselves travel over the signalling WebSocket (`direct`, docs/protocol.md).

No enumeration: an unknown handle, one not discoverable, and one who blocked you are
the same 404; so are someone else's connection or conversation and a missing one.
"""

from __future__ import annotations

from typing import Any

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
    NOT_FOUND,
    TIME,
    error,
    json_body,
    json_response,
    object_schema,
    rate_limited,
)
from mediaserver.api.wire import MAX_HANDLE, field_name, iso, json_fields, read_json
from mediaserver.store.conversations import PAGE_DEFAULT, PAGE_MAX

_OWN = {"security": BEARER}
_PHOTO = {"type": ["string", "null"], "description": "The listing photo's URL"}
_NAME = {"type": ["string", "null"], "description": "Display name: accepted connections only"}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_ENTRY = {"type": "string", "enum": ["me", "them", "system"]}

ENDPOINTS = Endpoints(schemas={
    "ConnectionCreate": object_schema({"handle": HANDLE}, ["handle"]),
    "Connection": object_schema({
        "id": {"type": "string"},
        "handle": HANDLE,
        "photo_url": _PHOTO,
        "name": _NAME,
        "status": {"type": "string", "enum": ["pending", "accepted"]},
        "direction": {"type": "string", "enum": ["in", "out"],
                      "description": "in: asked by them; out: asked by you"},
        "conversation_id": {"type": ["string", "null"], "description": "Once accepted"},
    }, ["id", "handle", "photo_url", "name", "status", "direction", "conversation_id"],
        closed=False),
    "ConnectionList": object_schema({"connections": {
        "type": "array", "items": {"$ref": "#/components/schemas/Connection"}}},
        ["connections"], closed=False),
    "Conversation": object_schema({
        "id": {"type": "string"},
        "peer": object_schema({
            "handle": {"type": ["string", "null"]}, "photo_url": _PHOTO, "name": _NAME,
            "deleted": {"type": "boolean", "description": "A deleted user: all else null"},
        }, ["handle", "photo_url", "name", "deleted"], closed=False),
        "connected": {"type": "boolean", "description": "Messages and calls possible"},
        "last_message_at": {**TIME, "type": ["string", "null"]},
        "unread": {"type": "integer", "description": "In your kept copy"},
        "keep_history": {"type": "boolean"},
        "saved": {"type": "boolean", "description": "Exempt from the 6-month purge"},
    }, ["id", "peer", "connected", "last_message_at", "unread", "keep_history", "saved"],
        closed=False),
    "ConversationList": object_schema({"conversations": {
        "type": "array", "items": {"$ref": "#/components/schemas/Conversation"}}},
        ["conversations"], closed=False),
    "ConversationUpdate": object_schema({
        "keep_history": {"type": "boolean", "description": "Off deletes your copy"},
        "saved": {"type": "boolean"},
    }, []),
    "ConversationEntry": object_schema({
        "id": {"type": "string"}, "at": TIME, "from": _ENTRY,
        "kind": {"type": "string", "enum": ["message", "missed_call"]},
        "text": {"type": "string"},
        "caller": {**HANDLE, "description": "missed_call: who called"},
    }, ["id", "at", "from", "kind"], closed=False),
    "ConversationPage": object_schema({
        "messages": {"type": "array",
                     "items": {"$ref": "#/components/schemas/ConversationEntry"}},
        "next_cursor": {"type": ["string", "null"],
                        "description": "Pass as ?before= for older ones; null: the oldest"},
    }, ["messages", "next_cursor"], closed=False),
})


def _conversation(c: dict[str, Any]) -> dict[str, Any]:
    return {**c, "last_message_at": iso(c["last_message_at"])}


@ENDPOINTS.operation("POST", "/connections", {
    "operationId": "request_connection",
    "summary": "Ask a discoverable profile to connect, by handle",
    "description": "Asking again returns the request or connection as it is; asking "
                   "someone who asked you accepts theirs. An unknown handle, one not "
                   "discoverable and one who blocked you are the same 404.",
    **_OWN,
    "requestBody": json_body("ConnectionCreate"),
    "responses": {"201": json_response("Connection", "Asked (or already connected)"),
                  **AUTH_ERRORS, **NOT_FOUND, **BODY_ERRORS,
                  **rate_limited("connection_request")},
})
async def request_connection(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate(request)
    body = json_fields(await read_json(request), {"handle": MAX_HANDLE}, ("handle",))
    ctx.limit(request, "connection_request")
    made = await ctx.call(ctx.store.request_connection, profile.id, body["handle"])
    return JSONResponse(made, status_code=201)


@ENDPOINTS.operation("GET", "/connections", {
    "operationId": "list_connections",
    "summary": "Your connections and pending requests, in and out", **_OWN,
    "responses": {"200": json_response("ConnectionList", "Connections"), **AUTH_ERRORS},
})
async def list_connections(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate(request)
    found = await ctx.call(ctx.store.connections, profile.id)
    return JSONResponse({"connections": found})


@ENDPOINTS.operation("POST", "/connections/{id}/accept", {
    "operationId": "accept_connection", "summary": "Accept a request made to you", **_OWN,
    "responses": {"200": json_response("Connection", "Accepted"), **AUTH_ERRORS,
                  **NOT_FOUND},
}, (_ID,))
async def accept_connection(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate(request)
    done = await ctx.call(ctx.store.accept_connection, profile.id, request.path_params["id"])
    return JSONResponse(done)


@ENDPOINTS.operation("POST", "/connections/{id}/decline", {
    "operationId": "decline_connection",
    "summary": "Decline a request made to you (the asker only sees it gone)", **_OWN,
    "responses": {"204": {"description": "Declined"}, **AUTH_ERRORS, **NOT_FOUND},
}, (_ID,))
async def decline_connection(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate(request)
    await ctx.call(ctx.store.decline_connection, profile.id, request.path_params["id"])
    return Response(status_code=204)


@ENDPOINTS.operation("DELETE", "/connections/{id}", {
    "operationId": "remove_connection",
    "summary": "Remove a connection or a request (either side)", **_OWN,
    "responses": {"204": {"description": "Removed"}, **AUTH_ERRORS, **NOT_FOUND},
}, (_ID,))
async def remove_connection(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate(request)
    await ctx.call(ctx.store.remove_connection, profile.id, request.path_params["id"])
    return Response(status_code=204)


@ENDPOINTS.operation("GET", "/conversations", {
    "operationId": "list_conversations",
    "summary": "Your conversations with connections, latest first", **_OWN,
    "responses": {"200": json_response("ConversationList", "Conversations"), **AUTH_ERRORS},
})
async def list_conversations(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate(request)
    found = await ctx.call(ctx.store.conversations, profile.id)
    return JSONResponse({"conversations": [_conversation(c) for c in found]})


@ENDPOINTS.operation("PATCH", "/conversations/{id}", {
    "operationId": "update_conversation",
    "summary": "Your keep_history and saved flags (each side has its own)", **_OWN,
    "requestBody": json_body("ConversationUpdate"),
    "responses": {"200": json_response("Conversation", "Updated"), **AUTH_ERRORS,
                  **NOT_FOUND, **BODY_ERRORS},
}, (_ID,))
async def update_conversation(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate(request)
    body = await read_json(request)
    for key, value in body.items():
        if key not in ("keep_history", "saved"):
            raise ApiError(422, "invalid", f"unknown field {key!r}", field_name(key))
        if not isinstance(value, bool):
            raise ApiError(422, "invalid", f"{key} must be true or false", key)
    updated = await ctx.call(ctx.store.update_conversation, profile.id,
                             request.path_params["id"], body.get("keep_history"),
                             body.get("saved"))
    return JSONResponse(_conversation(updated))


@ENDPOINTS.operation("GET", "/conversations/{id}/messages", {
    "operationId": "conversation_messages",
    "summary": "Your copy of the history, newest first, by cursor", **_OWN,
    "parameters": [
        {"name": "before", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "next_cursor of the previous page"},
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": PAGE_MAX,
                    "default": PAGE_DEFAULT}},
    ],
    "responses": {"200": json_response("ConversationPage", "A page"), **AUTH_ERRORS,
                  **NOT_FOUND,
                  "422": error("Unknown parameter, bad cursor or limit (`invalid`)")},
}, (_ID,))
async def conversation_messages(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate(request)
    params = request.query_params
    for key in params:
        if key not in ("before", "limit"):
            raise ApiError(422, "invalid", f"unknown parameter {key!r}", field_name(key))
    limit_text = params.get("limit", str(PAGE_DEFAULT))
    if not limit_text.isascii() or not limit_text.isdigit() or len(limit_text) > 4:
        raise ApiError(422, "invalid", f"limit must be 1-{PAGE_MAX}", "limit")
    page, cursor = await ctx.call(ctx.store.conversation_messages, profile.id,
                                  request.path_params["id"], params.get("before"),
                                  int(limit_text))
    return JSONResponse({"messages": [{**m, "at": iso(m["at"])} for m in page],
                         "next_cursor": cursor})


@ENDPOINTS.operation("DELETE", "/conversations/{id}/messages", {
    "operationId": "delete_conversation_history",
    "summary": "Delete your copy of the history (the other side keeps its own)", **_OWN,
    "responses": {"204": {"description": "Deleted"}, **AUTH_ERRORS, **NOT_FOUND},
}, (_ID,))
async def delete_conversation_history(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate(request)
    await ctx.call(ctx.store.delete_conversation_history, profile.id,
                   request.path_params["id"])
    return Response(status_code=204)
