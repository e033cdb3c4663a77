"""Privacy requests complete in the background: kicked after a submission (coalesced),
and on the server's timer, which also runs retention."""

from __future__ import annotations

import asyncio
import logging

from mediaserver.store import Store

logger = logging.getLogger("mediaserver.api")

PROCESS_INTERVAL = 5.0
"""Seconds between runs of the periodic privacy-request processing."""
RETENTION_INTERVAL = 3600.0
"""Seconds between retention runs in the server."""


class Processor:
    """Runs store.process_pending in a worker thread, coalescing kicks: while a run
    is going, further kicks mark one more run, never a pile of threads."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def kick(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                await asyncio.to_thread(self.store.process_pending)
            except Exception:
                logger.exception("processing privacy requests failed")
            if not self._again:
                return

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)


async def background_tasks(
    store: Store,
    interval: float = PROCESS_INTERVAL,
    retention_interval: float = RETENTION_INTERVAL,
) -> None:
    """The server's timer: completes pending privacy requests every `interval`
    seconds and runs retention every `retention_interval`. Runs until cancelled."""
    loop = asyncio.get_running_loop()
    next_retention = loop.time()
    while True:
        try:
            await asyncio.to_thread(store.process_pending)
        except Exception:
            logger.exception("processing privacy requests failed")
        if loop.time() >= next_retention:
            next_retention = loop.time() + retention_interval
            try:
                counts = await asyncio.to_thread(store.run_retention)
                logger.info("retention: %s", counts)
            except Exception:
                logger.exception("retention run failed")
        await asyncio.sleep(interval)
