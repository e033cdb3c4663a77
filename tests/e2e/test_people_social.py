"""Issue 16's "Done when", end to end in headless Chromium: two people use People mode
of the page against the real server (a subprocess, as an operator starts it) with a
real SMTP server (aiosmtpd) for its mail.

A signs up (the verification code arrives at the SMTP server and is typed in),
uploads a photo and turns on two-factor; B signs up, browses by interest, finds A and
presses Connect; A accepts; they exchange messages over the signalling socket (A keeps
history); B calls, A answers, both remote videos play (the fake camera); B hangs up; A
downloads its data (the file holds the messages) and deletes the account; B's
conversation shows "Deleted user"; the raw database file and its WAL hold none of A's
values afterwards.

A's page comes from http://localhost, B's from http://10.77.0.1 (one address each, as
in test_web_client.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, async_playwright

from mediaserver.netns import CLIENT_IP, SERVER_IP
from tests.e2e.test_people_page import (
    DOB,
    PASSWORD,
    PHONE_360,
    code_after,
    image_loaded,
    open_people,
    png,
    watch_errors,
)
from tests.e2e.test_web_client import DESKTOP, _free_port, launch
from tests.support import ROOT
from tests.support.smtp_server import SmtpServer, body_of, smtp_server  # noqa: F401

pytestmark = pytest.mark.netns

# MEDIASERVER_PEOPLE_SCREENSHOT=docs/people.png refreshes the README's picture of
# People mode (signed in, with a connection and a conversation)
SCREENSHOT = Path(os.environ.get("MEDIASERVER_PEOPLE_SCREENSHOT", "/tmp/mediaserver-people.png"))

A = {
    "username": "alice_social",
    "name": "Alice Quartermaine",
    "email": "alice.q@example.test",
    "bio": "Plays correspondence chess on Sundays",
    "interests": "chess, orienteering",
}
B = {
    "username": "bob_social",
    "name": "Bob Example",
    "email": "bob@example.test",
    "bio": "bob likes chess too",
    "interests": "chess",
}
A_SAYS = ["hello bob, alice here: zebra-quokka-17", "see you at the chess club: lynx-marmot-42"]
B_SAYS = "hi alice, nice to meet you"

REMOTE_VIDEO_JS = """
async () => {
  const v = document.querySelector('#people-remote');
  const pc = window.mediaserverPeople.pc;
  let frames = 0;
  if (pc) {
    for (const s of (await pc.getStats()).values()) {
      if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
    }
  }
  return {time: v.currentTime, width: v.videoWidth, paused: v.paused, frames};
}
"""


@pytest.fixture
def social_server(tmp_path: Path, smtp_server: SmtpServer) -> Iterator[Any]:  # noqa: F811
    """The real server with its mail going to the test's SMTP server; `.db` is the
    SQLite file, `.smtp` the SMTP server, `.urls` one base URL per visitor address."""
    port = _free_port()
    db = tmp_path / "db"
    args = [
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--udp-port",
        "0",
        "--announced-ip",
        SERVER_IP,
        "--log-level",
        "warning",
        "--db",
        str(db),
        "--data-key-file",
        str(tmp_path / "key"),
        "--drain-seconds",
        "1",
        "--smtp-url",
        smtp_server.url,
        "--mail-from",
        "mediaserver@example.test",
    ]
    proc = subprocess.Popen([sys.executable, "-m", "mediaserver.cli", *args], cwd=ROOT)
    deadline = time.monotonic() + 20
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the server did not answer /healthz within 20 s")
            time.sleep(0.1)
        hosts = ("localhost", SERVER_IP, CLIENT_IP)
        proc.urls = [f"http://{h}:{port}/" for h in hosts]  # type: ignore[attr-defined]
        proc.db = db  # type: ignore[attr-defined]
        proc.tmp = tmp_path  # type: ignore[attr-defined]
        proc.smtp = smtp_server  # type: ignore[attr-defined]
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def publish_policy(server: Any, version: str) -> None:
    """`mediaserver policy publish` as an operator runs it, on the running server's store."""
    text = server.tmp / f"policy-{version}.txt"
    text.write_text(f"Policy version {version}: what we keep and why.\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mediaserver.cli",
            "policy",
            "publish",
            str(text),
            "--version",
            version,
            "--url",
            f"https://example.test/policy/{version}",
            "--db",
            str(server.db),
            "--data-key-file",
            str(server.tmp / "key"),
            "--smtp-url",
            server.smtp.url,
            "--mail-from",
            "mediaserver@example.test",
        ],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def mailed_code(smtp: SmtpServer, to: str, nth: int = 1) -> str:
    """The code of the nth verification mail to `to` (waiting for it to arrive)."""
    deadline = time.monotonic() + 20
    while True:
        codes = [
            m for m in smtp.messages if to in str(m["To"]) and "verification code" in body_of(m)
        ]
        if len(codes) >= nth:
            found = re.search(r"verification code is (\d{6})", body_of(codes[nth - 1]))
            assert found, body_of(codes[nth - 1])
            return found[1]
        assert time.monotonic() < deadline, f"no verification mail #{nth} to {to}"
        time.sleep(0.2)


