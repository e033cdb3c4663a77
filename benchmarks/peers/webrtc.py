"""Synthetic WebRTC peers: a hand-built offer, real ICE and DTLS, SRTP keys.

No media stack: each peer is one UDP socket on 127.0.0.1, an SDP offer written
the way Chromium writes one (BUNDLE, rtcp-mux, VP8 on payload type 96 and
optionally Opus on 111), STUN Binding requests built with aioice's codec, and a
DTLS client (mediaserver.sfu.dtls in its "client" role) that ends with the SRTP
keys. The packet loops live in _loadgen.pyx; this module only gets peers to the
point where media can flow, and keeps their sessions alive (RTCP, consent).

    peers = [SyntheticPeer(i, "send", cert) for i in range(n)]
    session_id, answer = create_session(peer.offer())   # over the harness
    peer.accept(session_id, answer)
    handshake(peers, timeout=10)               # ICE + DTLS, all peers at once
    peer.keys                                  # SrtpKeys: profile, tx/rx key+salt
    KeepAlive(peers).start()                   # RTCP and consent, as a browser
"""

from __future__ import annotations

import ipaddress
import secrets
import selectors
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aioice import stun

from mediaserver.sfu.dtls import (
    SRTP_AEAD_AES_128_GCM,
    DtlsCertificate,
    DtlsConnected,
    DtlsEndpoint,
    DtlsFailed,
)

LOOPBACK = "127.0.0.1"
SOCKET_BUFFER = 4 * 1024 * 1024
VIDEO_PT = 96
AUDIO_PT = 111
# RFC 8445 section 5.1.2.1 with type preference 110 (peer reflexive), as browsers
# put in checks
CHECK_PRIORITY = (110 << 24) | (65535 << 8) | 255
STUN_RETRY = 0.05  # seconds between Binding retransmissions while connecting


