"""Capture real WebRTC packets through the server and write them as fuzz seeds.

    python -m mediaserver.netns -- python -m tests.fuzz.capture [--no-chromium]

Inside the private namespace (mediaserver.netns) it starts the SFU, connects two
aiortc peers to each other, then headless Chromium to aiortc (tests/support/peers.py,
tests/support/browser.py), with 5% loss on the way out so NACKs and PLIs flow too, and
records every UDP datagram to and from the server's port with a packet socket on
the loopback. The server's DTLS keys (DtlsConnected, recorded by wrapping
DtlsEndpoint.next_event) decrypt the SRTP/SRTCP; then tests/data/fuzz/<target>/ gets
STUN checks (re-signed with fuzz_stun's credentials), DTLS flights, plaintext RTP
and RTCP, SRTP re-protected with the targets' fixed keys, router records, and the
offers. Files are named by content hash, so re-running adds, never duplicates.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tests.fuzz.common import pack_records
from tests.fuzz.run import SEEDS

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


@dataclass
class Datagram:
    inbound: bool  # towards the server
    peer: tuple[str, int]
    data: bytes
    source: str  # "aiortc" or "chromium"


class Sniffer:
    """UDP datagrams to/from one port, from a packet socket on lo and the veths."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.source = "aiortc"
        self.datagrams: list[Datagram] = []
        self._stop = False
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                frame, meta = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            if meta[2] == PACKET_OUTGOING:
                continue  # the same frame comes back in as PACKET_HOST
            self._parse(frame)

    def _parse(self, frame: bytes) -> None:
        if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
            return
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17:
            return
        src = socket.inet_ntoa(ip[12:16])
        dst = socket.inet_ntoa(ip[16:20])
        sport, dport, length = struct.unpack_from("!HHH", ip, ihl)
        payload = ip[ihl + 8 : ihl + length]
        if dport == self.port:
            self.datagrams.append(Datagram(True, (src, sport), payload, self.source))
        elif sport == self.port:
            self.datagrams.append(Datagram(False, (dst, dport), payload, self.source))

    def stop(self) -> None:
        self._stop = True
        self._thread.join()
        self._sock.close()


async def _run_peers(chromium: bool) -> tuple[list[Datagram], list[Any], list[str]]:
    from mediaserver.netns import SERVER_IP
    from mediaserver.sfu import dtls
    from mediaserver.sfu.server import Sfu, SfuConfig

    # tests/ is not typed: through Any
    peers: Any = importlib.import_module("tests.support.peers")
    AiortcPeer, wait_for = peers.AiortcPeer, peers.wait_for

    keys: list[Any] = []
    original = dtls.DtlsEndpoint.next_event

    def next_event(self: Any) -> Any:
        event = original(self)
        if isinstance(event, dtls.DtlsConnected):
            keys.append(event)
        return event

    dtls.DtlsEndpoint.next_event = next_event  # type: ignore[method-assign]
    offers: list[str] = []
    sfu = Sfu(SfuConfig(announced_ip=SERVER_IP))
    await sfu.start()
    sniffer = Sniffer(sfu.udp_port)
    sfu._router.set_loss(outbound=0.05, seed=3)
    try:
        a, b = AiortcPeer(320, 240), AiortcPeer(320, 240, video_codec="H264")
        try:
            oa, ob = await a.offer(), await b.offer()
            offers += [oa, ob]
            sa, sb = sfu.create_session(oa), sfu.create_session(ob)
            await a.accept(sa.answer)
            await b.accept(sb.answer)
            sfu.connect(sa.id, sb.id)
            sfu.connect(sb.id, sa.id)
            await wait_for(lambda: min(a.frames("video"), b.frames("video")) >= 40, timeout=30)
            await asyncio.sleep(1.0)
        finally:
            await a.close()
            await b.close()
        if chromium:
            browser_module: Any = importlib.import_module("tests.support.browser")
            ChromiumPeer, launch = browser_module.ChromiumPeer, browser_module.chromium

            sniffer.source = "chromium"
            async with launch() as browser:
                c = await ChromiumPeer.open(browser)
                d = AiortcPeer(320, 240)
                try:
                    oc, od = await c.offer(640, 480), await d.offer()
                    offers += [oc]
                    sc, sd = sfu.create_session(oc), sfu.create_session(od)
                    await c.accept(sc.answer)
                    await d.accept(sd.answer)
                    sfu.connect(sc.id, sd.id)
                    sfu.connect(sd.id, sc.id)
                    await wait_for(lambda: d.frames("video") >= 60, timeout=30)
                    await asyncio.sleep(2.0)
                finally:
                    await d.close()
    finally:
        await asyncio.sleep(0.3)
        sniffer.stop()
        await sfu.close()
        dtls.DtlsEndpoint.next_event = original  # type: ignore[method-assign]
    return sniffer.datagrams, keys, offers


