"""Headless Chromium peers (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import contextlib
import http.server
import threading
from typing import AsyncIterator, Iterator

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]

# The page side: one RTCPeerConnection sending the fake camera and microphone.
PEER_JS = """
async ({width, height}) => {
  const pc = new RTCPeerConnection();
  window.pc = pc;
  const stream = await navigator.mediaDevices.getUserMedia(
    {audio: true, video: {width, height, frameRate: 20}});
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  window.remote = new MediaStream();
  pc.ontrack = (e) => window.remote.addTrack(e.track);
  await pc.setLocalDescription(await pc.createOffer());
  return pc.localDescription.sdp;
}
"""

STATS_JS = """
async () => {
  const out = {framesDecoded: 0, audioPackets: 0, nackCount: 0, width: 0, height: 0,
               iceState: window.pc.iceConnectionState, state: window.pc.connectionState};
  for (const s of (await window.pc.getStats()).values()) {
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      out.framesDecoded += s.framesDecoded || 0;
      out.nackCount += s.nackCount || 0;
      out.width = s.frameWidth || 0;
      out.height = s.frameHeight || 0;
    }
    if (s.type === 'inbound-rtp' && s.kind === 'audio') out.audioPackets += s.packetsReceived || 0;
  }
  return out;
}
"""


class _BlankPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"<!doctype html><title>peer</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def blank_page_server() -> Iterator[str]:
    """A page on http://localhost: a secure context, so getUserMedia exists."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BlankPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    with blank_page_server() as url:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            browser.page_url = url  # type: ignore[attr-defined]
            try:
                yield browser
            finally:
                await browser.close()


class ChromiumPeer:
    def __init__(self, page: Page) -> None:
        self.page = page

    @classmethod
    async def open(cls, browser: Browser) -> "ChromiumPeer":
        page = await browser.new_page()
        await page.goto(browser.page_url)  # type: ignore[attr-defined]
        return cls(page)

    async def offer(self, width: int = 640, height: int = 480) -> str:
        return str(await self.page.evaluate(PEER_JS, {"width": width, "height": height}))

    async def accept(self, answer: str) -> None:
        await self.page.evaluate(
            "sdp => window.pc.setRemoteDescription({type: 'answer', sdp})", answer
        )

    async def stats(self) -> dict:
        return dict(await self.page.evaluate(STATS_JS))
