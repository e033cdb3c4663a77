"""The browser client (mediaserver/web/) against the real server, in headless Chromium.

Three visitors on three pages: A and B meet, see each other's video and chat; A
presses Next; B stops; C arrives and meets A. The server runs as a subprocess, as an
operator would start it.

The server keys skips, blocks and "never pair a visitor with itself" on an identity
derived from the client's IP address, so three tabs from one address would never
meet. Each page therefore comes from its own address of the private namespace:
A from http://localhost (127.0.0.1), B from http://10.77.0.1, C from
http://10.77.0.2 (the kernel uses the destination as the source address for an
address of its own). localhost is a secure context; the two others are declared
secure with a Chromium flag, so getUserMedia (the fake camera) works on all three.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.async_api import Browser, Page, async_playwright

from mediaserver.netns import CLIENT_IP, SERVER_IP
from mediaserver.signalling.protocol import REPORT_REASONS
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support import ROOT

pytestmark = pytest.mark.netns

# MEDIASERVER_SCREENSHOT=docs/client.png refreshes the README's picture; by default the
# screenshot goes to a temporary file, so a test run changes no tracked file
SCREENSHOT = Path(os.environ.get("MEDIASERVER_SCREENSHOT", "/tmp/mediaserver-client.png"))
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path, request):
    """The real server (`python -m mediaserver.cli`) on a free port; `.urls` has the
    base URL of each visitor (one address each). Indirect parametrization adds flags."""
    port = _free_port()
    # --host 0.0.0.0: every interface of the private namespace (lo and the veth pair)
    args = ["--host", "0.0.0.0", "--port", str(port), "--udp-port", "0"]
    args += ["--announced-ip", SERVER_IP, "--log-level", "warning"]
    args += ["--db", str(tmp_path / "db"), "--data-key-file", str(tmp_path / "key")]
    # SIGTERM drains: pairs may go on for up to this long before the server exits
    args += ["--drain-seconds", "2", *getattr(request, "param", ())]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mediaserver.cli", *args],
        cwd=ROOT,
    )
    urls = [f"http://{host}:{port}/" for host in ("localhost", SERVER_IP, CLIENT_IP)]
    deadline = time.monotonic() + 20
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode} before it served /healthz")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the server did not answer /healthz within 20 s")
            time.sleep(0.1)
        proc.urls = urls  # type: ignore[attr-defined]
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---- page helpers ---------------------------------------------------------------------

STATUS_JS = "() => document.querySelector('#status').textContent"

VIDEO_JS = """
async () => {
  const v = document.querySelector('#remote');
  const pc = window.mediaserverClient.pc;
  let frames = 0;
  if (pc) {
    for (const s of (await pc.getStats()).values()) {
      if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
    }
  }
  return {time: v.currentTime, width: v.videoWidth, paused: v.paused, frames};
}
"""


async def status(page: Page) -> str:
    return str(await page.evaluate(STATUS_JS))


async def wait_status(page: Page, *words: str, timeout: float = 15) -> str:
    """Wait until #status contains one of words (case-insensitive)."""
    lowered = [w.lower() for w in words]
    await page.wait_for_function(
        "words => { const t = document.querySelector('#status').textContent.toLowerCase();"
        " return words.some(w => t.includes(w)); }",
        arg=lowered,
        timeout=timeout * 1000,
    )
    return await status(page)


async def wait_chat(page: Page, text: str, timeout: float = 10) -> None:
    await page.wait_for_function(
        "text => document.querySelector('#chat-log').textContent.includes(text)",
        arg=text,
        timeout=timeout * 1000,
    )


async def start(page: Page, interests: str = "") -> None:
    await page.check("#age-confirm")
    if interests:
        await page.fill("#interests", interests)
    await page.click("#start")


async def video(page: Page) -> dict:
    return dict(await page.evaluate(VIDEO_JS))


