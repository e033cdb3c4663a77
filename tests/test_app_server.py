"""The HTTP server of `serve()` (app._Server): no 0.1 s poll of should_exit. It
wakes once a second (the Date header still changes each second) and stops as soon
as should_exit is set, not at its next wake-up."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from mediaserver.app import DATE_REFRESH, _Server, uvicorn_config
from mediaserver.config import Config
from mediaserver.timer_counts import TimerCounts
from tests.support.signalling_client import free_port

pytestmark = pytest.mark.both_loops


async def _hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def test_the_server_wakes_once_a_second_and_stops_at_once() -> None:
    loop = asyncio.get_running_loop()
    counts = TimerCounts()
    counts.install(loop)
    config = Config(host="127.0.0.1", port=free_port(), log_level="warning")
    server = _Server(uvicorn_config(Starlette(routes=[Route("/", _hello)]), config))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{config.port}/"
    async with httpx.AsyncClient() as client:
        first = await client.get(url)
        await asyncio.sleep(2.5 * DATE_REFRESH)
        second = await client.get(url)
    assert first.text == second.text == "hello"
    assert first.headers["date"] != second.headers["date"]  # refreshed each second
    wakeups = sum(n for source, n in counts.fired.items() if source.endswith("Server.main_loop"))
    assert 1 <= wakeups <= 4  # uvicorn's own loop: 25 in 2.5 s

    asked = loop.time()
    server.should_exit = True
    await asyncio.wait_for(serving, 5)
    assert loop.time() - asked < 0.5 * DATE_REFRESH  # within EXIT_POLL, not DATE_REFRESH
