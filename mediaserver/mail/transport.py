"""Mail transports. Blocking (the sender runs them in a thread): smtplib for SMTP,
mailbox.Maildir for the local fallback."""

from __future__ import annotations

import mailbox
import os
import re
import smtplib
import ssl
import urllib.parse
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol

SMTP_TIMEOUT = 30.0


class Transport(Protocol):
    def send(self, to: str, subject: str, body: str) -> None:
        """Deliver one mail; raise on failure (the sender retries)."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    implicit_tls: bool
    username: str | None
    password: str | None


def parse_smtp_url(url: str) -> SmtpSettings:
    """smtp://[user:pass@]host[:port] (STARTTLS when offered; port 25 by default) or
    smtps://... (implicit TLS; 465). Raises ValueError with one clear line."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("--smtp-url must start with smtp:// or smtps://")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("--smtp-url has a bad port") from None
    if not parts.hostname:
        raise ValueError("--smtp-url needs a host: smtp://[user:pass@]host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("--smtp-url takes no path, query or fragment")
    implicit = parts.scheme == "smtps"
    return SmtpSettings(
        host=parts.hostname,
        port=port or (465 if implicit else 25),
        implicit_tls=implicit,
        username=None if parts.username is None else urllib.parse.unquote(parts.username),
        password=None if parts.password is None else urllib.parse.unquote(parts.password),
    )


_MAIL_FROM = re.compile(r"[^\s@<>\"(),;:\\]{1,64}@[A-Za-z0-9.-]{1,253}")


def check_mail_from(value: str) -> str:
    """A bare address (no display name, nothing that could break a header); a
    domain without a dot (localhost) is fine here. Raises ValueError."""
    if not _MAIL_FROM.fullmatch(value):
        raise ValueError(f"--mail-from must be an e-mail address, not {value!r}")
    return value


def build_message(mail_from: str, to: str, subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=mail_from.rpartition("@")[2] or None)
    msg.set_content(body)
    return msg


class SmtpTransport:
    """One SMTP connection per mail (the queue is small; a kept connection would
    need keep-alive and reconnect logic for little gain).

    Args:
        ssl_context: verifies the server (default: the system's trust store)."""

    def __init__(self, url: str, mail_from: str, ssl_context: ssl.SSLContext | None = None,
                 timeout: float = SMTP_TIMEOUT) -> None:
        self.settings = parse_smtp_url(url)
        self.mail_from = mail_from
        self.context = ssl_context or ssl.create_default_context()
        self.timeout = timeout

    def send(self, to: str, subject: str, body: str) -> None:
        s = self.settings
        msg = build_message(self.mail_from, to, subject, body)
        smtp: smtplib.SMTP
        if s.implicit_tls:
            smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=self.timeout, context=self.context)
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=self.timeout)
        with smtp:
            smtp.ehlo()
            tls = s.implicit_tls
            if not tls and smtp.has_extn("starttls"):
                smtp.starttls(context=self.context)
                smtp.ehlo()
                tls = True
            if s.username is not None:
                if not tls:  # never a password in clear text
                    raise smtplib.SMTPException(
                        "the SMTP server offers no STARTTLS: not sending the password in clear")
                smtp.login(s.username, s.password or "")
            smtp.send_message(msg, from_addr=self.mail_from, to_addrs=[to])


class MaildirTransport:
    """Mail written to a local Maildir (a one-machine run without an SMTP server):
    any mail client reads it. The directory is the owner's only (mail holds codes)."""

    def __init__(self, path: str, mail_from: str) -> None:
        self.path = path
        self.mail_from = mail_from

    def send(self, to: str, subject: str, body: str) -> None:
        old = os.umask(0o077)
        try:
            box = mailbox.Maildir(self.path, create=True)
            box.add(build_message(self.mail_from, to, subject, body))
        finally:
            os.umask(old)


def make_transport(smtp_url: str, mail_from: str, maildir: str,
                   ssl_context: ssl.SSLContext | None = None) -> Transport:
    """SMTP when `smtp_url` is set, else the Maildir at `maildir`."""
    if smtp_url:
        return SmtpTransport(smtp_url, mail_from, ssl_context)
    return MaildirTransport(maildir, mail_from)
