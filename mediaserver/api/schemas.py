"""OpenAPI fragments the resource modules document their operations with, and the
shared component schemas (Error, ...). Data only: no routes here."""

from __future__ import annotations

from typing import Any

from mediaserver.api.limits import RATES
from mediaserver.api.wire import MAX_BODY
from mediaserver.store import PASSWORD_MAX
from mediaserver.store.auth import REAUTH_WINDOW

TIME = {"type": "string", "format": "date-time", "description": "ISO 8601, UTC"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}


def error(description: str) -> dict[str, Any]:
    """A response carrying the Error shape."""
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def rate_limited(name: str) -> dict[str, Any]:
    """The 429 of an endpoint limited per client address (limits.RATES[name])."""
    rate = RATES[name]
    return {"429": error(
        f"More than {rate.burst} per {rate.per / 3600:g} h from this address (IPv6: its "
        "/64): `too_many_attempts`, Retry-After header")}


def json_response(schema_ref: str, description: str) -> dict[str, Any]:
    """A JSON response with the component schema `schema_ref`."""
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


def json_body(schema_ref: str) -> dict[str, Any]:
    """A required JSON request body with the component schema `schema_ref`."""
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


def object_schema(
    props: dict[str, Any], required: list[str], closed: bool = True
) -> dict[str, Any]:
    """An object schema; `closed`: no other properties allowed."""
    out: dict[str, Any] = {"type": "object", "required": required, "properties": props}
    if closed:
        out["additionalProperties"] = False
    return out


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
HANDLE = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{3,32}$",
          "description": "A profile's public handle (its username)"}

BODY_ERRORS = {
    "400": error("Malformed JSON (`bad_json`)"),
    "413": error(f"Body larger than {MAX_BODY} bytes (`too_large`)"),
    "415": error("Content-Type is not application/json"),
    "422": error("Wrong type, unknown field or refused value (`invalid`, `field` names it)"),
}
AUTH_ERRORS = {"401": error("Missing or invalid bearer token (WWW-Authenticate: Bearer)")}
NOT_FOUND = {"404": error("Unknown id, or not the caller's (never 403)")}

ERROR_SCHEMA: dict[str, Any] = {
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
}
"""The one error shape (errors.py writes it)."""
