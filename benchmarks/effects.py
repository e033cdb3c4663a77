"""Video effects benchmark: our in-place YUV path against the aiortc-example way.

    python -m benchmarks.effects [--frames 120] [--json] [--no-pin]

For each effect, on a 640x480 stream of a real face (scikit-image's astronaut,
moving a few pixels a frame so detection and tracking do real work):

- cython_ms: median time of our `apply(frame)` on a decoded yuv420p frame (model
  input made from the small downscaled planes; Cython kernels in place).
- baseline_ms: the way aiortc's server example does it: frame.to_ndarray("bgr24"),
  the OpenCV equivalent of the effect (the same models and the same algorithms on
  the BGR image: cv2.resize mosaic, 3-pass cv2.blur, the self-guided filter with
  cv2.boxFilter, the tone curve with cv2.LUT on the three channels, numpy float
  blend for the background), VideoFrame.from_ndarray(..., "bgr24") and its conversion back
  to yuv420p (which the encoder needs anyway).
- speedup: baseline_ms / cython_ms. The *_mean_ms fields and speedup_mean count
  the model runs (every 3rd frame for faces, every 2nd for the mask), which the
  median of the face effects leaves out.
- pipeline_ms: decode (aiortc's Vp8Decoder) + our effect + encode (aiortc's
  Vp8Encoder, its realtime settings), median per frame, and fps_per_core = 1000 /
  pipeline_mean_ms; decode_encode_ms is the same path with no effect.

One process pinned to one core, OpenCV and LiteRT on one thread each; medians over
--frames frames (>= 100) after a warm-up; the whole run takes well under 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np

from mediaserver.ai_filters.effects import EFFECTS, create
from mediaserver.ai_filters.models import Box, FaceDetector, PersonSegmenter, expand

W, H = 640, 480
NAMES = ["pixelate_face", "blur_face", "blur_background", "smooth_skin", "low_light"]


def source_rgb(n: int) -> list[np.ndarray]:
    from skimage import data

    img = cv2.resize(data.astronaut(), (480, 480), interpolation=cv2.INTER_AREA)
    base = np.full((H, W, 3), 200, np.uint8)
    base[:, 80:560] = img
    out = []
    for i in range(n):
        dx = round(30 * math.sin(i / 15))
        dy = round(15 * math.sin(i / 23))
        out.append(np.roll(base, (dy, dx), axis=(0, 1)))
    return out


def yuv_frames(rgbs: list[np.ndarray]) -> list[av.VideoFrame]:
    frames = []
    for i, rgb in enumerate(rgbs):
        f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        f.pts, f.time_base = i * 3000, Fraction(1, 90000)
        frames.append(f)
    return frames


# ------------------------------------------------------------------ baselines


class Baseline:
    """aiortc-example style: BGR ndarray in, OpenCV, new VideoFrame out."""

    def __init__(self, name: str, detector: FaceDetector, segmenter: PersonSegmenter) -> None:
        self.name, self.detector, self.segmenter = name, detector, segmenter
        self.i = 0
        self.boxes: list[Box] = []
        self.mask: np.ndarray | None = None
        self.params: tuple[float, float, float] | None = None
        self.low = create("low_light")

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        img = frame.to_ndarray(format="bgr24")
        img = getattr(self, self.name)(img)
        self.i += 1
        out = av.VideoFrame.from_ndarray(img, format="bgr24")
        out.pts, out.time_base = frame.pts, frame.time_base
        return out.reformat(format="yuv420p")

    def _faces(self, img: np.ndarray) -> list[tuple[int, int, int, int]]:
        if self.i % 3 == 0:
            self.boxes = self.detector.detect_rgb(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        return [expand(b, 0.3, W, H) for b in self.boxes]

    def pixelate_face(self, img: np.ndarray) -> np.ndarray:
        for x, y, w, h in self._faces(img):
            roi = img[y : y + h, x : x + w]
            small = cv2.resize(roi, (6, 6), interpolation=cv2.INTER_AREA)
            img[y : y + h, x : x + w] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
        return img

    def blur_face(self, img: np.ndarray) -> np.ndarray:
        for x, y, w, h in self._faces(img):  # the same 3-pass box blur as ours
            k = 2 * max(8, max(w, h) // 4) + 1
            roi = img[y : y + h, x : x + w]
            for _ in range(3):
                roi = cv2.blur(roi, (k, k), borderType=cv2.BORDER_REPLICATE)
            img[y : y + h, x : x + w] = roi
        return img

    def blur_background(self, img: np.ndarray) -> np.ndarray:
        if self.i % 2 == 0 or self.mask is None:
            rgb = cv2.cvtColor(cv2.resize(img, (256, 144), interpolation=cv2.INTER_AREA),
                              cv2.COLOR_BGR2RGB)
            x = (rgb.astype(np.float32) / 255.0)[None]
            prob = next(iter(self.segmenter._runner(x).values())).reshape(144, 256)
            self.mask = cv2.resize(prob, (W, H))[:, :, None]
        blurred = img
        for _ in range(2):  # the same 2-pass box blur (radius 12) as ours
            blurred = cv2.blur(blurred, (25, 25), borderType=cv2.BORDER_REPLICATE)
        m = self.mask
        return (img * m + blurred * (1.0 - m)).astype(np.uint8)

    def smooth_skin(self, img: np.ndarray) -> np.ndarray:
        # the same self-guided filter (radius 4, eps 14**2) with cv2.boxFilter, per channel
        i = img.astype(np.float32)
        k, eps = (9, 9), 14.0 ** 2
        m = cv2.boxFilter(i, -1, k)
        var = cv2.boxFilter(i * i, -1, k) - m * m
        a = var / (var + eps)
        b = m - a * m
        q = cv2.boxFilter(a, -1, k) * i + cv2.boxFilter(b, -1, k)
        return np.clip(q + 0.5, 0, 255).astype(np.uint8)

    def low_light(self, img: np.ndarray) -> np.ndarray:
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        hist = cv2.calcHist([gray], [0], None, [256], [0, 256]).reshape(-1).astype(np.uint32)
        want = self.low.measure(hist)  # type: ignore[attr-defined]
        p = want if self.params is None else tuple(
            a + 0.15 * (b - a) for a, b in zip(self.params, want))
        self.params = p  # type: ignore[assignment]
        self.low._build_lut(*p)  # type: ignore[attr-defined]
        return cv2.LUT(img, self.low.lut)  # type: ignore[attr-defined]


# ------------------------------------------------------------------ timing


def timed_ms(
    fn: Callable[[av.VideoFrame], Any], frames: list[av.VideoFrame], warm: int = 5
) -> tuple[float, float]:
    """(median, mean) ms per call: the mean counts the model runs that the median of
    an effect detecting every few frames leaves out."""
    for f in frames[:warm]:
        fn(f)
    times = []
    for f in frames[warm:]:
        t = time.perf_counter()
        fn(f)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, statistics.fmean(times) * 1e3


def copies(frames: list[av.VideoFrame]) -> list[av.VideoFrame]:
    out = []
    for f in frames:
        g = av.VideoFrame(f.width, f.height, "yuv420p")
        for a, b in zip(g.planes, f.planes):
            a.update(bytes(b))
        g.pts, g.time_base = f.pts, f.time_base
        out.append(g)
    return out


def encoded_stream(frames: list[av.VideoFrame]) -> list[Any]:
    from aiortc.codecs.vpx import Vp8Encoder, vp8_depayload
    from aiortc.jitterbuffer import JitterFrame

    enc = Vp8Encoder()
    out = []
    for i, f in enumerate(frames):
        payloads, ts = enc.encode(f, force_keyframe=(i == 0))
        out.append(JitterFrame(data=b"".join(vp8_depayload(p) for p in payloads), timestamp=ts))
    return out


def pipeline_ms(effect: Any, stream: list[Any]) -> tuple[float, float]:
    from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder

    dec, enc = Vp8Decoder(), Vp8Encoder()
    times = []
    for i, jf in enumerate(stream):
        t = time.perf_counter()
        for frame in dec.decode(jf):
            out = effect.apply(frame)
            enc.encode(out, force_keyframe=(i == 0))
        times.append(time.perf_counter() - t)
    return statistics.median(times[5:]) * 1e3, statistics.fmean(times[5:]) * 1e3


def run(n: int, pin: bool) -> dict[str, dict[str, float]]:
    if pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    cv2.setNumThreads(1)
    rgbs = source_rgb(n + 5)  # 5 warm-up frames
    frames = yuv_frames(rgbs)
    detector, segmenter = FaceDetector(), PersonSegmenter()
    stream = encoded_stream(copies(frames))
    results: dict[str, dict[str, float]] = {}
    codec_only = pipeline_ms(_Identity(), stream)[0]
    for name in NAMES:
        kw: dict[str, Any] = {}
        if name in ("pixelate_face", "blur_face"):
            kw["detector"] = detector
        if name == "blur_background":
            kw["segmenter"] = segmenter
        ours = create(name, **kw)
        c, c_mean = timed_ms(ours.apply, copies(frames))
        b, b_mean = timed_ms(Baseline(name, detector, segmenter), frames)
        p, p_mean = pipeline_ms(create(name, **kw), stream)
        results[name] = {
            "cython_ms": round(c, 3),
            "baseline_ms": round(b, 3),
            "speedup": round(b / c, 2),
            "pipeline_ms": round(p, 3),
            "fps_per_core": round(1000.0 / p_mean, 1),
            "cython_mean_ms": round(c_mean, 3),
            "baseline_mean_ms": round(b_mean, 3),
            "speedup_mean": round(b_mean / c_mean, 2),
            "pipeline_mean_ms": round(p_mean, 3),
            "decode_encode_ms": round(codec_only, 3),
            "frames": n,
        }
    return results


class _Identity:
    def apply(self, frame: av.VideoFrame) -> av.VideoFrame:
        return frame


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-pin", action="store_true")
    args = ap.parse_args(argv)
    if args.frames < 100:
        ap.error("--frames must be >= 100 (medians over >= 100 frames)")
    assert set(NAMES) == set(EFFECTS)
    res = run(args.frames, not args.no_pin)
    if args.json:
        print(json.dumps(res))
    else:
        print("medians (means) per frame, ms")
        print(f"{'effect':16} {'cython':>14} {'baseline':>14} {'speedup':>13} "
              f"{'pipeline':>14} {'fps/core':>9}")
        for name in NAMES:
            r = res[name]
            print(f"{name:16} {r['cython_ms']:6.2f} ({r['cython_mean_ms']:5.2f}) "
                  f"{r['baseline_ms']:6.2f} ({r['baseline_mean_ms']:5.2f}) "
                  f"{r['speedup']:5.1f}x ({r['speedup_mean']:4.1f}x) "
                  f"{r['pipeline_ms']:6.2f} ({r['pipeline_mean_ms']:5.2f}) "
                  f"{r['fps_per_core']:9.0f}")
        print(f"decode + encode alone: {res[NAMES[0]]['decode_encode_ms']:.2f} ms a frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
