"""The Sfu's settings and the per-session memory they imply (server-full limits)."""

from __future__ import annotations

from dataclasses import dataclass

from mediaserver.sfu.address import parse_announced_ips

CACHE_BYTES_PER_PACKET = 1536 + 2 + 2 + 1 + 8
"""One NACK cache entry: CACHE_SLOT (ext/mediaserver._rtp.pxd) plus its length,
sequence number, resend count and last resend time (cache_init there)."""


@dataclass
class SfuConfig:
    """How the Sfu listens, what it admits, and its timeouts and rate limits."""

    host: str = ""
    """Address the media socket binds; "": both families (`::`, IPV6_V6ONLY off), or
    0.0.0.0 where the host has no IPv6 (sfu/udp.py open_media_socket)."""
    udp_port: int = 0
    tcp_port: int | None = None
    """The ICE-TCP port (RFC 6544 passive candidates, sfu/tcp.py) on the same host;
    None: none, 0: any free one."""
    max_tcp_connections: int = 1024
    """ICE-TCP connections open at once, checked or not (more are refused)."""
    max_tcp_per_address: int = 8
    """ICE-TCP connections one client address (IPv6: its /64) may hold; a browser
    opens one per local address it has, a tab per call."""
    announced_ip: str = "127.0.0.1"
    """Addresses put in the SDP candidates, what peers send media to: one IPv4
    and/or one IPv6, comma-separated."""
    consent_timeout: float = 30.0
    """A peer that sends no valid STUN for this long is dropped (RFC 7675)."""
    read_hold_us: int = 0
    """Coalesce reads of the media socket: after a wake-up that found few packets,
    sleep up to this many microseconds (less as the packet rate grows; not at all
    where the rate would not bring 2 packets in it) and read again. 0: off."""
    socket_thread: bool = True
    """Read the media socket from the router's C thread (no GIL, no event loop)
    instead of the event loop: a media packet never wakes Python. False: the event
    loop watches the socket and calls Router.drain (the way before, kept to compare)."""
    max_peers: int = 4096
    cache_packets: int = 512
    """Packets kept per outbound stream for NACK (a power of two)."""
    max_media_memory: int = 0
    """Bytes of NACK caches the sessions may commit (0: no bound); a session past
    it is refused "server full"."""
    max_bitrate: int = 2_500_000
    """Ceiling of the REMB we send publishers, bits/s."""
    keyframe_interval: float = 0.5
    """At most one PLI per publisher stream per this many seconds."""
    effects_workers: int = 2
    """Threads decoding, processing and encoding video for effects."""
    max_effect_streams: int = 8
    """Publishers with an opt-in effect on at once; more get EffectsBusy."""
    max_cover_streams: int = 64
    """Publishers whose face the server covers (mutual reveal) at once, apart from
    the opt-in effects so that those cannot use up the covers; more get EffectsBusy."""
    media_timeout: float = 4.0
    """A connected peer that sends no SRTP/SRTCP for this long is closed: its
    media died (browsers send RTCP every second or so, audio 50 times a second),
    and its partner learns it within 5 s."""
    handshake_timeout: float = 30.0
    """A session not connected (ICE + DTLS) this long after its offer is closed,
    even if its peer keeps STUN and a DTLS handshake half-open: an attacker with
    an answer cannot hold a handshake slot forever."""

    @property
    def announced_ips(self) -> tuple[str, ...]:
        """`announced_ip` parsed: IPv4 first (ValueError for a bad one)."""
        return parse_announced_ips(self.announced_ip)
