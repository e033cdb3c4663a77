"""/sessions and the account's credentials: sign in and out, set the password, and
turn TOTP two-factor on and off."""

from __future__ import annotations

import asyncio
import base64
import io

import segno
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediaserver.api.account import device_label
from mediaserver.api.context import ApiContext, bearer
from mediaserver.api.operations import Endpoints
from mediaserver.api.schemas import (
    AUTH_ERRORS,
    BEARER,
    BODY_ERRORS,
    CURRENT_PASSWORD,
    ID_PARAM,
    NOT_FOUND,
    TIME,
    error,
    json_body,
    json_response,
    object_schema,
)
from mediaserver.api.wire import MAX_HANDLE, has_body, iso, json_fields, read_json
from mediaserver.client_address import address_key, connection_ip
from mediaserver.store import PASSWORD_MAX, PASSWORD_MIN
from mediaserver.store.auth import RECOVERY_CODES
from mediaserver.store.throttle import (
    MAX_DEVICE_TOKEN,
    THROTTLE_FREE_ACCOUNT,
    THROTTLE_FREE_ADDRESS,
)

MAX_CODE = 64
"""Bound on a TOTP or recovery code as sent."""

_CODE: dict[str, object] = {
    "type": "string", "maxLength": MAX_CODE,
    "description": "A 6-digit TOTP code, or a recovery code (xxxx-xxxx-xxxx-xxxx)",
}
_THROTTLED = {"429": error(
    f"Too many failed sign-ins (after {THROTTLE_FREE_ACCOUNT} per account from unknown "
    f"clients, per known device, or {THROTTLE_FREE_ADDRESS} per address; the wait "
    "doubles; a valid otp passes the account's): `too_many_attempts`, Retry-After header")}
_OWN = {"security": BEARER}

ENDPOINTS = Endpoints(schemas={
    "SignIn": object_schema({
        "username": {"type": "string"},
        "password": {"type": "string"},
        "otp": {**_CODE, "description": "Required when two-factor is on: "
                + str(_CODE["description"])},
        "device": {"type": "string", "maxLength": MAX_DEVICE_TOKEN,
                   "description": "The `device` an earlier sign-in of this account "
                                  "returned: the account's lockout does not hold back a "
                                  "known device (its own limit does)"},
    }, ["username", "password"]),
    "Session": object_schema({
        "token": {"type": "string", "description": "Bearer token; stored hashed"},
        "expires_at": {**TIME, "description": "now + --session-ttl"},
        "id": {"type": "string", "description": "The profile's id"},
        "device": {"type": "string",
                   "description": "Keep it and send it with later sign-ins of this account"},
    }, ["token", "expires_at", "id", "device"], closed=False),
    "PasswordSet": object_schema({
        "password": {"type": "string", "minLength": PASSWORD_MIN, "maxLength": PASSWORD_MAX},
        "current_password": {"type": "string",
                             "description": "Required when a password is already set"},
    }, ["password"]),
    "TotpEnrolment": object_schema({
        "secret": {"type": "string", "description": "Base32 TOTP secret (RFC 6238)"},
        "otpauth_uri": {"type": "string", "description": "otpauth://totp/... for apps"},
        "qr_png_base64": {"type": "string", "description": "The URI as a QR code PNG"},
    }, ["secret", "otpauth_uri", "qr_png_base64"], closed=False),
    "TotpCode": object_schema({"code": _CODE}, ["code"]),
    "TotpDisable": object_schema({"code": _CODE, "current_password": CURRENT_PASSWORD},
                                 ["code"]),
    "Reauth": object_schema({"current_password": CURRENT_PASSWORD}, []),
    "TotpEnabled": object_schema({
        "two_factor": {"type": "boolean"},
        "recovery_codes": {"type": "array", "items": {"type": "string"},
                           "minItems": RECOVERY_CODES, "maxItems": RECOVERY_CODES,
                           "description": "One-time codes, shown once, stored hashed"},
    }, ["two_factor", "recovery_codes"], closed=False),
    "TwoFactorState": object_schema({"two_factor": {"type": "boolean"}}, ["two_factor"],
                                    False),
})


