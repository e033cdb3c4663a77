"""Wires the HTTP/WebSocket app, the SFU and the matchmaker into one process on uvloop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
from pathlib import Path

import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from mediaserver.api import background_tasks, create_api
from mediaserver.config import Config
from mediaserver.matchmaker import MatchPolicy, create_matchmaker
from mediaserver.sfu.server import Sfu, SfuConfig
from mediaserver.signalling.hub import SignallingHub
from mediaserver.signalling.protocol import MAX_FRAME_BYTES
from mediaserver.signalling.ws import websocket_endpoint
from mediaserver.store import Store, StoreError, load_or_create_data_key

logger = logging.getLogger("mediaserver")

WEB_ROOT = Path(__file__).parent / "web"
MATCH_TICK = 0.25  # seconds between re-examinations of the queue (interest waits)


def create_app(sfu: Sfu, hub: SignallingHub, store: Store | None = None) -> Starlette:
    """The HTTP app; with a store, the REST API under /api/v1 (its background
    processing is started by `start_background`, since lifespan is off)."""

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "sessions": len(sfu.sessions)})

    routes: list[Route | WebSocketRoute | Mount] = [
        Route("/healthz", healthz),
        WebSocketRoute("/ws", websocket_endpoint),
    ]
    if store is not None:
        routes.append(create_api(store))  # before the static Mount at "/"
    routes.append(Mount("/", StaticFiles(directory=WEB_ROOT, html=True)))
    app = Starlette(routes=routes)
    app.state.hub = hub
    app.state.sfu = sfu
    app.state.store = store
    return app


def start_background(store: Store) -> asyncio.Task[None]:
    """The store's timer (pending privacy requests, retention); cancel it on shutdown."""
    return asyncio.create_task(background_tasks(store))


def open_store(config: Config) -> Store:
    """The SQLite store at --db, its chat key from --data-key-file (made on first run)."""
    return Store(config.db, load_or_create_data_key(config.data_key_file))


async def start_services(config: Config) -> tuple[Sfu, SignallingHub, Store]:
    """The store, the SFU and the signalling hub with its matchmaker, started."""
    store = await asyncio.to_thread(open_store, config)
    sfu = Sfu(
        SfuConfig(
            host=config.udp_host,
            udp_port=config.udp_port,
            announced_ip=config.announced_ip,
            effects_workers=config.effects_workers,
            max_effect_streams=config.max_effect_streams,
        )
    )
    try:
        await sfu.start()
    except BaseException:
        store.close()
        raise
    policy = MatchPolicy(
        interest_wait=config.match_interest_wait, skip_cooldown=config.skip_cooldown
    )
    from mediaserver import ai_filters

    hub = SignallingHub(
        sfu,
        lambda on_match: create_matchmaker(config.redis_url, policy, on_match),
        mutual_reveal=config.mutual_reveal,
        effects=ai_filters.EFFECTS,
        store=store,
    )
    await hub.matchmaker.start()
    return sfu, hub, store


async def _tick(hub: SignallingHub) -> None:
    while True:
        await asyncio.sleep(MATCH_TICK)
        try:
            await hub.tick()
        except Exception:
            logger.exception("match queue tick failed")


def uvicorn_config(app: Starlette, config: Config) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        lifespan="off",
        ws="websockets-sansio",
        ws_max_size=MAX_FRAME_BYTES,  # larger frames: closed with 1009
        # a client that stops answering pings is dropped within 4 s, and its
        # partner told (the media side has its own 4 s timeout)
        ws_ping_interval=1.5,
        ws_ping_timeout=2.5,
    )


async def serve(config: Config) -> None:
    sfu, hub, store = await start_services(config)
    logger.info(
        "media on udp/%d (announced %s), http on %s:%d",
        sfu.udp_port,
        config.announced_ip,
        config.host,
        config.port,
    )
    server = uvicorn.Server(uvicorn_config(create_app(sfu, hub, store), config))
    loop = asyncio.get_running_loop()

    def stop() -> None:
        server.should_exit = True

    # uvicorn re-raises the signal it caught once it has shut down; with a
    # handler of ours in place that ends in a clean exit (0), not a kill.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    ticker = asyncio.create_task(_tick(hub))
    background = start_background(store)
    try:
        await server.serve()
    finally:
        ticker.cancel()
        background.cancel()
        await hub.matchmaker.close()
        await sfu.close()
        await asyncio.to_thread(store.close)  # after a run in flight (the store's lock)


def run(config: Config) -> int:
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        uvloop.run(serve(config))
    except (OSError, StoreError, sqlite3.Error) as exc:
        logger.error("cannot start: %s", exc)
        return 1
    return 0
