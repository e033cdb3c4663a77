"""Who gets what: the Python side of the forwarding table in ext/_router.pyx.

Pure functions over the codecs of answers (sdp.Codec); the C router only sees the resulting
(publisher payload type -> subscriber stream, subscriber payload type) pairs.
"""

from __future__ import annotations

from mediaserver.sfu.sdp import Codec


def _h264_params(fmtp: str) -> tuple[str, str]:
    params = dict(
        item.strip().split("=", 1) for item in fmtp.split(";") if "=" in item
    )
    profile = params.get("profile-level-id", "42e01f").lower()
    # profile_idc + the constraint flags decide decodability; the level does not
    return profile[:4], params.get("packetization-mode", "0")


def same_codec(a: Codec, b: Codec) -> bool:
    """Can a packet of codec `a` be forwarded untouched to a peer expecting `b`?"""
    if a.name.lower() != b.name.lower() or a.clock_rate != b.clock_rate:
        return False
    if a.name.lower() == "h264":
        return _h264_params(a.fmtp) == _h264_params(b.fmtp)
    return True


def payload_type_map(publisher: list[Codec], subscriber: list[Codec]) -> list[tuple[int, int]]:
    """Pairs (publisher pt, subscriber pt) for every codec both sides share."""
    pairs = []
    for pub in publisher:
        for sub in subscriber:
            if same_codec(pub, sub):
                pairs.append((pub.payload_type, sub.payload_type))
                break
    return pairs
