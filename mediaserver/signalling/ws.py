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
from mediaserver.signalling import protocol
from mediaserver.signalling.hub import SignallingHub

logger = logging.getLogger(__name__)

OUTBOX = 256  # messages queued for one client before it counts as stuck


async def websocket_endpoint(websocket: WebSocket) -> None:
    hub: SignallingHub = websocket.app.state.hub
    await websocket.accept()
    if hub.draining:  # shutting down: no new peers
        await websocket.close(1013, "try again later")
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

    address = connection_ip(websocket) or "unknown"
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