def _write(target: str, data: bytes) -> bool:
    directory = os.path.join(SEEDS, target)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, hashlib.sha1(data).hexdigest())
    if os.path.exists(path):
        return False
    with open(path, "wb") as f:
        f.write(data)
    return True


def _resign_stun(data: bytes) -> bytes | None:
    from aioice import stun

    from tests.fuzz import fuzz_stun

    try:
        message = stun.parse_message(data)
    except (ValueError, struct.error):
        return None
    if "USERNAME" in message.attributes:
        message.attributes["USERNAME"] = f"{fuzz_stun.LOCAL_UFRAG}:{fuzz_stun.REMOTE_UFRAG}"
    message.attributes.pop("MESSAGE-INTEGRITY", None)
    message.attributes.pop("FINGERPRINT", None)
    message.add_message_integrity(fuzz_stun.LOCAL_PWD.encode())
    return bytes(message)


def _decrypt(datagrams: Iterable[Datagram], keys: list[Any]) -> list[tuple[Datagram, str, bytes]]:
    """(datagram, "rtp"|"rtcp", plaintext) for the SRTP/SRTCP the keys open."""
    from mediaserver import _srtp

    contexts: dict[tuple[bool, tuple[str, int], str], Any] = {}
    out = []
    for d in datagrams:
        if not d.data or not 128 <= d.data[0] <= 191:
            continue
        kind = "rtcp" if len(d.data) > 1 and 192 <= d.data[1] <= 223 else "rtp"
        candidates = []
        for index, event in enumerate(keys):
            key = (d.inbound, d.peer, f"{kind}{index}")
            if key not in contexts:
                k, s = (
                    (event.remote_key, event.remote_salt)
                    if d.inbound
                    else (event.local_key, event.local_salt)
                )
                contexts[key] = _srtp.Srtp(event.profile, k, s)
            candidates.append(contexts[key])
        for ctx in candidates:
            try:
                plain = ctx.unprotect(d.data) if kind == "rtp" else ctx.unprotect_rtcp(d.data)
            except _srtp.SrtpError:
                continue
            out.append((d, kind, plain))
            break
    return out


def _pick(items: list[bytes], limit: int) -> list[bytes]:
    """Up to ``limit`` distinct items spread over the list (first ones included)."""
    seen: dict[bytes, None] = {}
    for item in items:
        seen.setdefault(item, None)
    unique = list(seen)
    if len(unique) <= limit:
        return unique
    step = len(unique) / limit
    return [unique[int(i * step)] for i in range(limit)]


def _set_pt(packet: bytes, pt: int) -> bytes:
    return packet[:1] + bytes([(packet[1] & 0x80) | pt]) + packet[2:]


