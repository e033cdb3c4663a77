"""Effects on live media: a real face through the SFU, processed on the server."""

import pytest

from mediaserver.ai_filters import create
from mediaserver.netns import SERVER_IP
from mediaserver.sfu.server import Sfu, SfuConfig
from tests.support.peers import AiortcPeer, ImageVideoTrack, connect_pair, wait_for
from tests.ai_filters.test_effects import FACE, FAR_TEXTURED, astronaut_rgb, detail_kept

pytestmark = pytest.mark.netns


async def test_pixelate_face_reaches_the_subscriber_and_turns_off():
    sfu = Sfu(SfuConfig(announced_ip=SERVER_IP))
    await sfu.start()
    original = astronaut_rgb()
    a = AiortcPeer(audio=False, video=ImageVideoTrack(original))
    b = AiortcPeer(audio=False)
    ref = None
    try:
        sa, _ = await connect_pair(sfu, a, b, both_ways=False)
        assert await wait_for(lambda: b.frames("video") >= 30, timeout=30)

        def y():
            return b.received["video"].last.to_ndarray(format="gray")

        ref = y()
        assert ref.shape == (480, 640)
        # forwarded untouched: the face's fine detail is there
        assert detail_kept(ref, y(), FACE) > 0.9
        sfu.set_effect(sa.id, create("pixelate_face"))

        def face_detail():
            return detail_kept(ref, y(), FACE)

        assert await wait_for(lambda: face_detail() < 0.15, timeout=20), face_detail()
        # only the face: a textured region far from it keeps its detail
        assert detail_kept(ref, y(), (90, 300, 110, 180)) > 0.5
        stream = sfu.effects[sa.id]
        assert await wait_for(lambda: stream.frames_out > 20, timeout=20)
        assert face_detail() < 0.15 and stream.errors == 0  # and it stays covered
        sfu.set_effect(sa.id, None)
        assert await wait_for(lambda: face_detail() > 0.8, timeout=20), face_detail()
    finally:
        await a.close()
        await b.close()
        await sfu.close()
