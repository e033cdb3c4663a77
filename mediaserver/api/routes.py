"""The REST API under /api/v1, assembled: every resource module's endpoints become
one Mount with its own error handling. JSON (photos: image bodies), bearer tokens.

A feature goes in its resource's module (profiles, browse, sessions, photos,
blocks, reports, privacy, docs, controls, moderation): a handler registered with its OpenAPI operation;
nothing here lists the routes.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

from mediaserver.api import (
    account,
    blocks,
    browse,
    connections,
    controls,
    docs,
    moderation,
    notices,
    photos,
    privacy,
    profiles,
    reports,
    sessions,
)
from mediaserver.api.context import ApiContext, OnBan
from mediaserver.api.errors import (
    ApiError,
    api_error_handler,
    http_error_handler,
    internal_error_handler,
)
from mediaserver.api.limits import Rate
from mediaserver.api.openapi import build_document, render_docs
from mediaserver.api.operations import ApiRoute, Endpoint
from mediaserver.api.wire import PREFIX
from mediaserver.client_address import Network
from mediaserver.store import Store

RESOURCES = (
    profiles, browse, sessions, photos, blocks, reports, privacy, docs, controls, connections,
    account, notices, moderation,
)
"""The resource modules, in routing order."""
ENDPOINTS: tuple[Endpoint, ...] = tuple(
    endpoint for module in RESOURCES for endpoint in module.ENDPOINTS.items
)
ROUTE_TABLE: tuple[tuple[str, str], ...] = tuple((e.method, e.path) for e in ENDPOINTS)
"""Every (method, path under /api/v1) the API serves (the fuzzers walk it)."""


def create_api(
    store: Store,
    trusted_proxies: tuple[Network, ...] = (),
    rates: dict[str, Rate] | None = None,
    on_ban: OnBan | None = None,
) -> Mount:
    """The REST API as one Mount at /api/v1 (its own error handling inside).

    Args:
        trusted_proxies: --trusted-proxy (the client address behind a proxy).
        rates: per-address limits by name (default limits.RATES; a test lowers them).
        on_ban: given where the bans a moderation decision touched stand, to share
            them with every node (the signalling hub's spread_bans).
    """
    ctx = ApiContext(store, rates)
    ctx.on_ban = on_ban
    app = Starlette(
        routes=[
            ApiRoute(path, endpoints, _dispatch(endpoints, ctx))
            for path, endpoints in _by_path(ENDPOINTS).items()
        ],
        exception_handlers={
            ApiError: api_error_handler,
            HTTPException: http_error_handler,
            Exception: internal_error_handler,
        },
    )
    app.state.processor = ctx.processor
    # connection_ip reads this app's state: inside the Mount, request.app is this app
    app.state.trusted_proxies = trusted_proxies
    mount = Mount(PREFIX, app=app, name="api")
    # Starlette's "(?P<path>.*)" stops at a newline (%0A in a path): such a request
    # would miss the API and get the outer app's plain-text 404; keep it ours.
    mount.path_regex = re.compile(mount.path_regex.pattern, re.DOTALL)
    ctx.document = build_document(mount.routes)
    ctx.docs_html = render_docs(ctx.document)
    return mount


def _by_path(endpoints: tuple[Endpoint, ...]) -> dict[str, dict[str, Endpoint]]:
    """Endpoints grouped by path, each group by method: one Route per path, so a
    method none takes is a 405 with an Allow listing all of them (Starlette
    matches the first route by path alone)."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for endpoint in endpoints:
        methods = by_path.setdefault(endpoint.path, {})
        if endpoint.method in methods:
            raise ValueError(f"{endpoint.method} {endpoint.path} is routed twice")
        methods[endpoint.method] = endpoint
    return by_path


def _dispatch(
    endpoints: dict[str, Endpoint], ctx: ApiContext
) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint of one path: the method's handler, given the context."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        try:
            return await endpoints[method].handler(request, ctx)
        except (ApiError, HTTPException):
            raise
        except Exception as exc:  # noqa: BLE001
            # a real bug: answered here (the connection stays usable), logged in full
            return await internal_error_handler(request, exc)

    return endpoint
