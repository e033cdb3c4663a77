"""An Sfu on a socketless Router, and WebRTC peers wired to it by hand, on virtual time.

Nothing here opens a socket: datagrams go in through Sfu.receive_datagram (the
router's C path via Router.feed, then the slow path), come out of
Sfu.datagrams_to_send and Router.feed, and the timer runs when the test moves the
clock. The peers do real ICE (STUN with MESSAGE-INTEGRITY), DTLS (our DtlsEndpoint
as client) and SRTP (mediaserver._srtp), so what the Sfu sees is what a browser sends.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from aioice import stun
from aiortc.rtp import RtpPacket

from mediaserver._router import Router
from mediaserver._srtp import Srtp
from mediaserver.sfu import rtcp
from mediaserver.sfu.address import Address
from mediaserver.sfu.dtls import DtlsCertificate, DtlsConnected, DtlsEndpoint
from mediaserver.sfu.server import Session, SessionState, Sfu, SfuConfig, SfuEvent
from tests.support import DATA

OFFER = (DATA / "offer_chromium.sdp").read_text()
VIDEO_SSRC = 1887242170
"The video SSRC the offer announces (a=ssrc-group:FID, the first)."
VP8 = 96
START = 1000.0
"Virtual time the clock starts at."

_CERTIFICATE = DtlsCertificate.generate()


def _answer_field(answer: str, name: str) -> str:
    match = re.search(rf"a={name}:(\S+(?: \S+)?)", answer)
    assert match, f"answer has no a={name}"
    return match.group(1)


class SocketlessCall:
    """An Sfu with a socketless Router and a clock the test moves."""

    def __init__(self, **config: Any) -> None:
        self.now = START
        self.sfu = Sfu(
            SfuConfig(announced_ip="127.0.0.1", udp_port=5004, **config),
            router=Router(),
            clock=lambda: self.now,
        )
        self.inbox: dict[Address, list[tuple[float, bytes]]] = defaultdict(list)
        """What the Sfu sent each address, with when."""
        self.events: list[SfuEvent] = []
        self.sfu.subscribe(self.events.append)

    def deliver(self, data: bytes, source: Address) -> None:
        self.sfu.receive_datagram(data, source, self.now)
        self.collect()

    def collect(self) -> None:
        for data, dest in self.sfu.datagrams_to_send(self.now):
            self.inbox[dest].append((self.now, data))

    def advance(self, seconds: float) -> None:
        """Move the clock, running the Sfu's timer at each deadline on the way."""
        end = self.now + seconds
        while (deadline := self.sfu.get_timer()) is not None and deadline <= end:
            self.now = max(self.now, deadline)
            self.sfu.handle_timer(self.now)
            self.collect()
        self.now = end


