"""TURN through a real coturn: two Chromium pages in Random mode meet with no UDP of
their own, their media relayed by coturn over TCP, and over TLS (turns:).

Inside the private namespace: coturn (tests/support/coturn.py) listens on CLIENT_IP
and relays from the server's address; nftables drops every UDP datagram but coturn's
relay to the server's media port; the pages are forced to iceTransportPolicy "relay" (an init
script wraps RTCPeerConnection: no product knob). The server hands each page its
credentials in `welcome.ice_servers` (--turn-url, --turn-secret), so the call working
at all shows coturn accepted them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint
from playwright.async_api import async_playwright

from mediaserver.netns import CLIENT_IP, SERVER_IP
from mediaserver.signalling.turn_credentials import TurnCredentials, turn_password
from tests.e2e.test_people_social import wait_remote_video
from tests.e2e.test_web_client import DESKTOP, start, wait_status, wait_video
from tests.support.coturn import (
    FORCE_RELAY_JS,
    RELAY_IP,
    SELECTED_PAIR_JS,
    coturn,
    free_port,
    launch_relay_browser,
    start_server,
    stop_server,
    udp_wall,
    wall_drops,
)

pytestmark = pytest.mark.netns


DIAGNOSE_JS = """
async () => {
  const pc = (window.mediaserverPeople && window.mediaserverPeople.pc)
    || window.mediaserverClient.pc;
  if (!pc) return 'no RTCPeerConnection';
  const out = [pc.iceConnectionState, pc.connectionState];
  for (const s of (await pc.getStats()).values()) {
    if (s.type.includes('candidate')) out.push(JSON.stringify(s));
  }
  return out.join('\\n');
}
"""


async def diagnose(page, log: Path) -> str:
    """What the page's connection and coturn say, for a failure's message."""
    tail = log.read_text()[-3000:] if log.exists() else ""
    return f"page: {await page.evaluate(DIAGNOSE_JS)}\ncoturn: {tail}"


def metric(base: str, name: str) -> float:
    text = httpx.get(base.replace(SERVER_IP, "127.0.0.1") + "metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " "))
    )


@pytest.mark.timeout(180)
@pytest.mark.parametrize("scheme", ["tcp", "tls"])
async def test_a_chromium_pair_gets_video_both_ways_through_coturn(tmp_path, scheme):
    media_port = free_port(SERVER_IP, socket.SOCK_DGRAM)
    with coturn(tmp_path, media_port) as turn, udp_wall(media_port):
        # the wall holds: a datagram straight to the media port is refused
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((CLIENT_IP, 0))
            with pytest.raises(PermissionError):
                s.sendto(b"\x00\x01", (SERVER_IP, media_port))
        url = turn.tcp_url if scheme == "tcp" else turn.tls_url
        server, urls = start_server(tmp_path, media_port, "--turn-url", url,
                                    "--turn-secret", turn.secret)  # fmt: skip
        try:
            async with async_playwright() as p:
                browser = await launch_relay_browser(p, urls)
                try:
                    pages = []
                    for base in urls:
                        page = await browser.new_page(viewport=DESKTOP)
                        await page.add_init_script(FORCE_RELAY_JS)
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
                                f"{exc}; {await diagnose(page, turn.log)}"
                            ) from None
                        assert playing["width"] > 0, playing
                        # the page passed the welcome's servers to its RTCPeerConnection
                        [config] = await page.evaluate("() => window.rtcConfigs")
                        [ice] = config["iceServers"]
                        assert ice["urls"] == [url]
                        assert ice["username"].split(":")[0].isdigit()
                        # and its media goes through coturn, over TCP or TLS
                        pair = await page.evaluate(SELECTED_PAIR_JS)
                        assert pair is not None, "no selected candidate pair"
                        assert pair["localType"] == "relay", pair
                        assert pair["relayProtocol"] == scheme, pair
                        assert pair["localAddress"] == RELAY_IP, pair
                        assert (pair["remoteAddress"], pair["remotePort"]) == (
                            SERVER_IP,
                            media_port,
                        )
                    # two welcomes, two usernames
                    names = {
                        (await pg.evaluate("() => window.rtcConfigs"))[0]["iceServers"][0][
                            "username"
                        ]
                        for pg in pages
                    }
                    assert len(names) == 2
                finally:
                    await browser.close()
            assert metric(urls[0], "mediaserver_welcomes_with_turn_total") >= 2
            assert wall_drops() >= 1  # the refused datagram, at least
        finally:
            stop_server(server)
    log = turn.log.read_text()
    # coturn saw both visitors' allocations, with the server's credentials
    for name in names:
        assert f"username=<{name}>" in log


def people_pair(base: str) -> list[dict[str, str]]:
    """Two accounts over REST, B connected to A (asked and accepted): their sessions as
    People mode keeps them in sessionStorage."""
    api = base.replace(SERVER_IP, "127.0.0.1") + "api/v1"
    people = []
    for name in ("turnalice", "turnbob"):
        r = httpx.post(f"{api}/profiles", json={
            "username": name, "date_of_birth": "1994-05-06", "password": "a long passphrase 7",
            "interests": ["chess"], "discoverable": True,
        }, timeout=30)  # fmt: skip
        assert r.status_code == 201, r.text
        body = r.json()
        people.append({"token": body["token"], "id": body["id"], "username": name})
    a, b = ({"Authorization": f"Bearer {who['token']}"} for who in people)
    r = httpx.post(f"{api}/connections", headers=b, json={"handle": "turnalice"}, timeout=10)
    assert r.status_code in (200, 201), r.text
    [asked] = httpx.get(f"{api}/connections", headers=a, timeout=10).json()["connections"]
    r = httpx.post(f"{api}/connections/{asked['id']}/accept", headers=a, timeout=10)
    assert r.status_code == 200, r.text
    return people


@pytest.mark.timeout(180)
async def test_a_people_call_goes_through_coturn_over_tls(tmp_path):
    """People mode's calls (rtc.js's PeerLink, its own signalling socket) take the
    welcome's TURN servers too: a call between two connections, UDP walled off, relayed
    by coturn over TLS, with video both ways."""
    media_port = free_port(SERVER_IP, socket.SOCK_DGRAM)
    with coturn(tmp_path, media_port) as turn, udp_wall(media_port):
        server, urls = start_server(tmp_path, media_port, "--turn-url", turn.tls_url,
                                    "--turn-secret", turn.secret)  # fmt: skip
        try:
            people = await asyncio.to_thread(people_pair, urls[0])
            async with async_playwright() as p:
                browser = await launch_relay_browser(p, urls)
                try:
                    pages = []
                    for base, who in zip(urls, people):
                        page = await browser.new_page(viewport=DESKTOP)
                        await page.add_init_script(FORCE_RELAY_JS)
                        await page.add_init_script(
                            "sessionStorage.setItem('mediaserver.people', "
                            + json.dumps(json.dumps(who))
                            + ")"
                        )
                        await page.goto(base + "#people")
                        await page.wait_for_selector(
                            "#people-signed-in", state="visible", timeout=15000
                        )
                        pages.append(page)
                    a, b = pages
                    conversation = b.locator("#conversation-list li button", has_text="turnalice")
                    await conversation.wait_for(timeout=20000)
                    await conversation.click()
                    await b.click("#conversation-call")
                    await a.click("#call-answer", timeout=20000)
                    for page in pages:
                        try:
                            await wait_remote_video(page)
                        except AssertionError as exc:
                            raise AssertionError(
                                f"{exc}; {await diagnose(page, turn.log)}"
                            ) from None
                        [config] = await page.evaluate("() => window.rtcConfigs")
                        [ice] = config["iceServers"]
                        assert ice["urls"] == [turn.tls_url]
                        pair = await page.evaluate(
                            SELECTED_PAIR_JS.replace("mediaserverClient", "mediaserverPeople")
                        )
                        assert pair is not None, "no selected candidate pair"
                        assert pair["localType"] == "relay", pair
                        assert pair["relayProtocol"] == "tls", pair
                finally:
                    await browser.close()
        finally:
            stop_server(server)


@pytest.mark.timeout(60)
async def test_coturn_takes_the_servers_credentials_and_refuses_expired_or_forged_ones(
    tmp_path,
):
    """The credentials alone against coturn (aioice's TURN client over TCP): what the
    module issues allocates a relay; one past its expiry, or with a wrong password, is
    refused (401), so --turn-ttl is what bounds a leaked credential."""
    media_port = free_port(SERVER_IP, socket.SOCK_DGRAM)
    with coturn(tmp_path, media_port) as turn:
        address = (CLIENT_IP, int(turn.tcp_url.split(":")[2].split("?")[0]))
        credentials = TurnCredentials((turn.tcp_url,), turn.secret.encode(), ttl=60)
        [server] = credentials.issue(time.time())
        transport, _ = await create_turn_endpoint(
            asyncio.DatagramProtocol, address, server["username"], server["credential"],
            transport="tcp",
        )  # fmt: skip
        try:
            assert transport.get_extra_info("sockname")[0] == RELAY_IP
        finally:
            transport.close()
        expired = f"{int(time.time()) - 5}:visitor"
        for username, password in (
            (expired, turn_password(turn.secret.encode(), expired)),
            (server["username"], turn_password(b"not the secret", server["username"])),
        ):
            with pytest.raises(TransactionFailed, match="401"):
                transport, _ = await create_turn_endpoint(
                    asyncio.DatagramProtocol, address, username, password, transport="tcp"
                )
