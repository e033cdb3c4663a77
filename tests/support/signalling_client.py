"""A test client and an in-process server for the signalling protocol."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import tempfile
from typing import Any, AsyncIterator

import msgpack
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from mediaserver.app import _tick, create_app, start_background, start_services, uvicorn_config
from mediaserver.client_address import parse_trusted_proxies
from mediaserver.config import Config
from mediaserver.edges import EdgePolicy
from mediaserver.tls import ServerTls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def running_server(*, tls: bool = False, **overrides: Any) -> AsyncIterator[Any]:
    """The real app (SFU + hub + matchmaker + /ws + /api/v1) on a free loopback port,
    its database and key in a temporary directory; tls: its headers as if behind
    HTTPS (Strict-Transport-Security). With tls_cert/tls_key in `overrides` it serves
    HTTPS and WSS itself (`.tls` is its ServerTls; the URLs are https:// and wss://)."""
    with tempfile.TemporaryDirectory(prefix="mediaserver-test-") as tmp:
        overrides.setdefault("db", f"{tmp}/mediaserver.db")
        overrides.setdefault("data_key_file", f"{tmp}/mediaserver.key")
        async with _running_server(tls, **overrides) as server:
            yield server


@contextlib.asynccontextmanager
async def _running_server(tls: bool, **overrides: Any) -> AsyncIterator[Any]:
    overrides.setdefault("host", "127.0.0.1")
    config = Config(port=free_port(), udp_port=0, log_level="warning", **overrides)
    own_tls = ServerTls(config.tls_cert, config.tls_key) if config.tls_cert else None
    sfu, hub, store = await start_services(config)
    app = create_app(
        sfu, hub, store, trusted_proxies=parse_trusted_proxies(config.trusted_proxy),
        edges=EdgePolicy.from_config(config, tls=tls or own_tls is not None),
    )
    server = uvicorn.Server(
        uvicorn_config(app, config, tls=own_tls.context if own_tls is not None else None)
    )
    serving = asyncio.create_task(server.serve())
    ticker = asyncio.create_task(_tick(hub))
    background = start_background(store)
    while not server.started:
        await asyncio.sleep(0.01)
    s = "s" if own_tls is not None else ""
    server.url = f"ws{s}://127.0.0.1:{config.port}/ws"  # type: ignore[attr-defined]
    server.http_url = f"http{s}://127.0.0.1:{config.port}"  # type: ignore[attr-defined]
    server.tls = own_tls  # type: ignore[attr-defined]
    server.hub, server.sfu, server.store = hub, sfu, store  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        ticker.cancel()
        background.cancel()
        server.should_exit = True
        await serving
        await hub.close()
        await sfu.close()
        store.close()


class Client:
    """One visitor: speaks JSON or msgpack and keeps every frame it receives."""

    def __init__(self, ws: ClientConnection, binary: bool) -> None:
        self.ws = ws
        self.binary = binary
        self.frames: list[str | bytes] = []
        self.messages: list[dict[str, Any]] = []
        self._pending: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls, url: str, binary: bool = False, source: str = "127.0.0.1",
        headers: dict[str, str] | None = None, ssl: Any = None,
    ) -> "Client":
        ws = await connect(url, local_addr=(source, 0), max_size=None,
                           additional_headers=headers, ssl=ssl)
        return cls(ws, binary)

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for frame in self.ws:
                self.frames.append(frame)
                msg = msgpack.unpackb(frame) if isinstance(frame, bytes) else json.loads(frame)
                self.messages.append(msg)
                await self._pending.put(msg)

    async def send(self, kind: str | None = None, raw: Any = None, **fields: Any) -> None:
        msg = raw if raw is not None else {"v": 1, "type": kind, **fields}
        if isinstance(msg, (str, bytes)):
            await self.ws.send(msg)
        elif self.binary:
            await self.ws.send(msgpack.packb(msg, use_bin_type=True))
        else:
            await self.ws.send(json.dumps(msg))

    async def expect(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next message, which must be of this type."""
        msg = await asyncio.wait_for(self._pending.get(), timeout)
        assert msg["type"] == kind, msg
        assert msg["v"] == 1
        return msg

    async def error(self, code: str, timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.expect("error", timeout)
        assert msg["code"] == code, msg
        assert isinstance(msg["message"], str) and msg["message"]
        return msg

    async def quiet(self, seconds: float = 0.2) -> None:
        """Assert nothing more arrives for a while."""
        await asyncio.sleep(seconds)
        assert self._pending.empty(), self._pending.get_nowait()

    async def hello(self, **fields: Any) -> dict[str, Any]:
        await self.send("hello", age_confirmed=True, **fields)
        return await self.expect("welcome")

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


async def start_and_match(a: Client, b: Client, timeout: float = 5.0) -> None:
    """Both (welcomed) visitors press Start, are queued, then matched with each other."""
    for c in (a, b):
        await c.send("start")
        await c.expect("queued")
    await a.expect("matched", timeout=timeout)
    await b.expect("matched", timeout=timeout)
