"""Issue 18's "done when" with the still frame: real WebSockets to the real app (two
nodes, a database each, sharing a real Redis) and aiortc peers in the private
namespace. B sends a known picture; A reports B with the chat and a still; a
moderator lists the report, reads the chat lines and gets a JPEG that decodes and
matches the picture B sent (both reads audited); bans B for a day; B's next hello
on the other node is banned. Retention deletes the still from the file. A report
without include_frame decodes nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mediaserver.cli import main as cli_main
from mediaserver.netns import SERVER_IP
from tests.e2e.test_still_live import decode_jpeg, psnr, quadrants
from tests.signalling.test_moderation_live import bearer
from tests.support.peers import AiortcPeer, ImageVideoTrack, wait_for
from tests.support.redis_server import CLUSTER_SECRET, RedisServer
from tests.support.signalling_client import Client, running_server

pytestmark = pytest.mark.netns

A_ADDR, B_ADDR = "127.0.0.2", "127.0.0.3"


async def account(api: httpx.AsyncClient, name: str) -> dict[str, Any]:
    r = await api.post("/profiles", json={"username": name, "date_of_birth": "1990-05-17"})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def collect(client: Client, *kinds: str) -> dict[str, dict[str, Any]]:
    """The next messages, one of each kind, in any order."""
    got: dict[str, dict[str, Any]] = {}
    while set(got) != set(kinds):
        msg = await asyncio.wait_for(client._pending.get(), 10)
        # a repeated `queued` (the queue announces itself again) is no news
        assert msg["type"] in kinds and (msg["type"] == "queued" or msg["type"] not in got), msg
        got[msg["type"]] = msg
    return got


async def next_of(client: Client, kind: str, timeout: float = 15) -> dict[str, Any]:
    """The next message of this kind, past any repeated `queued` (a node that does
    not know the other one yet puts its visitor back in the queue)."""
    while True:
        msg = await asyncio.wait_for(client._pending.get(), timeout)
        if msg["type"] == kind:
            return dict(msg)
        assert msg["type"] == "queued", msg


async def join_with_video(server: Any, source: str, peer: AiortcPeer, **hello: Any) -> Client:
    """A visitor that starts and offers its peer's media."""
    client = await Client.open(server.url, source=source)
    await client.hello(**hello)
    await client.send("start")
    await client.expect("queued")
    await client.send("offer", sdp=await peer.offer())
    return client


async def meet(server: Any, a_peer: AiortcPeer, b_peer: AiortcPeer, **b_hello: Any):  # type: ignore[no-untyped-def]
    a = await join_with_video(server, A_ADDR, a_peer)
    await a_peer.accept((await a.expect("answer", timeout=10))["sdp"])
    b = await join_with_video(server, B_ADDR, b_peer, **b_hello)
    await b_peer.accept((await collect(b, "matched", "answer"))["answer"]["sdp"])
    await a.expect("matched")
    # A decodes B's picture: the pair's media flows through the server
    assert await wait_for(lambda: a_peer.frames("video") >= 20, timeout=30)
    return a, b


async def filed(api: httpx.AsyncClient, token: str) -> dict[str, Any]:
    """The one open report, once B's node has filed it (in a thread)."""
    deadline = time.monotonic() + 10
    while True:
        r = await api.get("/moderation/reports", headers=bearer(token))
        assert r.status_code == 200, r.text
        if r.json()["reports"]:
            (listed,) = r.json()["reports"]
            return dict(listed)
        assert time.monotonic() < deadline, "the report was never filed"
        await asyncio.sleep(0.05)


def grant(db: Path, key_file: Path, username: str) -> None:
    argv = ["moderation", "grant", username, "--db", str(db), "--data-key-file", str(key_file)]
    assert cli_main(argv) == 0


