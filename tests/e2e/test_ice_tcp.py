"""ICE over TCP with real browsers: UDP walled off in the private namespace
(nftables, tests/support/coturn.py udp_wall, no coturn running), two Chromium pages
in Random mode still meet and get video both ways, over the server's passive TCP
candidate (--tcp-port). No TURN server, no relay policy: the browser picks the TCP
pair because no UDP check ever gets an answer.

aiortc cannot take part: aioice 0.13 gathers UDP host candidates only (TCP only
towards a TURN server) and pairs only candidates of one transport, so it never
checks a `tcp` candidate.
"""

from __future__ import annotations

import socket

import pytest
from playwright.async_api import async_playwright

from mediaserver.netns import CLIENT_IP, SERVER_IP
from tests.e2e.test_turn import diagnose
from tests.e2e.test_web_client import DESKTOP, start, wait_status, wait_video
from tests.support.coturn import (
    free_port,
    launch_relay_browser,
    start_server,
    stop_server,
    udp_wall,
    wall_drops,
)

pytestmark = pytest.mark.netns

# the selected candidate pair of the page's connection, with both candidates' protocol
SELECTED_PAIR_JS = """
async () => {
  const pc = window.mediaserverClient.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  let pairId = null;
  for (const s of stats.values()) {
    if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
  }
  if (!pairId) return null;
  const pair = stats.get(pairId);
  const local = stats.get(pair.localCandidateId);
  const remote = stats.get(pair.remoteCandidateId);
  return {state: pair.state, localProtocol: local.protocol, localTcpType: local.tcpType || null,
          remoteProtocol: remote.protocol, remoteTcpType: remote.tcpType || null,
          remoteAddress: remote.address, remotePort: remote.port,
          bytesReceived: pair.bytesReceived};
}
"""


@pytest.mark.timeout(180)
async def test_a_chromium_pair_gets_video_both_ways_over_ice_tcp(tmp_path):
    media_port = free_port(SERVER_IP, socket.SOCK_DGRAM)
    tcp_port = free_port(SERVER_IP)
    with udp_wall(media_port, relay=False):
        # the wall holds: a datagram straight to the media port is refused
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((CLIENT_IP, 0))
            with pytest.raises(PermissionError):
                s.sendto(b"\x00\x01", (SERVER_IP, media_port))
        server, urls = start_server(tmp_path, media_port, "--tcp-port", str(tcp_port))
        try:
            async with async_playwright() as p:
                browser = await launch_relay_browser(p, urls)
                try:
                    pages = []
                    for base in urls:
                        page = await browser.new_page(viewport=DESKTOP)
                        await page.goto(base)
                        pages.append(page)
                    for page in pages:
                        await start(page)
                    for page in pages:
                        assert await wait_status(page, "connected", timeout=30) == "Connected"
                    for page in pages:
                        try:
                            playing = await wait_video(page, timeout=40)
                        except AssertionError as exc:
                            raise AssertionError(
                                f"{exc}; {await diagnose(page, tmp_path / 'none')}"
                            ) from None
                        assert playing["width"] > 0, playing
                        pair = await page.evaluate(SELECTED_PAIR_JS)
                        assert pair is not None, "no selected candidate pair"
                        assert pair["remoteProtocol"] == "tcp", pair
                        assert pair["remoteTcpType"] == "passive", pair
                        assert pair["localProtocol"] == "tcp", pair
                        assert (pair["remoteAddress"], pair["remotePort"]) == (
                            SERVER_IP,
                            tcp_port,
                        ), pair
                        assert pair["bytesReceived"] > 10_000, pair  # video came that way
                finally:
                    await browser.close()
            assert wall_drops() >= 1  # the refused datagram, at least
        finally:
            stop_server(server)
