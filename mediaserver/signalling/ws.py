"""The /ws endpoint: a thin shell between a WebSocket and the SignallingHub.

Frames in -> hub.receive(); messages out go through a bounded queue drained by one
writer task, so a client that stops reading is disconnected instead of growing
the server's memory.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from mediaserver.client_address import connection_ip
from mediaserver.edges import EdgePolicy, origin_allowed
from mediaserver.signalling import protocol
from mediaserver.signalling.hub import SignallingHub

logger = logging.getLogger(__name__)

OUTBOX = 256  # messages queued for one client before it counts as stuck


async def websocket_endpoint(websocket: WebSocket) -> None:
    hub: SignallingHub = websocket.app.state.hub
    edges: EdgePolicy = websocket.app.state.edges
    if not origin_allowed(websocket.headers, edges.allowed_origins):
        hub.stats["ws_refused:origin"] += 1
        await websocket.close(1008)  # before accept: the upgrade is answered 403
        return
    await websocket.accept()
    if hub.draining:  # shutting down: no new peers
        await websocket.close(1013, "try again later")
        return
    address = connection_ip(websocket) or "unknown"
    # counted and joined with no await between: a burst cannot slip past the check
    if hub.connections_from(address) >= edges.max_connections_per_address:
        hub.stats["ws_refused:per_address"] += 1
        await websocket.close(1008, "too many connections from this address")
        return
    outbox: asyncio.Queue[tuple[str | bytes | None, int]] = asyncio.Queue(OUTBOX)
    binary = False  # reply in the encoding of the client's last frame

    def send(message: protocol.Message) -> None:
        try:
            outbox.put_nowait((protocol.encode(message, binary), 0))
        except asyncio.QueueFull:
            close(1008)

    def close(code: int) -> None:
        # drop what is queued; the close goes out next
        while not outbox.empty():
            outbox.get_nowait()
        outbox.put_nowait((None, code))

    visitor = hub.join(address, send, close)
    writer = asyncio.create_task(_write(websocket, outbox))
    try:
        while not writer.done():
            event = await websocket.receive()
            if event["type"] == "websocket.disconnect":
                break
            if event.get("bytes") is not None:
                binary = True
                await hub.receive(visitor, event["bytes"])
            elif event.get("text") is not None:
                binary = False
                await hub.receive(visitor, event["text"])
    except WebSocketDisconnect:
        pass
    except Exception:
        logger.exception("signalling connection failed")
    finally:
        await hub.leave(visitor)
        if not writer.done():
            close(1000)
        try:
            await asyncio.wait_for(writer, timeout=2)
        except (TimeoutError, Exception):
            writer.cancel()


async def _write(websocket: WebSocket, outbox: asyncio.Queue[tuple[str | bytes | None, int]]) -> None:
    try:
        while True:
            data, code = await outbox.get()
            if data is None:
                if websocket.client_state is WebSocketState.CONNECTED:
                    await websocket.close(code)
                return
            if isinstance(data, bytes):
                await websocket.send_bytes(data)
            else:
                await websocket.send_text(data)
    except Exception:
        return  # the peer is gone; the reader sees the disconnect