async def wait_video(page: Page, min_new_frames: int = 15, timeout: float = 30) -> dict:
    """The stranger's video plays: time advances, frames are decoded, it has a size."""
    first = await video(page)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    now = first
    while loop.time() < deadline:
        await asyncio.sleep(0.3)
        now = await video(page)
        if (
            now["width"] > 0
            and not now["paused"]
            and now["time"] > first["time"] + 0.5
            and now["frames"] >= first["frames"] + min_new_frames
        ):
            return now
    raise AssertionError(f"remote video not playing: first {first}, last {now}")


async def launch(p: Any, urls: list[str]) -> Browser:
    """Headless Chromium for the visitors' pages: every URL but the first
    (localhost, secure already) is declared a secure origin, so the fake camera works."""
    secure = ",".join(url.rstrip("/") for url in urls[1:])
    return await p.chromium.launch(
        executable_path=CHROMIUM,
        args=[*CHROMIUM_ARGS, f"--unsafely-treat-insecure-origin-as-secure={secure}"],
    )


# ---- the visit ------------------------------------------------------------------------


@pytest.mark.timeout(180)
async def test_three_visitors_meet_chat_and_skip(server):
    async with async_playwright() as p:
        browser = await launch(p, server.urls)
        try:
            pages = []
            for url in server.urls:
                page = await browser.new_page(viewport=DESKTOP)
                errors: list[str] = []
                page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
                page.errors = errors  # type: ignore[attr-defined]
                # every protocol `error` the server sends this page (there should be none)
                page.on(
                    "websocket",
                    lambda ws, errors=errors: ws.on(
                        "framereceived",
                        lambda frame: errors.append(frame) if '"type":"error"' in frame else None,
                    ),
                )
                await page.goto(url)
                pages.append(page)
            a, b, c = pages
            assert await status(a) == "Press Start"

            # the age gate: Start without the 18+ box connects nothing
            await a.click("#start")
            assert "18" in await status(a)
            assert await a.evaluate("() => window.mediaserverClient.ws === null")

            # A and B meet; both see each other's video
            await start(a, "Music, chess")
            await wait_status(a, "looking for someone")
            await start(b, "chess, films")
            for page in (a, b):
                assert await wait_status(page, "connected") == "Connected"
            assert await a.is_visible("#shared")
            assert "chess" in (await a.text_content("#shared") or "")
            assert await a.is_hidden("#share-profile")  # anonymous: nothing to share
            for page in (a, b):
                playing = await wait_video(page)
                assert playing["width"] > 0, playing

            # chat both ways, with the typing indicator; network text is text, not HTML
            await a.click("#chat-input")
            await a.keyboard.type("hello from A <b>bold</b>")
            await b.wait_for_selector("#typing", state="visible", timeout=5000)
            await a.keyboard.press("Enter")
            await wait_chat(b, "Stranger: hello from A <b>bold</b>")
            assert await b.locator("#chat-log b", has_text="bold").count() == 0
            assert "You: hello from A" in (await a.text_content("#chat-log") or "")
            assert await a.input_value("#chat-input") == ""
            await b.fill("#chat-input", "hi A")
            await b.click("#chat-send")
            await wait_chat(a, "Stranger: hi A")

            # A presses Next: B is told and re-queued; A skipped B, so the two cannot
            # meet again during the skip cooldown (30 s by default)
            await a.click("#next")
            await wait_status(b, "stranger left")
            await wait_status(a, "looking for someone")
            await asyncio.sleep(1.5)
            assert "connected" not in (await status(a)).lower()
            assert "connected" not in (await status(b)).lower()
            assert await a.is_disabled("#chat-input")

            # B stops (leaves the queue) ...
            await b.click("#stop")
            await wait_status(b, "stopped", "press start")
            assert await b.is_enabled("#start")
            frames_before = (await video(a))["frames"]

            # ... so C, arriving now, meets A; chat is fresh, video flows from C
            await start(c, "CHESS, travel")
            for page in (a, c):
                assert await wait_status(page, "connected") == "Connected"
            assert "hello from A" not in (await a.text_content("#chat-log") or "")
            for page in (a, c):
                await wait_video(page)
            assert (await video(a))["frames"] >= frames_before + 15
            await c.fill("#chat-input", "hello from C")
            await c.press("#chat-input", "Enter")
            await wait_chat(a, "Stranger: hello from C")
            assert "hello from C" not in (await b.text_content("#chat-log") or "")
            await a.fill("#chat-input", "hi C")
            await a.press("#chat-input", "Enter")
            await wait_chat(c, "Stranger: hi C")

            # the effect picker sends `effect`; the server's echo is shown
            await a.select_option("#effect", "blur_background")
            await a.wait_for_selector("#effect-note", state="visible", timeout=5000)

            # the connected page, for the docs (laptop), and a phone-sized check
            await a.wait_for_timeout(500)
            SCREENSHOT.parent.mkdir(exist_ok=True)
            await a.screenshot(path=str(SCREENSHOT))
            await a.set_viewport_size(PHONE)
            await a.wait_for_timeout(300)
            overflow = await a.evaluate(
                "() => document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, f"the page is {overflow}px wider than a phone"
            # MEDIASERVER_PHONE_SCREENSHOT=/tmp/phone.png: keep the phone layout to look at
            phone_shot = os.environ.get("MEDIASERVER_PHONE_SCREENSHOT")
            if phone_shot:
                await a.screenshot(path=phone_shot, full_page=True)
            await a.set_viewport_size(DESKTOP)

            # C reports A through the reason picker: A is only told the stranger left
            await c.click("#report")
            await c.wait_for_selector("#report-dialog[open]", timeout=5000)
            await c.click("#report-dialog button[value='spam']")
            await wait_status(c, "report was recorded")
            await wait_status(a, "stranger left")
            assert "report" not in (await status(a)).lower()

            # B starts again on its open connection (same RTCPeerConnection, no new
            # offer): A and C are queued, but A skipped B and C blocked A, so B meets C
            await b.click("#start")
            for page in (b, c):
                assert await wait_status(page, "connected") == "Connected"
            await wait_video(b)
            assert "connected" not in (await status(a)).lower()

            # the server goes away: the page says so and Start can reconnect
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)
            await wait_status(a, "disconnected")
            assert await a.is_enabled("#start")

            # no JavaScript exception, no protocol error on any page (but the
            # `draining` a waiting visitor is told when the server shuts down)
            for page in pages:
                errors = [e for e in page.errors if '"code":"draining"' not in e]  # type: ignore[attr-defined]
                assert errors == [], errors
        finally:
            await browser.close()