class FramedStream:
    """An ICE-TCP connection (RFC 4571: a 2-byte length before each packet) that
    reads and writes like the peers' UDP sockets: recv() returns one frame
    (BlockingIOError until a whole one has arrived), sendto() sends one. The socket
    stays blocking for sends (sendall, under a lock: the KeepAlive thread sends
    too); reads never block (MSG_DONTWAIT)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()
        self._lock = threading.Lock()

    def fileno(self) -> int:
        return self.sock.fileno()

    def getsockname(self) -> tuple[str, int]:
        return self.sock.getsockname()  # type: ignore[no-any-return]

    def recv(self, _size: int = 0) -> bytes:
        while True:
            if len(self._buf) >= 2:
                length = (self._buf[0] << 8) | self._buf[1]
                if len(self._buf) >= 2 + length:
                    frame = bytes(self._buf[2 : 2 + length])
                    del self._buf[: 2 + length]
                    return frame
            chunk = self.sock.recv(262144, socket.MSG_DONTWAIT)  # BlockingIOError: none yet
            if not chunk:
                raise ConnectionResetError("the server closed the ICE-TCP connection")
            self._buf += chunk

    def sendto(self, data: bytes, _addr: object = None) -> None:
        with self._lock:
            self.sock.sendall(struct.pack("!H", len(data)) + data)

    def send_frames(self, packets: Sequence[bytes]) -> None:
        """Several packets in one write (what a TCP stack coalesces anyway)."""
        with self._lock:
            self.sock.sendall(b"".join(struct.pack("!H", len(p)) + p for p in packets))

    def setsockopt(self, *args: int) -> None:
        self.sock.setsockopt(*args)

    def close(self) -> None:
        self.sock.close()


class HandshakeError(RuntimeError):
    """A peer did not finish ICE or DTLS in time (the message says which, and why)."""


@dataclass(frozen=True)
class SrtpKeys:
    """What a peer's DTLS handshake exported (RFC 5764 4.2), from the peer's side."""

    profile: int
    tx_key: bytes
    """We protect what we send with these (the DTLS client's write key)."""
    tx_salt: bytes
    rx_key: bytes
    """We unprotect what the server sends us with these."""
    rx_salt: bytes


def _ice_string(length: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def check_loopback(host: str) -> None:
    """Refuse any destination that is not a loopback address (benchmark rule), or,
    inside mediaserver.netns's private namespace, one of its two veth addresses."""
    if ipaddress.ip_address(host).is_loopback:
        return
    from mediaserver import netns

    if netns.inside() and host in (netns.SERVER_IP, netns.CLIENT_IP):
        return
    raise ValueError(f"refusing to send to {host}: the benchmark stays on loopback")


class SyntheticPeer:
    """One WebRTC endpoint of the load generator, up to its SRTP keys.

    Args:
        index: its number among peers of its role (sender i pairs with receiver i).
        role: "send" (offers sendonly: a publisher) or "recv" (offers recvonly).
        certificate: the DTLS certificate its offer's a=fingerprint names.
        profiles: SRTP protection profiles its DTLS ClientHello offers.
        audio: add an Opus m-section (no audio is sent; it makes the offer look
            like a browser's and gives the server two tracks per session).
        transport: "udp", or "tcp": accept() connects to the server's passive TCP
            candidate and `sock` becomes a FramedStream on that connection.
    """

    def __init__(
        self,
        index: int,
        role: str,
        certificate: DtlsCertificate,
        profiles: tuple[int, ...] = (SRTP_AEAD_AES_128_GCM,),
        audio: bool = True,
        host: str = LOOPBACK,
        transport: str = "udp",
    ) -> None:
        if transport not in ("udp", "tcp"):
            raise ValueError(f"transport must be 'udp' or 'tcp', not {transport!r}")
        self.transport = transport
        if role not in ("send", "recv", "sendrecv"):
            raise ValueError(f"role must be 'send', 'recv' or 'sendrecv', not {role!r}")
        check_loopback(host)
        self.host = host
        self.index = index
        self.role = role
        self.certificate = certificate
        self.profiles = profiles
        self.audio = audio
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock: socket.socket | FramedStream = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            if role != "recv":
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            if role != "send":
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            self.sock.bind((host, 0))
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.ufrag = _ice_string(8)
        self.pwd = _ice_string(24)
        self.video_ssrc = secrets.randbits(32) or 1
        self.audio_ssrc = secrets.randbits(32) or 1
        self.cname = secrets.token_hex(8)
        self.tie_breaker = secrets.randbits(64)
        # filled by accept() / handshake()
        self.session_id: str | None = None
        self.server_addr: tuple[str, int] | None = None
        self.server_ufrag = ""
        self.server_pwd = ""
        self.server_fingerprint = ""
        self.server_video_ssrc: int | None = None
        self.keys: SrtpKeys | None = None
        self.dtls: DtlsEndpoint | None = None

    def close(self) -> None:
        self.sock.close()

    # ---- signalling ------------------------------------------------------------

    def offer(self) -> str:
        """The SDP offer, as Chromium would write it for this peer."""
        _, fingerprint = self.certificate.fingerprint("sha-256")
        direction = {"send": "sendonly", "recv": "recvonly"}.get(self.role, "sendrecv")
        stream = f"bench-{self.role}-{self.index}"
        mids = ["0", "1"] if self.audio else ["0"]
        lines = [
            "v=0",
            f"o=- {secrets.randbits(62)} 2 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE " + " ".join(mids),
            "a=extmap-allow-mixed",
            f"a=msid-semantic: WMS {stream}",
        ]

        def section(kind: str, mid: str, pt: int, rtpmap: str, ssrc: int, extra: list[str]) -> None:
            lines.extend(
                [
                    f"m={kind} 9 UDP/TLS/RTP/SAVPF {pt}",
                    "c=IN IP4 0.0.0.0",
                    "a=rtcp:9 IN IP4 0.0.0.0",
                    f"a=candidate:1 1 udp 2130706431 {self.host} {self.port} typ host",
                    f"a=ice-ufrag:{self.ufrag}",
                    f"a=ice-pwd:{self.pwd}",
                    "a=ice-options:trickle",
                    f"a=fingerprint:sha-256 {fingerprint}",
                    "a=setup:actpass",
                    f"a=mid:{mid}",
                    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
                    f"a={direction}",
                ]
            )
            if self.role != "recv":
                lines.append(f"a=msid:{stream} {kind}-{mid}")
            lines.extend(["a=rtcp-mux", "a=rtcp-rsize", f"a=rtpmap:{pt} {rtpmap}", *extra])
            if self.role != "recv":
                lines.append(f"a=ssrc:{ssrc} cname:{self.cname}")
                lines.append(f"a=ssrc:{ssrc} msid:{stream} {kind}-{mid}")

        section(
            "video",
            "0",
            VIDEO_PT,
            "VP8/90000",
            self.video_ssrc,
            [f"a=rtcp-fb:{VIDEO_PT} {fb}" for fb in ("goog-remb", "ccm fir", "nack", "nack pli")],
        )
        if self.audio:
            section(
                "audio",
                "1",
                AUDIO_PT,
                "opus/48000/2",
                self.audio_ssrc,
                [f"a=fmtp:{AUDIO_PT} minptime=10;useinbandfec=1"],
            )
        return "\r\n".join(lines) + "\r\n"

    def accept(self, session_id: str, answer: str) -> None:
        """Read the server's answer: ICE credentials, fingerprint, its address."""
        self.session_id = session_id
        host = port = None
        for raw in answer.splitlines():
            line = raw.strip()
            if line.startswith("a=ice-ufrag:") and not self.server_ufrag:
                self.server_ufrag = line.split(":", 1)[1]
            elif line.startswith("a=ice-pwd:") and not self.server_pwd:
                self.server_pwd = line.split(":", 1)[1]
            elif line.startswith("a=fingerprint:") and not self.server_fingerprint:
                algorithm, value = line.split(":", 1)[1].split(None, 1)
                if algorithm.lower() == "sha-256":
                    self.server_fingerprint = value.strip()
            elif line.startswith("a=candidate:") and host is None:
                fields = line.split()
                # a=candidate:<foundation> <component> <transport> <priority> <ip> <port> typ ...
                # (the server's candidate of our own family: one per family at most)
                if (
                    len(fields) >= 6
                    and fields[2].lower() == self.transport
                    and (":" in fields[4]) == (self.family == socket.AF_INET6)
                ):
                    host, port = fields[4], int(fields[5])
            elif line.startswith("a=ssrc:") and self.server_video_ssrc is None:
                self.server_video_ssrc = int(line.split(":", 1)[1].split()[0])
        if not (self.server_ufrag and self.server_pwd and self.server_fingerprint and host):
            raise HandshakeError(
                f"answer lacks ICE credentials, fingerprint or candidate:\n{answer}"
            )
        check_loopback(host)
        self.server_addr = (host, int(port))  # type: ignore[arg-type]
        if self.transport == "tcp":
            stream = socket.create_connection(self.server_addr, timeout=5)
            stream.settimeout(None)
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.close()
            self.sock = FramedStream(stream)

    # ---- ICE -------------------------------------------------------------------

    def binding_request(self, nominate: bool) -> tuple[bytes, bytes]:
        """A STUN Binding request to the server: (transaction id, bytes).

        USERNAME is "<server ufrag>:<our ufrag>" and MESSAGE-INTEGRITY is keyed
        with the server's ice-pwd (RFC 8445 section 7.2.2); we are controlling,
        and `nominate` adds USE-CANDIDATE (the first check) - consent checks
        (RFC 7675) leave it out.
        """
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        request.attributes["USERNAME"] = f"{self.server_ufrag}:{self.ufrag}"
        request.attributes["PRIORITY"] = CHECK_PRIORITY
        request.attributes["ICE-CONTROLLING"] = self.tie_breaker
        if nominate:
            request.attributes["USE-CANDIDATE"] = None
        request.add_message_integrity(self.server_pwd.encode())  # adds FINGERPRINT too
        return request.transaction_id, bytes(request)

    def send(self, data: bytes) -> None:
        assert self.server_addr is not None
        try:
            self.sock.sendto(data, self.server_addr)
        except (BlockingIOError, InterruptedError):
            pass  # a full buffer: the retransmission timers cover it


class _Handshake:
    """One peer's progress through ICE, then DTLS (client)."""

    def __init__(self, peer: SyntheticPeer) -> None:
        self.peer = peer
        self.state = "ice"
        self.txid = b""
        self.next_stun = 0.0
        self.error: str | None = None

    def tick(self, now: float) -> None:
        peer = self.peer
        if self.state == "ice" and now >= self.next_stun:
            self.txid, data = peer.binding_request(nominate=True)
            peer.send(data)
            self.next_stun = now + STUN_RETRY
        elif self.state == "dtls":
            assert peer.dtls is not None
            deadline = peer.dtls.get_timer()
            if deadline is not None and now >= deadline:
                peer.dtls.handle_timer(now)
                self._service(now)

    def datagram(self, data: bytes, now: float) -> None:
        peer = self.peer
        if not data:
            return
        if data[0] < 4 and self.state == "ice":
            try:
                message = stun.parse_message(data)
            except (ValueError, KeyError):
                return
            if message.transaction_id != self.txid:
                return
            if message.message_class != stun.Class.RESPONSE:
                self.state = "failed"
                self.error = f"ICE check refused: {message.attributes.get('ERROR-CODE')}"
                return
            if not message.check_message_integrity(peer.server_pwd.encode()):
                self.state = "failed"
                self.error = "ICE response fails MESSAGE-INTEGRITY"
                return
            self.state = "dtls"
            peer.dtls = DtlsEndpoint(
                peer.certificate,
                "client",
                [("sha-256", peer.server_fingerprint)],
                profiles=peer.profiles,
            )
            peer.dtls.connect(now)
            self._service(now)
        elif 20 <= data[0] <= 63 and self.state == "dtls":
            assert peer.dtls is not None
            peer.dtls.receive_datagram(data, now)
            self._service(now)

    def _service(self, now: float) -> None:
        peer = self.peer
        assert peer.dtls is not None
        for datagram in peer.dtls.datagrams_to_send(now):
            peer.send(datagram)
        while (event := peer.dtls.next_event()) is not None:
            if isinstance(event, DtlsConnected):
                peer.keys = SrtpKeys(
                    event.profile,
                    event.local_key,
                    event.local_salt,
                    event.remote_key,
                    event.remote_salt,
                )
                self.state = "done"
            elif isinstance(event, DtlsFailed):
                self.state = "failed"
                self.error = f"DTLS failed: {event.reason}"
            else:
                self.state = "failed"
                self.error = "DTLS closed by the server"


def handshake(
    peers: Sequence[SyntheticPeer], timeout: float = 20.0, state_class: type | None = None
) -> None:
    """Run ICE (one nominating check) and DTLS for all peers at once.

    `state_class` replaces _Handshake (benchmarks/peers/fullice.py answers the
    server's own connectivity checks too, for full ICE agents).

    Raises:
        HandshakeError: a peer failed or did not finish within `timeout`.
    """
    states = [(state_class or _Handshake)(p) for p in peers]
    by_fd = {p.sock.fileno(): s for p, s in zip(peers, states)}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for peer in peers:
            selector.register(peer.sock, selectors.EVENT_READ)
        pending = [s for s in states if s.state not in ("done", "failed")]
        while pending:
            now = time.monotonic()
            if now >= deadline:
                stuck = ", ".join(f"{s.peer.role}{s.peer.index}:{s.state}" for s in pending[:8])
                raise HandshakeError(
                    f"{len(pending)} peers not connected after {timeout} s ({stuck})"
                )
            for state in pending:
                state.tick(now)
            for key, _ in selector.select(timeout=0.01):
                state = by_fd[key.fd]
                while True:
                    try:
                        data = key.fileobj.recv(4096)  # type: ignore[union-attr]
                    except (BlockingIOError, InterruptedError):
                        break
                    except ConnectionRefusedError:
                        break  # an ICMP error from an earlier send: retried anyway
                    state.datagram(data, time.monotonic())
            failed = [s for s in states if s.state == "failed"]
            if failed:
                s = failed[0]
                raise HandshakeError(f"{s.peer.role} peer {s.peer.index}: {s.error}")
            pending = [s for s in states if s.state != "done"]


def drain(peers: list[SyntheticPeer]) -> int:
    """Read and discard what waits on the peers' sockets; returns how many datagrams."""
    count = 0
    for peer in peers:
        while True:
            try:
                peer.sock.recv(4096)
            except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                break
            count += 1
    return count


class KeepAlive:
    """What a browser sends while a call is up, from a thread: an SRTCP receiver
    report every `rtcp_interval` seconds (the server closes a connected session
    that sends nothing authenticated for a few seconds: "media timeout"), and a
    STUN consent check (RFC 7675) every `consent_interval` seconds (the server
    drops a session after 30 s without one).

    Responses and the server's own RTCP land on the peers' sockets, where the
    receive loops count and skip them. The SRTCP context is the peer's own,
    apart from the packet loops' SRTP one (RTCP has its own keys and index).
    """

    def __init__(
        self,
        peers: list[SyntheticPeer],
        rtcp_interval: float = 1.0,
        consent_interval: float = 5.0,
    ) -> None:
        from mediaserver._srtp import Srtp

        self.peers = peers
        self.rtcp_interval = rtcp_interval
        self.consent_interval = consent_interval
        self.rtcp_sent = 0
        self.consent_sent = 0
        self._contexts = []
        for peer in peers:
            assert peer.keys is not None, "handshake() first"
            self._contexts.append(Srtp(peer.keys.profile, peer.keys.tx_key, peer.keys.tx_salt))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keepalive", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        next_consent = time.monotonic() + self.consent_interval
        while not self._stop.wait(self.rtcp_interval):
            for peer, context in zip(self.peers, self._contexts):
                # RFC 3550 6.4.2: a receiver report with no report block (rtcp-rsize)
                ssrc = peer.audio_ssrc if peer.role == "recv" else peer.video_ssrc
                report = struct.pack("!BBHL", 0x80, 201, 1, ssrc)
                peer.send(context.protect_rtcp(report))
                self.rtcp_sent += 1
            if time.monotonic() >= next_consent:
                next_consent += self.consent_interval
                for peer in self.peers:
                    _, data = peer.binding_request(nominate=False)
                    peer.send(data)
                    self.consent_sent += 1