def write_seeds(datagrams: list[Datagram], keys: list[Any], offers: list[str]) -> dict[str, int]:
    from mediaserver import _rtp, _srtp
    from tests.fuzz import fuzz_router, fuzz_srtp

    fuzz_srtp.load()
    counts: dict[str, int] = {}

    def add(target: str, data: bytes) -> None:
        if _write(target, data):
            counts[target] = counts.get(target, 0) + 1

    for source in ("aiortc", "chromium"):
        mine = [d for d in datagrams if d.source == source]
        # STUN: requests from the peers (re-signed) and the server's responses
        stun_in = [d.data for d in mine if d.data and d.data[0] < 4 and d.inbound]
        stun_out = [d.data for d in mine if d.data and d.data[0] < 4 and not d.inbound]
        resigned = [r for r in (_resign_stun(x) for x in _pick(stun_in, 6)) if r]
        for i, r in enumerate(resigned):
            add("stun", pack_records([(i, r)]))
        if resigned:
            add("stun", pack_records([(i % 3, r) for i, r in enumerate(resigned[:6])]))
        for r in _pick(stun_out, 3):
            add("stun", pack_records([(0, r)]))
        # DTLS: each peer's flights, alone and in order
        by_peer: dict[tuple[str, int], list[bytes]] = {}
        for d in mine:
            if d.inbound and d.data and 20 <= d.data[0] <= 63:
                by_peer.setdefault(d.peer, []).append(d.data)
        for flights in by_peer.values():
            for f in flights[:2]:
                add("dtls", pack_records([(0, f)]))
            add("dtls", pack_records([(0, f) for f in flights[:4]]))
        # SRTP / SRTCP, decrypted
        plain = _decrypt([d for d in mine if d.inbound], keys)
        rtp_packets = [p for d, kind, p in plain if kind == "rtp"]
        rtcp_packets = [p for d, kind, p in plain if kind == "rtcp"]
        rtcp_out = [
            p for d, kind, p in _decrypt([d for d in mine if not d.inbound], keys) if kind == "rtcp"
        ]
        for p in _pick(rtp_packets, 16):
            add("rtp", p)
        for p in _pick(rtcp_packets, 12) + _pick(rtcp_out, 4):
            add("rtcp", p)
        for i, p in enumerate(_pick(rtp_packets, 4) + _pick(rtcp_packets, 4)):
            rtcp = len(p) > 1 and 192 <= p[1] <= 223
            profile_bits = i % 4
            add("srtp", bytes([profile_bits | (12 if rtcp else 8)]) + p)
            profile = fuzz_srtp.PROFILES[profile_bits]
            ctx = _srtp.Srtp(profile, *fuzz_srtp.keys(profile))
            protected = ctx.protect_rtcp(p) if rtcp else ctx.protect(p)
            add("srtp", bytes([profile_bits | (4 if rtcp else 0)]) + protected)
        # router: runs of the publisher's packets, video as PT 96 and audio as 111
        video_pts = {96, 97, 98, 99, 100, 102, 106, 107, 108, 109, 125, 127}
        runs: list[list[tuple[int, bytes]]] = []
        current: list[tuple[int, bytes]] = []
        for p in rtp_packets:
            pt = _rtp.parse_header(p)["payload_type"]
            current.append((1, _set_pt(p, 96 if pt in video_pts else 111)))
            if len(current) == 10:
                runs.append(current)
                current = []
        for i, run in enumerate(_pick([pack_records(r) for r in runs], 4)):
            add("router", run)
        for p in _pick(rtcp_packets, 2):
            add("router", pack_records([(2, p)]))
        if runs:
            fuzz_router.load()
            tx = _srtp.Srtp(_srtp.PROFILE_AEAD_AES_128_GCM, *fuzz_router.keys(1))
            add("router", pack_records([(0, tx.protect(p)) for _, p in runs[0]]))
            add("router", pack_records(runs[0] + [(3, struct.pack("!HHH", 1, 2, 3))]))
    for offer in offers:
        add("sdp", offer.encode())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-chromium", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    datagrams, keys, offers = asyncio.run(_run_peers(chromium=not args.no_chromium))
    print(
        f"captured {len(datagrams)} datagrams, {len(keys)} DTLS key sets "
        f"in {time.monotonic() - started:.1f} s"
    )
    for target, count in sorted(write_seeds(datagrams, keys, offers).items()):
        print(f"  {target}: {count} new seeds")


if __name__ == "__main__":
    main()
