"""The SFU under test, alone in its own process, driven over stdin/stdout.

benchmarks/forward.py starts this module as a child process so that the
server's CPU time can be read from /proc/<pid>/stat without the load
generator's. It runs `Sfu` on uvloop with the media port on 127.0.0.1 (port 0:
a free one) and answers one JSON object per line:

    <- {"ready": true, "pid": 123, "port": 40000, "loop": "uvloop"}   (on start)
    -> {"op": "create", "offer": "v=0..."}    <- {"ok": true, "id": "...", "answer": "v=0..."}
    -> {"op": "connect", "pub": ID, "sub": ID} <- {"ok": true}
    -> {"op": "sessions"}                      <- {"ok": true, "sessions": {ID: "connected", ...}}
    -> {"op": "counters"}                      <- {"ok": true, "counters": {...}}
    -> {"op": "quit"}                          <- {"ok": true}, then exit

Errors come back as {"ok": false, "error": "..."}. EOF on stdin also ends it,
and it dies with its parent (PR_SET_PDEATHSIG), so it never outlives a run.

    python -m benchmarks.sfu_harness [--host 127.0.0.1] [--announced-ip IP[,IP]] [--asyncio]
                                     [--tcp] [--read-hold-us 0]

`--host ::` binds the dual-stack socket the server binds by default; announce
`127.0.0.1,::1` with it to serve IPv4 and IPv6 peers at once (forward.py --family 6).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import signal
import sys
from typing import Any

from mediaserver.sfu.server import Sfu, SfuConfig

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent exits (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


class Harness:
    def __init__(self, sfu: Sfu, done: asyncio.Future[None]) -> None:
        self.sfu = sfu
        self.done = done
        self.buffer = b""

    def on_stdin(self) -> None:
        try:
            chunk = os.read(0, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self._finish()
            return
        self.buffer += chunk
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip():
                self._reply(self._handle(line))

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def _handle(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "create":
                session = self.sfu.create_session(request["offer"])
                return {"ok": True, "id": session.id, "answer": session.answer}
            if op == "connect":
                self.sfu.connect(request["pub"], request["sub"])
                return {"ok": True}
            if op == "sessions":
                return {
                    "ok": True,
                    "sessions": {sid: s.state.value for sid, s in self.sfu.sessions.items()},
                }
            if op == "counters":
                return {"ok": True, "counters": self.sfu.counters()}
            if op == "quit":
                self._finish()
                return {"ok": True}
            return {"ok": False, "error": f"unknown op {op!r}"}
        except Exception as exc:  # noqa: BLE001 (a bad request must not end the server)
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    @staticmethod
    def _reply(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message, default=str) + "\n")
        sys.stdout.flush()


async def serve(
    host: str,
    announced_ip: str | None = None,
    tcp: bool = False,
    read_hold_us: int = 0,
    socket_thread: bool = True,
) -> None:
    loop = asyncio.get_running_loop()
    sfu = Sfu(
        SfuConfig(
            host=host,
            udp_port=0,
            announced_ip=announced_ip or host,
            tcp_port=0 if tcp else None,
            read_hold_us=read_hold_us,
            socket_thread=socket_thread,
            # every synthetic peer comes from the one loopback address
            max_tcp_per_address=4096,
        )
    )
    await sfu.start()
    done: asyncio.Future[None] = loop.create_future()
    harness = Harness(sfu, done)
    os.set_blocking(0, False)
    loop.add_reader(0, harness.on_stdin)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, harness._finish)
    Harness._reply(
        {
            "ready": True,
            "pid": os.getpid(),
            "port": sfu.udp_port,
            "tcp_port": sfu.tcp_port,
            "loop": type(loop).__module__.split(".")[0],
        }
    )
    try:
        await done
    finally:
        loop.remove_reader(0)
        await sfu.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind and announce")
    parser.add_argument(
        "--announced-ip", default=None, help="addresses to announce (default: --host)"
    )
    parser.add_argument("--asyncio", action="store_true", help="stdlib event loop, not uvloop")
    parser.add_argument("--tcp", action="store_true", help="ICE-TCP too, on any free port")
    parser.add_argument(
        "--read-hold-us", type=int, default=0, help="coalesce reads (SfuConfig.read_hold_us)"
    )
    parser.add_argument(
        "--no-socket-thread",
        dest="socket_thread",
        action="store_false",
        help="read the media socket on the event loop, not the router's C thread",
    )
    args = parser.parse_args(argv)
    die_with_parent()
    run_args = (args.host, args.announced_ip, args.tcp, args.read_hold_us, args.socket_thread)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.asyncio:
        asyncio.run(serve(*run_args))
    else:
        import uvloop

        uvloop.run(serve(*run_args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
