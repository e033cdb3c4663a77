"""Routes and the OpenAPI document cannot drift: every route the API's Mount holds
carries its operation, the document has exactly those, and every documented
(method, path) is routed by Starlette's own matching."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Mount

from mediaserver.api import create_api
from mediaserver.api.context import ApiContext
from mediaserver.api.openapi import METHODS, build_document
from mediaserver.api.operations import ApiRoute, Endpoints
from mediaserver.api.routes import ROUTE_TABLE
from mediaserver.api.schemas import ID_PARAM
from mediaserver.api.wire import PREFIX
from mediaserver.store import Store


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mount]:
    store = Store(str(tmp_path / "ops.db"), os.urandom(32))
    try:
        yield create_api(store)
    finally:
        store.close()


def test_every_route_carries_its_operation_into_the_document(mount: Mount) -> None:
    doc = build_document(mount.routes)
    paths = doc["paths"]
    assert isinstance(paths, dict)
    seen = set()
    for route in mount.routes:
        assert isinstance(route, ApiRoute), route  # a plain Route has no operation
        item = paths[PREFIX + route.path]
        for method, endpoint in route.endpoints.items():
            assert route.methods is not None and method in route.methods
            operation = item[method.lower()]
            assert operation is endpoint.operation
            assert operation["summary"] and operation["responses"], (method, route.path)
            seen.add(operation["operationId"])
    assert len(seen) == len(ROUTE_TABLE)  # one unique operationId per (method, path)
    assert {(m, p) for m, p in ROUTE_TABLE} == {
        (m, r.path) for r in mount.routes if isinstance(r, ApiRoute) for m in r.endpoints}


def test_every_documented_operation_is_routed(mount: Mount) -> None:
    doc = build_document(mount.routes)
    paths = doc["paths"]
    assert isinstance(paths, dict) and paths
    for path, item in paths.items():
        concrete = path.removeprefix(PREFIX)
        for name in ("id", "share_id", "handle"):
            concrete = concrete.replace("{" + name + "}", "x")
        documented = [m.upper() for m in item if m in METHODS]
        assert documented, path
        for method in documented:
            scope = {"type": "http", "method": method, "path": concrete}
            full = [r for r in mount.routes if r.matches(scope)[0] is Match.FULL]
            assert len(full) == 1, (method, path)


def test_the_document_refuses_paths_whose_methods_disagree_on_parameters() -> None:
    endpoints = Endpoints()

    async def handler(request: Request, ctx: ApiContext) -> Response:
        return Response()

    endpoints.operation("GET", "/things/{id}", {"summary": "a"}, (ID_PARAM,))(handler)
    endpoints.operation("DELETE", "/things/{id}", {"summary": "b"})(handler)
    route = ApiRoute("/things/{id}", {e.method: e for e in endpoints.items}, Response)
    with pytest.raises(ValueError, match="path parameters"):
        build_document([route])


def test_the_document_refuses_one_schema_name_defined_twice() -> None:
    async def handler(request: Request, ctx: ApiContext) -> Response:
        return Response()

    one, other = Endpoints(schemas={"Thing": {"type": "object"}}), Endpoints(
        schemas={"Thing": {"type": "string"}})
    one.operation("GET", "/one", {"summary": "a"})(handler)
    other.operation("GET", "/other", {"summary": "b"})(handler)
    routes = [ApiRoute(e.path, {e.method: e}, Response) for e in one.items + other.items]
    with pytest.raises(ValueError, match="Thing"):
        build_document(routes)
