"""The servers benchmarks/chromium_compare.py puts real Chromium pages on.

Each target is a context manager that starts its server, says which process to
measure (`pid`), gives one page URL per peer (`urls`) and knows how to start the
calls on the opened pages (`start_calls`). Everything runs inside
mediaserver.netns's private namespace: Chromium and Janus gather only its veth
addresses (10.77.0.1 and 10.77.0.2), so no packet leaves the machine.

- MediaserverTarget: `python -m mediaserver.cli` with one worker, announcing the
  namespace's server address, and its own web client in Random mode. The server
  keys "never pair a visitor with itself" on the client's IP address, so each page
  comes from an address of its own: localhost, 10.77.0.1, 10.77.0.2, then
  10.77.1.N added to the namespace's loopback (a /32 of its own, so the kernel uses
  it as the source address too).
- JanusTarget: Debian's Janus with benchmarks/peers/janus/ configs (the launcher of
  benchmarks/peers/janus_client.py), plus benchmarks/peers/janus_page/ served on
  127.0.0.1 by a small HTTP server that also proxies /janus to Janus's HTTP API
  (same origin: no CORS, and localhost is a secure context for getUserMedia).
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

from mediaserver import netns

ROOT = Path(__file__).resolve().parent.parent.parent
JANUS_PAGE = Path(__file__).resolve().parent / "janus_page"
EXTRA_NET = "10.77.1."  # more page addresses for mediaserver (on the namespace's lo)


class TargetError(RuntimeError):
    """A target could not start or its pages could not call."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def page_hosts(count: int) -> list[str]:
    """One address per page: the three the namespace has, then 10.77.1.N (added)."""
    hosts = ["localhost", netns.SERVER_IP, netns.CLIENT_IP]
    extra = [f"{EXTRA_NET}{i}" for i in range(1, max(0, count - len(hosts)) + 1)]
    for address in extra:
        proc = subprocess.run(
            ["ip", "addr", "add", f"{address}/32", "dev", "lo"],
            capture_output=True,
            text=True,
            check=False,
        )
        # present already: an earlier run of this process added it
        present = "File exists" in proc.stderr or "already assigned" in proc.stderr
        if proc.returncode != 0 and not present:
            raise TargetError(f"cannot add {address} to lo: {proc.stderr.strip()}")
    return (hosts + extra)[:count]


def _stop(proc: subprocess.Popen[bytes], timeout: float = 5) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- mediaserver --------------------------------------------------------------------


