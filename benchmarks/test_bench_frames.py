"""Effect kernels on a 640x480 yuv420p frame, each an A/B pair in one run.

    pytest benchmarks/test_bench_frames.py --benchmark-only --benchmark-columns=median,min,max

"ours" works on the decoded frame's Y/U/V planes in place through the view recipe
(np.frombuffer(plane).reshape(h, line_size)[:, :w]) with mediaserver._frames.
"opencv" is what aiortc's examples/server/server.py does: frame.to_ndarray("bgr24")
-> the cv2/numpy operation -> VideoFrame.from_ndarray(..., "bgr24"), pts copied.

- blur: box_blur 3 passes (radius 4 luma, 2 chroma; sigma ~4.5) vs cv2.GaussianBlur sigma 4.5
- box: box_blur 1 pass radius 4 vs cv2.blur 9x9
- pixelate: pixelate 16x16 blocks (8x8 chroma) vs resize down (linear) + up (nearest)
- lut (low light): histogram + apply_lut on luma vs cv2.LUT on BGR
- smooth: smooth_edge_preserving(radius 4, threshold 12) on luma vs cv2.bilateralFilter(9, 30, 30)
- blend (background blur compositing): downscale_mask_2x + blend Y/U/V vs numpy blend on BGR
"""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from mediaserver import _frames

cv2.setNumThreads(1)  # one thread each side, as in DESIGN.md's measurements

W, H = 640, 480
ROUNDS = 40


def make_frame() -> av.VideoFrame:
    rng = np.random.default_rng(5)
    # smooth-ish content plus noise, like a camera frame
    yy, xx = np.mgrid[0:H * 3 // 2, 0:W]
    img = (128 + 60 * np.sin(xx / 37.0) * np.cos(yy / 23.0) + rng.normal(0, 8, xx.shape))
    frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="yuv420p")
    frame.pts = 1234
    frame.time_base = Fraction(1, 90000)
    return frame


def views(frame: av.VideoFrame) -> list[np.ndarray]:
    return [
        np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in frame.planes
    ]


def via_bgr(frame: av.VideoFrame, op) -> av.VideoFrame:
    img = op(frame.to_ndarray(format="bgr24"))
    out = av.VideoFrame.from_ndarray(img, format="bgr24")
    out.pts, out.time_base = frame.pts, frame.time_base
    return out


def run(benchmark, fn):
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=3)


# ---------------------------------------------------------------- blur

@pytest.mark.benchmark(group="blur")
def test_blur_ours(benchmark):
    frame = make_frame()

    def step():
        y, u, v = views(frame)
        _frames.box_blur(y, 4, 3)
        _frames.box_blur(u, 2, 3)
        _frames.box_blur(v, 2, 3)

    run(benchmark, step)


@pytest.mark.benchmark(group="blur")
def test_blur_opencv(benchmark):
    frame = make_frame()
    run(benchmark, lambda: via_bgr(frame, lambda img: cv2.GaussianBlur(img, (0, 0), 4.5)))


@pytest.mark.benchmark(group="box")
def test_box_ours(benchmark):
    frame = make_frame()

    def step():
        y, u, v = views(frame)
        _frames.box_blur(y, 4)
        _frames.box_blur(u, 2)
        _frames.box_blur(v, 2)

    run(benchmark, step)


@pytest.mark.benchmark(group="box")
def test_box_opencv(benchmark):
    frame = make_frame()
    run(benchmark, lambda: via_bgr(frame, lambda img: cv2.blur(img, (9, 9))))


# ---------------------------------------------------------------- pixelate

@pytest.mark.benchmark(group="pixelate")
def test_pixelate_ours(benchmark):
    frame = make_frame()

    def step():
        y, u, v = views(frame)
        _frames.pixelate(y, 0, 0, W, H, 16)
        _frames.pixelate(u, 0, 0, W // 2, H // 2, 8)
        _frames.pixelate(v, 0, 0, W // 2, H // 2, 8)

    run(benchmark, step)


@pytest.mark.benchmark(group="pixelate")
def test_pixelate_opencv(benchmark):
    frame = make_frame()

    def op(img):
        small = cv2.resize(img, (W // 16, H // 16), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(small, (W, H), interpolation=cv2.INTER_NEAREST)

    run(benchmark, lambda: via_bgr(frame, op))


# ---------------------------------------------------------------- low light

GAMMA_LUT = np.clip(255.0 * (np.arange(256) / 255.0) ** 0.6, 0, 255).astype(np.uint8)


@pytest.mark.benchmark(group="lut")
def test_lut_ours(benchmark):
    frame = make_frame()
    hist = np.zeros(256, np.uint32)

    def step():
        y = views(frame)[0]
        _frames.histogram(y, hist)
        _frames.apply_lut(y, GAMMA_LUT)

    run(benchmark, step)


@pytest.mark.benchmark(group="lut")
def test_lut_opencv(benchmark):
    frame = make_frame()

    def op(img):
        cv2.calcHist([img], [0], None, [256], [0, 256])
        return cv2.LUT(img, GAMMA_LUT)

    run(benchmark, lambda: via_bgr(frame, op))


# ---------------------------------------------------------------- skin smoothing

@pytest.mark.benchmark(group="smooth")
def test_smooth_ours(benchmark):
    frame = make_frame()
    run(benchmark, lambda: _frames.smooth_edge_preserving(views(frame)[0], 4, 12))


@pytest.mark.benchmark(group="smooth")
def test_smooth_opencv(benchmark):
    frame = make_frame()
    run(benchmark, lambda: via_bgr(frame, lambda img: cv2.bilateralFilter(img, 9, 30, 30)))


# ---------------------------------------------------------------- background compositing

MASK = np.zeros((H, W), np.uint8)
MASK[:, : W // 3] = 255
MASK[:, W // 3: W // 3 + 16] = np.linspace(255, 0, 16).astype(np.uint8)


@pytest.mark.benchmark(group="blend")
def test_blend_ours(benchmark):
    frame = make_frame()
    blurred = [v.copy() for v in views(frame)]
    cmask = np.empty((H // 2, W // 2), np.uint8)

    def step():
        y, u, v = views(frame)
        _frames.downscale_mask_2x(MASK, cmask)
        _frames.blend(y, blurred[0], MASK)
        _frames.blend(u, blurred[1], cmask)
        _frames.blend(v, blurred[2], cmask)

    run(benchmark, step)


@pytest.mark.benchmark(group="blend")
def test_blend_opencv(benchmark):
    frame = make_frame()
    blurred = frame.to_ndarray(format="bgr24")

    def op(img):
        m = (MASK.astype(np.float32) / 255.0)[:, :, None]
        return (img * (1.0 - m) + blurred * m + 0.5).astype(np.uint8)

    run(benchmark, lambda: via_bgr(frame, op))
