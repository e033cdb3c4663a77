"""An aiortc relay server, written the way a Python developer would: the baseline
benchmarks/compare.py measures "what a Python user would otherwise pick".

One RTCPeerConnection per peer; a publisher's incoming track goes through
aiortc.contrib.media.MediaRelay into each subscriber's connection (so aiortc
decodes the VP8 it receives and re-encodes it per subscriber). It runs alone in
its own process, driven by JSON lines over stdin/stdout like
benchmarks/sfu_harness.py:

    <- {"ready": true, "pid": 123}                                   (on start)
    -> {"op": "publish", "offer": "v=0..."}        <- {"ok": true, "id": "p1", "answer": "..."}
    -> {"op": "subscribe", "pub": "p1", "offer": "..."} <- {"ok": true, "id": "s2", "answer": "..."}
    -> {"op": "states"}     <- {"ok": true, "states": {"p1": "connected", ...}}
    -> {"op": "quit"}       <- {"ok": true}, then exit

Two benchmark-only settings, neither about speed: no ICE servers (aiortc's
default is a public STUN server: the benchmark stays on loopback), and aioice
gathers 127.0.0.1 only (it skips loopback by default, and offers the machine's
other addresses instead).

    python -m benchmarks.peers.aiortc_relay
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import sys
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

from benchmarks.sfu_harness import die_with_parent

LOOPBACK = "127.0.0.1"


def _loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return [LOOPBACK] if use_ipv4 else []


aioice.ice.get_host_addresses = _loopback_only


class Relay:
    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.pcs: dict[str, RTCPeerConnection] = {}
        self.tracks: dict[str, Any] = {}
        self.ids = itertools.count(1)

    def _new_pc(self, prefix: str) -> tuple[str, RTCPeerConnection]:
        pc_id = f"{prefix}{next(self.ids)}"
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs[pc_id] = pc
        return pc_id, pc

    async def publish(self, offer: str) -> dict[str, Any]:
        pc_id, pc = self._new_pc("p")

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "video":
                self.tracks[pc_id] = track

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return {"ok": True, "id": pc_id, "answer": pc.localDescription.sdp}

    async def subscribe(self, pub: str, offer: str) -> dict[str, Any]:
        if pub not in self.tracks:
            return {"ok": False, "error": f"no video track from {pub!r}"}
        pc_id, pc = self._new_pc("s")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        pc.addTrack(self.relay.subscribe(self.tracks[pub]))
        await pc.setLocalDescription(await pc.createAnswer())
        return {"ok": True, "id": pc_id, "answer": pc.localDescription.sdp}

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "publish":
            return await self.publish(request["offer"])
        if op == "subscribe":
            return await self.subscribe(request["pub"], request["offer"])
        if op == "states":
            return {"ok": True, "states": {k: pc.connectionState for k, pc in self.pcs.items()}}
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def close(self) -> None:
        await asyncio.gather(*(pc.close() for pc in self.pcs.values()), return_exceptions=True)


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve() -> None:
    loop = asyncio.get_running_loop()
    relay = Relay()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    done = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    _reply({"ready": True, "pid": os.getpid()})

    async def commands() -> None:
        while True:
            line = await reader.readline()
            if not line:
                break
            if not line.strip():
                continue
            try:
                request = json.loads(line)
                if request.get("op") == "quit":
                    _reply({"ok": True})
                    break
                reply = await relay.handle(request)
            except Exception as exc:  # noqa: BLE001 (a bad request must not end the server)
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            _reply(reply)
        done.set()

    task = asyncio.create_task(commands())
    await done.wait()
    task.cancel()
    await asyncio.wait_for(relay.close(), 5)


def main() -> int:
    die_with_parent()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        asyncio.run(serve())
    except (TimeoutError, KeyboardInterrupt):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
