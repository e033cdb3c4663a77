"""The OpenAPI 3.1 document, written in code, and a self-contained docs page."""

from __future__ import annotations

import html
from typing import Any

from mediaserver.api.limits import RATES
from mediaserver.api.routes import MAX_BODY, PREFIX, REQUEST_TYPES
from mediaserver.store import PASSWORD_MAX, PASSWORD_MIN, REPORT_REASONS
from mediaserver.store.auth import REAUTH_WINDOW, RECOVERY_CODES
from mediaserver.store.photos import MAX_PHOTO_BYTES, MAX_PIXELS, MAX_SIDE, TYPES
from mediaserver.store.shares import SHARE_TTL
from mediaserver.store.throttle import (
    MAX_DEVICE_TOKEN,
    THROTTLE_FREE_ACCOUNT,
    THROTTLE_FREE_ADDRESS,
)

TIME = {"type": "string", "format": "date-time", "description": "ISO 8601, UTC"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _rate_limited(name: str) -> dict[str, Any]:
    """The 429 of an endpoint limited per client address (limits.RATES[name])."""
    rate = RATES[name]
    return {"429": _error(
        f"More than {rate.burst} per {rate.per / 3600:g} h from this address (IPv6: its "
        "/64): `too_many_attempts`, Retry-After header")}


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


def _body(schema_ref: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
GPC_PARAM = {
    "name": "Sec-GPC",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "enum": ["1"]},
    "description": "Global Privacy Control: `1` records an opt-out for the caller.",
}
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
CURRENT_PASSWORD = {
    "type": "string", "maxLength": PASSWORD_MAX,
    "description": "The account's password. Needed (when it has one) to change the "
                   "username or date of birth and to turn two-factor on or off, unless "
                   f"the bearer token is a session younger than {int(REAUTH_WINDOW // 60)} "
                   "minutes (a fresh sign-in); missing or wrong: 422 `invalid`, field "
                   "`current_password`.",
}

BODY_ERRORS = {
    "400": _error("Malformed JSON (`bad_json`)"),
    "413": _error(f"Body larger than {MAX_BODY} bytes (`too_large`)"),
    "415": _error("Content-Type is not application/json"),
    "422": _error("Wrong type, unknown field or refused value (`invalid`, `field` names it)"),
}
AUTH_ERRORS = {"401": _error("Missing or invalid bearer token (WWW-Authenticate: Bearer)")}
NOT_FOUND = {"404": _error("Unknown id, or not the caller's (never 403)")}


def build_document() -> dict[str, Any]:
    profile_props: dict[str, Any] = {
        "username": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_.-]{3,32}$",
            "description": "3-32 characters: letters, digits, _ . -; unique",
        },
        "date_of_birth": {
            "type": "string",
            "format": "date",
            "description": "YYYY-MM-DD; under 18 is refused (422, field date_of_birth)",
        },
        "bio": {"type": "string", "maxLength": 500},
        "interests": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 32},
            "maxItems": 10,
            "description": "Lower-cased, de-duplicated; they feed the matchmaker",
        },
        "language": {
            "type": ["string", "null"],
            "pattern": "^[A-Za-z0-9_-]{2,16}$",
            "description": "A language tag such as en or pt-BR",
        },
        "chat_history_consent": {
            "type": "boolean",
            "description": "Opt in to chat history being stored (encrypted)",
        },
        "discoverable": {
            "type": "boolean",
            "description": "List this profile's card when signed-in people browse (default false)",
        },
    }
    request_props: dict[str, Any] = {
        "id": {"type": "string"},
        "type": {"type": "string", "enum": list(REQUEST_TYPES)},
        "status": {
            "type": "string",
            "enum": ["received", "verified", "completed", "rejected"],
        },
        "received_at": TIME,
        "due_at": {**TIME, "description": "received_at + 45 days"},
    }
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "field"],
                    "properties": {
                        "code": {
                            "type": "string",
                            "examples": [
                                "bad_json",
                                "invalid",
                                "too_large",
                                "not_found",
                                "conflict",
                                "unauthorized",
                                "unsupported_media_type",
                                "method_not_allowed",
                            ],
                        },
                        "message": {"type": "string"},
                        "field": {"type": ["string", "null"]},
                    },
                }
            },
        },
        "ProfileCreate": {
            "type": "object",
            "required": ["username", "date_of_birth"],
            "additionalProperties": False,
            "properties": {
                **profile_props,
                "password": {
                    "type": "string", "minLength": PASSWORD_MIN, "maxLength": PASSWORD_MAX,
                    "description": "Optional; stored only as an Argon2id hash",
                },
            },
        },
        "ProfileUpdate": {
            "type": "object",
            "additionalProperties": False,
            "properties": {**profile_props, "current_password": CURRENT_PASSWORD},
        },
        "Profile": {
            "type": "object",
            "required": [
                "id",
                "username",
                "date_of_birth",
                "bio",
                "interests",
                "language",
                "created_at",
            ],
            "properties": {
                "id": {"type": "string"},
                **profile_props,
                "opted_out": {"type": "boolean"},
                "has_password": {"type": "boolean"},
                "two_factor": {"type": "boolean", "description": "TOTP two-factor is on"},
                "photo_url": {
                    "type": ["string", "null"],
                    "description": "The owner's photo URL (GET with the token), or null",
                },
                "created_at": TIME,
                "updated_at": TIME,
                "last_seen_at": TIME,
            },
        },
        "CreatedProfile": {
            "allOf": [
                {"$ref": "#/components/schemas/Profile"},
                {
                    "type": "object",
                    "required": ["token"],
                    "properties": {
                        "token": {
                            "type": "string",
                            "description": "Bearer token; shown once, stored hashed. "
                                           "With a password it is a session (it expires "
                                           "after --session-ttl; a password change ends "
                                           "it); without one it is the account's only "
                                           "key and does not expire (setting a password "
                                           "later turns it into a session).",
                        }
                    },
                },
            ]
        },
        "PrivacyRequestCreate": {
            "type": "object",
            "required": ["type"],
            "additionalProperties": False,
            "properties": {"type": request_props["type"]},
        },
        "PrivacyRequestAccepted": {
            "type": "object",
            "required": list(request_props),
            "properties": request_props,
        },
        "PrivacyRequest": {
            "type": "object",
            "required": [*request_props, "completed_at", "reason"],
            "properties": {
                **request_props,
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
    }
    paths: dict[str, Any] = {
        f"{PREFIX}/profiles": {
            "post": {
                "operationId": "create_profile",
                "summary": "Create a profile; the response carries its bearer token",
                "parameters": [GPC_PARAM],
                "requestBody": _body("ProfileCreate"),
                "responses": {
                    "201": _json("CreatedProfile", "Created"),
                    **BODY_ERRORS,
                    "409": _error("Username taken (`conflict`)"),
                    **_rate_limited("create_account"),
                },
            }
        },
        f"{PREFIX}/profiles/{{id}}": {
            "parameters": [ID_PARAM, GPC_PARAM],
            "get": {
                "operationId": "get_profile",
                "summary": "Read your own profile",
                "security": BEARER,
                "responses": {"200": _json("Profile", "The profile"), **AUTH_ERRORS, **NOT_FOUND},
            },
            "patch": {
                "operationId": "update_profile",
                "summary": "Correct or change your profile (any subset of the fields)",
                "security": BEARER,
                "requestBody": _body("ProfileUpdate"),
                "responses": {
                    "200": _json("Profile", "The updated profile"),
                    **AUTH_ERRORS,
                    **NOT_FOUND,
                    **BODY_ERRORS,
                    "409": _error("Username taken (`conflict`)"),
                    "429": _error("Too many wrong `current_password` tries "
                                  "(`too_many_attempts`, Retry-After)"),
                },
            },
            "delete": {
                "operationId": "delete_profile",
                "summary": "Delete your profile, tokens and chat history now",
                "security": BEARER,
                "responses": {"204": {"description": "Deleted"}, **AUTH_ERRORS, **NOT_FOUND},
            },
        },
        f"{PREFIX}/privacy-requests": {
            "parameters": [GPC_PARAM],
            "post": {
                "operationId": "submit_privacy_request",
                "summary": "Ask for access, correction, deletion, opt-out or consent withdrawal",
                "description": "Verified by the token; completes shortly after (poll the GET).",
                "security": BEARER,
                "requestBody": _body("PrivacyRequestCreate"),
                "responses": {
                    "202": _json("PrivacyRequestAccepted", "Accepted"),
                    **AUTH_ERRORS,
                    **BODY_ERRORS,
                    **_rate_limited("privacy_request"),
                },
            },
            "get": {
                "operationId": "list_privacy_requests",
                "summary": "Your own privacy requests",
                "description": "Without `export`: GET the request itself for it.",
                "security": BEARER,
                "responses": {
                    "200": _json("PrivacyRequestList", "The requests"),
                    **AUTH_ERRORS,
                },
            },
        },
        f"{PREFIX}/privacy-requests/{{id}}": {
            "parameters": [ID_PARAM, GPC_PARAM],
            "get": {
                "operationId": "get_privacy_request",
                "summary": "One of your privacy requests; `export` once an access request completes",
                "security": BEARER,
                "responses": {
                    "200": _json("PrivacyRequest", "The request"),
                    **AUTH_ERRORS,
                    **NOT_FOUND,
                },
            },
        },
        f"{PREFIX}/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        f"{PREFIX}/docs": {
            "get": {
                "operationId": "docs",
                "summary": "A human-readable page listing the endpoints",
                "responses": {
                    "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}
                },
            }
        },
    }
    schemas.update(_account_schemas())
    paths.update(_account_paths())
    paths[f"{PREFIX}/profiles"]["get"] = {
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
            "200": _json("CardPage", "A page of cards"),
            **AUTH_ERRORS,
            "422": _error("Unknown parameter or bad cursor (`invalid`)"),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mediaserver API",
            "version": "1",
            "description": (
                "Profiles, accounts (sign-in, two-factor, photo, browsing) and privacy "
                f"requests. JSON bodies up to {MAX_BODY} bytes (a photo: an image up to "
                f"{MAX_PHOTO_BYTES} bytes). Every error is "
                '{"error": {"code", "message", "field"}}.'
            ),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "The token returned when the profile was created (no expiry), or a "
                        "session token from POST /api/v1/sessions (expires)"
                    ),
                }
            },
        },
    }


