"""The real-Chromium comparison runs end to end (it reports; it asserts no speed).

One short run of `python -m benchmarks.chromium_compare`: one pair (two headless
Chromium pages with the fake camera and microphone) through each target in turn:
mediaserver with its socket thread, mediaserver on the event loop, and Janus's
VideoCall plugin driven by benchmarks/peers/janus_page/. Every target must have
forwarded video and audio both ways, VP8 at 640x480, and a Janus / mediaserver
CPU ratio must come out.
"""

import json
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.netns

TARGETS = ("mediaserver", "mediaserver-loop", "janus")


@pytest.mark.timeout(150)
def test_chromium_compare_forwards_on_every_target_and_reports_a_ratio():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.chromium_compare", "--pairs", "1", "--duration", "3",
         "--repeats", "1", "--warmup", "0.5", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=140, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in TARGETS:
        entry = out[name]
        assert "error" not in entry, f"{name}: {entry.get('error')}"
        # both pages got the other's media: ~30 fps video and ~50 packets/s of audio each
        assert entry["video_packets_per_s"] > 50, (name, entry)
        assert entry["audio_packets_per_s"] > 40, (name, entry)
        assert entry["frames_per_s_per_page"] > 10, (name, entry)
        assert entry["codecs"] == ["video/VP8"], (name, entry)
        assert entry["resolutions"] == ["640x480"], (name, entry)
        assert entry["cpu_us_per_packet"] > 0 and entry["wakeups_per_packet"] > 0
    for base in ("mediaserver", "mediaserver_loop"):
        ratio = out["janus"]["ratio_to_" + base]["cpu_us_per_packet"]
        assert isinstance(ratio, float) and ratio > 0
    assert "Janus / mediaserver (socket thread): CPU per packet x" in proc.stdout
