"""Per-address rate limits on the REST endpoints that make the server store or
work: account creation, privacy requests, photo uploads, account reports and
guardians' under-age reports.

One token bucket per (limit, address key): `burst` requests at once, then one more
every `per / burst` seconds. Keys are `client_address.address_key` (IPv6 on its
/64) and live in memory only. Memory is bounded: at most `max_keys` buckets per
limit; beyond that the least recently used one is dropped (the one most likely to
be full again anyway), so a flood of fresh addresses costs a fixed amount of RAM.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mediaserver.api.errors import ApiError
from mediaserver.client_address import address_key, connection_ip

if TYPE_CHECKING:
    from starlette.requests import Request


@dataclass(frozen=True)
class Rate:
    """`burst` requests, refilled evenly over `per` seconds."""

    burst: int
    per: float


CREATE_ACCOUNT = Rate(burst=10, per=3600.0)
PRIVACY_REQUEST = Rate(burst=10, per=86400.0)
PHOTO_UPLOAD = Rate(burst=20, per=3600.0)
REPORT = Rate(burst=30, per=3600.0)
GUARDIAN_REPORT = Rate(burst=5, per=3600.0)
"""Under-age reports without an account: nothing but the address to count by."""
CONNECTION_REQUEST = Rate(burst=60, per=3600.0)
MAIL_CODE = Rate(burst=10, per=3600.0)  # mailing a code (verify, reset) and using a reset code
RATES = {
    "create_account": CREATE_ACCOUNT,
    "privacy_request": PRIVACY_REQUEST,
    "photo_upload": PHOTO_UPLOAD,
    "report": REPORT,
    "guardian_report": GUARDIAN_REPORT,
    "connection_request": CONNECTION_REQUEST,
    "mail_code": MAIL_CODE,
}
"""The limits by name (create_api's `rates` overrides some)."""
UNLIMITED = {name: Rate(burst=2**31, per=1.0) for name in RATES}
"""For a benchmark or fuzzer driving the handlers from one address (never a server)."""
MAX_KEYS = 65536
"""Buckets kept per limit (each ~200 bytes: ~13 MiB for each limit at most)."""


class RateLimiter:
    """Token buckets keyed by client address.

    Args:
        rate: the allowance per key.
        max_keys: buckets kept at most (least recently used dropped first).
        clock: monotonic seconds (a test passes its own).
    """

    def __init__(
        self, rate: Rate, max_keys: int = MAX_KEYS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate.burst < 1 or not rate.per > 0 or max_keys < 1:
            raise ValueError("a rate needs burst >= 1, per > 0 and max_keys >= 1")
        self.rate = rate
        self.max_keys = max_keys
        self._clock = clock
        self._refill = rate.burst / rate.per  # tokens per second
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Spend one request of `key`'s allowance. Returns 0 when allowed, else the
        seconds until one more is (nothing spent)."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (float(self.rate.burst), now))
        tokens = min(float(self.rate.burst), tokens + (now - at) * self._refill)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / self._refill
        self._buckets[key] = (tokens, now)  # most recently used at the end
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


def retry_after(wait: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait)))


class AddressLimits:
    """The API's limiters, one per name in RATES (`rates` overrides some)."""

    def __init__(self, rates: dict[str, Rate] | None = None) -> None:
        self.limiters = {name: RateLimiter(r) for name, r in {**RATES, **(rates or {})}.items()}

    def check(self, request: Request, name: str) -> None:
        """Count this request against its client address's allowance for `name`.

        Raises:
            ApiError: 429 too_many_attempts with Retry-After once it is used up.
        """
        wait = self.limiters[name].take(address_key(connection_ip(request)))
        if wait > 0:
            after = retry_after(wait)
            raise ApiError(
                429, "too_many_attempts",
                f"too many requests from this address; try again in {after} s",
                headers={"Retry-After": after},
            )
