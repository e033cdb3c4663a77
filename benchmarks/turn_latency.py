"""Time from `matched` to the first decoded frame of the stranger's video, in the web
page (Random mode, two headless Chromium pages), over plain UDP, over ICE-TCP to the
server itself (--tcp-port), and through a real coturn over TURN/TCP and TURN/TLS.

    python -m mediaserver.netns -- python -m benchmarks.turn_latency [--pairs 7] [--json]

Runs inside the private namespace (it refuses otherwise). For each transport: a fresh
server; with TURN, a coturn of its own and the UDP wall of tests/e2e/test_turn.py
(nftables: no UDP but coturn's relay to the media port) and the pages forced to
iceTransportPolicy "relay"; with ICE-TCP, the same wall (no coturn) and the server's
passive TCP candidate, the browser's own choice once no UDP check is answered. For each pair, A starts and is queued (its connection to
the server is made while it waits), then B starts; on each page the clock runs from
the `matched` frame to the first decoded video frame (getStats polled every 5 ms), and
the pair's figure is the later of its two pages. Pairs run one after another on an
idle server: the latency a person sees. Reports the median and the spread per
transport.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

from mediaserver.netns import SERVER_IP, inside
from tests.support.coturn import (
    FORCE_RELAY_JS,
    coturn,
    free_port,
    launch_relay_browser,
    start_server,
    stop_server,
    udp_wall,
)

TRANSPORTS = ("udp", "ice-tcp", "turn-tcp", "turn-tls")

# page side: when `matched` arrives, and when the first video frame is decoded
CLOCK_JS = """
(() => {
  window.matchedAt = null;
  window.firstFrameAt = null;
  const Native = window.WebSocket;
  class Timed extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (e) => {
        if (typeof e.data === 'string' && e.data.includes('"type":"matched"')
            && window.matchedAt === null) {
          window.matchedAt = performance.now();
          poll();
        }
      });
    }
  }
  window.WebSocket = Timed;
  async function poll() {
    while (window.firstFrameAt === null) {
      const pc = window.mediaserverClient && window.mediaserverClient.pc;
      if (pc) {
        for (const s of (await pc.getStats()).values()) {
          if (s.type === 'inbound-rtp' && s.kind === 'video' && s.framesDecoded > 0) {
            window.firstFrameAt = performance.now();
          }
        }
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }
})();
"""

ELAPSED_JS = """
() => (window.matchedAt !== null && window.firstFrameAt !== null)
  ? window.firstFrameAt - window.matchedAt : null
"""


async def one_pair(browser: Any, urls: list[str], relay: bool) -> float:
    """Milliseconds from matched to first frame, the later of the pair's two pages."""
    context = await browser.new_context()
    try:
        pages = []
        for base in urls:
            page = await context.new_page()
            await page.add_init_script(CLOCK_JS)
            if relay:
                await page.add_init_script(FORCE_RELAY_JS)
            await page.goto(base)
            pages.append(page)
        a, b = pages
        await a.check("#age-confirm")
        await a.click("#start")
        await a.wait_for_function(
            "() => document.querySelector('#status').textContent.includes('Looking')"
        )
        await asyncio.sleep(1.0)  # A's connection to the server settles while it waits
        await b.check("#age-confirm")
        await b.click("#start")
        times = []
        for page in pages:
            handle = await page.wait_for_function(ELAPSED_JS, timeout=30_000, polling=20)
            times.append(float(await handle.json_value()))
        return max(times)
    finally:
        await context.close()


async def measure(transport: str, pairs: int, workdir: Path) -> list[float]:
    media_port = free_port(SERVER_IP, socket.SOCK_DGRAM)
    with ExitStack() as stack:
        flags: list[str] = []
        relay = transport.startswith("turn-")
        if transport == "ice-tcp":
            stack.enter_context(udp_wall(media_port, relay=False))
            flags = ["--tcp-port", str(free_port(SERVER_IP))]
        if relay:
            turn = stack.enter_context(coturn(workdir, media_port))
            stack.enter_context(udp_wall(media_port))
            url = turn.tcp_url if transport == "turn-tcp" else turn.tls_url
            flags = ["--turn-url", url, "--turn-secret", turn.secret]
        server, urls = start_server(workdir, media_port, *flags)
        stack.callback(stop_server, server)
        async with async_playwright() as p:
            browser = await launch_relay_browser(p, urls)
            try:
                return [await one_pair(browser, urls, relay) for _ in range(pairs)]
            finally:
                await browser.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"pairs": args.pairs}
    for transport in args.transports:
        with tempfile.TemporaryDirectory() as tmp:
            ms = await measure(transport, args.pairs, Path(tmp))
        out[transport] = {
            "median_ms": round(statistics.median(ms), 1),
            "min_ms": round(min(ms), 1),
            "max_ms": round(max(ms), 1),
            "samples_ms": [round(x, 1) for x in ms],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=7, help="pairs per transport (1..100)")
    parser.add_argument(
        "--transports", nargs="+", choices=TRANSPORTS, default=list(TRANSPORTS),
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args(argv)
    if not 1 <= args.pairs <= 100:
        parser.error("--pairs must be 1..100")
    if not inside():
        parser.error("run it inside the namespace: python -m mediaserver.netns -- python -m "
                     "benchmarks.turn_latency")  # fmt: skip
    result = asyncio.run(run(args))
    for transport in args.transports:
        r = result[transport]
        print(f"{transport:9} matched -> first frame: median {r['median_ms']} ms "
              f"(min {r['min_ms']}, max {r['max_ms']}, {args.pairs} pairs)")  # fmt: skip
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
