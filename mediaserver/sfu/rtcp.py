"""RTCP feedback policy: parse what peers send, build what we send, pure helpers.

Parsing of each packet body reuses aiortc's RTCP classes (``aiortc.rtp``); this
module walks the compound packet itself only so that it can skip what it does not
act on (SDES, XR, APP, transport-cc and other feedback formats) instead of
failing on it, and so that every malformed input raises :class:`RtcpError`.

No transports and no clock here: times are arguments (seconds, one monotonic
clock per caller) and wall-clock NTP values are computed by the caller with
:func:`ntp_from_unix`.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from aiortc.rtp import (
    RTCP_BYE,
    RTCP_PSFB,
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RR,
    RTCP_RTPFB,
    RTCP_RTPFB_NACK,
    RTCP_SR,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    clamp_packets_lost,
    pack_remb_fci,
    pack_rtcp_packet,
    unpack_remb_fci,
)

__all__ = [
    "Bye",
    "Feedback",
    "Fir",
    "KeyframeRequestLimiter",
    "Nack",
    "Pli",
    "ReceiverReport",
    "ReceptionStats",
    "Remb",
    "ReportBlock",
    "RtcpError",
    "SenderClock",
    "SenderReport",
    "build_fir",
    "build_nack",
    "build_pli",
    "build_receiver_report",
    "build_sender_report",
    "ntp_from_unix",
    "ntp_middle",
    "parse_feedback",
    "round_trip_time",
    "rtp_timestamp_at",
]

# RFC 3550 6.4.1: one report block per source; RC is 5 bits.
ReportBlock = RtcpReceiverInfo
MAX_REPORT_BLOCKS = 31

RTCP_HEADER = struct.Struct("!BBH")
RTCP_VERSION = 2
# RFC 5761 4: RTCP packet types live in 192-223.
RTCP_PT_MIN = 192
RTCP_PT_MAX = 223

SR_SENDER_INFO_LENGTH = 24  # SSRC of sender + 20 bytes of sender info
RR_HEADER_LENGTH = 4  # SSRC of packet sender
REPORT_BLOCK_LENGTH = 24
FIR_ENTRY = struct.Struct("!LB3x")  # RFC 5104 4.3.1.1: SSRC, Seq nr, Reserved
SDES_CNAME = 1

# RFC 5905 6: NTP era 0 starts 1900-01-01, 2,208,988,800 s before the Unix epoch.
NTP_UNIX_OFFSET = 2_208_988_800
U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF


class RtcpError(ValueError):
    """An RTCP compound packet is malformed."""


# ---------------------------------------------------------------- feedback


@dataclass(frozen=True)
class Nack:
    """Generic NACK (RFC 4585 6.2.1): the peer asks for these packets again."""

    sender_ssrc: int
    "SSRC of the peer sending the NACK."

    media_ssrc: int
    "SSRC of the stream the packets belong to (one we send)."

    lost: list[int]
    "Lost RTP sequence numbers, in the order the FCI lists them (mod 2**16)."


@dataclass(frozen=True)
class Pli:
    """Picture Loss Indication (RFC 4585 6.3.1): the peer wants a keyframe."""

    sender_ssrc: int
    "SSRC of the peer sending the PLI."

    media_ssrc: int
    "SSRC of the video stream it wants a keyframe of."


@dataclass(frozen=True)
class Fir:
    """Full Intra Request (RFC 5104 4.3.1): one FCI entry of a FIR packet."""

    sender_ssrc: int
    "SSRC of the peer sending the FIR."

    media_ssrc: int
    "SSRC of the stream it wants a keyframe of (from the FCI: the header's is 0)."

    seq_nr: int = 0
    "The command sequence number; a repeat of the last one is a retransmission."


@dataclass(frozen=True)
class Remb:
    """Receiver Estimated Max Bitrate (draft-alvestrand-rmcat-remb-03)."""

    sender_ssrc: int
    "SSRC of the peer sending the estimate."

    bitrate: int
    "Estimated total bitrate, bits per second."

    ssrcs: list[int]
    "The streams the estimate applies to."


@dataclass(frozen=True)
class SenderReport:
    """Sender Report (RFC 3550 6.4.1): the peer's clocks and counts for one stream."""

    ssrc: int
    "SSRC of the stream the peer sends."

    ntp_timestamp: int
    "64-bit NTP wall clock time of the report."

    rtp_timestamp: int
    "The same instant in the stream's RTP clock."

    packet_count: int
    "Packets sent so far."

    octet_count: int
    "Payload octets sent so far."

    reports: list[ReportBlock] = field(default_factory=list)
    "Report blocks about the streams the peer receives (from us)."


