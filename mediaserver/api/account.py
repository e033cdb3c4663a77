"""The account's mail-backed parts: verifying the e-mail address, password reset by
mailed code, the sessions list, and the policy (read it, accept it)."""

from __future__ import annotations

import asyncio
import logging
import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediaserver.api.context import ApiContext, bearer
from mediaserver.api.operations import Endpoints
from mediaserver.api.schemas import (
    AUTH_ERRORS,
    BEARER,
    BODY_ERRORS,
    ID_PARAM,
    NOT_FOUND,
    NULLABLE_TIME,
    TIME,
    error,
    json_body,
    json_response,
    object_schema,
    rate_limited,
)
from mediaserver.api.wire import iso, json_fields, read_json
from mediaserver.store import PASSWORD_MAX, PASSWORD_MIN
from mediaserver.store.contact import EMAIL_MAX, POLICY_VERSION_MAX, RESET_FAILURES

logger = logging.getLogger("mediaserver.api")

MAX_CODE = 16
"""Bound on a mailed code as sent (they are 6 digits)."""
_OWN = {"security": BEARER}
_CODE = {"type": "string", "maxLength": MAX_CODE, "description": "The 6-digit code mailed"}
_EMAIL = {"type": "string", "maxLength": EMAIL_MAX, "format": "email"}
_WRONG_CODE = {"422": error("Wrong, expired or used-up code (`invalid`, field `code`), "
                            "or a refused field")}

ENDPOINTS = Endpoints(schemas={
    "EmailVerify": object_schema({"code": _CODE}, ["code"]),
    "EmailVerified": object_schema({"email_verified": {"type": "boolean"}},
                                   ["email_verified"], False),
    "PasswordReset": object_schema({"email": _EMAIL}, ["email"]),
    "PasswordResetConfirm": object_schema({
        "email": _EMAIL, "code": _CODE,
        "password": {"type": "string", "minLength": PASSWORD_MIN, "maxLength": PASSWORD_MAX},
    }, ["email", "code", "password"]),
    "SessionInfo": object_schema({
        "id": {"type": "string", "description": "The session's id (not its token)"},
        "device": {"type": ["string", "null"],
                   "description": "Browser and system, from the User-Agent at sign-in"},
        "created_at": TIME,
        "last_seen_at": NULLABLE_TIME,
        "expires_at": NULLABLE_TIME,
        "current": {"type": "boolean", "description": "The session of this request"},
    }, ["id", "device", "created_at", "last_seen_at", "current"], False),
    "SessionList": object_schema({"sessions": {
        "type": "array", "items": {"$ref": "#/components/schemas/SessionInfo"}}},
        ["sessions"], False),
    "Policy": object_schema({
        "version": {"type": ["string", "null"]},
        "effective_date": {"type": ["string", "null"], "format": "date"},
        "url": {"type": ["string", "null"]},
    }, ["version", "effective_date", "url"], False),
    "PolicyAccept": object_schema({"version": {"type": "string",
                                               "maxLength": POLICY_VERSION_MAX}}, ["version"]),
})


