"""The page's People mode (mediaserver/web/people*.js) against the real server, in
headless Chromium: sign up, photo with a preview, two-factor, browse, connect,
download my data, delete the account; a phone-wide page; a keyboard-only sign-up.

The server is the same subprocess test_web_client.py starts (its `server` fixture).
The TOTP codes are computed here from the secret the page shows, as an authenticator
app would.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import os
import time
from pathlib import Path

import httpx
import pyotp
import pytest
from PIL import Image
from playwright.async_api import Page, async_playwright

from mediaserver.store.auth import TOTP_STEP
from mediaserver.store.limits import age_band
from tests.e2e.test_web_client import DESKTOP, launch, server  # noqa: F401

pytestmark = pytest.mark.netns

PASSWORD = "correct horse battery staple 42"
DOB = "1990-05-17"
PHONE_360 = {"width": 360, "height": 780}
# the README's picture of People mode comes from test_people_social.py (signed in, with
# a connection and a conversation); MEDIASERVER_BROWSE_SCREENSHOT=FILE keeps this one
SCREENSHOT = Path(
    os.environ.get("MEDIASERVER_BROWSE_SCREENSHOT", "/tmp/mediaserver-people-browse.png")
)


def watch_errors(page: Page) -> list[str]:
    """JavaScript exceptions and console errors of the page (there should be none):
    a CSP refusal (an inline style, another origin) is a console error. The API's
    own 4xx answers are logged by Chromium as "Failed to load resource": the page
    expects those (a wrong password, a missing endpoint) and shows them."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    return errors


async def open_people(page: Page, base: str) -> None:
    await page.goto(f"{base}#people")
    await page.wait_for_selector("#people-mode", state="visible", timeout=10000)


async def sign_up(page: Page, username: str, interests: str, bio: str,
                  discoverable: bool = True) -> None:  # fmt: skip
    await page.fill("#signup-username", username)
    await page.fill("#signup-password", PASSWORD)
    await page.fill("#signup-dob", DOB)
    await page.fill("#signup-interests", interests)
    await page.fill("#signup-bio", bio)
    if discoverable:
        await page.check("#signup-discoverable")
    await page.click("#signup-submit")
    await page.wait_for_selector("#people-signed-in", state="visible", timeout=15000)


def png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, "PNG")
    return out.getvalue()


async def image_loaded(page: Page, selector: str) -> None:
    await page.wait_for_function(
        "sel => { const i = document.querySelector(sel);"
        " return i && !i.hidden && i.complete && i.naturalWidth > 0; }",
        arg=selector,
        timeout=10000,
    )


def age_on(dob: str) -> int:
    born = datetime.date.fromisoformat(dob)
    today = datetime.datetime.now(datetime.UTC).date()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def discoverable_account(base: str, username: str, interests: list[str]) -> None:
    """A discoverable adult with a photo, made over REST (someone to find)."""
    r = httpx.post(f"{base}api/v1/profiles", json={
        "username": username, "date_of_birth": "1995-03-02", "password": PASSWORD,
        "bio": "Weekend chess in the park, long walks after.", "interests": interests,
        "discoverable": True,
    }, timeout=30)  # fmt: skip
    assert r.status_code == 201, r.text
    r = httpx.put(
        f"{base}api/v1/profiles/{r.json()['id']}/photo",
        content=png((70, 110, 200)),
        headers={"Authorization": f"Bearer {r.json()['token']}", "Content-Type": "image/png"},
        timeout=30,
    )
    assert r.status_code == 201, r.text


def code_after(secret: str, steps: int) -> str:
    """The TOTP code `steps` time steps from now (the server takes one step of drift;
    a code never counts twice, so each use needs a later step)."""
    return pyotp.TOTP(secret, interval=TOTP_STEP).at(time.time() + steps * TOTP_STEP)


# ---- the whole flow ---------------------------------------------------------------------