class SocketlessPeer:
    """A browser-like peer of `call` at `addr`: offer, ICE, DTLS, then SRTP."""

    def __init__(self, call: SocketlessCall, addr: Address) -> None:
        self.call, self.addr = call, addr
        _, fingerprint = _CERTIFICATE.fingerprint("sha-256")
        offer = re.sub(r"a=fingerprint:sha-256 \S+", f"a=fingerprint:sha-256 {fingerprint}", OFFER)
        self.offer = offer
        self.ufrag, self.pwd = "gwse", "0/Ae9XPhetpJSkBuUXbcmY1j"  # as in the offer
        self.session: Session = call.sfu.create_session(offer)
        answer = self.session.answer
        self.server_ufrag = _answer_field(answer, "ice-ufrag")
        self.server_pwd = _answer_field(answer, "ice-pwd")
        algorithm, value = _answer_field(answer, "fingerprint").split(" ", 1)
        self.dtls = DtlsEndpoint(_CERTIFICATE, "client", [(algorithm, value)])
        self.tx: Srtp | None = None
        self.rx: Srtp | None = None
        self.rtcp_ssrc = 0x5EED0000 + addr[1]

    @property
    def id(self) -> str:
        return self.session.id

    def send_stun(self, nominate: bool = True) -> None:
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        request.attributes["USERNAME"] = f"{self.server_ufrag}:{self.ufrag}"
        request.attributes["PRIORITY"] = 1853824767
        request.attributes["ICE-CONTROLLING"] = 0x1234567890ABCDEF
        if nominate:
            request.attributes["USE-CANDIDATE"] = None
        request.add_message_integrity(self.server_pwd.encode())
        self.call.deliver(bytes(request), self.addr)

    def restart_offer(self, ufrag: str, pwd: str) -> str:
        """This peer's offer again with new ICE credentials (what restartIce() makes)."""
        offer = self.offer.replace(f"a=ice-ufrag:{self.ufrag}", f"a=ice-ufrag:{ufrag}")
        return offer.replace(f"a=ice-pwd:{self.pwd}", f"a=ice-pwd:{pwd}")

    def restart_ice(self, ufrag: str = "rst1", pwd: str = "restartpasswordrestartp") -> str:
        """Send the Sfu an ICE restart offer; take its answer's credentials."""
        answer = self.call.sfu.restart_ice(self.id, self.restart_offer(ufrag, pwd))
        self.offer = self.restart_offer(ufrag, pwd)
        self.ufrag, self.pwd = ufrag, pwd
        self.server_ufrag = _answer_field(answer, "ice-ufrag")
        self.server_pwd = _answer_field(answer, "ice-pwd")
        return answer

    def answer_checks(self) -> int:
        """Answer the Sfu's connectivity checks sent to this peer (signed with our
        password, as a browser does); keep the rest for take(). How many answered."""
        answered, rest = 0, []
        for at, data in self.take():
            if data[0] < 2 and data[1] == 0x01:  # a STUN Binding request
                request = stun.parse_message(data)
                assert request.check_message_integrity(self.pwd.encode())
                response = stun.Message(
                    message_method=stun.Method.BINDING,
                    message_class=stun.Class.RESPONSE,
                    transaction_id=request.transaction_id,
                )
                response.attributes["XOR-MAPPED-ADDRESS"] = self.addr
                response.add_message_integrity(self.pwd.encode())
                self.call.deliver(bytes(response), self.addr)
                answered += 1
            else:
                rest.append((at, data))
        self.call.inbox[self.addr][:0] = rest
        return answered

    def connect(self) -> None:
        """ICE, then the DTLS handshake (with its cookie exchange) to SRTP keys."""
        self.send_stun()
        self.dtls.connect(self.call.now)
        for _ in range(10):
            for datagram in self.dtls.datagrams_to_send(self.call.now):
                self.call.deliver(datagram, self.addr)
            for _, data in self.take():
                if 20 <= data[0] <= 63:
                    self.dtls.receive_datagram(data, self.call.now)
            while (event := self.dtls.next_event()) is not None:
                if isinstance(event, DtlsConnected):
                    self.tx = Srtp(event.profile, event.local_key, event.local_salt)
                    self.rx = Srtp(event.profile, event.remote_key, event.remote_salt)
            if self.tx is not None and self.session.state is SessionState.CONNECTED:
                return
        raise AssertionError("DTLS handshake did not finish")

    def take(self) -> list[tuple[float, bytes]]:
        """What the Sfu sent this peer since the last take, with when."""
        out = self.call.inbox.pop(self.addr, [])
        return out

    def send_rtp(self, seq: int, ssrc: int = VIDEO_SSRC, payload_type: int = VP8) -> None:
        assert self.tx is not None
        packet = RtpPacket(
            payload_type=payload_type, sequence_number=seq & 0xFFFF, timestamp=seq * 3000,
            ssrc=ssrc, payload=b"\x10\x00" + bytes(100),
        )
        self.call.deliver(self.tx.protect(packet.serialize()), self.addr)

    def send_rtcp(self, packet: bytes) -> None:
        assert self.tx is not None
        self.call.deliver(self.tx.protect_rtcp(packet), self.addr)

    def receive(self) -> tuple[list[tuple[float, RtpPacket]], list[tuple[float, rtcp.Feedback]]]:
        """Decrypt what the Sfu sent since the last call: (RTP, RTCP feedback items)."""
        assert self.rx is not None
        media, feedback = [], []
        for at, data in self.take():
            if not 128 <= data[0] <= 191:
                continue  # STUN or DTLS
            if 192 <= data[1] <= 223:  # RFC 5761 4: an RTCP packet type
                for item in rtcp.parse_feedback(self.rx.unprotect_rtcp(data)):
                    feedback.append((at, item))
            else:
                media.append((at, RtpPacket.parse(self.rx.unprotect(data))))
        return media, feedback


def call_with(count: int, **config: Any) -> tuple[SocketlessCall, list[SocketlessPeer]]:
    """A call with `count` connected peers at 127.0.0.1:40001..."""
    call = SocketlessCall(**config)
    peers = [SocketlessPeer(call, ("127.0.0.1", 40001 + i)) for i in range(count)]
    for peer in peers:
        peer.connect()
    return call, peers
