"""Wires the HTTP/WebSocket app, the SFU and the matchmaker into one process on uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import sqlite3
import ssl
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import AuthenticationError, AuthorizationError, RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from mediaserver import logs
from mediaserver.api import background_tasks, create_api
from mediaserver.client_address import Network, parse_trusted_proxies
from mediaserver.config import LIVE_SETTINGS, Config
from mediaserver.edges import EdgePolicy, MetricsAccess, SecurityHeaders, parse_listen
from mediaserver.keepalive import SweptKeepalive
from mediaserver.listeners import tcp_listener
from mediaserver.mail import MailSender, make_transport
from mediaserver.matchmaker import Matchmaker, MatchPolicy, OnMatch, create_matchmaker
from mediaserver.metrics import Metrics, merge_expositions
from mediaserver.node.bus import Bus, LocalBus
from mediaserver.node.coordinator import CoordinatorBus, CoordinatorLink, CoordinatorMatchmaker
from mediaserver.node.redis_bus import RedisBus
from mediaserver.node.worker_spec import WorkerSpec
from mediaserver.sfu.server import Sfu, SfuConfig
from mediaserver.signalling.hub import SignallingHub
from mediaserver.signalling.protocol import MAX_FRAME_BYTES
from mediaserver.signalling.ws import websocket_endpoint
from mediaserver.store import Store, StoreError, load_or_create_data_key
from mediaserver.timer_counts import TimerCounts
from mediaserver.tls import ServerTls, TlsError

logger = logging.getLogger("mediaserver")

WEB_ROOT = Path(__file__).parent / "web"
DATE_REFRESH = 1.0  # seconds between the HTTP server's wake-ups (its Date header)
EXIT_POLL = 0.1  # uvicorn's poll of should_exit: the grid a stop is acted on
MATCH_TICK = 0.25  # seconds between re-examinations of the queue (interest waits)


def create_app(
    sfu: Sfu,
    hub: SignallingHub,
    store: Store | None = None,
    worker: WorkerSpec | None = None,
    trusted_proxies: tuple[Network, ...] = (),
    edges: EdgePolicy | None = None,
) -> Starlette:
    """The HTTP app; with a store, the REST API under /api/v1 (its background
    processing is started by `start_background`, since lifespan is off).
    `edges`: Origin, per-address and /metrics rules, security headers (defaults
    of EdgePolicy when None)."""
    edges = edges or EdgePolicy()

    metrics = Metrics(hub, sfu, worker=str(worker.index) if worker else "0", store=store)
    siblings_prefix = worker.node_id.rpartition(".w")[0] + ".w" if worker else None

    async def on_request(msg: dict[str, object]) -> dict[str, object] | None:
        if msg.get("t") == "metrics":
            return {"text": (await metrics.render()).decode()}
        return None

    hub.on_request = on_request

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse(
            {"status": "ok", "sessions": len(sfu.sessions), "nodes": len(hub.bus.nodes())}
        )

    async def readyz(request: Request) -> JSONResponse:
        if hub.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics_endpoint(request: Request) -> Response:
        access: MetricsAccess = request.app.state.metrics_access
        if not access.allows(request):
            # no hint of what would be allowed: 404 like any unknown path
            return Response("Not Found", status_code=404, media_type="text/plain")
        body = await metrics.render()
        if siblings_prefix is not None:
            # a scrape reaches one worker: it gathers the other workers' series
            others = [
                n for n in hub.bus.nodes() if n.startswith(siblings_prefix) and n != hub.node_id
            ]
            replies = await asyncio.gather(
                *(hub.bus.request(n, {"t": "metrics"}, timeout=1.0) for n in others),
                return_exceptions=True,
            )
            texts = [body.decode()] + [
                str(r["text"]) for r in replies if isinstance(r, dict) and "text" in r
            ]
            body = merge_expositions(texts)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    routes: list[Route | WebSocketRoute | Mount] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        WebSocketRoute("/ws", websocket_endpoint),
    ]
    if edges.metrics_on_main_port:
        routes.append(Route("/metrics", metrics_endpoint))
    if store is not None:
        routes.append(create_api(store, trusted_proxies, on_ban=hub.spread_bans))  # before the static Mount at "/"
    routes.append(Mount("/", StaticFiles(directory=WEB_ROOT, html=True)))
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders, tls=edges.tls)])
    app.state.hub = hub
    app.state.sfu = sfu
    app.state.store = store
    app.state.metrics = metrics
    app.state.trusted_proxies = trusted_proxies  # client_address.connection_ip reads it
    app.state.edges = edges
    app.state.metrics_access = edges.metrics
    app.state.metrics_endpoint = metrics_endpoint
    return app


def create_metrics_app(main: Starlette) -> Starlette:
    """The --metrics-listen app: /metrics of `main` (every worker's series), on its
    own address; a token still applies if set, the loopback rule does not (the
    operator chose who can reach this address)."""
    edges: EdgePolicy = main.state.edges
    app = Starlette(
        routes=[Route("/metrics", main.state.metrics_endpoint)],
        middleware=[Middleware(SecurityHeaders, tls=False)],
    )
    app.state.trusted_proxies = main.state.trusted_proxies
    app.state.metrics_access = MetricsAccess(token=edges.metrics.token, loopback_only=False)
    return app


def start_background(store: Store) -> asyncio.Task[None]:
    """The store's timer (pending privacy requests, retention); cancel it on shutdown."""
    return asyncio.create_task(background_tasks(store))


def start_mail(store: Store, config: Config, metrics: Metrics) -> asyncio.Task[None]:
    """The outbox sender (SMTP, or the Maildir without --smtp-url); its counts go to
    /metrics. Cancel it on shutdown."""
    sender = MailSender(store, make_transport(config.smtp_url, config.mail_from,
                                              config.mail_dir()))
    metrics.mail_counts = sender.stats.as_dict
    return asyncio.create_task(sender.run())


def open_store(config: Config) -> Store:
    """The SQLite store at --db, its chat key from --data-key-file (made on first run)."""
    return Store(
        config.db,
        load_or_create_data_key(config.data_key_file),
        min_age=config.min_age,
        session_ttl=config.session_ttl,
    )


async def start_services(
    config: Config, worker: WorkerSpec | None = None
) -> tuple[Sfu, SignallingHub, Store]:
    """The store, the SFU and the signalling hub with its matchmaker and bus, started."""
    store = await asyncio.to_thread(open_store, config)
    udp_port = config.udp_port + worker.index if worker and config.udp_port else config.udp_port
    sfu = Sfu(
        SfuConfig(
            host=config.udp_host,
            udp_port=udp_port,
            tcp_port=config.tcp_port + (worker.index if worker else 0) if config.tcp_port else None,
            announced_ip=config.announced_ip,
            read_hold_us=config.read_hold_us,
            socket_thread=config.socket_thread,
            effects_workers=config.effects_workers,
            max_effect_streams=config.max_effect_streams,
            max_cover_streams=config.max_cover_streams,
            max_peers=config.max_sessions,
            max_media_memory=config.media_memory_bytes(),
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
    try:
        bus, matchmaker_factory = await _node_layer(config, policy, worker)
    except BaseException:
        await sfu.close()
        store.close()
        raise
    hub = SignallingHub.with_sfu(
        sfu,
        matchmaker_factory,
        identity_key=_identity_key(config),
        mutual_reveal=config.mutual_reveal,
        effects=_effects(),
        store=store,
        bus=bus,
        max_sessions_per_address=config.max_sessions_per_address,
        turn=config.turn_credentials(),
    )
    await hub.start()
    return sfu, hub, store


def _effects() -> Mapping[str, Callable[[], Any]] | None:
    """The effects, or None when the optional 'effects' extra is not installed:
    the server runs without them (an `effect` request gets effect_unavailable)."""
    # imported here, not at the top: ai_filters' effects import OpenCV (the optional
    # extra), and a server without it must still start
    from mediaserver import ai_filters

    try:
        return ai_filters.registry()
    except ai_filters.EffectsUnavailable as exc:
        logger.warning("effects_unavailable", extra={"error": str(exc)})
        return None


def _identity_key(config: Config) -> bytes:
    """The key addresses are hashed with: the same on every node and worker (so
    reports count, and refusals stick, wherever a visitor lands), derived from the
    data key, never stored apart."""
    import hashlib
    import hmac

    key = load_or_create_data_key(config.data_key_file)
    return hmac.new(key, b"mediaserver identity key v1", hashlib.sha256).digest()


async def _node_layer(
    config: Config, policy: MatchPolicy, worker: WorkerSpec | None
) -> tuple[Bus, Callable[[OnMatch], Matchmaker]]:
    """The bus and matchmaker: the coordinator's (workers of one machine), Redis's
    (several nodes), or in-process (one node, one worker)."""
    if worker is not None and worker.coordinator is not None:
        link = CoordinatorLink(worker.node_id)
        await link.connect(worker.coordinator)
        return CoordinatorBus(link), lambda on_match: CoordinatorMatchmaker(link, policy, on_match)
    if config.redis_url:
        url = config.redis_url
        node = worker.node_id if worker is not None else config.node_name()
        secret = config.cluster_key()
        if secret is None:  # validate() refuses this
            raise ValueError("--redis-url needs a cluster secret")
        bus = RedisBus(url, node, secret=secret)
        return bus, lambda on_match: create_matchmaker(url, policy, on_match, secret=secret)
    return LocalBus("local"), lambda on_match: create_matchmaker(None, policy, on_match)


async def _tick(hub: SignallingHub) -> None:
    while True:
        # a node without visitors has nothing to tick (its queue waits, pending
        # matches and calls are its visitors'): it sleeps until one comes
        await hub.until_timed_work()
        await asyncio.sleep(MATCH_TICK)
        try:
            await hub.tick()
        except Exception:
            logger.exception("match queue tick failed")


def uvicorn_config(
    app: Starlette,
    config: Config,
    *,
    own_logging: bool = False,
    tls: ssl.SSLContext | None = None,
) -> uvicorn.Config:
    """own_logging: uvicorn's loggers go through ours (mediaserver.logs), and its
    access log (client addresses) is on only with --log-ips. tls: serve HTTPS and
    WSS with this context (the live one ServerTls renews on SIGHUP)."""
    extra: dict[str, object] = {}
    if own_logging:
        extra = {"log_config": None, "access_log": config.log_ips}
    if tls is not None:
        # our own context, not uvicorn's from file names: SIGHUP reloads into it
        extra["ssl_context_factory"] = lambda _config, _default: tls
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        # the client address is ours to work out (client_address, --trusted-proxy):
        # uvicorn's own default believes X-Forwarded-For from any 127.0.0.1 peer
        proxy_headers=False,
        **extra,  # type: ignore[arg-type]
        lifespan="off",
        # uvicorn's websockets-sansio, its pings swept on one timer (keepalive.py)
        ws=SweptKeepalive,
        ws_max_size=MAX_FRAME_BYTES,  # larger frames: closed with 1009
        # permessage-deflate keeps a zlib compressor and decompressor per connection,
        # about 46 KB of an idle connection's 75 KB (measured); signalling frames are
        # small and few next to the media, so they go uncompressed
        ws_per_message_deflate=False,
        # a client that stops answering pings is dropped within 4 s, and its
        # partner told (the media side has its own 4 s timeout); pings go out up to
        # keepalive.SWEEP early
        ws_ping_interval=1.5,
        ws_ping_timeout=2.5,
    )


def _bind_metrics(config: Config, worker: WorkerSpec | None) -> socket.socket | None:
    """The --metrics-listen socket, bound before anything starts (a taken port is a
    clean "cannot start"); with several workers only worker 0 binds it (its scrape
    gathers the others' series over the bus)."""
    if not config.metrics_listen or (worker is not None and worker.index != 0):
        return None
    host, port = parse_listen(config.metrics_listen)
    return tcp_listener(host, port)


def _metrics_server(app: Starlette, config: Config) -> uvicorn.Server:
    return _Server(
        uvicorn.Config(
            create_metrics_app(app), log_config=None, access_log=False, lifespan="off",
            log_level=config.log_level,
        )
    )


class _Server(uvicorn.Server):
    """uvicorn without its own SIGINT/SIGTERM handlers: serve() has its own
    (SIGTERM drains first); and without its 0.1 s poll of `should_exit`: setting
    it wakes main_loop (which acts on it on the same 0.1 s grid as before), which
    otherwise wakes once a second (the Date header's resolution)."""

    _exit_requested: asyncio.Event | None = None
    _should_exit = False

    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        if value and self._exit_requested is not None:
            self._exit_requested.set()

    async def main_loop(self) -> None:
        # uvicorn's own loop sleeps 0.1 s between on_tick calls and refreshes the
        # Date header on every 10th: here on_tick runs once a second (counter
        # stepping by 10) or as soon as should_exit is set
        loop = asyncio.get_running_loop()
        self._exit_requested = asyncio.Event()
        started = loop.time()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DATE_REFRESH):
                    await self._exit_requested.wait()
            if self.should_exit:
                # seen on uvicorn's 0.1 s grid, as its poll saw it: a drained
                # worker's replies of that moment still go out before its
                # connections are closed (tests/e2e/test_operator.py relies on it)
                await asyncio.sleep(EXIT_POLL - (loop.time() - started) % EXIT_POLL)
            counter = (counter + 10) % 864000
            should_exit = await self.on_tick(counter)

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


async def serve(
    config: Config,
    reload: Callable[[], Config] | None = None,
    worker: WorkerSpec | None = None,
) -> None:
    config = dataclasses.replace(config)  # SIGHUP changes this copy
    timers = TimerCounts() if config.count_timers else None
    if timers is not None:  # before anything arms a timer
        timers.install(asyncio.get_running_loop())
    # the certificate first: a bad one stops the start before anything is bound
    tls = ServerTls(config.tls_cert, config.tls_key) if config.tls_cert else None
    metrics_socket = _bind_metrics(config, worker)
    sfu, hub, store = await start_services(config, worker)
    logger.info(
        "started",
        extra={
            "udp_port": sfu.udp_port,
            "tcp_port": sfu.tcp_port,
            "announced_ip": config.announced_ip,
            "http": f"{config.host}:{config.port}",
            "tls": tls is not None,
        },
    )
    app = create_app(
        sfu, hub, store, worker, parse_trusted_proxies(config.trusted_proxy),
        EdgePolicy.from_config(config, tls=tls is not None),
    )
    uv_config = uvicorn_config(
        app, config, own_logging=True, tls=tls.context if tls is not None else None
    )
    # a worker's socket is bound by the supervisor; handed over as a socket object,
    # not uvicorn's `fd` (which takes it for a Unix socket: no TCP_NODELAY, and
    # Nagle then holds small WebSocket frames for ~40 ms)
    sockets = [socket.socket(fileno=worker.fd)] if worker is not None else None
    if sockets is None and config.host == "::":
        # uvicorn would bind it IPv6-only (create_server sets IPV6_V6ONLY)
        sockets = [tcp_listener(config.host, config.port)]
    server = _Server(uv_config)
    loop = asyncio.get_running_loop()
    if timers is not None:
        app.state.metrics.timer_counts = timers.snapshot
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
        if tls is not None:  # a renewed certificate, whatever the config file says
            tls.reload()
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
    link = getattr(hub.bus, "_link", None)
    if link is not None:
        link.on_lost = stop  # the supervisor is gone: so is this worker
    ticker = asyncio.create_task(_tick(hub))
    # one process runs the store's timer (the workers share the database)
    background = start_background(store) if worker is None or worker.index == 0 else None
    mail = start_mail(store, config, app.state.metrics) if background is not None else None
    lag = asyncio.create_task(app.state.metrics.watch_loop_lag())
    metrics_server = _metrics_server(app, config) if metrics_socket is not None else None
    metrics_serving = (
        asyncio.create_task(metrics_server.serve(sockets=[metrics_socket]))
        if metrics_server is not None and metrics_socket is not None
        else None
    )
    try:
        await server.serve(sockets=sockets)
    finally:
        if metrics_server is not None and metrics_serving is not None:
            metrics_server.should_exit = True
            await asyncio.gather(metrics_serving, return_exceptions=True)
        for task in draining:
            task.cancel()
        lag.cancel()
        ticker.cancel()
        if background is not None:
            background.cancel()
        if mail is not None:
            mail.cancel()
        await hub.close()
        await sfu.close()
        await asyncio.to_thread(store.close)  # after a run in flight (the store's lock)


def _redis_hint(exc: BaseException) -> str:
    """One line for a start that failed; for Redis, what to fix (the URL itself,
    which may hold a password, is never logged)."""
    if isinstance(exc, AuthenticationError | AuthorizationError):
        return (
            f"Redis refused this node ({exc}); give its user and password in --redis-url, "
            "e.g. redis://USER:PASSWORD@HOST:PORT/0 (rediss:// for TLS)"
        )
    if isinstance(exc, RedisError):
        return f"Redis at --redis-url: {type(exc).__name__}: {exc}"
    return str(exc)


def run(
    config: Config,
    reload: Callable[[], Config] | None = None,
    worker: WorkerSpec | None = None,
) -> int:
    logs.setup(config.log_level, config.log_format, config.log_ips)
    try:
        uvloop.run(serve(config, reload, worker))
    except (OSError, StoreError, sqlite3.Error, RedisError, TlsError) as exc:
        logger.error("cannot start: %s", _redis_hint(exc))
        return 1
    return 0
