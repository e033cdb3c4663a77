"""Wires the HTTP/WebSocket app, the SFU and the matchmaker into one process on uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn
import uvloop
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from mediaserver import logs
from mediaserver.api import background_tasks, create_api
from mediaserver.config import LIVE_SETTINGS, Config
from mediaserver.matchmaker import MatchPolicy, create_matchmaker
from mediaserver.metrics import Metrics
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

    metrics = Metrics(hub, sfu)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "sessions": len(sfu.sessions)})

    async def readyz(request: Request) -> JSONResponse:
        if hub.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(await metrics.render(), media_type=CONTENT_TYPE_LATEST)

    routes: list[Route | WebSocketRoute | Mount] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        WebSocketRoute("/ws", websocket_endpoint),
    ]
    if store is not None:
        routes.append(create_api(store))  # before the static Mount at "/"
    routes.append(Mount("/", StaticFiles(directory=WEB_ROOT, html=True)))
    app = Starlette(routes=routes)
    app.state.hub = hub
    app.state.sfu = sfu
    app.state.store = store
    app.state.metrics = metrics
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


def uvicorn_config(app: Starlette, config: Config, *, own_logging: bool = False) -> uvicorn.Config:
    """own_logging: uvicorn's loggers go through ours (mediaserver.logs), and its
    access log (client addresses) is on only with --log-ips."""
    extra: dict[str, object] = {}
    if own_logging:
        extra = {"log_config": None, "access_log": config.log_ips}
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        **extra,  # type: ignore[arg-type]
        lifespan="off",
        ws="websockets-sansio",
        ws_max_size=MAX_FRAME_BYTES,  # larger frames: closed with 1009
        # a client that stops answering pings is dropped within 4 s, and its
        # partner told (the media side has its own 4 s timeout)
        ws_ping_interval=1.5,
        ws_ping_timeout=2.5,
    )


class _Server(uvicorn.Server):
    """uvicorn without its own SIGINT/SIGTERM handlers: serve() has its own
    (SIGTERM drains first)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def drain(hub: SignallingHub, seconds: float, poll: float = 0.1) -> None:
    """Stop taking new peers; return when no pair is left or `seconds` passed."""
    await hub.start_drain()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    logger.info("drain_start", extra={"pairs": hub.pairs(), "drain_seconds": seconds})
    while hub.pairs() > 0 and loop.time() < deadline:
        await asyncio.sleep(poll)
    logger.info("drain_end", extra={"pairs_cut": hub.pairs()})


def apply_live(
    config: Config, new: Config, hub: SignallingHub, sfu: Sfu
) -> list[str]:
    """Copy the live settings of `new` into the running server; the names changed."""
    changed = [n for n in LIVE_SETTINGS if getattr(config, n) != getattr(new, n)]
    for name in changed:
        setattr(config, name, getattr(new, name))
    logs.setup(config.log_level, config.log_format, config.log_ips)
    policy = hub.matchmaker.policy
    policy.interest_wait = config.match_interest_wait
    policy.skip_cooldown = config.skip_cooldown
    sfu.config.max_effect_streams = config.max_effect_streams
    return changed


async def serve(config: Config, reload: Callable[[], Config] | None = None) -> None:
    config = dataclasses.replace(config)  # SIGHUP changes this copy
    sfu, hub, store = await start_services(config)
    logger.info(
        "started",
        extra={
            "udp_port": sfu.udp_port,
            "announced_ip": config.announced_ip,
            "http": f"{config.host}:{config.port}",
        },
    )
    app = create_app(sfu, hub, store)
    server = _Server(uvicorn_config(app, config, own_logging=True))
    loop = asyncio.get_running_loop()
    draining: list[asyncio.Task[None]] = []

    def stop() -> None:
        if server.should_exit:
            server.force_exit = True  # asked twice: don't wait for connections
        server.should_exit = True

    def on_sigterm() -> None:
        if draining:  # a second SIGTERM: now
            stop()
            return

        async def drain_then_stop() -> None:
            try:
                await drain(hub, config.drain_seconds)
            finally:
                stop()

        draining.append(asyncio.create_task(drain_then_stop()))

    def on_sighup() -> None:
        if reload is None:
            return
        try:
            new = reload()
        except (ValueError, SystemExit) as exc:
            logger.error("config_reload_failed", extra={"error": str(exc)})
            return
        changed = apply_live(config, new, hub, sfu)
        logger.info("config_reloaded", extra={"changed": ",".join(changed)})

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    loop.add_signal_handler(signal.SIGINT, stop)
    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    ticker = asyncio.create_task(_tick(hub))
    background = start_background(store)
    lag = asyncio.create_task(app.state.metrics.watch_loop_lag())
    try:
        await server.serve()
    finally:
        for task in draining:
            task.cancel()
        lag.cancel()
        ticker.cancel()
        background.cancel()
        await hub.matchmaker.close()
        await sfu.close()
        await asyncio.to_thread(store.close)  # after a run in flight (the store's lock)


def run(config: Config, reload: Callable[[], Config] | None = None) -> int:
    logs.setup(config.log_level, config.log_format, config.log_ips)
    try:
        uvloop.run(serve(config, reload))
    except (OSError, StoreError, sqlite3.Error) as exc:
        logger.error("cannot start: %s", exc)
        return 1
    return 0