class MediaserverTarget:
    """A real mediaserver process (one worker) and its Random-mode web client."""

    def __init__(self, pages: int, socket_thread: bool = True) -> None:
        self.pages = pages
        self.socket_thread = socket_thread
        self.pid = 0
        self.urls: list[str] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        workdir = self._stack.enter_context(tempfile.TemporaryDirectory(prefix="mscmp-ms-"))
        port = free_port()
        args = ["--host", "0.0.0.0", "--port", str(port), "--udp-port", "0", "--workers", "1"]
        args += ["--announced-ip", netns.SERVER_IP, "--log-level", "warning"]
        args += ["--db", f"{workdir}/db", "--data-key-file", f"{workdir}/key"]
        args += ["--drain-seconds", "0"]
        args += ["--socket-thread" if self.socket_thread else "--no-socket-thread"]
        log = self._stack.enter_context(open(f"{workdir}/server.log", "wb"))  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "mediaserver.cli", *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._stack.callback(_stop, proc)
        self.proc, self.log_path = proc, f"{workdir}/server.log"
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise TargetError(f"mediaserver exited with {proc.returncode}:\n{self.errors()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TargetError("mediaserver did not answer /healthz within 30 s")
            time.sleep(0.1)
        self.pid = proc.pid
        self.urls = [f"http://{host}:{port}/" for host in page_hosts(self.pages)]

    def errors(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-3000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    async def start_calls(self, pages: list[Any], timeout: float) -> None:
        """Random mode: every page confirms its age and presses Start; the
        matchmaker pairs them (any pairing: each page just needs a stranger)."""
        for page in pages:
            await page.check("#age-confirm")
            await page.click("#start")


# ---- Janus --------------------------------------------------------------------------


def _is_api(path: str) -> bool:
    return path == "/janus" or path.startswith(("/janus/", "/janus?"))


def _page_handler(janus_base: str) -> type[http.server.BaseHTTPRequestHandler]:
    files = {
        "/": ("index.html", "text/html; charset=utf-8"),
        "/index.html": ("index.html", "text/html; charset=utf-8"),
        "/peer.js": ("peer.js", "text/javascript; charset=utf-8"),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Security-Policy", "default-src 'self'")
            self.end_headers()
            with contextlib.suppress(OSError):  # the page went away (a long poll at the end)
                self.wfile.write(body)

        def _proxy(self, data: bytes | None) -> None:
            request = urllib.request.Request(
                janus_base + self.path[len("/janus") :],
                data=data,
                method=self.command,
                headers={"Content-Type": "application/json"},
            )
            try:
                # a long-poll GET waits up to 30 s in Janus
                with urllib.request.urlopen(request, timeout=40) as response:
                    body, status = response.read(), response.status
            except urllib.error.HTTPError as exc:
                body, status = exc.read(), exc.code
            except (OSError, http.client.HTTPException) as exc:
                body, status = f'{{"janus": "error", "error": "{exc}"}}'.encode(), 502
            self._reply(status, body, "application/json")

        def do_GET(self) -> None:
            if _is_api(self.path):
                self._proxy(None)
                return
            entry = files.get(self.path.split("?", 1)[0])
            if self.path == "/favicon.ico":
                self._reply(204, b"", "image/x-icon")
                return
            if entry is None:
                self._reply(404, b"not found", "text/plain")
                return
            self._reply(200, (JANUS_PAGE / entry[0]).read_bytes(), entry[1])

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length)
            if not _is_api(self.path):
                self._reply(404, b"not found", "text/plain")
                return
            self._proxy(data)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


class JanusTarget:
    """Janus (VideoCall plugin) and our page for it; page 2k calls page 2k+1."""

    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.pid = 0
        self.urls: list[str] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        from benchmarks.peers import janus_client

        if shutil.which("janus") is None:
            raise TargetError("janus is not installed (Debian: apt-get install janus)")
        janus_client._accept_local()  # Janus's packets to the peers cross the veth pair
        workdir = self._stack.enter_context(tempfile.TemporaryDirectory(prefix="mscmp-janus-"))
        self.janus = janus_client.JanusProcess(workdir)
        self._stack.callback(self.janus.close)
        self.pid = self.janus.pid
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _page_handler(self.janus.base))
        server.daemon_threads = True  # long polls still waiting when we stop
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self._stack.callback(server.server_close)
        self._stack.callback(server.shutdown)
        port = server.server_address[1]
        self.urls = [f"http://localhost:{port}/?name=p{i}" for i in range(self.pages)]

    def errors(self) -> str:
        return self.janus.errors()

    def alive(self) -> bool:
        return self.janus.proc.poll() is None

    async def start_calls(self, pages: list[Any], timeout: float) -> None:
        """Every page registers; then each even page calls the next one."""
        await _wait_all(
            pages, "() => window.janusPage && (window.janusPage.registered || window.janusPage.error)",
            timeout,
        )  # fmt: skip
        await _raise_page_errors(pages)
        for i in range(0, len(pages) - 1, 2):
            await pages[i].evaluate("name => window.janusPage.call(name)", f"p{i + 1}")


async def _wait_all(pages: list[Any], predicate: str, timeout: float) -> None:
    for page in pages:
        await page.wait_for_function(predicate, timeout=timeout * 1000)


async def _raise_page_errors(pages: list[Any]) -> None:
    for i, page in enumerate(pages):
        error = await page.evaluate("() => window.janusPage && window.janusPage.error")
        if error:
            raise TargetError(f"Janus page {i}: {error}")
