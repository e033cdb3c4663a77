"""The OpenAPI 3.1 document, built by walking the API's routes (each carries its
operation, see operations.py), and a self-contained docs page rendered from it."""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from starlette.routing import BaseRoute

from mediaserver.api.operations import ApiRoute
from mediaserver.api.schemas import ERROR_SCHEMA
from mediaserver.api.wire import MAX_BODY, PREFIX
from mediaserver.store.photos import MAX_PHOTO_BYTES

METHODS = ("get", "put", "post", "patch", "delete")


def build_document(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """The document for `routes` (a Mount's): one path item per ApiRoute, one
    operation per endpoint, and the component schemas their resources define.

    Raises:
        ValueError: two resources define one schema name differently, or the
            endpoints of one path disagree on its path parameters.
    """
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    for route in routes:
        if not isinstance(route, ApiRoute):
            continue
        item: dict[str, Any] = {}
        endpoints = list(route.endpoints.values())
        parameters = endpoints[0].path_parameters
        if any(endpoint.path_parameters != parameters for endpoint in endpoints):
            raise ValueError(f"the methods of {route.path} disagree on its path parameters")
        if parameters:
            item["parameters"] = list(parameters)
        for endpoint in endpoints:
            item[endpoint.method.lower()] = endpoint.operation
            for name, schema in endpoint.schemas.items():
                if schemas.setdefault(name, schema) is not schema:
                    raise ValueError(f"schema {name} is defined twice")
        paths[PREFIX + route.path] = item
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
