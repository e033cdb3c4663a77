"""Effects from the page: choosing one in #effect changes what the partner sees."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import Page, async_playwright

from tests.e2e.test_web_client import (  # noqa: F401
    DESKTOP,
    launch,
    server,
    start,
    wait_chat,
    wait_status,
    wait_video,
)

pytestmark = pytest.mark.netns

# Fine detail of the stranger's picture: mean absolute difference between
# neighbouring pixels of #remote drawn onto a canvas (the fake camera's text and
# shapes give plenty; a face cover or a full-frame mosaic removes it).
DETAIL_JS = """
() => {
  const v = document.querySelector('#remote');
  if (!v.videoWidth) return -1;
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let sum = 0, n = 0;
  for (let y = 0; y < c.height; y += 2) {
    for (let x = 0; x + 1 < c.width; x += 2) {
      const i = (y * c.width + x) * 4;
      sum += Math.abs(d[i + 1] - d[i + 5]);
      n++;
    }
  }
  return sum / n;
}
"""


async def detail(page: Page) -> float:
    return float(await page.evaluate(DETAIL_JS))


async def settle(page: Page, predicate, timeout: float = 20) -> float:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value = await detail(page)
    while loop.time() < deadline:
        if predicate(value):
            return value
        await asyncio.sleep(0.3)
        value = await detail(page)
    raise AssertionError(f"remote picture detail stayed at {value}")


@pytest.mark.timeout(120)
async def test_choosing_an_effect_changes_what_the_partner_sees(server):  # noqa: F811
    async with async_playwright() as p:
        browser = await launch(p, server.urls)
        try:
            a = await browser.new_page(viewport=DESKTOP)
            b = await browser.new_page(viewport=DESKTOP)
            await a.goto(server.urls[0])
            await b.goto(server.urls[1])
            await start(a)
            await start(b)
            for page in (a, b):
                await wait_status(page, "connected")
            await wait_video(b)
            plain = await settle(b, lambda v: v > 0)
            # A hides its face: the fake camera shows none, so the cover fails
            # closed and the whole picture B sees becomes a coarse mosaic
            await a.select_option("#effect", "pixelate_face")
            await a.wait_for_selector("#effect-note", state="visible", timeout=5000)
            covered = await settle(b, lambda v: 0 <= v < plain / 3)
            assert covered < plain / 3
            await wait_video(b, min_new_frames=10)  # and it keeps playing
            # effect off: B sees A's camera as it is again
            await a.select_option("#effect", "none")
            await settle(b, lambda v: v > plain * 0.6)
        finally:
            await browser.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "server", [["--mutual-reveal", "--max-cover-streams", "1"]], indirect=True
)
async def test_a_face_that_cannot_be_covered_is_withheld_and_both_pages_say_so(server):  # noqa: F811
    async with async_playwright() as p:
        browser = await launch(p, server.urls)
        try:
            a = await browser.new_page(viewport=DESKTOP)
            b = await browser.new_page(viewport=DESKTOP)
            await a.goto(server.urls[0])
            await b.goto(server.urls[1])
            await start(a)
            await start(b)
            for page in (a, b):
                await wait_status(page, "connected")
            # one cover for two faces: one is covered, the other's video is withheld
            for page in (a, b):
                await wait_chat(page, "could not cover")
            logs = [await page.inner_text("#chat-log") for page in (a, b)]
            assert sorted("could not cover your face" in log for log in logs) == [False, True]
            assert sorted("the stranger's face" in log for log in logs) == [False, True]
            viewer = a if "the stranger's face" in logs[0] else b
            assert "no video" in await viewer.inner_text("#placeholder-text")
            assert await viewer.is_visible("#placeholder-text")
        finally:
            await browser.close()