@dataclass(frozen=True)
class ReceiverReport:
    """Receiver Report (RFC 3550 6.4.2)."""

    ssrc: int
    "SSRC of the reporting peer."

    reports: list[ReportBlock]
    "One block per stream the peer receives (from us)."


@dataclass(frozen=True)
class Bye:
    """BYE (RFC 3550 6.6): these sources stop."""

    ssrcs: list[int]
    "The SSRCs leaving."


Feedback = Nack | Pli | Fir | Remb | SenderReport | ReceiverReport | Bye

# Errors aiortc's parsers raise on short or inconsistent input.
_PARSE_ERRORS = (ValueError, struct.error, IndexError)


def parse_feedback(data: bytes) -> list[Feedback]:
    """Parse a (decrypted) compound RTCP packet into the feedback we act on.

    SDES, APP, XR, transport-cc and unknown feedback formats are skipped.

    Raises:
        RtcpError: if the compound packet or one of its packets is malformed.
    """
    data = bytes(data)
    if not data:
        raise RtcpError("RTCP compound packet is empty")
    feedback: list[Feedback] = []
    pos = 0
    while pos < len(data):
        # RFC 3550 6.4.1 / RFC 4585 6.1, common header of every RTCP packet:
        #  0                   1                   2                   3
        #  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        # +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        # |V=2|P| RC/FMT  |      PT       |   length (32-bit words - 1)   |
        # +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        if len(data) - pos < RTCP_HEADER.size:
            raise RtcpError(
                f"RTCP header at offset {pos} is truncated: "
                f"{len(data) - pos} bytes, need {RTCP_HEADER.size}"
            )
        first, packet_type, length = RTCP_HEADER.unpack_from(data, pos)
        if first >> 6 != RTCP_VERSION:
            raise RtcpError(f"RTCP packet at offset {pos} has version {first >> 6}, not 2")
        if not RTCP_PT_MIN <= packet_type <= RTCP_PT_MAX:
            raise RtcpError(f"RTCP packet at offset {pos} has type {packet_type}, not 192-223")
        count = first & 0x1F
        start = pos + RTCP_HEADER.size
        end = start + 4 * length
        if end > len(data):
            raise RtcpError(
                f"RTCP packet type {packet_type} at offset {pos} is truncated: "
                f"length says {4 * length} bytes, {len(data) - start} left"
            )
        payload = data[start:end]
        if first & 0x20:
            # RFC 3550 6.4.1: the last octet counts the padding octets, itself included.
            if not payload or not 1 <= payload[-1] <= len(payload):
                raise RtcpError(
                    f"RTCP packet type {packet_type} at offset {pos} has invalid padding"
                )
            payload = payload[: -payload[-1]]
        try:
            _parse_packet(packet_type, count, payload, feedback)
        except RtcpError:
            raise
        except _PARSE_ERRORS as exc:
            raise RtcpError(
                f"RTCP packet type {packet_type} at offset {pos} is malformed: {exc}"
            ) from None
        pos = end
    return feedback


def _parse_packet(packet_type: int, count: int, payload: bytes, out: list[Feedback]) -> None:
    if packet_type == RTCP_SR:
        # RFC 3550 6.4.1; bytes after the report blocks are profile-specific
        # extensions, which we do not use (aiortc wants the exact length).
        sr = RtcpSrPacket.parse(
            payload[: SR_SENDER_INFO_LENGTH + REPORT_BLOCK_LENGTH * count], count
        )
        info = sr.sender_info
        out.append(
            SenderReport(
                sr.ssrc,
                info.ntp_timestamp,
                info.rtp_timestamp,
                info.packet_count,
                info.octet_count,
                sr.reports,
            )
        )
    elif packet_type == RTCP_RR:
        # RFC 3550 6.4.2; same remark on extensions.
        rr = RtcpRrPacket.parse(payload[: RR_HEADER_LENGTH + REPORT_BLOCK_LENGTH * count], count)
        out.append(ReceiverReport(rr.ssrc, rr.reports))
    elif packet_type == RTCP_BYE:
        # RFC 3550 6.6; the optional reason after the SSRCs is ignored.
        out.append(Bye(RtcpByePacket.parse(payload, count).sources))
    elif packet_type == RTCP_RTPFB:
        # RFC 4585 6.2; only Generic NACK (FMT 1). transport-cc (FMT 15) and others
        # are skipped: aiortc would read any FMT as NACK pairs.
        if count == RTCP_RTPFB_NACK:
            fb = RtcpRtpfbPacket.parse(payload, count)
            # aiortc adds the BLP offsets to the PID without wrapping at 2**16.
            out.append(Nack(fb.ssrc, fb.media_ssrc, [seq & 0xFFFF for seq in fb.lost]))
    elif packet_type == RTCP_PSFB:
        _parse_psfb(payload, count, out)


