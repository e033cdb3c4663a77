"""GET /profiles: browse discoverable profiles' cards, most shared interests first."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediaserver.api.context import ApiContext
from mediaserver.api.errors import ApiError
from mediaserver.api.operations import Endpoints
from mediaserver.api.schemas import (
    AUTH_ERRORS,
    BEARER,
    HANDLE,
    error,
    json_response,
    object_schema,
)
from mediaserver.api.wire import PREFIX, field_name, text_field

PARAMETERS = ("interest", "language", "cursor")
MAX_PARAMETER = 256
"""Bound on a query parameter's value (the store checks its meaning)."""

ENDPOINTS = Endpoints(schemas={
    "Card": object_schema({
        "handle": HANDLE,
        "photo_url": {"type": ["string", "null"],
                      "description": f"{PREFIX}/photos/{{id}}: no token needed"},
        "bio": {"type": "string"},
        "interests": {"type": "array", "items": {"type": "string"}},
        "age_band": {"type": "string", "examples": ["18-24", "25-34", "65+"],
                     "description": "Never the date of birth"},
        "links": {"type": "array", "items": {"type": "string"},
                  "description": "Only when the owner shows them"},
        "location": {"type": "string", "description": "Only when the owner shows it"},
    }, ["handle", "photo_url", "bio", "interests", "age_band"], closed=False),
    "CardPage": object_schema({
        "profiles": {"type": "array", "items": {"$ref": "#/components/schemas/Card"}},
        "next_cursor": {"type": ["string", "null"],
                        "description": "Pass as ?cursor= for the next page; null: last"},
    }, ["profiles", "next_cursor"], closed=False),
})


@ENDPOINTS.operation("GET", "/profiles", {
    "operationId": "browse_profiles",
    "summary": "Browse discoverable profiles, most shared interests first",
    "description": "Only profiles whose owners set discoverable; never anyone who blocked "
                   "you or whom you blocked; never a date of birth (an age band).",
    "security": BEARER,
    "parameters": [
        {"name": "interest", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "Only profiles with this interest"},
        {"name": "language", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "next_cursor of the previous page"},
    ],
    "responses": {
        "200": json_response("CardPage", "A page of cards"),
        **AUTH_ERRORS,
        "422": error("Unknown parameter or bad cursor (`invalid`)"),
    },
})
async def browse(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate(request)
    params = request.query_params
    for key in params:
        if key not in PARAMETERS:
            raise ApiError(422, "invalid", f"unknown parameter {key!r}", field_name(key))
    args = {k: text_field(params[k], k, MAX_PARAMETER, allow_empty=False) for k in params}
    cards, cursor = await ctx.call(
        ctx.store.browse, profile.id, args.get("interest"), args.get("language"),
        args.get("cursor"),
    )
    return JSONResponse({"profiles": cards, "next_cursor": cursor})
