"""Outgoing mail: the transports (SMTP with STARTTLS or implicit TLS, or a local
Maildir when no SMTP server is configured) and the sender that drains the store's
durable outbox (store/notices.py) with retries."""

from mediaserver.mail.sender import MailSender, MailStats, deliver_queued
from mediaserver.mail.transport import (
    MaildirTransport,
    SmtpTransport,
    Transport,
    make_transport,
    parse_smtp_url,
)

__all__ = [
    "MailSender",
    "MailStats",
    "MaildirTransport",
    "SmtpTransport",
    "Transport",
    "deliver_queued",
    "make_transport",
    "parse_smtp_url",
]