async def sign_up(page: Page, who: dict[str, str]) -> None:
    await page.fill("#signup-username", who["username"])
    await page.fill("#signup-password", PASSWORD)
    await page.fill("#signup-dob", DOB)
    await page.fill("#signup-name", who["name"])
    await page.fill("#signup-email", who["email"])
    await page.fill("#signup-interests", who["interests"])
    await page.fill("#signup-bio", who["bio"])
    await page.check("#signup-discoverable")
    await page.click("#signup-submit")
    await page.wait_for_selector("#people-signed-in", state="visible", timeout=15000)


async def verify_email(page: Page, smtp: SmtpServer, who: dict[str, str]) -> None:
    """Type the mailed code; first ask for a new one (the page's "Send a new code")."""
    await page.wait_for_selector("#verify-section", state="visible", timeout=10000)
    assert who["email"] in (await page.text_content("#verify-hint") or "")
    first = await asyncio.to_thread(mailed_code, smtp, who["email"], 1)
    await page.click("#verify-resend")
    second = await asyncio.to_thread(mailed_code, smtp, who["email"], 2)
    # the first code stops working once a new one is mailed
    if first != second:
        await page.fill("#verify-code", first)
        await page.click("#verify-submit")
        error = page.locator('#verify-form .error[data-error-for="code"]')
        await error.wait_for(state="visible", timeout=10000)
    await page.fill("#verify-code", second)
    await page.click("#verify-submit")
    await page.wait_for_selector("#verify-section", state="hidden", timeout=10000)
    await wait_text(page, "#people-status", "verified")


async def wait_text(page: Page, selector: str, text: str, timeout: float = 15) -> None:
    await page.wait_for_function(
        "([sel, text]) => { const e = document.querySelector(sel);"
        " return e && e.textContent.includes(text); }",
        arg=[selector, text],
        timeout=timeout * 1000,
    )


async def wait_remote_video(page: Page, timeout: float = 40) -> dict[str, Any]:
    """#people-remote plays: a size, time advancing, frames decoded."""
    first = dict(await page.evaluate(REMOTE_VIDEO_JS))
    deadline = time.monotonic() + timeout
    now = first
    while time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        now = dict(await page.evaluate(REMOTE_VIDEO_JS))
        if (
            now["width"] > 0
            and not now["paused"]
            and now["time"] > first["time"] + 0.5
            and now["frames"] >= first["frames"] + 15
        ):
            return now
    raise AssertionError(f"remote video not playing: first {first}, last {now}")


