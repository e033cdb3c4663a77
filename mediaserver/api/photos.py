"""/profiles/{id}/photo, /photos/{id} and /profiles/{id}/shares: the profile picture
(cleaned of metadata on upload), its public URLs, and the cards shared with it."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediaserver.api.context import ApiContext
from mediaserver.api.errors import ApiError
from mediaserver.api.operations import Endpoints
from mediaserver.api.schemas import (
    AUTH_ERRORS,
    BEARER,
    ID_PARAM,
    NOT_FOUND,
    TIME,
    error,
    json_response,
    object_schema,
    rate_limited,
)
from mediaserver.api.wire import PREFIX, iso, read_bytes
from mediaserver.store.photos import (
    MAX_PHOTO_BYTES,
    MAX_PIXELS,
    MAX_SIDE,
    TYPES,
    PhotoError,
    clean_photo,
)
from mediaserver.store.shares import SHARE_TTL

_OWN = {"security": BEARER}
_JPEG: dict[str, Any] = {
    "description": "The photo (JPEG, at most 512x512, no metadata)",
    "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
}
_IMAGE_BODY = {
    "required": True,
    "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in TYPES},
}

ENDPOINTS = Endpoints(schemas={
    "PhotoStored": object_schema({
        "photo_url": {"type": "string"},
        "width": {"type": "integer", "maximum": MAX_SIDE},
        "height": {"type": "integer", "maximum": MAX_SIDE},
    }, ["photo_url", "width", "height"], closed=False),
    "Share": object_schema({
        "id": {"type": "string", "description": "The share's id, also its photo URL's"},
        "photo_url": {"type": "string", "description": f"{PREFIX}/photos/{{id}}"},
        "created_at": TIME,
        "expires_at": TIME,
    }, ["id", "photo_url", "created_at", "expires_at"], closed=False),
    "ShareList": object_schema({
        "shares": {"type": "array", "items": {"$ref": "#/components/schemas/Share"}},
    }, ["shares"], closed=False),
})


@ENDPOINTS.operation("PUT", "/profiles/{id}/photo", {
    "operationId": "put_photo",
    "summary": "Upload the profile picture (JPEG, PNG or WebP)",
    "description": "Decoded and re-encoded: every piece of metadata (EXIF, GPS, "
                   f"ICC, comments) is gone; scaled to at most {MAX_SIDE}x"
                   f"{MAX_SIDE}; stored encrypted.",
    **_OWN,
    "requestBody": _IMAGE_BODY,
    "responses": {
        "201": json_response("PhotoStored", "Stored"), **AUTH_ERRORS, **NOT_FOUND,
        "400": error("Bad Content-Length"),
        "413": error(f"Body larger than {MAX_PHOTO_BYTES} bytes (`too_large`)"),
        "415": error("Not image/jpeg, image/png or image/webp, or the body is "
                     "another type than declared"),
        "422": error("`bad_image` (truncated or corrupt) or `image_too_large` "
                     f"(more than {MAX_PIXELS:,} pixels: a decompression bomb)"),
        **rate_limited("photo_upload"),
    },
}, (ID_PARAM,))
async def put_photo(request: Request, ctx: ApiContext) -> Response:
    ctx.limit(request, "photo_upload")
    profile = await ctx.authenticate_owner(request)
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype not in TYPES:
        raise ApiError(
            415, "unsupported_media_type", "send image/jpeg, image/png or image/webp"
        )
    data = await read_bytes(request, MAX_PHOTO_BYTES)
    async with ctx.heavy:
        try:
            jpeg, width, height = await asyncio.get_running_loop().run_in_executor(
                ctx.decoders, clean_photo, data, ctype)
        except PhotoError as exc:
            raise ApiError(exc.status, exc.code, exc.message, "photo") from None
    await ctx.call(ctx.store.set_photo, profile.id, jpeg, width, height)
    return JSONResponse(
        {"photo_url": f"{PREFIX}/profiles/{profile.id}/photo", "width": width,
         "height": height},
        status_code=201,
    )


@ENDPOINTS.operation("GET", "/profiles/{id}/photo", {
    "operationId": "get_photo", "summary": "Your own photo", **_OWN,
    "responses": {"200": _JPEG, **AUTH_ERRORS, **NOT_FOUND},
}, (ID_PARAM,))
async def get_photo(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    jpeg = await ctx.call(ctx.store.get_photo, profile.id)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private"})


@ENDPOINTS.operation("DELETE", "/profiles/{id}/photo", {
    "operationId": "delete_photo", "summary": "Delete your photo", **_OWN,
    "responses": {"204": {"description": "Deleted"}, **AUTH_ERRORS, **NOT_FOUND},
}, (ID_PARAM,))
async def delete_photo(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    await ctx.call(ctx.store.delete_photo, profile.id)
    return Response(status_code=204)


@ENDPOINTS.operation("GET", "/photos/{id}", {
    "operationId": "public_photo",
    "summary": "A photo by the URL a listing or a shared card carried (no token)",
    "description": "A listing's URL works while its owner is discoverable; each "
                   "shared card carries its own URL, which ends after "
                   f"{int(SHARE_TTL // 3600)} hours, when its owner withdraws it, "
                   "or when they delete or replace the photo or stop being "
                   "discoverable.",
    "responses": {"200": _JPEG, "404": error("Unknown, replaced or withdrawn")},
}, (ID_PARAM,))
async def public_photo(request: Request, ctx: ApiContext) -> Response:
    # the unguessable id is the permission: it is only handed out in a listing
    # of a discoverable profile, or (its own id per share) in a card its owner
    # chose to share
    jpeg = await ctx.call(ctx.store.public_photo, request.path_params["id"])
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private"})


@ENDPOINTS.operation("GET", "/profiles/{id}/shares", {
    "operationId": "list_shares",
    "summary": "Your live profile-card shares (each with its own photo URL)",
    **_OWN,
    "responses": {"200": json_response("ShareList", "Live shares"), **AUTH_ERRORS,
                  **NOT_FOUND},
}, (ID_PARAM,))
async def list_shares(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    live = await ctx.call(ctx.store.photo_shares, profile.id)
    return JSONResponse({"shares": [
        {"id": share["id"], "photo_url": f"{PREFIX}/photos/{share['id']}",
         "created_at": iso(share["created_at"]), "expires_at": iso(share["expires_at"])}
        for share in live
    ]})


@ENDPOINTS.operation("DELETE", "/profiles/{id}/shares/{share_id}", {
    "operationId": "withdraw_share",
    "summary": "Withdraw a shared card: its photo URL stops working",
    **_OWN,
    "responses": {"204": {"description": "Withdrawn"}, **AUTH_ERRORS, **NOT_FOUND},
}, (ID_PARAM, {"name": "share_id", "in": "path", "required": True,
               "schema": {"type": "string"}}))
async def withdraw_share(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    await ctx.call(ctx.store.withdraw_photo_share, profile.id, request.path_params["share_id"])
    return Response(status_code=204)