async def test_report_with_a_still_review_ban_on_another_node_and_retention(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file, db = tmp_path / "shared.key", tmp_path / "n1.db"
    shared = {
        "cluster_secret": CLUSTER_SECRET,
        "data_key_file": str(key_file),
        "announced_ip": SERVER_IP,
        "match_interest_wait": 0.0,
    }
    source = quadrants()
    a_peer = AiortcPeer(audio=False)
    b_peer = AiortcPeer(audio=False, video=ImageVideoTrack(source))
    with RedisServer() as redis:
        async with (
            running_server(db=str(db), redis_url=redis.url, **shared) as n1,
            running_server(db=str(tmp_path / "n2.db"), redis_url=redis.url, **shared) as n2,
        ):
            api = httpx.AsyncClient(base_url=n1.http_url + "/api/v1", timeout=10)
            bee, mod = await account(api, "bee_sender"), await account(api, "the_mod")
            grant(db, key_file, "the_mod")
            capsys.readouterr()
            try:
                a, b = await meet(n1, a_peer, b_peer, token=bee["token"])
                assert n1.sfu.stats["stills_decoded"] == 0  # nothing decoded before a report
                await b.send("chat", text="an awful line 77")
                assert (await a.expect("chat"))["text"] == "an awful line 77"
                await a.send("report", reason="nudity", include_chat=True, include_frame=True)
                await collect(a, "queued", "reported")

                listed = await filed(api, mod["token"])
                assert (listed["reason"], listed["reported_user_id"]) == ("nudity", bee["id"])
                r = await api.get(
                    f"/moderation/reports/{listed['id']}", headers=bearer(mod["token"])
                )
                evidence = r.json()["evidence"]
                assert evidence["chat"] == [{"from": "reported", "text": "an awful line 77"}]
                frame = evidence["frame"]
                assert frame["type"] == "image/jpeg"
                assert frame["url"] == f"/api/v1/moderation/reports/{listed['id']}/frame"
                r = await api.get(
                    frame["url"].removeprefix("/api/v1"), headers=bearer(mod["token"])
                )
                assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
                assert r.headers["cache-control"] == "no-store"
                assert len(r.content) == frame["bytes"]
                still = decode_jpeg(r.content)
                assert still.shape == source.shape and psnr(still, source) > 30
                assert n1.sfu.stats["stills_decoded"] == 1  # the one keyframe, nothing more
                async with httpx.AsyncClient() as http:
                    metrics = (await http.get(n1.http_url + "/metrics")).text
                assert 'mediaserver_report_stills_total{outcome="taken",worker="0"} 1.0' in metrics
                assert 'mediaserver_report_stills_total{outcome="busy",worker="0"} 0.0' in metrics
                # a normal account (or nobody) gets 404 for the still too
                for headers in (bearer(bee["token"]), {}):
                    r = await api.get(f"/moderation/reports/{listed['id']}/frame", headers=headers)
                    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
                # both reads are in the audit log
                reads = [
                    (e["event"], e["detail"])
                    for e in n1.store.audit_log()
                    if e["event"].startswith("moderation_") and e["event"].endswith("_read")
                ]
                who = {"moderator_id": mod["id"], "report_id": listed["id"]}
                assert reads == [("moderation_report_read", who), ("moderation_frame_read", who)]

                # a ban for a day; B's next hello on node 2 is banned (through Redis)
                r = await api.post(
                    f"/moderation/reports/{listed['id']}/decision",
                    headers=bearer(mod["token"]),
                    json={"action": "ban", "duration_s": 86400},
                )
                assert r.status_code == 201, r.text
                b2 = await Client.open(n2.url, source=B_ADDR)
                await b2.send("hello", age_confirmed=True)
                assert "until" in await b2.error("banned")
                for c in (a, b, b2):
                    await c.close()
            finally:
                await a_peer.close()
                await b_peer.close()
                await api.aclose()

            # 31 days on, retention deletes the still from the database file
            (sealed,) = n1.store._conn.execute(
                "SELECT frame_sealed FROM moderation_reports"
            ).fetchone()
            n1.store.checkpoint()
            assert bytes(sealed) in db.read_bytes()
            as_of = (dt.datetime.now(dt.UTC) + dt.timedelta(days=31)).date().isoformat()
            argv = ["retention", "--run-once", "--as-of", as_of, "--db", str(db)]
            code = await asyncio.to_thread(cli_main, [*argv, "--data-key-file", str(key_file)])
            assert code == 0
            assert json.loads(capsys.readouterr().out.splitlines()[-1])["evidence_purged"] == 1
            n1.store.checkpoint()
            wal = Path(str(db) + "-wal")
            on_disk = db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
            assert bytes(sealed) not in on_disk


async def test_a_report_without_include_frame_decodes_nothing(tmp_path: Path) -> None:
    a_peer = AiortcPeer(audio=False)
    b_peer = AiortcPeer(audio=False, video=ImageVideoTrack(quadrants()))
    async with running_server(announced_ip=SERVER_IP, match_interest_wait=0.0) as server:
        api = httpx.AsyncClient(base_url=server.http_url + "/api/v1", timeout=10)
        mod = await account(api, "the_mod")
        server.store.set_moderator("the_mod", True)
        try:
            a, b = await meet(server, a_peer, b_peer)
            await a.send("report", reason="harassment", include_chat=True)
            await collect(a, "queued", "reported")
            listed = await filed(api, mod["token"])
            r = await api.get(f"/moderation/reports/{listed['id']}", headers=bearer(mod["token"]))
            assert r.json()["evidence"] == {}  # no chat was sent, and no still was asked for
            r = await api.get(
                f"/moderation/reports/{listed['id']}/frame", headers=bearer(mod["token"])
            )
            assert r.status_code == 404
            stats = server.sfu.stats
            assert stats["stills_decoded"] == stats["stills_taken"] == stats["stills_busy"] == 0
            assert not server.sfu.stills.running
            for c in (a, b):
                await c.close()
        finally:
            await a_peer.close()
            await b_peer.close()
            await api.aclose()


async def test_the_still_of_a_visitor_whose_media_is_on_another_node(tmp_path: Path) -> None:
    """B lives on node 2, its pair's media on node 1 (A waited first): B's node files
    the report and asks node 1 for the still over the bus (Redis)."""
    shared = {
        "cluster_secret": CLUSTER_SECRET,
        "data_key_file": str(tmp_path / "shared.key"),
        "announced_ip": SERVER_IP,
        "match_interest_wait": 0.0,
    }
    source = quadrants()
    a_peer = AiortcPeer(audio=False)
    b_peer = AiortcPeer(audio=False, video=ImageVideoTrack(source))
    with RedisServer() as redis:
        async with (
            running_server(db=str(tmp_path / "n1.db"), redis_url=redis.url, **shared) as n1,
            running_server(db=str(tmp_path / "n2.db"), redis_url=redis.url, **shared) as n2,
        ):
            try:
                a = await join_with_video(n1, A_ADDR, a_peer)
                await a_peer.accept((await a.expect("answer", timeout=10))["sdp"])
                b = await Client.open(n2.url, source=B_ADDR)
                await b.hello()
                await b.send("start")
                await next_of(b, "matched")
                await next_of(a, "matched")
                await b.send("offer", sdp=await b_peer.offer())
                await b_peer.accept((await b.expect("answer", timeout=10))["sdp"])
                assert await wait_for(lambda: a_peer.frames("video") >= 20, timeout=30)
                (b_visitor,) = n2.hub.visitors.values()
                assert b_visitor.media_node == n1.hub.node_id != n2.hub.node_id
                await a.send("report", reason="nudity", include_frame=True)
                await collect(a, "queued", "reported")
                # filed by node 2, into its own database; the still decoded on node 1
                deadline = time.monotonic() + 10
                while not (
                    rows := n2.store._conn.execute("SELECT id FROM moderation_reports").fetchall()
                ):
                    assert time.monotonic() < deadline, "the report was never filed"
                    await asyncio.sleep(0.05)
                jpeg = n2.store.moderation_frame("operator-test", rows[0][0])
                assert psnr(decode_jpeg(jpeg), source) > 30
                assert n1.sfu.stats["stills_decoded"] == 1 and n2.sfu.stats["stills_decoded"] == 0
                for c in (a, b):
                    await c.close()
            finally:
                await a_peer.close()
                await b_peer.close()