def _parse_psfb(payload: bytes, fmt: int, out: list[Feedback]) -> None:
    # RFC 4585 6.3: SSRC of packet sender, SSRC of media source, then the FCI.
    if fmt not in (RTCP_PSFB_PLI, RTCP_PSFB_FIR, RTCP_PSFB_APP):
        return  # SLI, RPSI, TSTR...: nothing we act on
    fb = RtcpPsfbPacket.parse(payload, fmt)
    if fmt == RTCP_PSFB_PLI:
        out.append(Pli(fb.ssrc, fb.media_ssrc))
    elif fmt == RTCP_PSFB_FIR:
        # RFC 5104 4.3.1.1: one 8-byte FCI entry per target stream.
        if not fb.fci or len(fb.fci) % FIR_ENTRY.size:
            raise RtcpError(f"RTCP FIR FCI is {len(fb.fci)} bytes, not a multiple of 8")
        for ssrc, seq_nr in FIR_ENTRY.iter_unpack(fb.fci):
            out.append(Fir(fb.ssrc, ssrc, seq_nr))
    elif fb.fci[:4] == b"REMB":
        # Application layer feedback: REMB is the one application we know.
        bitrate, ssrcs = unpack_remb_fci(fb.fci)
        out.append(Remb(fb.ssrc, bitrate, ssrcs))


# ---------------------------------------------------------------- builders


def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    """Build a PLI (RFC 4585 6.3.1) asking ``media_ssrc``'s sender for a keyframe."""
    return bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=sender_ssrc, media_ssrc=media_ssrc))


def build_fir(sender_ssrc: int, media_ssrc: int, seq_nr: int) -> bytes:
    """Build a FIR (RFC 5104 4.3.1) for one stream; bump ``seq_nr`` per new request."""
    # RFC 5104 4.3.1.2: the header's media source SSRC is 0; the target is in the FCI.
    fci = FIR_ENTRY.pack(media_ssrc, seq_nr & 0xFF)
    return bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=sender_ssrc, media_ssrc=0, fci=fci))


def build_nack(sender_ssrc: int, media_ssrc: int, lost: Sequence[int]) -> bytes:
    """Build a Generic NACK (RFC 4585 6.2.1) for ``lost`` sequence numbers.

    ``lost`` is in sequence order and may wrap past 65535 (aiortc's packer may not).

    Raises:
        RtcpError: if ``lost`` is empty.
    """
    if not lost:
        raise RtcpError("a NACK needs at least one lost sequence number")
    # FCI: PID (16 bits) then BLP, bit i set when PID + i + 1 is lost too.
    fci = bytearray()
    pid = lost[0] & 0xFFFF
    blp = 0
    for seq in lost[1:]:
        offset = (seq - pid - 1) & 0xFFFF
        if offset < 16:
            blp |= 1 << offset
        else:
            fci += struct.pack("!HH", pid, blp)
            pid, blp = seq & 0xFFFF, 0
    fci += struct.pack("!HH", pid, blp)
    payload = struct.pack("!LL", sender_ssrc, media_ssrc) + bytes(fci)
    return pack_rtcp_packet(RTCP_RTPFB, RTCP_RTPFB_NACK, payload)


def _report_packets(first: bytes, blocks: Sequence[ReportBlock], sender_ssrc: int) -> bytes:
    # RFC 3550 6.4.2: more than 31 blocks go in further RR packets of the compound.
    rest = list(blocks[MAX_REPORT_BLOCKS:])
    out = first
    while rest:
        chunk, rest = rest[:MAX_REPORT_BLOCKS], rest[MAX_REPORT_BLOCKS:]
        out += bytes(RtcpRrPacket(ssrc=sender_ssrc, reports=chunk))
    return out


