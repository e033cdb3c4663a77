"""The inactivity notice end to end, driven through the CLI (`mediaserver retention
--run-once --as-of DATE --smtp-url ...`) against a real SMTP server: 12 months
without a sign-in sends the notice (mail and inbox) and deletes nothing; the
deletion waits 30 days after it; an account that signed in between is kept."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import pytest

from mediaserver.cli import main
from mediaserver.store import NotFound, Store, load_or_create_data_key
from tests.support.smtp_server import SmtpServer, body_of, smtp_server  # noqa: F401

PASSWORD = "correct horse battery staple"


def retention(db: str, key: str, smtp: SmtpServer, as_of: dt.date | None,
              capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    argv = ["retention", "--run-once", "--db", db, "--data-key-file", key,
            "--smtp-url", smtp.url, "--mail-from", "noreply@example.org"]
    if as_of is not None:
        argv += ["--as-of", as_of.isoformat()]
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    return dict(json.loads(out))


def at(day: dt.date) -> float:
    return dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC).timestamp()


def test_inactivity_notice_then_deletion_30_days_later_unless_signed_in(
        tmp_path: Path, smtp_server: SmtpServer, capsys: pytest.CaptureFixture[str]) -> None:
    db, key_file = str(tmp_path / "r.db"), str(tmp_path / "r.key")
    key = load_or_create_data_key(key_file)
    today = dt.datetime.now(dt.UTC).date()
    with Store(db, key) as store:
        gone, _ = store.create_profile("gone_user", "1990-01-01", email="gone@example.org")
        kept, _ = store.create_profile("kept_user", "1990-01-01", email="kept@example.org",
                                       password=PASSWORD)
    # today's run delivers the two verification mails; the codes verify the addresses
    counts = retention(db, key_file, smtp_server, None, capsys)
    assert counts["mail"] == {"sent": 2, "failed": 0, "given_up": 0}
    with Store(db, key) as store:
        for user, mail in zip((gone, kept), smtp_server.wait_for(2)):
            store.verify_email(user.id, re.search(r"code is (\d{6})", body_of(mail))[1])
    # a day short of 12 months: nothing
    counts = retention(db, key_file, smtp_server, today + dt.timedelta(days=364), capsys)
    assert counts["flagged"] == 0 and len(smtp_server.messages) == 2
    # 12 months on: both flagged, both told by mail (with the date) and in the inbox
    flag_day = today + dt.timedelta(days=366)
    counts = retention(db, key_file, smtp_server, flag_day, capsys)
    assert (counts["flagged"], counts["deleted"]) == (2, 0)
    notices = smtp_server.wait_for(4)[2:]
    assert sorted(m["To"] for m in notices) == ["gone@example.org", "kept@example.org"]
    deletion_day = (flag_day + dt.timedelta(days=30)).isoformat()
    for mail in notices:
        assert mail["Subject"] == "Your account will be deleted"
        assert f"deleted on {deletion_day} unless you sign in" in body_of(mail)
    with Store(db, key, clock=lambda: at(flag_day)) as store:
        inbox, _ = store.list_notices(gone.id)
        assert inbox[0].kind == "inactivity" and deletion_day in inbox[0].body
    # a run the next day sends nothing again
    counts = retention(db, key_file, smtp_server, flag_day + dt.timedelta(days=1), capsys)
    assert counts["flagged"] == 0 and len(smtp_server.messages) == 4
    # one of them signs in within the 30 days
    with Store(db, key, clock=lambda: at(flag_day + dt.timedelta(days=10))) as store:
        store.sign_in("kept_user", PASSWORD)
    # 29 days after the notice: nobody deleted yet
    counts = retention(db, key_file, smtp_server, flag_day + dt.timedelta(days=29), capsys)
    assert counts["deleted"] == 0
    # 30 days after the notice: the silent account goes, the other stays
    counts = retention(db, key_file, smtp_server, flag_day + dt.timedelta(days=30), capsys)
    assert counts["deleted"] == 1
    with Store(db, key) as store:
        with pytest.raises(NotFound):
            store.get_profile(gone.id)
        assert store.get_profile(kept.id).username == "kept_user"


def test_retention_without_smtp_url_writes_the_maildir_next_to_the_database(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, key_file = str(tmp_path / "m.db"), str(tmp_path / "m.key")
    with Store(db, load_or_create_data_key(key_file)) as store:
        store.create_profile("maildir_user", "1990-01-01", email="md@example.org")
    assert main(["retention", "--run-once", "--db", db, "--data-key-file", key_file]) == 0
    assert json.loads(capsys.readouterr().out)["mail"]["sent"] == 1
    assert len(os.listdir(tmp_path / "maildir" / "new")) == 1


def test_policy_publish_notices_every_account_by_inbox_and_mail(
        tmp_path: Path, smtp_server: SmtpServer, capsys: pytest.CaptureFixture[str]) -> None:
    db, key_file = str(tmp_path / "p.db"), str(tmp_path / "p.key")
    key = load_or_create_data_key(key_file)
    with Store(db, key) as store:
        users = [store.create_profile(f"pol_user{n}", "1990-01-01",
                                      email=f"p{n}@example.org")[0] for n in range(2)]
        store.create_profile("pol_nomail", "1990-01-01")
    retention(db, key_file, smtp_server, None, capsys)  # the verification mails
    with Store(db, key) as store:
        for user, mail in zip(users, smtp_server.wait_for(2)):
            store.verify_email(user.id, re.search(r"code is (\d{6})", body_of(mail))[1])
    policy = tmp_path / "policy.txt"
    policy.write_text("We keep as little as we can.\n")
    argv = ["policy", "publish", str(policy), "--effective-date", "2027-01-01",
            "--url", "https://example.org/policy", "--db", db, "--data-key-file", key_file,
            "--smtp-url", smtp_server.url, "--mail-from", "noreply@example.org"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["version"], out["noticed"], out["mail"]["sent"]) == ("1", 3, 2)
    mails = smtp_server.wait_for(4)[2:]
    assert {m["Subject"] for m in mails} == {"Our policy has changed"}
    assert all("2027-01-01" in body_of(m) for m in mails)
    assert main(argv[:3] + argv[5:]) == 0  # the next one is version 2
    assert json.loads(capsys.readouterr().out)["version"] == "2"
    with Store(db, key) as store:
        assert store.current_policy().version == "2"  # type: ignore[union-attr]


def test_the_30_days_count_from_when_the_notice_mail_went_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, key_file = str(tmp_path / "d.db"), str(tmp_path / "d.key")
    key = load_or_create_data_key(key_file)
    smtp = SmtpServer()
    smtp.start()
    today = dt.datetime.now(dt.UTC).date()
    try:
        with Store(db, key) as store:
            user, _ = store.create_profile("late_user", "1990-01-01", email="late@example.org")
        retention(db, key_file, smtp, None, capsys)
        with Store(db, key) as store:
            store.verify_email(user.id, re.search(r"code is (\d{6})",
                                                  body_of(smtp.wait_for(1)[0]))[1])
    finally:
        smtp.stop()  # the mail server is down when the notice is due
    flag_day = today + dt.timedelta(days=366)
    counts = retention(db, key_file, smtp, flag_day, capsys)
    assert counts["flagged"] == 1 and counts["mail"]["failed"] == 1  # type: ignore[index]
    # 30 days on, the notice has not reached anyone: the account stays
    counts = retention(db, key_file, smtp, flag_day + dt.timedelta(days=30), capsys)
    assert counts["deleted"] == 0
    smtp.start()
    try:
        sent_day = flag_day + dt.timedelta(days=31)
        counts = retention(db, key_file, smtp, sent_day, capsys)
        assert counts["deleted"] == 0 and counts["mail"]["sent"] == 1  # type: ignore[index]
        assert smtp.wait_for(2)[1]["Subject"] == "Your account will be deleted"
        counts = retention(db, key_file, smtp, sent_day + dt.timedelta(days=29), capsys)
        assert counts["deleted"] == 0
        counts = retention(db, key_file, smtp, sent_day + dt.timedelta(days=30), capsys)
        assert counts["deleted"] == 1
    finally:
        smtp.stop()
