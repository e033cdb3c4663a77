"""The OpenAPI 3.1 document, written in code, and a self-contained docs page."""

from __future__ import annotations

import html
from typing import Any

from mediaserver.api.routes import MAX_BODY, PREFIX, REQUEST_TYPES

TIME = {"type": "string", "format": "date-time", "description": "ISO 8601, UTC"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


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
            "properties": profile_props,
        },
        "ProfileUpdate": {
            "type": "object",
            "additionalProperties": False,
            "properties": profile_props,
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
                            "description": "Bearer token; shown once, stored hashed",
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
                },
            },
            "get": {
                "operationId": "list_privacy_requests",
                "summary": "Your own privacy requests",
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
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mediaserver API",
            "version": "1",
            "description": (
                "Profiles and privacy requests. JSON only; bodies up to "
                f"{MAX_BODY} bytes. Every error is "
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
                    "description": "The token returned when the profile was created",
                }
            },
        },
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
