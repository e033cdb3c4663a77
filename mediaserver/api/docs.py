"""/openapi.json and /docs: the API's own description (built from the routes by
openapi.py when the API is assembled)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from mediaserver.api.context import ApiContext
from mediaserver.api.operations import Endpoints
from mediaserver.edges import DOCS_CONTENT_SECURITY_POLICY

ENDPOINTS = Endpoints()


@ENDPOINTS.operation("GET", "/openapi.json", {
    "operationId": "openapi",
    "summary": "This document",
    "responses": {
        "200": {
            "description": "OpenAPI 3.1",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
})
async def openapi_json(request: Request, ctx: ApiContext) -> Response:
    return JSONResponse(ctx.document)


@ENDPOINTS.operation("GET", "/docs", {
    "operationId": "docs",
    "summary": "A human-readable page listing the endpoints",
    "responses": {
        "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}
    },
})
async def docs(request: Request, ctx: ApiContext) -> Response:
    # its own policy: the page's one <style> is inline (the app's policy forbids it)
    return HTMLResponse(
        ctx.docs_html, headers={"Content-Security-Policy": DOCS_CONTENT_SECURITY_POLICY}
    )
