"""Mutual reveal fails closed: a covered pair's video never reaches the partner
uncovered, whatever holds the effect streams and whatever fails.

Real WebSockets to the real app and aiortc peers in the namespace; each peer
sends a real face (skimage's astronaut) and every video frame the other peer
decodes is checked for the face's fine detail.
"""

import asyncio
from pathlib import Path

import pytest

from mediaserver.netns import SERVER_IP
from tests.support.peers import AiortcPeer, ImageVideoTrack, wait_for
from tests.support.redis_server import CLUSTER_SECRET, RedisServer
from tests.support.signalling_client import Client, running_server
from tests.ai_filters.test_effects import FACE, astronaut_rgb, detail_kept, luma, yuv
from tests.support import DATA

pytestmark = pytest.mark.netns

OFFER = (DATA / "offer_aiortc.sdp").read_text()
UNCOVERED = 0.5
"""Face detail kept above which a frame shows the face (forwarded untouched it is
> 0.9, covered < 0.15: tests/e2e/test_effects_live.py)."""


class Visitor:
    """A WebSocket client and its aiortc peer sending the astronaut; `detail`
    holds the face detail of every video frame it decodes from its partner."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.detail: list[float] = []
        ref = luma(yuv(astronaut_rgb()))
        self.peer = AiortcPeer(
            video=ImageVideoTrack(astronaut_rgb()),
            on_video_frame=lambda f: self.detail.append(
                detail_kept(ref, f.to_ndarray(format="gray"), FACE)
            ),
        )

    @classmethod
    async def join(cls, server, n: int) -> "Visitor":
        client = await Client.open(server.url, source=f"127.0.0.{n + 1}")
        await client.hello()
        await client.send("start")
        await client.expect("queued")
        return cls(client)

    async def offer(self) -> None:
        await self.client.send("offer", sdp=await self.peer.offer())

    async def collect(self, *kinds: str) -> dict[str, dict]:
        """The next messages, one of each kind, in any order."""
        got = {}
        for _ in kinds:
            msg = await self.client._pending.get()
            got[msg["type"]] = msg
        assert set(got) == set(kinds), got
        if "answer" in got:
            await self.peer.accept(got["answer"]["sdp"])
        return got

    def video_frames(self) -> int:
        return self.peer.frames("video")

    async def close(self) -> None:
        await self.client.close()
        await self.peer.close()


async def hold_effect_slot(server, n: int) -> Client:
    """A visitor whose opt-in effect holds an effect stream; it then stops, so it
    is not matched (its session and effect stay)."""
    x = await Client.open(server.url, source=f"127.0.0.{n + 1}")
    await x.hello()
    await x.send("effect", name="low_light", on=True)
    await x.expect("effect")
    await x.send("start")
    await x.expect("queued")
    await x.send("offer", sdp=OFFER)
    await x.expect("answer")
    assert (await x.expect("effect"))["applied"] is True
    await x.send("stop")
    await x.expect("stopped")
    return x


async def meet(server) -> tuple[Visitor, Visitor]:
    """A offers while waiting, B after the match: both ways covers go on."""
    a = await Visitor.join(server, 1)
    await a.offer()
    await a.collect("answer")
    b = await Visitor.join(server, 2)
    assert (await a.collect("matched"))["matched"]["hidden"] is True
    assert (await b.collect("matched"))["matched"]["hidden"] is True
    await b.offer()
    return a, b


async def test_opt_in_effects_cannot_leave_a_new_pair_uncovered():
    async with running_server(
        announced_ip=SERVER_IP, mutual_reveal=True, max_effect_streams=1, match_interest_wait=0.0
    ) as server:
        x = await hold_effect_slot(server, 5)
        a, b = await meet(server)
        try:
            await b.collect("answer")
            # the partner decodes plenty of video from each side ...
            assert await wait_for(lambda: min(a.video_frames(), b.video_frames()) >= 30, 60)
            # ... and not one frame of it shows a face
            for v in (a, b):
                assert max(v.detail) < UNCOVERED, max(v.detail)
            assert len(server.sfu.covers) == 2
            assert len(server.sfu.effects) == 3  # X's low light runs on beside them
            for v in (a, b):
                assert not any(m["type"] in ("video_withheld", "error") for m in v.client.messages)
        finally:
            await x.close()
            await a.close()
            await b.close()


async def test_no_room_for_a_cover_withholds_that_video_and_tells_both():
    async with running_server(
        announced_ip=SERVER_IP, mutual_reveal=True, max_cover_streams=1, match_interest_wait=0.0
    ) as server:
        a, b = await meet(server)  # A's cover takes the only one
        try:
            got = await b.collect("answer", "video_withheld")
            assert got["video_withheld"]["whose"] == "yours"
            assert (await a.client.expect("video_withheld"))["whose"] == "partner"
            # B gets A's covered face; A gets B's voice but never a frame of its video
            assert await wait_for(
                lambda: b.video_frames() >= 30 and a.peer.frames("audio") >= 50, 60
            )
            assert a.video_frames() == 0
            assert max(b.detail) < UNCOVERED
            # both agree to show their faces: B's video (no cover needed now) flows
            await a.client.send("reveal")
            await b.client.send("reveal")
            assert await wait_for(lambda: a.video_frames() >= 10, 30)
            assert a.detail[-1] > UNCOVERED
        finally:
            await a.close()
            await b.close()


async def test_a_cover_whose_model_cannot_load_withholds_both_videos(tmp_path, monkeypatch):
    (tmp_path / "face_detection_short_range.tflite").write_bytes(b"not a model" * 100)
    async with running_server(
        announced_ip=SERVER_IP, mutual_reveal=True, match_interest_wait=0.0
    ) as server:
        monkeypatch.setenv("MEDIASERVER_MODEL_DIR", str(tmp_path))  # a broken install
        a, b = await meet(server)
        try:
            got_a = {m["whose"] for m in [await a.client.expect("video_withheld") for _ in "ab"]}
            got_b = await b.collect("answer", "video_withheld")
            then = await b.client.expect("video_withheld")
            got_b = {got_b["video_withheld"]["whose"], then["whose"]}
            assert got_a == got_b == {"yours", "partner"}
            # the voices go through, no video frame does
            assert await wait_for(lambda: min(v.peer.frames("audio") for v in (a, b)) >= 100, 60)
            await asyncio.sleep(0.5)
            assert a.video_frames() == b.video_frames() == 0
        finally:
            await a.close()
            await b.close()


async def test_a_cover_that_fails_on_every_frame_withholds_the_video_and_tells_both(
    tmp_path, monkeypatch
):
    # a broken install whose face model loads but cannot run: the segmentation
    # model under the face model's name (its input is 256x144, not 128x128)
    from mediaserver.ai_filters.models import SEGMENTATION_MODEL, model_path

    (tmp_path / "face_detection_short_range.tflite").write_bytes(
        Path(model_path(SEGMENTATION_MODEL)).read_bytes()
    )
    async with running_server(
        announced_ip=SERVER_IP, mutual_reveal=True, match_interest_wait=0.0
    ) as server:
        monkeypatch.setenv("MEDIASERVER_MODEL_DIR", str(tmp_path))
        a, b = await meet(server)
        try:
            await b.collect("answer")
            assert len(server.sfu.covers) == 2  # they start, then fail on each frame
            for v in (a, b):
                got = {(await v.client.expect("video_withheld", timeout=30))["whose"]
                       for _ in "ab"}
                assert got == {"yours", "partner"}
            assert server.sfu.covers == set()
            assert await wait_for(lambda: min(v.peer.frames("audio") for v in (a, b)) >= 100, 60)
            assert a.video_frames() == b.video_frames() == 0  # no frame ever got through
        finally:
            await a.close()
            await b.close()


async def next_messages(client: Client, *kinds: str, timeout: float = 30) -> list[dict]:
    """Messages until one of each of `kinds` (a kind may repeat) has come; the
    rest (e.g. the partner's news) are kept too."""
    want = list(kinds)
    got = []
    while want:
        msg = await asyncio.wait_for(client._pending.get(), timeout)
        got.append(msg)
        if msg["type"] in want:
            want.remove(msg["type"])
    return got


async def test_across_two_nodes_a_cover_without_room_withholds_and_tells_both():
    # two nodes sharing Redis, no room for any cover: B lives on node 2, its media
    # on the pair's node 1, so its cover is refused over the bus (by code, not text)
    with RedisServer() as redis:
        common = dict(announced_ip=SERVER_IP, mutual_reveal=True, max_cover_streams=0,
                      match_interest_wait=0.0, redis_url=redis.url,
                      cluster_secret=CLUSTER_SECRET)
        async with running_server(node_id="n1", **common) as one, running_server(
            node_id="n2", **common
        ) as two:
            assert await wait_for(lambda: len(one.hub.bus.nodes()) == 2, 10)
            a = await Visitor.join(one, 1)
            b = await Visitor.join(two, 2)
            try:
                for v in (a, b):
                    assert (await v.client.expect("matched", timeout=10))["hidden"] is True
                    await v.offer()
                for v in (a, b):
                    got = await next_messages(
                        v.client, "answer", "video_withheld", "video_withheld"
                    )
                    await v.peer.accept(next(m for m in got if m["type"] == "answer")["sdp"])
                    whose = {m["whose"] for m in got if m["type"] == "video_withheld"}
                    assert whose == {"yours", "partner"}
                (vb,) = two.hub.visitors.values()
                assert vb.media_node == "n1"  # B's media, and so its cover, is on node 1
                assert one.hub.stats["cover_failed:effects_busy"] == 1
                assert two.hub.stats["cover_failed:effects_busy"] == 1
                assert await wait_for(
                    lambda: min(v.peer.frames("audio") for v in (a, b)) >= 100, 60
                )
                assert a.video_frames() == b.video_frames() == 0
            finally:
                await a.close()
                await b.close()


async def test_after_both_reveal_an_opt_in_effect_without_room_leaves_the_plain_video():
    async with running_server(
        announced_ip=SERVER_IP, mutual_reveal=True, max_effect_streams=1, match_interest_wait=0.0
    ) as server:
        x = await hold_effect_slot(server, 5)
        a = await Visitor.join(server, 1)
        await a.client.send("effect", name="low_light", on=True)  # A's choice, for later
        await a.collect("effect")
        await a.offer()
        got = await a.collect("answer", "error", "effect")  # no room for it now either
        assert got["error"]["code"] == "effects_busy"
        b = await Visitor.join(server, 2)
        await a.collect("matched")
        await b.collect("matched")
        await b.offer()
        try:
            await b.collect("answer")
            assert await wait_for(lambda: b.video_frames() >= 10, 60)
            assert max(b.detail) < UNCOVERED
            await a.client.send("reveal")
            await b.client.send("reveal")
            # A's cover comes off; its low light has no room (X holds it): A is told,
            # and B sees A's face as it is rather than nothing
            got = await next_messages(a.client, "error")
            assert [m.get("by") for m in got if m["type"] == "revealed"] == ["partner", "both"]
            assert (got[-1]["code"], got[-1]["ref"]) == ("effects_busy", "effect")
            assert await wait_for(lambda: b.detail[-1] > UNCOVERED, 30), b.detail[-1]
        finally:
            await x.close()
            await a.close()
            await b.close()


async def test_covers_are_given_back_when_a_pair_ends():
    # two covers for the whole server: a pair that ended must not keep them
    async with running_server(
        mutual_reveal=True, max_cover_streams=2, match_interest_wait=0.0
    ) as server:
        clients = []
        for n in range(3):
            c = await Client.open(server.url, source=f"127.0.0.{n + 2}")
            await c.hello()
            clients.append(c)
        a, b, c = clients
        try:
            for x in (a, b):
                await x.send("start")
                await x.expect("queued")
                await x.send("offer", sdp=OFFER)
            for x in (a, b):
                await next_messages(x, "answer", "matched")
            assert len(server.sfu.covers) == 2
            await a.send("stop")  # A goes idle, B waits for someone new
            await next_messages(a, "stopped")
            await next_messages(b, "partner_left", "queued")
            assert server.sfu.covers == set()
            # never uncovered meanwhile: both videos are withheld instead
            assert server.sfu.stats["video_withheld"] == 2
            va, vb = (v for v in server.hub.visitors.values() if v.session_id is not None)
            await c.send("start")
            await c.expect("queued")
            await c.send("offer", sdp=OFFER)
            await next_messages(b, "matched")
            await next_messages(c, "answer", "matched")
            await asyncio.sleep(0.3)
            vc = next(v for v in server.hub.visitors.values() if v not in (va, vb))
            assert server.sfu.covers == {vb.session_id, vc.session_id}
            for x in clients:
                assert not [m for m in x.messages if m["type"] in ("video_withheld", "error")]
        finally:
            for x in clients:
                await x.close()
