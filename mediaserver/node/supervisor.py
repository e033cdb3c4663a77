"""`--workers N`: one supervisor, N worker processes.

The supervisor binds the HTTP port (one SO_REUSEPORT socket per worker, so the
kernel spreads connections evenly) and worker i accepts on socket i; worker i
binds its own UDP port (--udp-port + i). Without --redis-url
the supervisor also runs the coordinator (the shared match queue and the bus
between workers). A worker that dies is started again; the coordinator tells
the others at once, so its visitors' partners are told and queued again.

Signals: SIGTERM and SIGINT go to every worker (they drain, then exit) and the
supervisor exits 0 when all have; SIGHUP re-reads the config (the coordinator's
match policy) and goes to every worker (each re-reads the config and, with
--tls-cert, its certificate and key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable

import uvloop

from mediaserver import logs
from mediaserver.app import open_store
from mediaserver.config import Config
from mediaserver.listeners import tcp_listener
from mediaserver.matchmaker import MatchPolicy
from mediaserver.node.coordinator import Coordinator
from mediaserver.node.worker_spec import SPEC_ENV, WorkerSpec, encode_worker_env
from mediaserver.sfu.tcp import open_listener
from mediaserver.sfu.udp import open_media_socket
from mediaserver.store import StoreError

logger = logging.getLogger("mediaserver")

EARLY_EXIT = 3.0  # a worker that cannot start this soon after the first start: setup is wrong
MAX_BACKOFF = 5.0  # seconds between restarts of a worker that keeps dying


def run_workers(config: Config, argv: list[str], reload: Callable[[], Config]) -> int:
    """Run the supervisor until its workers have exited; the exit code.

    Args:
        argv: the command line, handed to each worker (it reloads from it on SIGHUP).
        reload: the config read again (SIGHUP); raises ValueError when it is wrong.
    """
    logs.setup(config.log_level, config.log_format, config.log_ips)
    try:
        return uvloop.run(Supervisor(config, argv, reload).run())
    except OSError as exc:
        logger.error("cannot start: %s", exc)
        return 1


def _bind_http(config: Config, n: int) -> list[socket.socket]:
    """One listening socket per worker on the HTTP port, with SO_REUSEPORT: the
    kernel spreads connections evenly over them (one shared socket would wake
    whichever worker is idle first, and that is mostly the same one)."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    # a plain bind first: the port is refused when anything holds it, even another
    # process that also asked for SO_REUSEPORT
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if config.host == "::":  # the port must be free for both families
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            probe.bind((config.host, config.port))
        except OSError as exc:
            raise OSError(
                exc.errno, f"HTTP port {config.host}:{config.port}: {exc.strerror}"
            ) from None
        port = probe.getsockname()[1]
    return [_listen(config.host, port) for _ in range(n)]


def _listen(host: str, port: int) -> socket.socket:
    # dual-stack for "::"; not inheritable: only its own worker gets it (see _spawn)
    return tcp_listener(host, port, reuse_port=True)


def _check_udp_ports(config: Config, n: int) -> None:
    """Fail before any worker starts when one of the UDP (or ICE-TCP) ports is taken."""
    for i in range(n if config.udp_port else 0):
        try:
            # the socket the worker will bind (dual-stack where the host has IPv6)
            open_media_socket(config.udp_host, config.udp_port + i).close()
        except OSError as exc:
            raise OSError(
                exc.errno, f"UDP port {config.udp_port + i}: {exc.strerror} (address in use?)"
            ) from None
    for i in range(n if config.tcp_port else 0):
        try:
            open_listener(config.udp_host, config.tcp_port + i).close()
        except OSError as exc:
            raise OSError(
                exc.errno, f"TCP port {config.tcp_port + i}: {exc.strerror} (address in use?)"
            ) from None


