"""Outgoing mail against a real SMTP server (aiosmtpd on loopback): the outbox is
drained once, a server that is down is retried with backoff until it is up, mail
is given up after the last try, the Maildir fallback, STARTTLS and smtps with a
self-signed certificate made by the test, and the counts in /metrics."""

from __future__ import annotations

import mailbox
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediaserver.mail import MailSender, MaildirTransport, SmtpTransport, make_transport
from mediaserver.mail.transport import parse_smtp_url
from mediaserver.store import Store
from mediaserver.store.notices import MAIL_BACKOFF, MAIL_MAX_ATTEMPTS
from tests.support.smtp_server import SmtpServer, body_of, smtp_server  # noqa: F401
from tests.support.store import KEY, Clock, file_bytes, make

FROM = "noreply@example.org"


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[Store]:
    s = Store(str(tmp_path / "mail.db"), KEY, clock=clock)
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def queue(store: Store, to: str, subject: str, body: str) -> None:
    from mediaserver.store.notices import queue_mail

    with store._tx() as conn:
        queue_mail(conn, store._key, store._now(), to, subject, body)


def test_queued_mail_reaches_the_smtp_server_once_and_leaves_the_outbox(
        store: Store, smtp_server: SmtpServer) -> None:
    profile, _ = make(store, name="Alice Liddell", email="alice@example.org")
    sender = MailSender(store, SmtpTransport(smtp_server.url, FROM))
    assert sender.deliver_due() == 1
    (msg,) = smtp_server.wait_for(1)
    assert msg["To"] == "alice@example.org" and msg["From"] == FROM
    assert msg["Subject"] == "Verify your e-mail address"
    assert "Your verification code is" in body_of(msg)
    assert store.mail_queued() == 0
    assert sender.deliver_due() == 0  # nothing twice
    assert len(smtp_server.messages) == 1
    assert sender.stats.as_dict() == {"sent": 1, "failed": 0, "given_up": 0}


def test_the_outbox_holds_no_address_or_text_in_clear(store: Store, tmp_path: Path) -> None:
    queue(store, "secret-recipient@example.org", "Subject zebrafish", "Body quagga")
    store.checkpoint()
    raw = file_bytes(str(tmp_path / "mail.db"))
    for value in (b"secret-recipient", b"zebrafish", b"quagga"):
        assert value not in raw


def test_two_senders_sharing_the_file_send_each_mail_once(
        store: Store, tmp_path: Path, clock: Clock, smtp_server: SmtpServer) -> None:
    for n in range(30):
        queue(store, f"user{n}@example.org", f"mail {n}", "hello")
    other = Store(str(tmp_path / "mail.db"), KEY, clock=clock)  # another process's connection
    try:
        senders = [MailSender(s, SmtpTransport(smtp_server.url, FROM)) for s in (store, other)]
        threads = [threading.Thread(target=s.deliver_due) for s in senders]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        smtp_server.wait_for(30)
        subjects = sorted(m["Subject"] for m in smtp_server.messages)
        assert subjects == sorted(f"mail {n}" for n in range(30))
        assert sum(s.stats.sent for s in senders) == 30
    finally:
        other.close()


def test_a_down_server_is_retried_with_backoff_until_it_is_up(
        store: Store, clock: Clock) -> None:
    server = SmtpServer()  # not started: connections are refused
    queue(store, "bob@example.org", "Hello Bob", "text")
    sender = MailSender(store, SmtpTransport(server.url, FROM, timeout=5))
    assert sender.deliver_due() == 0
    assert sender.stats.failed == 1 and store.mail_queued() == 1
    assert sender.deliver_due() == 0  # backing off: not tried again yet
    assert sender.stats.failed == 1
    clock.advance(MAIL_BACKOFF / 86400 + 1e-6)
    assert sender.deliver_due() == 0  # due again, still down
    assert sender.stats.failed == 2
    clock.advance(MAIL_BACKOFF / 86400)  # the second wait is twice as long: not yet
    assert sender.deliver_due() == 0 and sender.stats.failed == 2
    server.start()
    try:
        clock.advance(MAIL_BACKOFF / 86400 + 1e-6)
        assert sender.deliver_due() == 1
        (msg,) = server.wait_for(1)
        assert msg["Subject"] == "Hello Bob"
        assert store.mail_queued() == 0
        assert sender.stats.as_dict() == {"sent": 1, "failed": 2, "given_up": 0}
    finally:
        server.stop()