def _schema(props: dict[str, Any], required: list[str], closed: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "required": required, "properties": props}
    if closed:
        out["additionalProperties"] = False
    return out


def _account_schemas() -> dict[str, Any]:
    handle = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{3,32}$",
              "description": "A profile's public handle (its username)"}
    code: dict[str, Any] = {"type": "string", "maxLength": 64,
            "description": "A 6-digit TOTP code, or a recovery code (xxxx-xxxx-xxxx-xxxx)"}
    card = {
        "handle": handle,
        "photo_url": {"type": ["string", "null"],
                      "description": f"{PREFIX}/photos/{{id}}: no token needed"},
        "bio": {"type": "string"},
        "interests": {"type": "array", "items": {"type": "string"}},
    }
    return {
        "SignIn": _schema({
            "username": {"type": "string"},
            "password": {"type": "string"},
            "otp": {**code, "description": "Required when two-factor is on: " + code["description"]},
            "device": {"type": "string", "maxLength": MAX_DEVICE_TOKEN,
                       "description": "The `device` an earlier sign-in of this account "
                                      "returned: the account's lockout does not hold back a "
                                      "known device (its own limit does)"},
        }, ["username", "password"]),
        "Session": _schema({
            "token": {"type": "string", "description": "Bearer token; stored hashed"},
            "expires_at": {**TIME, "description": "now + --session-ttl"},
            "id": {"type": "string", "description": "The profile's id"},
            "device": {"type": "string",
                       "description": "Keep it and send it with later sign-ins of this account"},
        }, ["token", "expires_at", "id", "device"], closed=False),
        "PasswordSet": _schema({
            "password": {"type": "string", "minLength": PASSWORD_MIN, "maxLength": PASSWORD_MAX},
            "current_password": {"type": "string",
                                 "description": "Required when a password is already set"},
        }, ["password"]),
        "TotpEnrolment": _schema({
            "secret": {"type": "string", "description": "Base32 TOTP secret (RFC 6238)"},
            "otpauth_uri": {"type": "string", "description": "otpauth://totp/... for apps"},
            "qr_png_base64": {"type": "string", "description": "The URI as a QR code PNG"},
        }, ["secret", "otpauth_uri", "qr_png_base64"], closed=False),
        "TotpCode": _schema({"code": code}, ["code"]),
        "TotpDisable": _schema({"code": code, "current_password": CURRENT_PASSWORD}, ["code"]),
        "Reauth": _schema({"current_password": CURRENT_PASSWORD}, []),
        "TotpEnabled": _schema({
            "two_factor": {"type": "boolean"},
            "recovery_codes": {"type": "array", "items": {"type": "string"},
                               "minItems": RECOVERY_CODES, "maxItems": RECOVERY_CODES,
                               "description": "One-time codes, shown once, stored hashed"},
        }, ["two_factor", "recovery_codes"], closed=False),
        "TwoFactorState": _schema({"two_factor": {"type": "boolean"}}, ["two_factor"], False),
        "PhotoStored": _schema({
            "photo_url": {"type": "string"},
            "width": {"type": "integer", "maximum": MAX_SIDE},
            "height": {"type": "integer", "maximum": MAX_SIDE},
        }, ["photo_url", "width", "height"], closed=False),
        "Card": _schema({
            **card,
            "age_band": {"type": "string", "examples": ["18-24", "25-34", "65+"],
                         "description": "Never the date of birth"},
        }, ["handle", "photo_url", "bio", "interests", "age_band"], closed=False),
        "CardPage": _schema({
            "profiles": {"type": "array", "items": {"$ref": "#/components/schemas/Card"}},
            "next_cursor": {"type": ["string", "null"],
                            "description": "Pass as ?cursor= for the next page; null: last"},
        }, ["profiles", "next_cursor"], closed=False),
        "Share": _schema({
            "id": {"type": "string", "description": "The share's id, also its photo URL's"},
            "photo_url": {"type": "string", "description": f"{PREFIX}/photos/{{id}}"},
            "created_at": TIME,
            "expires_at": TIME,
        }, ["id", "photo_url", "created_at", "expires_at"], closed=False),
        "ShareList": _schema({
            "shares": {"type": "array", "items": {"$ref": "#/components/schemas/Share"}},
        }, ["shares"], closed=False),
        "BlockCreate": _schema({"handle": handle}, ["handle"]),
        "Block": _schema({"handle": handle}, ["handle"], closed=False),
        "BlockList": _schema({"blocked": {"type": "array", "items": handle}}, ["blocked"], False),
        "ReportCreate": _schema({
            "handle": handle,
            "reason": {"type": "string", "enum": list(REPORT_REASONS)},
        }, ["handle", "reason"]),
        "Report": _schema({
            "id": {"type": "string", "description": "What an operator confirms"},
            "handle": handle,
            "reason": {"type": "string"},
        }, ["id", "handle", "reason"], closed=False),
    }