class Supervisor:
    """Starts the workers, starts again each one that dies, forwards signals."""

    def __init__(self, config: Config, argv: list[str], reload: Callable[[], Config]) -> None:
        self.config = config
        self.argv = argv
        self.reload = reload
        self.n = config.worker_count()
        self.node = config.node_name()
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.stopping = False
        self.failed = False
        self.restarts = 0
        self._socks: list[socket.socket] = []
        self._spawning = asyncio.Lock()
        self._coordinator: Coordinator | None = None

    async def run(self) -> int:
        """Start the workers (and the coordinator without Redis), keep them
        running until a signal stops them; 1 if they could not start."""
        try:
            # the database and data key exist before the workers race to make them
            await asyncio.to_thread(lambda: open_store(self.config).close())
        except StoreError as exc:
            logger.error("cannot start: %s", exc)
            return 1
        _check_udp_ports(self.config, self.n)
        self._socks = _bind_http(self.config, self.n)
        self._port = self._socks[0].getsockname()[1]
        tmp = tempfile.TemporaryDirectory(prefix="mediaserver-")
        coordinator_path = None
        if not self.config.redis_url:
            coordinator_path = os.path.join(tmp.name, "coordinator.sock")
            policy = MatchPolicy(
                interest_wait=self.config.match_interest_wait,
                skip_cooldown=self.config.skip_cooldown,
            )
            coordinator = Coordinator(coordinator_path, policy)
            await coordinator.start()
            self._coordinator = coordinator
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._forward, signal.SIGTERM)
        loop.add_signal_handler(signal.SIGINT, self._forward, signal.SIGINT)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        logger.info(
            "workers_starting",
            extra={"workers": self.n, "node": self.node, "http": f"{self.config.host}:{self.config.port}"},
        )
        try:
            await asyncio.gather(*(self._keep(i, coordinator_path) for i in range(self.n)))
        finally:
            if self._coordinator is not None:
                await self._coordinator.close()
            for sock in self._socks:
                sock.close()
            tmp.cleanup()
        return 1 if self.failed else 0

    async def _spawn(self, index: int, coordinator: str | None) -> asyncio.subprocess.Process:
        sock = self._socks[index]
        worker = WorkerSpec(index, f"{self.node}.w{index}", sock.fileno(), coordinator)
        env = {**os.environ, SPEC_ENV: encode_worker_env(self.config, self.argv, worker)}
        # uvloop's spawn keeps every inheritable descriptor open in the child, so
        # a socket is inheritable only while its own worker is being started
        async with self._spawning:
            sock.set_inheritable(True)
            try:
                return await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "mediaserver.node.worker_process",
                    pass_fds=(sock.fileno(),), env=env,
                )
            finally:
                sock.set_inheritable(False)

    async def _keep(self, index: int, coordinator: str | None) -> None:
        """Run worker `index` until the supervisor stops; start it again when it dies."""
        backoff = 0.25
        first = True
        while not self.stopping:
            started = time.monotonic()
            if self._socks[index].fileno() < 0:  # a restart: a new socket for it
                self._socks[index] = _listen(self.config.host, self._port)
            proc = await self._spawn(index, coordinator)
            # the worker holds the only copy now: when it exits the kernel stops
            # queueing connections there at once (they go to the other workers)
            self._socks[index].close()
            self.procs[index] = proc
            logger.info("worker_started", extra={"worker": index, "pid": proc.pid})
            code = await proc.wait()
            if self.stopping:
                break
            lived = time.monotonic() - started
            if first and lived < EARLY_EXIT and code == 1:  # "cannot start" (a kill is a death)
                logger.error("cannot start: worker %d exited with %d", index, code)
                self.failed = True
                self._forward(signal.SIGTERM)
                break
            first = False
            self.restarts += 1
            logger.warning("worker_died", extra={"worker": index, "code": code})
            backoff = 0.25 if lived > 10 else min(MAX_BACKOFF, backoff * 2)
            await asyncio.sleep(backoff)

    def _forward(self, signum: int) -> None:
        self.stopping = True
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    def _reload(self) -> None:
        try:
            new = self.reload()
        except (ValueError, SystemExit) as exc:
            # still passed on: each worker re-reads its TLS certificate whatever the
            # config says (and logs the same config error itself)
            logger.error("config_reload_failed", extra={"error": str(exc)})
        else:
            if self._coordinator is not None:
                policy = self._coordinator.matchmaker.policy
                policy.interest_wait = new.match_interest_wait
                policy.skip_cooldown = new.skip_cooldown
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGHUP)