def test_mail_is_given_up_after_the_last_try(store: Store, clock: Clock,
                                              caplog: pytest.LogCaptureFixture) -> None:
    server = SmtpServer()  # never started
    queue(store, "carol@example.org", "Never", "text")
    sender = MailSender(store, SmtpTransport(server.url, FROM, timeout=5))
    for _ in range(MAIL_MAX_ATTEMPTS):
        sender.deliver_due()
        clock.advance(1)  # a day: past any backoff
    assert store.mail_queued() == 0
    assert sender.stats.as_dict() == {"sent": 0, "failed": MAIL_MAX_ATTEMPTS, "given_up": 1}
    assert any("given up" in r.getMessage() for r in caplog.records)
    assert not any("carol" in r.getMessage() for r in caplog.records)


def test_without_smtp_url_mail_goes_to_a_maildir(store: Store, tmp_path: Path) -> None:
    maildir = str(tmp_path / "maildir")
    transport = make_transport("", FROM, maildir)
    assert isinstance(transport, MaildirTransport)
    make(store, email="dora@example.org")
    assert MailSender(store, transport).deliver_due() == 1
    box = mailbox.Maildir(maildir, create=False)
    (msg,) = list(box)
    assert msg["To"] == "dora@example.org"
    assert "Your verification code is" in msg.get_payload()
    assert os.stat(maildir).st_mode & 0o077 == 0  # mail holds codes: owner only


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_tls_to_a_server_with_a_self_signed_certificate(
        store: Store, tmp_path: Path, tls: str) -> None:
    server = SmtpServer(tmp_path, tls=tls)
    server.start()
    try:
        assert server.url.startswith("smtps://" if tls == "implicit" else "smtp://")
        queue(store, "erin@example.org", "Over TLS", "text")
        # without trusting the test's certificate: refused, and retried later
        untrusting = MailSender(store, SmtpTransport(server.url, FROM, timeout=5))
        assert untrusting.deliver_due() == 0 and untrusting.stats.failed == 1
        assert server.messages == []
        store._clock.advance(1)  # type: ignore[attr-defined]
        trusting = MailSender(store, SmtpTransport(server.url, FROM, server.client_context))
        assert trusting.deliver_due() == 1
        (msg,) = server.wait_for(1)
        assert msg["Subject"] == "Over TLS"
    finally:
        server.stop()


def test_a_password_is_never_sent_without_tls(store: Store, smtp_server: SmtpServer) -> None:
    url = smtp_server.url.replace("smtp://", "smtp://user:pa%40ss@")
    assert parse_smtp_url(url).password == "pa@ss"
    queue(store, "frank@example.org", "Secret", "text")
    sender = MailSender(store, SmtpTransport(url, FROM, timeout=5))
    assert sender.deliver_due() == 0 and sender.stats.failed == 1
    assert smtp_server.messages == []


@pytest.mark.parametrize("url", ["http://host", "smtp://", "smtp://host:99999",
                                 "smtp://host/path"])
def test_bad_smtp_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_smtp_url(url)


def test_the_mail_flags_are_checked_like_every_flag(tmp_path: Path) -> None:
    from mediaserver.cli import load_config

    base = ["--db", str(tmp_path / "c.db"), "--data-key-file", str(tmp_path / "c.key")]
    config = load_config(base + ["--smtp-url", "smtps://u:p@mail.example.org:465",
                                 "--mail-from", "noreply@example.org"], environ={})
    assert (config.smtp_url, config.mail_from) == ("smtps://u:p@mail.example.org:465",
                                                   "noreply@example.org")
    assert config.mail_dir() == str(tmp_path / "maildir")
    env = load_config(base, environ={"MEDIASERVER_MAILDIR": str(tmp_path / "box")})
    assert env.mail_dir() == str(tmp_path / "box")
    for flag, value in (("--smtp-url", "http://mail.example.org"),
                        ("--mail-from", "Name <x@example.org>"),
                        ("--mail-from", "x@example.org\r\nBcc: y@example.org")):
        with pytest.raises(ValueError, match=flag):
            load_config(base + [flag, value], environ={})
