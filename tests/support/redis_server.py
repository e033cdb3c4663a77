"""A throwaway redis-server for tests and benchmarks.

    with RedisServer() as server:
        url = server.url          # redis://127.0.0.1:PORT/0

Starts Debian's ``redis-server`` binary (``apt-get install redis-server``; no
system service is used) on a free loopback port, with its own temporary
directory, no persistence (``--save "" --appendonly no``), and stops it on exit.
With ``password``, it wants that password (``--requirepass``), and ``url``
carries it (``redis://:PASSWORD@127.0.0.1:PORT/0``). With ``tls``, it speaks
only TLS, with a self-signed certificate for 127.0.0.1 made by ``openssl``
(``ca_file``), and ``url`` is ``rediss://127.0.0.1:PORT/0?ssl_ca_certs=CA_FILE``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from types import TracebackType
from typing import Self

__all__ = ["RedisServer", "RedisServerMissing"]


class RedisServerMissing(RuntimeError):
    """The redis-server binary is not installed."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ping(port: int, password: str | None = None, ca_file: str | None = None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as plain:
            s = plain
            if ca_file is not None:
                s = ssl.create_default_context(cafile=ca_file).wrap_socket(
                    plain, server_hostname="127.0.0.1"
                )
            if password is not None:
                s.sendall(f"AUTH {password}\r\n".encode())
                if not s.recv(16).startswith(b"+OK"):
                    return False
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on 127.0.0.1 (a context manager).

    Attributes:
        port: its TCP port.
        url: ``redis://127.0.0.1:PORT/0``.
        pid: its process id (for CPU accounting in benchmarks).
    """

    def __init__(
        self,
        executable: str | None = None,
        startup_timeout: float = 10.0,
        password: str | None = None,
        tls: bool = False,
    ) -> None:
        exe = executable or shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.access(exe, os.X_OK):
            raise RedisServerMissing(
                "redis-server not found: install it with "
                "`apt-get update && apt-get install -y redis-server`"
            )
        self._exe = exe
        self._timeout = startup_timeout
        self.password = password
        self.tls = tls
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password is not None else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca_file}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def ca_file(self) -> str:
        """The server's self-signed certificate (with tls): the CA clients trust."""
        assert self._dir is not None
        return os.path.join(self._dir.name, "cert.pem")

    def _make_certificate(self) -> None:
        assert self._dir is not None
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", os.path.join(self._dir.name, "key.pem"), "-out", self.ca_file],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> Self:
        self._dir = tempfile.TemporaryDirectory(prefix="redis-test-")
        if self.tls:
            self._make_certificate()
        for _ in range(5):  # the free port may be taken between probe and bind
            self.port = _free_port()
            if self._launch():
                return self
        log = os.path.join(self._dir.name, "redis.log")
        tail = ""
        if os.path.exists(log):
            with open(log) as f:
                tail = f.read()[-2000:]
        self.stop()
        raise RuntimeError(f"redis-server did not start:\n{tail}")

    def _launch(self) -> bool:
        """Start redis-server on self.port; True once it answers PING."""
        assert self._dir is not None
        if self.tls:
            ports = ["--port", "0", "--tls-port", str(self.port),
                     "--tls-cert-file", self.ca_file,
                     "--tls-key-file", os.path.join(self._dir.name, "key.pem"),
                     "--tls-ca-cert-file", self.ca_file, "--tls-auth-clients", "no"]  # fmt: skip
        else:
            ports = ["--port", str(self.port)]
        self._proc = subprocess.Popen(
            [
                self._exe,
                *ports,
                "--bind", "127.0.0.1",
                "--dir", self._dir.name,
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--protected-mode", "yes",
                "--loglevel", "warning",
                "--logfile", os.path.join(self._dir.name, "redis.log"),
                *(["--requirepass", self.password] if self.password is not None else []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if _ping(self.port, self.password, self.ca_file if self.tls else None):
                return True
            time.sleep(0.02)
        self._kill()
        return False

    def _kill(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None

    def crash(self) -> None:
        """SIGKILL the server (an outage), keeping its port and directory for
        ``restart``; with no persistence, its data is gone."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open and nothing is answered (a
        hung or swapping Redis), until ``resume``."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def restart(self) -> Self:
        """Start again on the same port after ``crash`` (empty, as after a real
        restart without persistence)."""
        assert self._proc is None and self._dir is not None and self.port
        if not self._launch():
            raise RuntimeError(f"redis-server did not restart on port {self.port}")
        return self

    def stop(self) -> None:
        self._kill()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


CLUSTER_SECRET = "tests: the cluster secret of every node"
"""The --cluster-secret the tests' nodes share (a node on Redis needs one)."""
