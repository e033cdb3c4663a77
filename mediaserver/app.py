"""Wires the HTTP/WebSocket app and the SFU into one process on uvloop."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mediaserver.config import Config
from mediaserver.sfu.server import Sfu, SfuConfig

logger = logging.getLogger("mediaserver")


def create_app(sfu: Sfu) -> Starlette:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "sessions": len(sfu.sessions)})

    return Starlette(routes=[Route("/healthz", healthz)])


async def serve(config: Config) -> None:
    sfu = Sfu(
        SfuConfig(host=config.udp_host, udp_port=config.udp_port, announced_ip=config.announced_ip)
    )
    await sfu.start()
    logger.info(
        "media on udp/%d (announced %s), http on %s:%d",
        sfu.udp_port,
        config.announced_ip,
        config.host,
        config.port,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(sfu),
            host=config.host,
            port=config.port,
            log_level=config.log_level,
            lifespan="off",
        )
    )
    loop = asyncio.get_running_loop()

    def stop() -> None:
        server.should_exit = True

    # uvicorn re-raises the signal it caught once it has shut down; with a
    # handler of ours in place that ends in a clean exit (0), not a kill.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        await server.serve()
    finally:
        await sfu.close()


def run(config: Config) -> int:
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        uvloop.run(serve(config))
    except OSError as exc:
        logger.error("cannot start: %s", exc)
        return 1
    return 0