@ENDPOINTS.operation("POST", "/profiles/{id}/email/verify", {
    "operationId": "verify_email",
    "summary": "Verify your e-mail address with the code mailed to it",
    "description": "A code lasts 24 h and allows 5 wrong tries; changing the address "
                   "mails a new one.",
    **_OWN,
    "requestBody": json_body("EmailVerify"),
    "responses": {"200": json_response("EmailVerified", "Verified"), **AUTH_ERRORS,
                  **NOT_FOUND, **BODY_ERRORS, **_WRONG_CODE},
}, (ID_PARAM,))
async def verify_email(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    body = json_fields(await read_json(request), {"code": MAX_CODE}, ("code",))
    await ctx.call(ctx.store.verify_email, profile.id, body["code"].strip())
    return JSONResponse({"email_verified": True})


@ENDPOINTS.operation("POST", "/profiles/{id}/email/code", {
    "operationId": "resend_email_code",
    "summary": "Mail a new verification code to your (unverified) address",
    "description": "The earlier code stops working.",
    **_OWN,
    "responses": {"202": {"description": "Mailed"}, **AUTH_ERRORS, **NOT_FOUND,
                  "409": error("No address, or it is verified already (`conflict`)"),
                  **rate_limited("mail_code")},
}, (ID_PARAM,))
async def resend_email_code(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    ctx.limit(request, "mail_code")
    await ctx.call(ctx.store.resend_verification, profile.id)
    return Response(status_code=202)


@ENDPOINTS.operation("POST", "/password-resets", {
    "operationId": "request_password_reset",
    "summary": "Mail a password reset code to a verified address",
    "description": "Always 202, the same way and before any work is done, whether or "
                   "not an account has this verified address (no enumeration).",
    "requestBody": json_body("PasswordReset"),
    "responses": {"202": {"description": "Accepted (a code is mailed if the address is "
                                         "an account's verified one)"},
                  **BODY_ERRORS, **rate_limited("mail_code")},
})
async def request_password_reset(request: Request, ctx: ApiContext) -> Response:
    ctx.limit(request, "mail_code")
    body = json_fields(await read_json(request), {"email": EMAIL_MAX}, ("email",))
    # answered before the work: a known address (a code written, a mail queued)
    # takes longer than an unknown one, and the answer must not tell them apart
    task = asyncio.create_task(ctx.call(ctx.store.request_password_reset, body["email"]))
    _pending.add(task)
    task.add_done_callback(_done)
    return Response(status_code=202)


_pending: set[asyncio.Task[None]] = set()
"""Reset requests still being written (a reference keeps each task alive)."""


def _done(task: asyncio.Task[None]) -> None:
    _pending.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("password reset request failed", exc_info=task.exception())


@ENDPOINTS.operation("POST", "/password-resets/confirm", {
    "operationId": "confirm_password_reset",
    "summary": "Set a new password with the mailed code; every session ends",
    "description": "An unknown address and a wrong code get the same 422 (field "
                   f"`code`); {RESET_FAILURES} wrong codes for an address in a day, known "
                   "or not, then 429 `too_many_attempts`. Sign in afterwards.",
    "requestBody": json_body("PasswordResetConfirm"),
    "responses": {"204": {"description": "Password set"}, **BODY_ERRORS, **_WRONG_CODE,
                  **rate_limited("mail_code")},
})
async def confirm_password_reset(request: Request, ctx: ApiContext) -> Response:
    ctx.limit(request, "mail_code")
    body = json_fields(
        await read_json(request),
        {"email": EMAIL_MAX, "code": MAX_CODE, "password": PASSWORD_MAX},
        ("email", "code", "password"),
    )
    await ctx.call_heavy(ctx.store.reset_password, body["email"], body["code"].strip(),
                         body["password"])
    return Response(status_code=204)


@ENDPOINTS.operation("GET", "/profiles/{id}/sessions", {
    "operationId": "list_sessions",
    "summary": "Your signed-in sessions (device, created, last seen)",
    **_OWN,
    "responses": {"200": json_response("SessionList", "Sessions"), **AUTH_ERRORS,
                  **NOT_FOUND},
}, (ID_PARAM,))
async def list_sessions(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    sessions = await ctx.call(ctx.store.list_sessions, profile.id, bearer(request))
    return JSONResponse({"sessions": [
        {"id": s.id, "device": s.device, "created_at": iso(s.created_at),
         "last_seen_at": iso(s.last_seen_at), "expires_at": iso(s.expires_at),
         "current": s.current}
        for s in sessions
    ]}, headers={"Cache-Control": "no-store"})


@ENDPOINTS.operation("DELETE", "/profiles/{id}/sessions/{session_id}", {
    "operationId": "revoke_session",
    "summary": "End one of your sessions (its token stops working)",
    **_OWN,
    "responses": {"204": {"description": "Ended"}, **AUTH_ERRORS, **NOT_FOUND,
                  "409": error("The creation token of an account without a password")},
}, (ID_PARAM, {"name": "session_id", "in": "path", "required": True,
               "schema": {"type": "string"}}))
async def revoke_session(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    await ctx.call(ctx.store.revoke_session, profile.id, request.path_params["session_id"])
    return Response(status_code=204)


@ENDPOINTS.operation("GET", "/policy", {
    "operationId": "get_policy",
    "summary": "The current policy version (nulls when none was published)",
    "responses": {"200": json_response("Policy", "The policy")},
})
async def get_policy(request: Request, ctx: ApiContext) -> Response:
    policy = await ctx.call(ctx.store.current_policy)
    if policy is None:
        return JSONResponse({"version": None, "effective_date": None, "url": None})
    return JSONResponse({"version": policy.version, "effective_date": policy.effective_date,
                         "url": policy.url})


@ENDPOINTS.operation("POST", "/profiles/{id}/policy", {
    "operationId": "accept_policy",
    "summary": "Accept the current policy version",
    **_OWN,
    "requestBody": json_body("PolicyAccept"),
    "responses": {"200": json_response("Policy", "Accepted"), **AUTH_ERRORS, **NOT_FOUND,
                  **BODY_ERRORS},
}, (ID_PARAM,))
async def accept_policy(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    body = json_fields(await read_json(request), {"version": POLICY_VERSION_MAX}, ("version",))
    await ctx.call(ctx.store.accept_policy, profile.id, body["version"])
    return await get_policy(request, ctx)


_BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"),
             ("Chrome/", "Chrome"), ("Chromium/", "Chromium"), ("Safari/", "Safari"))
_SYSTEMS = (("Android", "Android"), ("iPhone", "iPhone"), ("iPad", "iPad"),
            ("Windows", "Windows"), ("Mac OS X", "macOS"), ("CrOS", "ChromeOS"),
            ("Linux", "Linux"))
_TOOL = re.compile(r"^([A-Za-z][A-Za-z0-9._-]{0,30})/")


def device_label(user_agent: str) -> str:
    """A coarse label from a User-Agent ("Firefox on Linux"): enough to recognise a
    session, far less than the string itself (which fingerprints)."""
    browser = next((name for token, name in _BROWSERS if token in user_agent), None)
    system = next((name for token, name in _SYSTEMS if token in user_agent), None)
    if browser is None:
        tool = _TOOL.match(user_agent)
        browser = tool[1] if tool else "Unknown browser"
    return f"{browser} on {system}" if system else browser