async def test_the_report_menu_lists_the_reasons_the_server_sent(server):
    async with async_playwright() as p:
        browser = await launch(p, server.urls[:1])
        try:
            page = await browser.new_page(viewport=DESKTOP)
            await page.goto(server.urls[0])
            await start(page)
            await wait_status(page, "looking for someone")
            values = await page.evaluate(
                "() => [...document.querySelectorAll('#report-reasons button')].map(b => b.value)"
            )
            assert values == list(REPORT_REASONS)
        finally:
            await browser.close()


# ---- accounts in the page ---------------------------------------------------------------


def _account(base: str, username: str, bio: str, interests: list[str]) -> tuple[str, str]:
    """An adult account made over REST, with a password and a photo: (id, token)."""
    r = httpx.post(f"{base}api/v1/profiles", json={
        "username": username, "date_of_birth": "1990-01-01", "password": PASSWORD,
        "bio": bio, "interests": interests,
    }, timeout=30)  # fmt: skip
    assert r.status_code == 201, r.text
    profile = r.json()
    photo = io.BytesIO()
    Image.new("RGB", (48, 48), (200, 40, 40)).save(photo, "JPEG")
    r = httpx.put(
        f"{base}api/v1/profiles/{profile['id']}/photo",
        content=photo.getvalue(),
        headers={"Authorization": f"Bearer {profile['token']}", "Content-Type": "image/jpeg"},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    return profile["id"], profile["token"]


async def sign_in(page: Page, username: str, password: str) -> None:
    await page.click("#account summary")
    await page.fill("#signin-user", username)
    await page.fill("#signin-pass", password)
    await page.click("#signin")


PASSWORD = "correct horse battery staple 42"


@pytest.mark.timeout(180)
async def test_signed_in_visitors_share_profiles_from_the_page(server):
    base = server.urls[0]
    alice_id, alice_token = await asyncio.to_thread(
        _account, base, "alice_web", "alice bio <i>here</i>", ["chess"]
    )
    await asyncio.to_thread(_account, base, "bob_web", "bob-secret-bio", ["chess"])
    async with async_playwright() as p:
        browser = await launch(p, server.urls[:2])
        try:
            a = await browser.new_page(viewport=DESKTOP)
            b = await browser.new_page(viewport=DESKTOP)
            errors: list[str] = []
            for page in (a, b):
                page.on("pageerror", lambda exc: errors.append(str(exc)))
            await a.goto(server.urls[0])
            await b.goto(server.urls[1])

            # a wrong password is refused with the server's reason; the right one works
            await sign_in(b, "bob_web", "not the password")
            await wait_status(b, "cannot sign in")
            assert await b.is_hidden("#signed-in")
            await b.fill("#signin-pass", PASSWORD)
            await b.click("#signin")
            await b.wait_for_selector("#signed-in", state="visible", timeout=15000)
            await sign_in(a, "alice_web", PASSWORD)
            await a.wait_for_selector("#signed-in", state="visible", timeout=15000)
            assert "alice_web" in (await a.text_content("#signed-in-as") or "")
            assert await a.input_value("#signin-pass") == ""  # not kept in the page

            # both meet; each may share, and nothing of a profile crosses without it
            await start(a)
            await start(b)
            for page in (a, b):
                assert await wait_status(page, "connected") == "Connected"
                await page.wait_for_selector("#share-profile", state="visible", timeout=5000)
            await a.click("#share-profile")
            await wait_chat(a, "You shared your profile")
            await wait_chat(b, "The stranger shared their profile: alice_web")
            await wait_chat(b, "alice bio <i>here</i>")  # as text, not HTML
            assert await b.locator("#chat-log i").count() == 0
            await wait_chat(b, "Likes: chess")
            assert await a.is_disabled("#share-profile")
            # the photo loads from the server's own API (the page's CSP allows only that)
            await b.wait_for_function(
                "() => { const i = document.querySelector('#chat-log li.card img');"
                " return i && i.complete && i.naturalWidth > 0; }",
                timeout=10000,
            )
            assert "bob_web" not in (await a.text_content("#chat-log") or "")
            assert "bob-secret-bio" not in (await a.text_content("#chat-log") or "")

            # after Stop, signing out drops the idle connection: the next visit is
            # anonymous (no share button), and the token is revoked on the server
            for page in (a, b):
                await page.click("#stop")
                await wait_status(page, "stopped")
            await b.click("#signout")
            await wait_status(b, "signed out")
            await b.wait_for_selector("#signin-form", state="visible", timeout=5000)
            assert await b.evaluate("() => window.mediaserverClient.ws === null")

            # a page holds its token in memory only: a reload is a new, anonymous visit
            await a.reload()
            assert await a.is_hidden("#signed-in")

            # an account deleted meanwhile: hello is refused, the page signs itself
            # out and stays idle instead of reconnecting
            await sign_in(a, "alice_web", PASSWORD)
            await a.wait_for_selector("#signed-in", state="visible", timeout=15000)
            r = await asyncio.to_thread(
                httpx.delete, f"{base}api/v1/profiles/{alice_id}",
                headers={"Authorization": f"Bearer {alice_token}"}, timeout=30,
            )  # fmt: skip
            assert r.status_code in (200, 202, 204), r.text
            await start(a)
            await wait_status(a, "unauthorized")
            await a.wait_for_selector("#signin-form", state="visible", timeout=5000)
            assert await a.evaluate("() => window.mediaserverClient.phase") == "idle"
            assert await a.is_enabled("#start")
            assert errors == [], errors
        finally:
            await browser.close()