def _account_paths() -> dict[str, Any]:
    own = {"security": BEARER}
    image = {
        "required": True,
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in TYPES},
    }
    jpeg = {"description": "The photo (JPEG, at most 512x512, no metadata)",
            "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}
    throttled = {"429": _error(
        f"Too many failed sign-ins (after {THROTTLE_FREE_ACCOUNT} per account from unknown "
        f"clients, per known device, or {THROTTLE_FREE_ADDRESS} per address; the wait "
        "doubles; a valid otp passes the account's): `too_many_attempts`, Retry-After header")}
    handle_param = {"name": "handle", "in": "path", "required": True,
                    "schema": {"type": "string"}}
    return {
        f"{PREFIX}/sessions": {"post": {
            "operationId": "sign_in",
            "summary": "Sign in with username and password (+ otp when two-factor is on)",
            "description": "The same 401 `invalid_credentials`, after the same Argon2 work, "
                           "for an unknown username and a wrong password.",
            "requestBody": _body("SignIn"),
            "responses": {
                "201": _json("Session", "Signed in"),
                **BODY_ERRORS,
                "401": _error("`invalid_credentials`, `otp_required` or `invalid_otp`"),
                **throttled,
            },
        }},
        f"{PREFIX}/sessions/current": {"delete": {
            "operationId": "sign_out",
            "summary": "Sign out: this token stops working",
            **own,
            "responses": {
                "204": {"description": "Signed out"}, **AUTH_ERRORS,
                "409": _error("The creation token of an account without a password"),
            },
        }},
        f"{PREFIX}/profiles/{{id}}/password": {"parameters": [ID_PARAM], "put": {
            "operationId": "set_password",
            "summary": "Set or change the password (other sessions end)",
            **own,
            "requestBody": _body("PasswordSet"),
            "responses": {"204": {"description": "Set"}, **AUTH_ERRORS, **NOT_FOUND,
                          **BODY_ERRORS},
        }},
        f"{PREFIX}/profiles/{{id}}/totp": {"parameters": [ID_PARAM], "post": {
            "operationId": "totp_enrol",
            "summary": "Start two-factor: a new secret, otpauth:// URI and QR code",
            "description": "Two-factor turns on only with the first valid code (confirm). "
                           "The body is optional: `current_password`, needed unless the "
                           "token is a fresh sign-in (see Reauth).",
            **own,
            "requestBody": {**_body("Reauth"), "required": False},
            "responses": {"201": _json("TotpEnrolment", "Enrolment started"), **AUTH_ERRORS,
                          **NOT_FOUND, **BODY_ERRORS, **throttled,
                          "409": _error("Two-factor is already on")},
        }},
        f"{PREFIX}/profiles/{{id}}/totp/confirm": {"parameters": [ID_PARAM], "post": {
            "operationId": "totp_confirm",
            "summary": "Turn two-factor on with the first valid code; get recovery codes",
            **own,
            "requestBody": _body("TotpCode"),
            "responses": {"200": _json("TotpEnabled", "On"), **AUTH_ERRORS, **NOT_FOUND,
                          **BODY_ERRORS, "409": _error("Not enrolled, or already on")},
        }},
        f"{PREFIX}/profiles/{{id}}/totp/disable": {"parameters": [ID_PARAM], "post": {
            "operationId": "totp_disable",
            "summary": "Turn two-factor off (needs a valid TOTP or recovery code, and the "
                       "password unless the token is a fresh sign-in)",
            **own,
            "requestBody": _body("TotpDisable"),
            "responses": {"200": _json("TwoFactorState", "Off"), **AUTH_ERRORS, **NOT_FOUND,
                          **BODY_ERRORS, "409": _error("Two-factor is not on"), **throttled},
        }},
        f"{PREFIX}/profiles/{{id}}/photo": {
            "parameters": [ID_PARAM],
            "put": {
                "operationId": "put_photo",
                "summary": "Upload the profile picture (JPEG, PNG or WebP)",
                "description": "Decoded and re-encoded: every piece of metadata (EXIF, GPS, "
                               f"ICC, comments) is gone; scaled to at most {MAX_SIDE}x"
                               f"{MAX_SIDE}; stored encrypted.",
                **own,
                "requestBody": image,
                "responses": {
                    "201": _json("PhotoStored", "Stored"), **AUTH_ERRORS, **NOT_FOUND,
                    "400": _error("Bad Content-Length"),
                    "413": _error(f"Body larger than {MAX_PHOTO_BYTES} bytes (`too_large`)"),
                    "415": _error("Not image/jpeg, image/png or image/webp, or the body is "
                                  "another type than declared"),
                    "422": _error("`bad_image` (truncated or corrupt) or `image_too_large` "
                                  f"(more than {MAX_PIXELS:,} pixels: a decompression bomb)"),
                    **_rate_limited("photo_upload"),
                },
            },
            "get": {"operationId": "get_photo", "summary": "Your own photo", **own,
                    "responses": {"200": jpeg, **AUTH_ERRORS, **NOT_FOUND}},
            "delete": {"operationId": "delete_photo", "summary": "Delete your photo", **own,
                       "responses": {"204": {"description": "Deleted"}, **AUTH_ERRORS,
                                     **NOT_FOUND}},
        },
        f"{PREFIX}/photos/{{id}}": {"parameters": [ID_PARAM], "get": {
            "operationId": "public_photo",
            "summary": "A photo by the URL a listing or a shared card carried (no token)",
            "description": "A listing's URL works while its owner is discoverable; each "
                           "shared card carries its own URL, which ends after "
                           f"{int(SHARE_TTL // 3600)} hours, when its owner withdraws it, "
                           "or when they delete or replace the photo or stop being "
                           "discoverable.",
            "responses": {"200": jpeg, "404": _error("Unknown, replaced or withdrawn")},
        }},
        f"{PREFIX}/profiles/{{id}}/shares": {"parameters": [ID_PARAM], "get": {
            "operationId": "list_shares",
            "summary": "Your live profile-card shares (each with its own photo URL)",
            **own,
            "responses": {"200": _json("ShareList", "Live shares"), **AUTH_ERRORS,
                          **NOT_FOUND},
        }},
        f"{PREFIX}/profiles/{{id}}/shares/{{share_id}}": {
            "parameters": [ID_PARAM, {"name": "share_id", "in": "path", "required": True,
                                      "schema": {"type": "string"}}],
            "delete": {"operationId": "withdraw_share",
                       "summary": "Withdraw a shared card: its photo URL stops working",
                       **own,
                       "responses": {"204": {"description": "Withdrawn"}, **AUTH_ERRORS,
                                     **NOT_FOUND}},
        },
        f"{PREFIX}/profiles/{{id}}/blocks": {
            "parameters": [ID_PARAM],
            "post": {
                "operationId": "block",
                "summary": "Block a profile by handle: neither lists the other",
                **own,
                "requestBody": _body("BlockCreate"),
                "responses": {"201": _json("Block", "Blocked"), **AUTH_ERRORS, **NOT_FOUND,
                              **BODY_ERRORS},
            },
            "get": {"operationId": "list_blocks", "summary": "Handles you blocked", **own,
                    "responses": {"200": _json("BlockList", "Blocked handles"), **AUTH_ERRORS,
                                  **NOT_FOUND}},
        },
        f"{PREFIX}/profiles/{{id}}/blocks/{{handle}}": {
            "parameters": [ID_PARAM, handle_param],
            "delete": {"operationId": "unblock", "summary": "Lift a block", **own,
                       "responses": {"204": {"description": "Lifted"}, **AUTH_ERRORS,
                                     **NOT_FOUND}},
        },
        f"{PREFIX}/reports": {"post": {
            "operationId": "report_account",
            "summary": "Report a profile by handle (`underage` goes to an operator)",
            **own,
            "requestBody": _body("ReportCreate"),
            "responses": {"201": _json("Report", "Recorded"), **AUTH_ERRORS,
                          "404": _error("No such handle"), **BODY_ERRORS,
                          **_rate_limited("report")},
        }},
    }


METHODS = ("get", "put", "post", "patch", "delete")


def render_docs(document: dict[str, Any]) -> str:
    """One HTML page, no external resources, listing every operation."""
    e = html.escape
    rows = []
    for path, item in document["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            auth = "bearer" if op.get("security") else "none"
            codes = ", ".join(sorted(op["responses"]))
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = body.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
            rows.append(
                f"<tr><td class=m>{e(method.upper())}</td><td><code>{e(path)}</code></td>"
                f"<td>{e(op.get('summary', ''))}</td><td>{e(ref) or '-'}</td>"
                f"<td>{e(auth)}</td><td>{e(codes)}</td></tr>"
            )
    schemas = []
    for name, schema in document["components"]["schemas"].items():
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        items = "".join(
            f"<li><code>{e(k)}</code>{' (required)' if k in required else ''}: "
            f"{e(_type_of(v))}</li>"
            for k, v in props.items()
        )
        schemas.append(f"<h3 id='{e(name)}'>{e(name)}</h3><ul>{items or '<li>see document</li>'}</ul>")
    info = document["info"]
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{e(info['title'])}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:72em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.3em .5em;"
        "text-align:left;vertical-align:top}.m{font-weight:bold;font-family:monospace}</style>"
        "</head><body>"
        f"<h1>{e(info['title'])} v{e(info['version'])}</h1><p>{e(info['description'])}</p>"
        f"<p>Machine-readable: <a href='{PREFIX}/openapi.json'>openapi.json</a> (OpenAPI "
        f"{e(document['openapi'])}). Authenticated calls send "
        "<code>Authorization: Bearer &lt;token&gt;</code>.</p>"
        "<h2>Endpoints</h2><table><tr><th>Method</th><th>Path</th><th>What</th>"
        "<th>Body</th><th>Auth</th><th>Responses</th></tr>"
        + "".join(rows)
        + "</table><h2>Schemas</h2>"
        + "".join(schemas)
        + "</body></html>"
    )


def _type_of(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    kind = schema.get("type", "any")
    text = " | ".join(kind) if isinstance(kind, list) else str(kind)
    if "enum" in schema:
        text += " (" + ", ".join(map(str, schema["enum"])) + ")"
    if "format" in schema:
        text += f" ({schema['format']})"
    return text