@pytest.mark.timeout(300)
async def test_two_people_sign_up_connect_message_call_export_and_delete(social_server):
    base_a, base_b = social_server.urls[0], social_server.urls[1]
    smtp = social_server.smtp
    async with async_playwright() as p:
        browser = await launch(p, social_server.urls[:2])
        try:
            ctx_a = await browser.new_context(viewport=DESKTOP, accept_downloads=True)
            ctx_b = await browser.new_context(viewport=DESKTOP)
            a, b = await ctx_a.new_page(), await ctx_b.new_page()
            errors_a, errors_b = watch_errors(a), watch_errors(b)

            # the operator published a policy: the sign-up form shows it, and signing up
            # accepts that version
            await asyncio.to_thread(publish_policy, social_server, "1")
            # A signs up with a name and an e-mail, verifies the address with the code
            await open_people(a, base_a)
            await wait_text(a, "#signup-policy", "version 1")
            link = a.locator("#signup-policy a")
            assert await link.get_attribute("href") == "https://example.test/policy/1"
            await sign_up(a, A)
            assert await a.is_hidden("#policy-section")
            await verify_email(a, smtp, A)

            # ... uploads a photo
            await a.set_input_files(
                "#photo-file",
                files=[{"name": "me.png", "mimeType": "image/png", "buffer": png((200, 80, 40))}],
            )
            await image_loaded(a, "#photo-preview")
            await a.click("#photo-upload")
            await image_loaded(a, "#photo-current")

            # ... and turns on two-factor
            await a.click("#twofa-start-form button[type=submit]")
            await a.wait_for_selector("#twofa-confirm-form", state="visible", timeout=10000)
            secret = (await a.text_content("#twofa-secret") or "").strip()
            await a.fill("#twofa-code", code_after(secret, 0))
            await a.press("#twofa-code", "Enter")
            await a.wait_for_selector("#recovery-box", state="visible", timeout=10000)

            # the sessions list marks this one
            await wait_text(a, "#sessions-list", "this session")
            # the inbox holds the notices (verify e-mail at least)
            await a.wait_for_selector("#inbox-list li", timeout=15000)

            # B signs up, browses by interest, finds A and presses Connect
            await open_people(b, base_b)
            await sign_up(b, B)
            await b.fill("#browse-interest", "orienteering")
            await b.press("#browse-interest", "Enter")
            card = b.locator(f'#browse-cards li[data-handle="{A["username"]}"]')
            await card.wait_for(timeout=10000)
            await card.get_by_role("button", name=f"Connect with {A['username']}").click()
            await wait_text(b, "#browse-cards .answer", "Request sent")
            await wait_text(b, "#connections-out", A["username"])

            # A sees the request (within the 10 s poll) and accepts it
            incoming = a.locator(f'#connections-in li[data-handle="{B["username"]}"]')
            await incoming.wait_for(timeout=20000)
            await incoming.get_by_role("button", name=f"Accept {B['username']}").click()
            accepted = a.locator(f'#connections-accepted li[data-handle="{B["username"]}"]')
            await accepted.wait_for(timeout=10000)
            # accepted connections see the display name
            assert B["name"] in (await accepted.text_content() or "")

            # A opens the conversation and keeps history
            await accepted.get_by_role("button", name=f"Message {B['username']}").click()
            await a.wait_for_selector("#conversation-box", state="visible", timeout=10000)
            await a.wait_for_function(
                "() => document.activeElement.id === 'conversation-input'", timeout=5000
            )
            await a.check("#conversation-keep")
            await wait_text(a, "#people-status", "History is kept")

            # B's conversation appears (poll); B opens it
            conv_b = b.locator("#conversation-list li button", has_text=A["username"])
            await conv_b.wait_for(timeout=20000)
            await conv_b.click()
            await b.wait_for_selector("#conversation-box", state="visible", timeout=10000)

            # they exchange messages, delivered live
            await a.fill("#conversation-input", A_SAYS[0])
            await a.press("#conversation-input", "Enter")
            await wait_text(a, "#conversation-log", A_SAYS[0])
            await wait_text(b, "#conversation-log", A_SAYS[0])
            await b.fill("#conversation-input", B_SAYS)
            await b.click("#conversation-send")
            await wait_text(a, "#conversation-log", B_SAYS)
            await a.fill("#conversation-input", A_SAYS[1])
            await a.press("#conversation-input", "Enter")
            await wait_text(b, "#conversation-log", A_SAYS[1])

            # a new policy version: the page asks A to accept it at the next sign-in (here
            # a reload of the signed-in tab), and A's kept history comes back from the server
            await asyncio.to_thread(publish_policy, social_server, "2")
            await a.reload()
            await a.wait_for_selector("#people-signed-in", state="visible", timeout=15000)
            await a.wait_for_selector("#policy-section", state="visible", timeout=10000)
            await wait_text(a, "#policy-text", "version 2")
            await a.click("#policy-accept")
            await a.wait_for_selector("#policy-section", state="hidden", timeout=10000)
            await wait_text(a, "#people-status", "policy is accepted")
            await a.locator("#conversation-list li button", has_text=B["username"]).click()
            await wait_text(a, "#conversation-log", A_SAYS[1])
            await wait_text(a, "#conversation-log", B_SAYS)
            assert await a.is_checked("#conversation-keep")

            # the README's picture: People mode signed in, a connection and a conversation
            await a.evaluate("() => { document.activeElement.blur(); window.scrollTo(0, 0); }")
            SCREENSHOT.parent.mkdir(exist_ok=True)
            await a.screenshot(path=str(SCREENSHOT))

            # B calls and A declines: B is told, both prompts go away
            # (A is in Random mode meanwhile: the People tab shows the call ringing)
            await a.click("#mode-random")
            await a.wait_for_selector("#random-mode", state="visible")
            await b.click("#conversation-call")
            await a.wait_for_selector("#mode-people.ringing", timeout=20000)
            label = await a.get_attribute("#mode-people", "aria-label") or ""
            assert B["username"] in label, label
            await a.click("#mode-people")
            await a.wait_for_selector("#call-decline", state="visible", timeout=10000)
            await a.click("#call-decline")
            await a.wait_for_selector("#mode-people:not(.ringing)", timeout=5000)
            await wait_text(b, "#call-state", "declined")
            for page in (a, b):
                await page.wait_for_selector("#incoming-call", state="hidden", timeout=10000)

            # B calls again; A's page rings; A answers; both remote videos play
            await b.click("#conversation-call")
            await a.wait_for_selector("#call-answer", state="visible", timeout=20000)
            assert B["username"] in (await a.text_content("#call-state") or "")
            # the prompt takes the focus: Enter answers (a keyboard user's path)
            await a.wait_for_function(
                "() => document.activeElement.id === 'call-answer'", timeout=5000
            )
            await a.keyboard.press("Enter")
            await a.wait_for_selector("#call-stage", state="visible", timeout=10000)
            await b.wait_for_selector("#call-stage", state="visible", timeout=10000)
            await wait_remote_video(a)
            await wait_remote_video(b)
            # in a call, with a connection and a conversation open: it fits 360 px
            await b.set_viewport_size(PHONE_360)
            overflow = await b.evaluate(
                "() => document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, f"the page is {overflow}px wider than 360 px"
            assert await b.is_visible("#call-hangup")
            await b.set_viewport_size(DESKTOP)

            # B hangs up: the call ends on both pages
            await b.click("#call-hangup")
            for page in (a, b):
                await page.wait_for_selector("#call-stage", state="hidden", timeout=10000)
            await wait_text(a, "#people-status", "call ended")
            assert await a.evaluate("() => window.mediaserverPeople.phase") == "idle"

            # A downloads its data: the file holds the messages
            async with a.expect_download(timeout=60000) as download_info:
                await a.click("#download-data")
            download = await download_info.value
            export_text = Path(await download.path()).read_text()
            export = json.loads(export_text)
            assert export["profile"]["username"] == A["username"]
            for text in (*A_SAYS, B_SAYS):
                assert text in export_text, text

            # A deletes the account (password and a two-factor code again)
            await a.fill("#delete-pass", PASSWORD)
            await a.fill("#delete-otp", code_after(secret, 1))
            await a.click("#delete-form button[type=submit]")
            await a.wait_for_selector("#people-signed-out", state="visible", timeout=15000)
            assert "deleted" in (await a.text_content("#people-status") or "")

            # B's conversation shows a deleted user (within the poll) and takes no more
            await wait_text(b, "#conversation-list", "Deleted user", timeout=25)
            await wait_text(b, "#conversation-title", "Deleted user")
            assert await b.is_disabled("#conversation-input")
            assert await b.is_disabled("#conversation-call")

            assert errors_a == [] and errors_b == [], (errors_a, errors_b)
        finally:
            await browser.close()

    # the raw database file and its WAL hold none of A's values: while the server runs,
    # and after it stopped (and checkpointed)
    assert_none_of_a(social_server.db)
    social_server.send_signal(signal.SIGTERM)
    social_server.wait(timeout=10)
    assert_none_of_a(social_server.db)


def assert_none_of_a(db: Path) -> None:
    raw = b""
    for suffix in ("", "-wal"):
        path = Path(str(db) + suffix)
        if path.exists():
            raw += path.read_bytes()
    assert raw, "no database file"
    for value in (A["username"], A["name"], A["email"], A["bio"], *A_SAYS):
        for form in (value, value.lower()):
            assert form.encode() not in raw, value
