"""The sender: drains the store's outbox (store/notices.py) through a transport.
Rows are claimed atomically, so several processes sharing the database send each
once; a failure is retried with exponential backoff and given up after
MAIL_MAX_ATTEMPTS tries (logged without the address or the text)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from mediaserver.store import Store
from mediaserver.mail.transport import Transport

logger = logging.getLogger("mediaserver.mail")

POLL_INTERVAL = 2.0
"""Seconds between looks at the outbox (a cheap read while nothing is due)."""


@dataclass
class MailStats:
    """Counts for /metrics (mediaserver/metrics.py reads them)."""

    sent: int = 0
    failed: int = 0
    """Failed attempts (each is retried, until given up)."""
    given_up: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "failed": self.failed, "given_up": self.given_up}


class MailSender:
    def __init__(self, store: Store, transport: Transport, stats: MailStats | None = None,
                 poll: float = POLL_INTERVAL) -> None:
        self.store = store
        self.transport = transport
        self.stats = stats or MailStats()
        self.poll = poll

    def deliver_due(self) -> int:
        """Send every mail due now (blocking; a thread or a CLI); returns how many
        were sent. Each claimed batch is finished before the next is claimed."""
        sent = 0
        while True:
            batch = self.store.claim_mail()
            if not batch:
                return sent
            for mail in batch:
                try:
                    self.transport.send(mail.to, mail.subject, mail.body)
                except Exception as exc:  # noqa: BLE001 - any failure is retried
                    self.stats.failed += 1
                    if self.store.mail_failed(mail.id):
                        self.stats.given_up += 1
                        logger.error("mail given up after %d attempts: %s",
                                     mail.attempts + 1, type(exc).__name__)
                    else:
                        logger.warning("mail not sent (will retry): %s: %s",
                                       type(exc).__name__, exc)
                    continue
                self.store.mail_sent(mail.id)
                self.stats.sent += 1
                sent += 1

    async def run(self) -> None:
        """Deliver due mail every `poll` seconds until cancelled."""
        while True:
            try:
                await asyncio.to_thread(self.deliver_due)
            except Exception:
                logger.exception("mail delivery pass failed")
            await asyncio.sleep(self.poll)


def deliver_queued(store: Store, transport: Transport) -> MailStats:
    """Deliver what is due now, once (the retention and policy commands, before
    they exit)."""
    sender = MailSender(store, transport)
    sender.deliver_due()
    return sender.stats