def _sdes(ssrc: int, cname: str | None) -> bytes:
    if cname is None:
        return b""
    chunk = RtcpSourceInfo(ssrc=ssrc, items=[(SDES_CNAME, cname.encode("utf-8"))])
    return bytes(RtcpSdesPacket(chunks=[chunk]))


def build_receiver_report(
    sender_ssrc: int,
    blocks: Sequence[ReportBlock],
    remb: tuple[int, Sequence[int]] | None = None,
    *,
    cname: str | None = None,
) -> bytes:
    """Build a compound RR (RFC 3550 6.4.2), then SDES CNAME and REMB if given.

    Args:
        sender_ssrc: our SSRC towards this peer.
        blocks: report blocks, e.g. from :meth:`ReceptionStats.report`.
        remb: ``(bitrate, ssrcs)`` for a REMB packet (draft-alvestrand-rmcat-remb).
        cname: add an SDES CNAME chunk (RFC 3550 6.1 wants one per compound).
    """
    rr = bytes(RtcpRrPacket(ssrc=sender_ssrc, reports=list(blocks[:MAX_REPORT_BLOCKS])))
    out = _report_packets(rr, blocks, sender_ssrc) + _sdes(sender_ssrc, cname)
    if remb is not None:
        bitrate, ssrcs = remb
        # REMB: media source SSRC is 0; the streams are listed in the FCI.
        out += bytes(
            RtcpPsfbPacket(
                fmt=RTCP_PSFB_APP,
                ssrc=sender_ssrc,
                media_ssrc=0,
                fci=pack_remb_fci(bitrate, list(ssrcs)),
            )
        )
    return out


def build_sender_report(
    ssrc: int,
    ntp: int,
    rtp_ts: int,
    packets: int,
    octets: int,
    blocks: Sequence[ReportBlock] = (),
    *,
    cname: str | None = None,
) -> bytes:
    """Build a compound SR (RFC 3550 6.4.1) for a stream we send, then SDES CNAME.

    Counters wrap at 2**32 as the RFC says.
    """
    info = RtcpSenderInfo(
        ntp_timestamp=ntp & U64,
        rtp_timestamp=rtp_ts & U32,
        packet_count=packets & U32,
        octet_count=octets & U32,
    )
    sr = bytes(RtcpSrPacket(ssrc=ssrc, sender_info=info, reports=list(blocks[:MAX_REPORT_BLOCKS])))
    return _report_packets(sr, blocks, ssrc) + _sdes(ssrc, cname)


# ---------------------------------------------------------------- clocks