@pytest.mark.timeout(180)
async def test_people_mode_sign_up_photo_two_factor_browse_download_delete(server):  # noqa: F811
    base = server.urls[0]
    async with async_playwright() as p:
        browser = await launch(p, server.urls[:1])
        try:
            ctx_a = await browser.new_context(viewport=DESKTOP, accept_downloads=True)
            ctx_b = await browser.new_context(viewport=DESKTOP)
            a = await ctx_a.new_page()
            b = await ctx_b.new_page()
            errors_a, errors_b = watch_errors(a), watch_errors(b)

            # the mode is in the URL: Random by default, People from #people
            await a.goto(base)
            assert await a.is_visible("#random-mode")
            assert await a.is_hidden("#people-mode")
            await a.click("#mode-people")
            await a.wait_for_selector("#people-mode", state="visible")
            assert a.url.endswith("#people")
            assert await a.is_hidden("#random-mode")

            # an under-age date of birth: the store's refusal, next to the field
            await a.fill("#signup-username", "alice_people")
            await a.fill("#signup-password", PASSWORD)
            await a.fill("#signup-dob", f"{time.gmtime().tm_year - 10}-01-01")
            await a.click("#signup-submit")
            dob_error = a.locator('#signup-form .error[data-error-for="date_of_birth"]')
            await dob_error.wait_for(state="visible", timeout=10000)
            assert "18 or older" in (await dob_error.text_content() or "")
            assert await a.is_hidden("#people-signed-in")

            # A signs up, discoverable, and sees the profile filled in
            await sign_up(a, "alice_people", "Chess, hiking", "alice plays <b>chess</b>")
            assert await a.text_content("#people-whoami") == "alice_people"
            assert await a.input_value("#profile-interests") == "chess, hiking"
            assert await a.is_checked("#profile-discoverable")
            # the token is in this tab's sessionStorage, never localStorage
            stored = await a.evaluate("() => [sessionStorage.length, localStorage.length]")
            assert stored == [1, 0], stored

            # photo: the preview shows before the upload, the uploaded one after
            assert await a.is_disabled("#photo-upload")
            await a.set_input_files(
                "#photo-file",
                files=[{"name": "me.png", "mimeType": "image/png", "buffer": png((20, 160, 60))}],
            )
            await image_loaded(a, "#photo-preview")
            assert await a.is_hidden("#photo-current")
            await a.click("#photo-upload")
            await image_loaded(a, "#photo-current")
            assert await a.is_hidden("#photo-preview-box")
            assert await a.is_enabled("#photo-remove")

            # B signs up (not discoverable), browses by interest and finds A's card
            await open_people(b, base)
            await sign_up(b, "bob_people", "chess", "bob bio", discoverable=False)
            await b.fill("#browse-interest", "chess")
            await b.press("#browse-interest", "Enter")
            card = b.locator('#browse-cards li[data-handle="alice_people"]')
            await card.wait_for(timeout=10000)
            assert await b.locator("#browse-cards li").count() == 1  # B is not discoverable
            text = await card.text_content() or ""
            assert "alice plays <b>chess</b>" in text  # as text, not HTML
            assert f"Age {age_band(age_on(DOB))}" in text, text
            assert "1990" not in text  # an age band, never the date of birth
            await image_loaded(b, '#browse-cards li[data-handle="alice_people"] img')
            # an interest nobody has finds nobody
            await b.fill("#browse-interest", "knitting")
            await b.click("#browse-form button[type=submit]")
            await b.wait_for_function(
                "() => document.querySelector('#browse-summary').textContent.includes('Nobody')"
            )
            await b.fill("#browse-interest", "hiking")
            await b.click("#browse-form button[type=submit]")
            await card.wait_for(timeout=10000)
            # Connect: the server's answer in words (connections may not exist yet)
            await card.get_by_role("button", name="Connect with alice_people").click()
            answer = card.locator(".answer")
            await b.wait_for_function(
                "() => document.querySelector('#browse-cards .answer').textContent.length > 0"
            )
            said = await answer.text_content() or ""
            assert "not available" in said or "Request sent" in said, said

            # A downloads its data: a JSON file holding the profile
            async with a.expect_download(timeout=60000) as download_info:
                await a.click("#download-data")
            download = await download_info.value
            assert download.suggested_filename.startswith("mediaserver-data-alice_people")
            export = json.loads(Path(await download.path()).read_text())
            assert export["profile"]["username"] == "alice_people"
            assert export["profile"]["bio"] == "alice plays <b>chess</b>"
            assert "chess" in export["profile"]["interests"]
            # ... and the request is listed with its status and due date
            await a.wait_for_function(
                "() => document.querySelector('#requests-body').textContent.includes('completed')"
            )
            row = await a.text_content("#requests-body tr") or ""
            assert "Copy of my data" in row
            assert time.strftime("%Y-%m-%d", time.gmtime(time.time() + 45 * 86400)) in row

            # A removes the photo: gone from the profile and from B's next listing
            await a.click("#photo-remove")
            await a.wait_for_selector("#photo-none", state="visible", timeout=10000)
            assert await a.is_hidden("#photo-current")
            await b.click("#browse-form button[type=submit]")
            await b.wait_for_function(
                "() => { const li = document.querySelector("
                "'#browse-cards li[data-handle=\"alice_people\"]');"
                " return li && !li.querySelector('img'); }"
            )

            # consent switches go both ways
            await a.check("#consent-chat")
            await a.wait_for_function(
                "() => document.querySelector('#people-status').textContent.includes('saved')"
            )
            r = await asyncio.to_thread(
                httpx.post,
                f"{base}api/v1/sessions",
                json={"username": "alice_people", "password": PASSWORD},
                timeout=30,
            )
            assert r.status_code == 201, r.text
            me = (
                await asyncio.to_thread(
                    httpx.get,
                    f"{base}api/v1/profiles/{r.json()['id']}",
                    headers={"Authorization": f"Bearer {r.json()['token']}"},
                    timeout=30,
                )
            ).json()
            assert me["chat_history_consent"] is True
            await a.evaluate("() => { document.querySelector('#people-status').textContent = ''; }")
            await a.uncheck("#consent-chat")
            await a.wait_for_function(
                "() => document.querySelector('#people-status').textContent.includes('saved')"
            )
            assert not await a.is_checked("#consent-chat")

            # the opt-out of sale and sharing is reversible: Undo opt-out takes it back
            assert await a.is_hidden("#opt-out-undo")
            await a.click("#opt-out")
            await a.wait_for_selector("#opt-out-undo", state="visible", timeout=15000)
            assert await a.is_hidden("#opt-out")
            assert "You opted out" in (await a.text_content("#optout-state") or "")
            # the focus moves to the button that took the pressed one's place
            assert await a.evaluate("() => document.activeElement.id") == "opt-out-undo"
            await a.keyboard.press("Enter")
            await a.wait_for_selector("#opt-out", state="visible", timeout=15000)
            assert "undone" in (await a.text_content("#people-status") or "")
            assert "not opted out" in (await a.text_content("#optout-state") or "")
            me = (
                await asyncio.to_thread(
                    httpx.get,
                    f"{base}api/v1/profiles/{r.json()['id']}",
                    headers={"Authorization": f"Bearer {r.json()['token']}"},
                    timeout=30,
                )
            ).json()
            assert me["opted_out"] is False

            # two-factor: QR code and secret shown, confirmed with a code, recovery codes once
            await a.click("#twofa-start-form button[type=submit]")
            await a.wait_for_selector("#twofa-confirm-form", state="visible", timeout=10000)
            await image_loaded(a, "#twofa-qr")
            secret = (await a.text_content("#twofa-secret") or "").strip()
            assert len(secret) >= 16
            await a.fill("#twofa-code", "000000")
            await a.press("#twofa-code", "Enter")
            await a.locator('#twofa-confirm-form .error[data-error-for="code"]').wait_for(
                state="visible", timeout=10000
            )
            await a.fill("#twofa-code", code_after(secret, 0))
            await a.press("#twofa-code", "Enter")
            await a.wait_for_selector("#recovery-box", state="visible", timeout=10000)
            recovery = await a.locator("#recovery-codes li").all_text_contents()
            assert len(recovery) == 10
            assert "on" in (await a.text_content("#twofa-state") or "")

            # sign out; signing in asks for the code as a second step
            await a.click("#people-signout")
            await a.wait_for_selector("#people-signed-out", state="visible")
            assert await a.evaluate("() => sessionStorage.length") == 0
            await a.fill("#people-signin-user", "alice_people")
            await a.fill("#people-signin-pass", PASSWORD)
            await a.press("#people-signin-pass", "Enter")
            await a.wait_for_selector("#people-signin-otp", state="visible", timeout=15000)
            assert await a.evaluate("() => document.activeElement.id") == "people-signin-otp"
            await a.fill("#people-signin-otp", code_after(secret, 1))
            await a.press("#people-signin-otp", "Enter")
            await a.wait_for_selector("#people-signed-in", state="visible", timeout=15000)
            assert await a.is_visible("#twofa-disable-form")
            # a reload keeps the tab signed in (sessionStorage)
            await a.reload()
            await a.wait_for_selector("#people-signed-in", state="visible", timeout=15000)

            # delete account: a wrong password is refused next to it; with the password
            # and a recovery code it goes
            assert await a.is_visible("#delete-otp")
            await a.fill("#delete-pass", "not the password")
            await a.fill("#delete-otp", recovery[0])
            await a.click("#delete-form button[type=submit]")
            pass_error = a.locator('#delete-form .error[data-error-for="password"]')
            await pass_error.wait_for(state="visible", timeout=15000)
            assert "wrong password" in (await pass_error.text_content() or "").lower()
            await a.fill("#delete-pass", PASSWORD)
            await a.click("#delete-form button[type=submit]")
            await a.wait_for_selector("#people-signed-out", state="visible", timeout=15000)
            assert "deleted" in (await a.text_content("#people-status") or "")
            r = await asyncio.to_thread(
                httpx.post,
                f"{base}api/v1/sessions",
                json={"username": "alice_people", "password": PASSWORD},
                timeout=30,
            )
            assert r.status_code == 401, r.text

            # B's next browse no longer finds A
            await b.click("#browse-form button[type=submit]")
            await b.wait_for_function(
                "() => document.querySelector('#browse-summary').textContent.includes('Nobody')"
            )
            assert errors_a == [] and errors_b == [], (errors_a, errors_b)
        finally:
            await browser.close()


