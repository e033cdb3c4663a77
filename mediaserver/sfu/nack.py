"""What a subscriber's NACKs may make the server resend (sans-I/O).

A NACK (RFC 4585 6.2.1) is a few bytes that ask for up to 17 cached packets per
4-byte entry, so an unchecked one amplifies: one 1,432-byte SRTCP NACK listing the
same sequence numbers over and over made about 6,000 resends (6.7 MB) (issue 20).
Here, per subscriber: the sequence numbers of one RTCP datagram for one stream
count once, at most MAX_PER_NACK of them are answered, and all its streams share
RESEND_RATE per second (bursts of RESEND_BURST). The router adds its own bounds
(mediaserver._router): a cached packet is resent at most RESEND_LIMIT times, and
not again within RESEND_INTERVAL (the resend asked for is still on its way).

The bounds are far from a real lossy call: at 20% loss per leg two Chromium
pages sent about 65 NACKs per second between them (README, benchmarks/loss.py),
each for one or two packets, and a lost keyframe of a 640x480 stream is some 30
packets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mediaserver.rate_limit import TokenBucket

MAX_PER_NACK = 64
"Sequence numbers answered from one RTCP datagram, per stream."
RESEND_RATE = 200.0
"Sequence numbers answered per second per subscriber, on average."
RESEND_BURST = 200.0
"... and at once."


@dataclass
class NackAnswer:
    """What to do with one datagram's NACKs for one stream."""

    resend: list[int]
    "Distinct sequence numbers to resend (or relay), in the order first asked."
    duplicates: int
    "Entries that repeated a sequence number already in the list."
    over_budget: int
    "Distinct sequence numbers left unanswered: past MAX_PER_NACK or the rate."


@dataclass
class NackBudget:
    """One subscriber's allowance of NACK answers."""

    bucket: TokenBucket = field(default_factory=lambda: TokenBucket(RESEND_RATE, RESEND_BURST))

    def admit(self, lost: list[int], now: float) -> NackAnswer:
        """Deduplicate and bound the sequence numbers (mod 2**16) that the NACKs of
        one RTCP datagram ask for on one stream."""
        distinct = list(dict.fromkeys(seq & 0xFFFF for seq in lost))
        resend: list[int] = []
        for seq in distinct[:MAX_PER_NACK]:
            if not self.bucket.allow(now):
                break
            resend.append(seq)
        return NackAnswer(resend, len(lost) - len(distinct), len(distinct) - len(resend))
