"""The moderation desk in the page, in headless Chromium against the real server
(test_web_client.py's `server`): A reports B from Random mode with the chat and a
still (the dialog's two checkboxes); a moderator signs in to People mode, sees the
desk (only a moderator does), opens the report with the keyboard alone, sees the
chat line and the still, bans B for a day; B's Random page then shows the banned
message with the ban's end. The desk fits a 360 px wide screen
(MEDIASERVER_MODERATION_SCREENSHOT=FILE keeps a picture of it there)."""

from __future__ import annotations

import datetime as dt
import os
import re

import httpx
import pytest
from playwright.async_api import Page, async_playwright

from mediaserver.cli import main as cli_main
from tests.e2e.test_people_page import PASSWORD, image_loaded, open_people, watch_errors
from tests.e2e.test_web_client import DESKTOP, launch, server, start, wait_chat, wait_status

pytestmark = pytest.mark.netns
FIXTURES = (server,)  # imported pytest fixtures, used by name

PHONE_360 = {"width": 360, "height": 780}


def account(base: str, username: str) -> dict:
    r = httpx.post(
        f"{base}api/v1/profiles",
        json={"username": username, "date_of_birth": "1990-05-17", "password": PASSWORD},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def sign_in_people(page: Page, base: str, username: str) -> None:
    await open_people(page, base)
    await page.fill("#people-signin-user", username)
    await page.fill("#people-signin-pass", PASSWORD)
    await page.click("#people-signin")
    await page.wait_for_selector("#people-signed-in", state="visible", timeout=15000)


async def overflow(page: Page) -> int:
    return int(
        await page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    )


@pytest.mark.timeout(240)
async def test_a_moderator_reviews_a_report_with_chat_and_still_and_bans(server, tmp_path):
    base = server.urls[0]
    account(base, "just_someone")
    account(base, "desk_mod")
    argv = ["moderation", "grant", "desk_mod", "--db", str(tmp_path / "db")]
    assert cli_main([*argv, "--data-key-file", str(tmp_path / "key")]) == 0

    async with async_playwright() as p:
        browser = await launch(p, server.urls)
        try:
            a = await browser.new_page(viewport=DESKTOP)
            b = await browser.new_page(viewport=DESKTOP)
            m = await browser.new_page(viewport=DESKTOP)
            errors = {name: watch_errors(page) for name, page in (("a", a), ("b", b), ("m", m))}
            await a.goto(server.urls[0])
            await b.goto(server.urls[1])

            # a normal account sees no desk
            await sign_in_people(m, server.urls[2], "just_someone")
            await m.wait_for_timeout(500)
            assert await m.is_hidden("#moderation-section")
            await m.click("#people-signout")

            # A and B meet; B says something; A reports B with the chat and a still
            await start(a, "chess")
            await wait_status(a, "looking for someone")
            await start(b, "chess")
            for page in (a, b):
                await wait_status(page, "connected")
            await b.fill("#chat-input", "a nasty line 5c2")
            await b.press("#chat-input", "Enter")
            await wait_chat(a, "Stranger: a nasty line 5c2")
            await a.wait_for_timeout(1500)  # B's video is flowing
            await a.click("#report")
            await a.wait_for_selector("#report-dialog[open]", timeout=5000)
            for box in ("#report-include-chat", "#report-include-frame"):
                assert not await a.is_checked(box)  # nothing is sent unless ticked
                label = await a.text_content(f"label[for='{box[1:]}']")
                assert label and label.strip()
            # on a phone, by keyboard: both boxes fit and tick with Space
            await a.set_viewport_size(PHONE_360)
            await a.wait_for_timeout(300)
            assert await overflow(a) <= 0
            for box in ("#report-include-chat", "#report-include-frame"):
                label = await a.locator(f"label[for='{box[1:]}']").bounding_box()
                assert label and label["x"] >= 0 and label["x"] + label["width"] <= 360, label
                await a.focus(box)
                await a.keyboard.press("Space")
                assert await a.is_checked(box)
            await a.set_viewport_size(DESKTOP)
            await a.click("#report-reasons button[value='nudity']")
            await wait_status(a, "report was recorded")
            assert not await a.is_checked("#report-include-chat")  # cleared for the next one

            # the moderator signs in: the desk shows, with the report in the queue
            await sign_in_people(m, server.urls[2], "desk_mod")
            await m.wait_for_selector("#moderation-section", state="visible", timeout=10000)
            await m.wait_for_selector("#moderation-queue li", timeout=15000)
            # (B's node files it in a thread: Refresh until it is there)
            for _ in range(20):
                if await m.locator("#moderation-queue li").count():
                    break
                await m.click("#moderation-refresh")
                await m.wait_for_timeout(300)
            assert "Nudity" in (await m.text_content("#moderation-queue") or "")

            # keyboard alone: from Refresh, Tab to the report's Open, Enter
            await m.focus("#moderation-refresh")
            await m.keyboard.press("Tab")
            assert await m.evaluate("() => document.activeElement.textContent") == "Open"
            await m.keyboard.press("Enter")
            await m.wait_for_selector("#moderation-detail", state="visible", timeout=10000)
            assert await m.evaluate("() => document.activeElement.id") == "moderation-report-title"
            chat = await m.text_content("#moderation-chat") or ""
            assert "Reported: a nasty line 5c2" in chat
            await image_loaded(m, "#moderation-frame")
            assert (
                await m.evaluate("() => document.querySelector('#moderation-frame').naturalWidth")
                > 0
            )
            assert await m.is_hidden("#moderation-frame-none")

            # 360 px wide: nothing sticks out, the decisions are all on screen
            await m.set_viewport_size(PHONE_360)
            await m.wait_for_timeout(300)
            assert await overflow(m) <= 0
            if shot := os.environ.get("MEDIASERVER_MODERATION_SCREENSHOT"):
                await m.locator("#moderation-section").screenshot(path=shot)
            for name in ("Dismiss", "Warn", "Ban 1 day", "Ban 7 days", "Ban for good"):
                button = m.locator("#moderation-decision button", has_text=re.compile(f"^{name}$"))
                box = await button.bounding_box()
                assert box and box["x"] >= 0 and box["x"] + box["width"] <= 360, (name, box)

            # the note, then Ban 1 day, by keyboard: Tab from the title to the note,
            # then to Dismiss, Warn, Ban 1 day
            await m.keyboard.press("Tab")
            assert await m.evaluate("() => document.activeElement.id") == "moderation-note"
            await m.keyboard.type("nudity on camera, first time")
            for _ in range(3):
                await m.keyboard.press("Tab")
            assert await m.evaluate("() => document.activeElement.textContent") == "Ban 1 day"
            before = dt.datetime.now(dt.UTC)
            await m.keyboard.press("Enter")
            await m.wait_for_selector("#moderation-detail", state="hidden", timeout=10000)
            await m.wait_for_selector("#moderation-none", state="visible", timeout=10000)
            assert "Ban 1 day" in (await m.text_content("#people-status") or "")

            # B (queued again after the report) stops and starts: banned, with the end
            await b.click("#stop")
            await wait_status(b, "stopped", "press start")
            await b.click("#start")
            await b.wait_for_selector("#banned-note", state="visible", timeout=10000)
            text = await b.text_content("#banned-text") or ""
            found = re.search(
                r"banned by the moderators until (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", text
            )
            assert found, text
            until = dt.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=dt.UTC)
            assert abs((until - before).total_seconds() - 86400) < 180
            assert "banned" in (await b.text_content("#status") or "")
            assert await b.is_hidden("#banned-appeal")  # signed out: no appeal to make
            assert await b.is_enabled("#start")  # idle, not queued
            await b.wait_for_timeout(4500)  # it stays (not a flash)
            assert await b.is_visible("#banned-note")
            # signed in (an account from the banned address): the note says how to appeal
            await b.click("#account summary")
            await b.fill("#signin-user", "just_someone")
            await b.fill("#signin-pass", PASSWORD)
            await b.click("#signin")
            await b.wait_for_selector("#signed-in", state="visible", timeout=10000)
            await b.click("#start")
            await b.wait_for_selector("#banned-appeal", state="visible", timeout=10000)
            assert "POST /api/v1/appeals" in (await b.text_content("#banned-appeal") or "")
            assert errors == {"a": [], "b": [], "m": []}
        finally:
            await browser.close()