def ntp_from_unix(seconds: float) -> int:
    """Convert Unix time to a 64-bit NTP timestamp (32.32 fixed point, RFC 5905 6)."""
    whole = int(seconds // 1)
    fraction = int((seconds - whole) * (1 << 32))
    return (((whole + NTP_UNIX_OFFSET) << 32) + fraction) & U64


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp: an SR's value for LSR (RFC 3550 6.4.1)."""
    return (ntp >> 16) & U32


def round_trip_time(block: ReportBlock, arrival_ntp: int) -> float | None:
    """Round trip from a report block about our stream (RFC 3550 6.4.1, figure 2).

    Args:
        block: the peer's block; its LSR/DLSR refer to our last SR.
        arrival_ntp: the 64-bit NTP time the report arrived.

    Returns:
        Seconds, or None when the peer has not received an SR from us yet.
    """
    if block.lsr == 0:
        return None
    rtt = (ntp_middle(arrival_ntp) - block.lsr - block.dlsr) & U32
    if rtt > 0x80000000:  # negative: clocks or a stale block; no estimate
        return None
    return rtt / 65536


def rtp_timestamp_at(rtp_timestamp: int, at: float, clock_rate: int, now: float) -> int:
    """Extrapolate an RTP timestamp seen at time ``at`` to time ``now`` (mod 2**32)."""
    return (rtp_timestamp + round((now - at) * clock_rate)) & U32


class SenderClock:
    """Maps wall time to one outbound stream's RTP clock, for its SRs.

    Feed it the last forwarded packet's RTP timestamp (as sent, after rewriting)
    and when it was forwarded; :meth:`rtp_timestamp` then gives the RTP time of
    ``now``, to pair with ``ntp_from_unix(wall_now)`` in the SR. ``at`` and ``now``
    must come from the same clock.

    Args:
        clock_rate: the codec's RTP clock rate (90000 for video, 48000 for Opus).
    """

    def __init__(self, clock_rate: int) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive, not {clock_rate}")
        self.clock_rate = clock_rate
        self._last: tuple[int, float] | None = None

    def update(self, rtp_timestamp: int, at: float) -> None:
        """Record the RTP timestamp of the packet forwarded at ``at``."""
        self._last = (rtp_timestamp & U32, at)

    def rtp_timestamp(self, now: float) -> int | None:
        """The stream's RTP timestamp at ``now``, or None before any packet."""
        if self._last is None:
            return None
        return rtp_timestamp_at(self._last[0], self._last[1], self.clock_rate, now)


# ---------------------------------------------------------------- reception


class ReceptionStats:
    """Turns one inbound stream's cumulative counters into report blocks.

    The C path counts; this class keeps the previous report's counters to derive
    the per-interval fraction lost (RFC 3550 6.4.1, A.3). Call :meth:`report`
    once per RR sent.

    Args:
        ssrc: the stream being reported on.
        base_seq: the (extended) sequence number of the first packet received.
    """

    def __init__(self, ssrc: int, base_seq: int) -> None:
        self.ssrc = ssrc
        self.base_seq = base_seq
        self._expected_prior = 0
        self._received_prior = 0

    def report(
        self,
        *,
        ext_highest_seq: int,
        received: int,
        jitter: int,
        now: float,
        last_sr: int | None = None,
        last_sr_at: float | None = None,
    ) -> ReportBlock:
        """Build the report block for now, and start a new interval.

        Args:
            ext_highest_seq: extended highest sequence number received
                (cycles << 16 | highest seq).
            received: packets received so far (duplicates included, as A.3 counts).
            jitter: interarrival jitter in RTP timestamp units (A.8).
            now: the current time.
            last_sr: middle 32 bits of the last SR's NTP timestamp, None if no SR yet.
            last_sr_at: when that SR arrived, in the clock of ``now``.
        """
        # RFC 3550 A.3.
        expected = ext_highest_seq - self.base_seq + 1
        lost = expected - received
        expected_interval = expected - self._expected_prior
        received_interval = received - self._received_prior
        self._expected_prior = expected
        self._received_prior = received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            fraction = 0
        else:
            # 256 only if nothing arrived while the highest seq moved: impossible
            # unless the counters are inconsistent; keep the field 8 bits.
            fraction = min((lost_interval << 8) // expected_interval, 255)

        if last_sr is None or last_sr_at is None:
            lsr = dlsr = 0
        else:
            lsr = last_sr & U32
            # DLSR is in units of 1/65536 s (RFC 3550 6.4.1).
            dlsr = min(max(int((now - last_sr_at) * 65536), 0), U32)
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            packets_lost=clamp_packets_lost(lost),
            highest_sequence=ext_highest_seq & U32,
            jitter=min(max(jitter, 0), U32),
            lsr=lsr,
            dlsr=dlsr,
        )


# ---------------------------------------------------------------- keyframes


class KeyframeRequestLimiter:
    """Relay at most one PLI/FIR per publisher stream per ``min_interval`` seconds.

    Browsers send PLIs in bursts on loss, and every subscriber of a stream may ask
    at once; one keyframe answers them all, and keyframes are expensive.

    Args:
        min_interval: seconds between two requests relayed for the same key.
    """

    def __init__(self, min_interval: float = 0.5) -> None:
        if min_interval < 0:
            raise ValueError(f"min_interval must not be negative, not {min_interval}")
        self.min_interval = min_interval
        self._last: dict[Hashable, float] = {}

    def allow(self, key: Hashable, now: float) -> bool:
        """True if a request for ``key`` (e.g. the publisher's SSRC) may go out now."""
        last = self._last.get(key)
        if last is not None and now - last < self.min_interval:
            return False
        self._last[key] = now
        return True

    def forget(self, key: Hashable) -> None:
        """Drop a stream's state (it ended)."""
        self._last.pop(key, None)
