"""A token bucket, the one rate limiter of the server: signalling messages per
visitor, NACK resends per subscriber. Time is passed in (sans-I/O)."""

from __future__ import annotations

import math


class TokenBucket:
    """`rate` events per second on average, bursts up to `burst`; time passed in."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = -math.inf

    def allow(self, now: float) -> bool:
        if self.stamp != -math.inf:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        else:
            self.tokens = self.burst
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
