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

from benchmarks.chromium_compare import VIDEO, comparability_warnings, summarize
from tests.support import ROOT

TARGETS = ("mediaserver", "mediaserver-loop", "janus")


@pytest.mark.netns
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
    # where the CPU went, by thread: mediaserver's event loop; Janus's per-handle loops
    assert "main" in out["mediaserver-loop"]["cpu_share_by_thread"]
    assert "hloop" in out["janus"]["cpu_share_by_thread"]
    for base in ("mediaserver", "mediaserver_loop"):
        ratio = out["janus"]["ratio_to_" + base]["cpu_us_per_packet"]
        assert isinstance(ratio, float) and ratio > 0
    assert "Janus / mediaserver (socket thread): CPU per packet x" in proc.stdout


def _run(cpu_us: float, pps: float = 500.0) -> dict:
    return {
        "cpu_us_per_packet": cpu_us, "wakeups_per_packet": cpu_us / 50, "packets_per_s": pps,
        "video_packets_per_s": pps * 0.6, "audio_packets_per_s": pps * 0.4, "kbit_per_s": 3000.0,
        "frames_per_s_per_page": 30.0, "cpu_cores": cpu_us * pps / 1e6, "cpu_source": "stat",
        "codecs": ["video/VP8"], "resolutions": ["640x480"],
    }  # fmt: skip


def test_summary_takes_medians_and_the_ratio_within_each_repeat():
    # repeat 2 is slow for both (a busy machine): its ratio is still 2, and the
    # median of the per-repeat ratios (2, 2, 4) is 2, not the ratio of the medians
    runs = [
        {"mediaserver": _run(50), "janus": _run(100)},
        {"mediaserver": _run(200), "janus": _run(400)},
        {"mediaserver": _run(60), "janus": _run(240)},
    ]
    out = summarize(runs, ["mediaserver", "janus"])
    assert out["mediaserver"]["cpu_us_per_packet"] == 60
    assert out["mediaserver"]["cpu_us_per_packet_range"] == [50, 200]
    assert out["janus"]["cpu_us_per_packet"] == 240
    ratio = out["janus"]["ratio_to_mediaserver"]
    assert ratio["cpu_us_per_packet_per_run"] == [2.0, 2.0, 4.0]
    assert ratio["cpu_us_per_packet"] == 2.0
    assert "ratio_to_mediaserver_loop" not in out["janus"]


def test_summary_reports_a_target_that_failed_every_repeat():
    runs = [{"mediaserver": _run(50), "janus": {"error": "TargetError: janus did not start"}}]
    out = summarize(runs, ["mediaserver", "janus"])
    assert out["janus"] == {"error": "TargetError: janus did not start"}
    assert out["mediaserver"]["runs"] == 1


def test_warnings_name_a_repeat_whose_loads_differ():
    small = {**_run(60, pps=250), "resolutions": ["320x240"]}
    runs = [
        {"mediaserver": _run(50), "janus": _run(100)},
        {"mediaserver": small, "janus": _run(100)},
    ]
    out = summarize(runs, ["mediaserver", "janus"])
    warnings = comparability_warnings(out, {"video": VIDEO})
    assert len(warnings) == 2, warnings
    assert "320x240" in warnings[0] and "2.00" in warnings[1]
    same = summarize(runs[:1], ["mediaserver", "janus"])
    assert comparability_warnings(same, {"video": VIDEO}) == []