@ENDPOINTS.operation("POST", "/sessions", {
    "operationId": "sign_in",
    "summary": "Sign in with username and password (+ otp when two-factor is on)",
    "description": "The same 401 `invalid_credentials`, after the same Argon2 work, "
                   "for an unknown username and a wrong password.",
    "requestBody": json_body("SignIn"),
    "responses": {
        "201": json_response("Session", "Signed in"),
        **BODY_ERRORS,
        "401": error("`invalid_credentials`, `otp_required` or `invalid_otp`"),
        **_THROTTLED,
    },
})
async def sign_in(request: Request, ctx: ApiContext) -> Response:
    body = json_fields(
        await read_json(request),
        {"username": MAX_HANDLE, "password": PASSWORD_MAX, "otp": MAX_CODE,
         "device": MAX_DEVICE_TOKEN},
        ("username", "password"),
    )
    address = address_key(connection_ip(request))
    token, expires_at, profile = await ctx.call_heavy(
        ctx.store.sign_in, body["username"], body["password"], body.get("otp"), address,
        body.get("device"),
    )
    # the sessions list's label, and the owner's new sign-in notice (no address)
    await ctx.call(ctx.store.signed_in, token, device_label(request.headers.get("user-agent", "")))
    return JSONResponse(
        {"token": token, "expires_at": iso(expires_at), "id": profile.id,
         "device": ctx.store.device_token(profile.id)},
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


@ENDPOINTS.operation("DELETE", "/sessions/current", {
    "operationId": "sign_out",
    "summary": "Sign out: this token stops working",
    **_OWN,
    "responses": {
        "204": {"description": "Signed out"}, **AUTH_ERRORS,
        "409": error("The creation token of an account without a password"),
    },
})
async def sign_out(request: Request, ctx: ApiContext) -> Response:
    await ctx.authenticate(request)
    await ctx.call(ctx.store.sign_out, bearer(request))
    return Response(status_code=204)


@ENDPOINTS.operation("PUT", "/profiles/{id}/password", {
    "operationId": "set_password",
    "summary": "Set or change the password (other sessions end)",
    **_OWN,
    "requestBody": json_body("PasswordSet"),
    "responses": {"204": {"description": "Set"}, **AUTH_ERRORS, **NOT_FOUND,
                  **BODY_ERRORS},
}, (ID_PARAM,))
async def set_password(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    body = json_fields(
        await read_json(request),
        {"password": PASSWORD_MAX, "current_password": PASSWORD_MAX},
        ("password",),
    )
    await ctx.call_heavy(
        ctx.store.set_password, profile.id, body["password"], body.get("current_password"),
        bearer(request),
    )
    return Response(status_code=204)


@ENDPOINTS.operation("POST", "/profiles/{id}/totp", {
    "operationId": "totp_enrol",
    "summary": "Start two-factor: a new secret, otpauth:// URI and QR code",
    "description": "Two-factor turns on only with the first valid code (confirm). "
                   "The body is optional: `current_password`, needed unless the "
                   "token is a fresh sign-in (see Reauth).",
    **_OWN,
    "requestBody": {**json_body("Reauth"), "required": False},
    "responses": {"201": json_response("TotpEnrolment", "Enrolment started"), **AUTH_ERRORS,
                  **NOT_FOUND, **BODY_ERRORS, **_THROTTLED,
                  "409": error("Two-factor is already on")},
}, (ID_PARAM,))
async def totp_enrol(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    body = await read_json(request) if has_body(request) else {}
    fields = json_fields(body, {"current_password": PASSWORD_MAX}, ())
    await ctx.recent_auth(profile, request, fields.get("current_password"))
    secret, uri = await ctx.call(ctx.store.totp_enrol, profile.id)
    png = await asyncio.to_thread(qr_png, uri)
    return JSONResponse(
        {"secret": secret, "otpauth_uri": uri, "qr_png_base64": png},
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


@ENDPOINTS.operation("POST", "/profiles/{id}/totp/confirm", {
    "operationId": "totp_confirm",
    "summary": "Turn two-factor on with the first valid code; get recovery codes",
    **_OWN,
    "requestBody": json_body("TotpCode"),
    "responses": {"200": json_response("TotpEnabled", "On"), **AUTH_ERRORS, **NOT_FOUND,
                  **BODY_ERRORS, "409": error("Not enrolled, or already on")},
}, (ID_PARAM,))
async def totp_confirm(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    body = json_fields(await read_json(request), {"code": MAX_CODE}, ("code",))
    codes = await ctx.call(ctx.store.totp_confirm, profile.id, body["code"])
    return JSONResponse(
        {"two_factor": True, "recovery_codes": codes}, headers={"Cache-Control": "no-store"}
    )


@ENDPOINTS.operation("POST", "/profiles/{id}/totp/disable", {
    "operationId": "totp_disable",
    "summary": "Turn two-factor off (needs a valid TOTP or recovery code, and the "
               "password unless the token is a fresh sign-in)",
    **_OWN,
    "requestBody": json_body("TotpDisable"),
    "responses": {"200": json_response("TwoFactorState", "Off"), **AUTH_ERRORS, **NOT_FOUND,
                  **BODY_ERRORS, "409": error("Two-factor is not on"), **_THROTTLED},
}, (ID_PARAM,))
async def totp_disable(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    body = json_fields(
        await read_json(request), {"code": MAX_CODE, "current_password": PASSWORD_MAX},
        ("code",),
    )
    await ctx.recent_auth(profile, request, body.get("current_password"))
    await ctx.call(ctx.store.totp_disable, profile.id, body["code"])
    return JSONResponse({"two_factor": False})


def qr_png(uri: str) -> str:
    """The otpauth:// URI as a QR code PNG, base64 (for an <img> data: URL)."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="png", scale=5, border=4)
    return base64.b64encode(out.getvalue()).decode("ascii")