# ---- a phone and a keyboard ---------------------------------------------------------------


async def tab_to(page: Page, element_id: str, max_tabs: int = 60) -> None:
    """Press Tab until the element has the focus (only Tab: a keyboard user's path),
    and check the focus is visible on it."""
    for _ in range(max_tabs):
        if (
            await page.evaluate("() => document.activeElement && document.activeElement.id")
            == element_id
        ):
            outline = await page.evaluate(
                "() => { const s = getComputedStyle(document.activeElement);"
                " return [s.outlineStyle, s.outlineWidth]; }"
            )
            assert outline[0] != "none" and outline[1] != "0px", (element_id, outline)
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"#{element_id} is not reachable with Tab")


@pytest.mark.timeout(120)
async def test_people_mode_by_keyboard_alone_and_at_360_px(server):  # noqa: F811
    base = server.urls[0]
    async with async_playwright() as p:
        browser = await launch(p, server.urls[:1])
        try:
            page = await browser.new_page(viewport=PHONE_360, locale="en-US")
            errors = watch_errors(page)
            await page.goto(base)

            # from the top of the page: Tab to the People tab, Enter switches
            await tab_to(page, "mode-people")
            await page.keyboard.press("Enter")
            await page.wait_for_selector("#people-mode", state="visible")
            assert page.url.endswith("#people")

            # signed out, the sign-up and sign-in forms fit 360 px
            assert (
                await page.evaluate(
                    "() => document.documentElement.scrollWidth - window.innerWidth"
                )
                <= 0
            )

            # sign up with the keyboard only: Tab between the fields, Enter submits
            await tab_to(page, "signup-username")
            await page.keyboard.type("kim_keys")
            await page.keyboard.press("Tab")
            await page.keyboard.type(PASSWORD)
            await page.keyboard.press("Tab")
            await page.keyboard.type("01011990")  # the date field: month, day, year
            await tab_to(page, "signup-interests")
            await page.keyboard.type("chess, go")
            await page.keyboard.press("Tab")
            await page.keyboard.type("typed, not clicked")
            await tab_to(page, "signup-discoverable")
            await page.keyboard.press("Space")
            await tab_to(page, "signup-submit")
            await page.keyboard.press("Enter")
            await page.wait_for_selector("#people-signed-in", state="visible", timeout=15000)
            assert await page.text_content("#people-whoami") == "kim_keys"
            assert await page.input_value("#profile-interests") == "chess, go"
            assert await page.is_checked("#profile-discoverable")

            # a correction in the privacy centre (a fresh sign-in needs no password)
            await tab_to(page, "correct-dob")
            await page.keyboard.type("02031991")
            await page.keyboard.press("Enter")
            await page.wait_for_function(
                "() => document.querySelector('#people-status').textContent.includes('corrected')"
            )
            assert await page.input_value("#correct-dob") == "1991-02-03"

            # every control in People mode has a visible label (a <label> or its own text)
            unlabelled = await page.evaluate("""() => [...document.querySelectorAll(
                '#people-mode :is(input, textarea, select, button)')]
              .filter(e => e.offsetParent !== null)
              .filter(e => {
                if (e.tagName === 'BUTTON') return !e.textContent.trim();
                return ![...e.labels].some(l => l.offsetParent !== null && l.textContent.trim());
              }).map(e => e.id || e.outerHTML)""")
            assert unlabelled == [], unlabelled

            # 360 px wide, signed in (every section showing): no horizontal scroll
            overflow = await page.evaluate(
                "() => document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, f"the page is {overflow}px wider than 360 px"

            # the README's picture: People mode with someone found, on a laptop
            await asyncio.to_thread(discoverable_account, base, "robin_chess", ["chess", "walks"])
            await page.set_viewport_size(DESKTOP)
            await page.fill("#browse-interest", "chess")
            await page.press("#browse-interest", "Enter")
            await image_loaded(page, '#browse-cards li[data-handle="robin_chess"] img')
            await page.evaluate("() => { document.activeElement.blur(); window.scrollTo(0, 0); }")
            SCREENSHOT.parent.mkdir(exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT))
            assert errors == [], errors
        finally:
            await browser.close()
