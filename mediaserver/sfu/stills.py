"""Still frames for moderators' evidence, bounded: at most MAX_STILLS captures run at
once on an SFU (a flood of reports beyond that is counted and refused, never
queued), each waits at most its timeout for a keyframe, and a session has one
capture at a time. The Sfu (server.py) taps the session's video while one runs
and forwards it on unchanged (unless an effect or a withheld video owns the tap).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from mediaserver.ai_filters.still import StillCapture
from mediaserver.sfu.errors import SfuError
from mediaserver.sfu.sdp import Codec

MAX_STILLS = 2
"""Captures (each decoding one keyframe) running at once on one SFU."""
STILL_WAIT = 3.0
"""Seconds a capture waits for the keyframe it asked for."""


class StillsBusy(SfuError):
    """MAX_STILLS captures run already (or this session has one): refused."""

    code = "stills_busy"


class StillTimeout(SfuError):
    """No keyframe came within the wait."""

    code = "still_timeout"


class Stills:
    """The running captures of one SFU, by session id.

    Args:
        stats: the SFU's counters (stills_taken, stills_busy, stills_timeout,
            stills_failed, stills_decoded).
        on_end: called with the session id when its capture ends, whatever the
            outcome (the Sfu takes its tap off).
    """

    def __init__(self, stats: Counter[str], on_end: Callable[[str], None]) -> None:
        self.stats = stats
        self._on_end = on_end
        self.running: dict[str, StillCapture] = {}
        self._executor: ThreadPoolExecutor | None = None
        """Decodes the keyframes (its own threads: effects never wait on a still)."""

    def __contains__(self, session_id: object) -> bool:
        return session_id in self.running

    def begin(self, session_id: str, codec: Codec) -> StillCapture:
        """A capture of the session's video in `codec` (the answer's first: what
        the browser sends). StillsBusy: too many run, or the session has one."""
        if session_id in self.running or len(self.running) >= MAX_STILLS:
            self.stats["stills_busy"] += 1
            raise StillsBusy("stills busy: try again later")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(MAX_STILLS, thread_name_prefix="stills")
        capture = StillCapture(f"video/{codec.name}", codec.payload_type, self._executor)
        self.running[session_id] = capture
        return capture

    def receive_rtp(self, session_id: str, data: bytes) -> None:
        capture = self.running.get(session_id)
        if capture is not None:
            capture.receive_rtp(data)

    async def wait(self, session_id: str, capture: StillCapture, timeout: float) -> bytes:
        """The JPEG (StillTimeout: no keyframe in time; SfuError: it did not decode
        or the session closed)."""
        try:
            jpeg = await asyncio.wait_for(asyncio.shield(capture.result), timeout)
        except TimeoutError:
            self.stats["stills_timeout"] += 1
            raise StillTimeout(f"no keyframe within {timeout:g} s") from None
        except asyncio.CancelledError:
            if capture.result.cancelled():  # the session closed: not our caller's cancel
                self.stats["stills_failed"] += 1
                raise SfuError("the session closed before a keyframe came") from None
            raise
        except Exception as exc:  # noqa: BLE001 - the decode failed: its message says why
            self.stats["stills_failed"] += 1
            raise SfuError(f"the keyframe did not decode: {exc}") from None
        else:
            self.stats["stills_taken"] += 1
            return jpeg
        finally:
            self.stats["stills_decoded"] += capture.decoded
            capture.cancel()
            if self.running.get(session_id) is capture:
                del self.running[session_id]
                self._on_end(session_id)

    def close(self, session_id: str) -> None:
        """The session closed: its capture ends without a still."""
        capture = self.running.get(session_id)
        if capture is not None:
            capture.cancel()

    def shutdown(self) -> None:
        for capture in self.running.values():
            capture.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
