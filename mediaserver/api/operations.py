"""A route and its OpenAPI operation in one place: each resource module registers its
handlers with `@ENDPOINTS.operation(method, path, {...})`, and both the router
(routes.create_api) and the document (openapi.build_document) read that registration,
so the two cannot drift."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mediaserver.api.context import ApiContext

Handler = Callable[[Request, ApiContext], Awaitable[Response]]
"""A plain async handler: the request and the API's shared context."""


@dataclass(frozen=True)
class Endpoint:
    """One (method, path) the API serves.

    Attributes:
        method: upper-case HTTP method.
        path: the template under /api/v1, e.g. /profiles/{id}.
        handler: answers the request.
        operation: its OpenAPI operation object (operationId, summary, responses...).
        path_parameters: the OpenAPI path item's "parameters" (shared by every
            method on the path; the endpoints of one path must agree).
        schemas: the component schemas its resource defines (operations refer to
            them by $ref).
    """

    method: str
    path: str
    handler: Handler
    operation: dict[str, Any]
    path_parameters: tuple[dict[str, Any], ...] = ()
    schemas: dict[str, Any] = field(default_factory=dict)


@dataclass
class Endpoints:
    """A resource's endpoints, in the order they are routed, and the component
    schemas its operations refer to."""

    schemas: dict[str, Any] = field(default_factory=dict)
    items: list[Endpoint] = field(default_factory=list)

    def operation(
        self,
        method: str,
        path: str,
        operation: dict[str, Any],
        path_parameters: tuple[dict[str, Any], ...] = (),
    ) -> Callable[[Handler], Handler]:
        """Register the decorated handler for `method path`, documented by `operation`."""

        def register(handler: Handler) -> Handler:
            self.items.append(Endpoint(
                method, path, handler, operation, path_parameters, self.schemas
            ))
            return handler

        return register


class ApiRoute(Route):
    """All endpoints sharing one path: a Route dispatching on the method (so a
    method no endpoint takes is a 405 whose Allow lists them all), keeping the
    endpoints for the OpenAPI document."""

    def __init__(
        self,
        path: str,
        endpoints: dict[str, Endpoint],
        endpoint: Callable[[Request], Awaitable[Response]],
    ) -> None:
        super().__init__(path, endpoint, methods=list(endpoints))
        self.endpoints = endpoints
