"""The video effects: one small stateful class per effect, one instance per stream.

Each effect's ``apply(frame)`` takes a decoded yuv420p ``av.VideoFrame`` and returns
a frame of the same size and format with the same pts/time_base (the same object:
the work is done in place on its planes by the Cython kernels in
``mediaserver._frames``, which release the GIL). A frame of another format is first
reformatted to yuv420p.

Anonymity (DESIGN, "The effects path"): faces are covered with very coarse blocks or
a heavy multi-pass blur, with a margin around the box, and the face effects fail
closed: until a face has been found, and after a few detections in a row find none,
the whole frame is covered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import av
import numpy as np
import numpy.typing as npt

from mediaserver import _frames

from .models import U8, Box, FaceDetector, PersonSegmenter, expand, yuv_planes

__all__ = [
    "EFFECTS",
    "BlurBackground",
    "BlurFace",
    "Effect",
    "LowLight",
    "PixelateFace",
    "SmoothSkin",
    "create",
]


def writable_yuv420p(frame: av.VideoFrame) -> av.VideoFrame:
    """The frame as yuv420p whose buffers this stream may write (a decoder may keep a
    reference to its output for prediction: make_writable copies only if shared)."""
    if frame.format.name != "yuv420p":
        out = frame.reformat(format="yuv420p")
        out.pts, out.time_base = frame.pts, frame.time_base
        return out
    frame.make_writable()
    return frame


class Effect:
    """Base class: `apply(frame) -> frame`, stateful per stream."""

    name: ClassVar[str] = ""

    def apply(self, frame: av.VideoFrame) -> av.VideoFrame:
        frame = writable_yuv420p(frame)
        self.process(*yuv_planes(frame))
        return frame

    def process(self, y: U8, u: U8, v: U8) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the stream's state (e.g. after a resolution change)."""


# ------------------------------------------------------------------ face cover


@dataclass
class _Track:
    box: Box
    seen: int  # frame index of the last detection that matched it


def _centre_close(a: Box, b: Box) -> bool:
    ax, ay = a.x + a.w / 2, a.y + a.h / 2
    bx, by = b.x + b.w / 2, b.y + b.h / 2
    return abs(ax - bx) < max(a.w, b.w) and abs(ay - by) < max(a.h, b.h)


@dataclass
class _FaceCover(Effect):
    """Detect every `detect_every` frames; cover tracked boxes in between.

    margin: grown on each side of a box, as a fraction of its size;
    margin_growth: added per frame since the box was last confirmed by a detection,
    up to max_margin (the face may move between detections);
    max_misses: detections in a row that find no face before the whole frame is
    covered (it is covered too until a first face is found).
    """

    detect_every: int = 3
    margin: float = 0.25
    margin_growth: float = 0.05
    max_margin: float = 1.0
    max_misses: int = 2
    detector: FaceDetector | None = None

    frame_index: int = field(default=0, init=False)
    tracks: list[_Track] = field(default_factory=list, init=False)
    misses: int = field(default=0, init=False)
    found_once: bool = field(default=False, init=False)
    whole_frame: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise ValueError("detect_every must be >= 1")
        if self.detector is None:
            self.detector = FaceDetector()

    def reset(self) -> None:
        self.frame_index = 0
        self.tracks = []
        self.misses = 0
        self.found_once = False
        self.whole_frame = False

    def _update(self, y: U8, u: U8, v: U8) -> None:
        assert self.detector is not None
        i = self.frame_index
        if i % self.detect_every != 0 and not self.whole_frame:
            return
        boxes = self.detector.detect_planes(y, u, v)
        if not boxes:
            self.misses += 1
            # keep the last boxes (with a growing margin) until max_misses
            if self.misses >= self.max_misses or not self.found_once:
                self.tracks = []
            return
        self.misses = 0
        self.found_once = True
        kept: list[_Track] = []
        for b in boxes:
            kept.append(_Track(b, i))
        for t in self.tracks:  # a tracked face the detector lost this time: keep it a while
            if i - t.seen <= self.max_misses * self.detect_every and not any(
                _centre_close(t.box, b) for b in boxes
            ):
                kept.append(t)
        self.tracks = kept

    def process(self, y: U8, u: U8, v: U8) -> None:
        self._update(y, u, v)
        fh, fw = y.shape
        # fail closed: no tracked face (none found yet, or max_misses detections in a
        # row found none) means the whole frame is covered
        self.whole_frame = not self.tracks
        if self.whole_frame:
            self.cover_all(y, u, v)
        else:
            for t in self.tracks:
                age = self.frame_index - t.seen
                m = min(self.max_margin, self.margin + self.margin_growth * age)
                x, yy, w, h = expand(t.box, m, fw, fh)
                if w > 0 and h > 0:
                    self.cover(y, u, v, x, yy, w, h)
        self.frame_index += 1

    def cover(self, y: U8, u: U8, v: U8, x: int, yy: int, w: int, h: int) -> None:
        raise NotImplementedError

    def cover_all(self, y: U8, u: U8, v: U8) -> None:
        raise NotImplementedError


@dataclass
class PixelateFace(_FaceCover):
    """Very coarse blocks: `blocks_across` cells over the covered width (>= min_block
    pixels each), so a face is a handful of flat cells, not a reversible mosaic."""

    name: ClassVar[str] = "pixelate_face"
    blocks_across: int = 6
    min_block: int = 16
    whole_frame_block: int = 64

    def cover(self, y: U8, u: U8, v: U8, x: int, yy: int, w: int, h: int) -> None:
        block = max(self.min_block, math.ceil(max(w, h) / self.blocks_across))
        block += block & 1
        _frames.pixelate(y, x, yy, w, h, block)
        hb = block // 2
        _frames.pixelate(u, x // 2, yy // 2, (w + 1) // 2, (h + 1) // 2, hb)
        _frames.pixelate(v, x // 2, yy // 2, (w + 1) // 2, (h + 1) // 2, hb)

    def cover_all(self, y: U8, u: U8, v: U8) -> None:
        b = self.whole_frame_block
        _frames.pixelate(y, 0, 0, y.shape[1], y.shape[0], b)
        _frames.pixelate(u, 0, 0, u.shape[1], u.shape[0], b // 2)
        _frames.pixelate(v, 0, 0, v.shape[1], v.shape[0], b // 2)


@dataclass
class BlurFace(_FaceCover):
    """A heavy blur: three box passes (~ a gaussian of sigma = radius) with a radius
    of a quarter of the covered width, so no feature of the face survives."""

    name: ClassVar[str] = "blur_face"
    radius_fraction: float = 0.25
    min_radius: int = 8
    passes: int = 3
    whole_frame_radius: int = 40

    def cover(self, y: U8, u: U8, v: U8, x: int, yy: int, w: int, h: int) -> None:
        r = max(self.min_radius, int(max(w, h) * self.radius_fraction))
        _frames.box_blur_rect(y, x, yy, w, h, r, self.passes)
        cx, cy, cw, ch = x // 2, yy // 2, (w + 1) // 2, (h + 1) // 2
        _frames.box_blur_rect(u, cx, cy, cw, ch, max(1, r // 2), self.passes)
        _frames.box_blur_rect(v, cx, cy, cw, ch, max(1, r // 2), self.passes)

    def cover_all(self, y: U8, u: U8, v: U8) -> None:
        r = self.whole_frame_radius
        _frames.box_blur(y, r, self.passes)
        _frames.box_blur(u, r // 2, self.passes)
        _frames.box_blur(v, r // 2, self.passes)


# ------------------------------------------------------------ background blur


@dataclass
class BlurBackground(Effect):
    """Blur everything but the person: the segmentation mask (recomputed every
    `mask_every` frames) blends the heavily blurred frame over the sharp one, Y at full
    resolution and U/V with the mask downscaled 2x."""

    name: ClassVar[str] = "blur_background"
    mask_every: int = 2
    radius: int = 12
    passes: int = 2
    segmenter: PersonSegmenter | None = None

    frame_index: int = field(default=0, init=False)
    _bg: U8 | None = field(default=None, init=False, repr=False)  # 255 = background
    _bg_c: U8 | None = field(default=None, init=False, repr=False)
    _scratch: list[U8] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mask_every < 1:
            raise ValueError("mask_every must be >= 1")
        if self.segmenter is None:
            self.segmenter = PersonSegmenter()

    def reset(self) -> None:
        self.frame_index = 0
        self._bg = self._bg_c = None
        self._scratch = []

    def process(self, y: U8, u: U8, v: U8) -> None:
        assert self.segmenter is not None
        stale = self._bg is None or self._bg.shape != y.shape
        if stale or self.frame_index % self.mask_every == 0:
            person = self.segmenter.mask_planes(y, u, v)
            bg = np.subtract(255, person, dtype=np.uint8)
            bg_c = np.empty(u.shape, np.uint8)
            _frames.downscale_mask_2x(bg, bg_c)
            self._bg, self._bg_c = bg, bg_c
            self._scratch = [np.empty(y.shape, np.uint8), np.empty(u.shape, np.uint8),
                             np.empty(v.shape, np.uint8)]
        assert self._bg is not None and self._bg_c is not None
        for plane, tmp, mask, r in (
            (y, self._scratch[0], self._bg, self.radius),
            (u, self._scratch[1], self._bg_c, max(1, self.radius // 2)),
            (v, self._scratch[2], self._bg_c, max(1, self.radius // 2)),
        ):
            np.copyto(tmp, plane)
            _frames.box_blur(tmp, r, self.passes)
            _frames.blend(plane, tmp, mask)  # plane = sharp*(1-bg) + blurred*bg
        self.frame_index += 1


# ------------------------------------------------------------------ looks


@dataclass
class SmoothSkin(Effect):
    """Edge-preserving smoothing of the luma plane (a self-guided filter): flat,
    low-contrast areas such as skin are smoothed, edges kept. With faces_only, only
    inside the face boxes (detected every `detect_every` frames)."""

    name: ClassVar[str] = "smooth_skin"
    radius: int = 4
    threshold: int = 14
    faces_only: bool = False
    detect_every: int = 3
    margin: float = 0.2
    detector: FaceDetector | None = None

    frame_index: int = field(default=0, init=False)
    _boxes: list[Box] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.faces_only and self.detector is None:
            self.detector = FaceDetector()

    def reset(self) -> None:
        self.frame_index = 0
        self._boxes = []

    def process(self, y: U8, u: U8, v: U8) -> None:
        if not self.faces_only:
            _frames.smooth_edge_preserving(y, self.radius, self.threshold)
            return
        assert self.detector is not None
        if self.frame_index % self.detect_every == 0:
            self._boxes = self.detector.detect_planes(y, u, v)
        self.frame_index += 1
        fh, fw = y.shape
        for b in self._boxes:
            x, yy, w, h = expand(b, self.margin, fw, fh)
            if w > 0 and h > 0:
                _frames.smooth_edge_preserving(y[yy : yy + h, x : x + w], self.radius,
                                               self.threshold)


@dataclass
class LowLight(Effect):
    """Brighten a dark picture with a tone curve on luma from the frame's own
    histogram: black point at a low percentile, white point at a high one (never
    below `min_white`, so a dark room is stretched up), and a gamma that brings the
    mean luma towards `target`. The curve's parameters follow an exponential moving
    average (`smoothing` per frame), so the picture does not flicker."""

    name: ClassVar[str] = "low_light"
    target: float = 0.45  # wanted mean, in 0..1 of the video range 16..235
    low_pct: float = 0.01
    high_pct: float = 0.995
    min_gamma: float = 0.35
    max_gamma: float = 1.0
    max_gain_black: float = 24.0  # black point moves at most this far above 16
    smoothing: float = 0.15
    lut_epsilon: float = 1e-3

    params: tuple[float, float, float] | None = field(default=None, init=False)
    lut: npt.NDArray[np.uint8] = field(
        default_factory=lambda: np.arange(256, dtype=np.uint8), init=False, repr=False)
    _lut_params: tuple[float, float, float] | None = field(default=None, init=False, repr=False)

    LO: ClassVar[float] = 16.0
    HI: ClassVar[float] = 235.0

    def reset(self) -> None:
        self.params = None
        self._lut_params = None

    def measure(self, hist: npt.NDArray[np.uint32]) -> tuple[float, float, float]:
        """(black, white, gamma) wanted for this histogram."""
        total = float(hist.sum())
        if total <= 0:
            return (self.LO, self.HI, 1.0)
        cdf = np.cumsum(hist, dtype=np.float64) / total
        black = float(np.searchsorted(cdf, self.low_pct))
        white = float(np.searchsorted(cdf, self.high_pct))
        black = min(max(black, self.LO), self.LO + self.max_gain_black)
        white = max(white, black + 40.0, self.LO + 0.5 * (self.HI - self.LO))
        white = min(white, self.HI)
        mean = float(np.dot(np.arange(256), hist)) / total
        m = (mean - black) / (white - black)
        m = min(max(m, 1e-3), 0.999)
        gamma = math.log(self.target) / math.log(m)
        gamma = min(max(gamma, self.min_gamma), self.max_gamma)
        return (black, white, gamma)

    def _build_lut(self, black: float, white: float, gamma: float) -> None:
        x = (np.arange(256, dtype=np.float64) - black) / (white - black)
        x = np.clip(x, 0.0, 1.0) ** gamma
        out = self.LO + x * (self.HI - self.LO)
        # values above white (highlights) keep their place above the range
        out = np.where(np.arange(256) > white, np.maximum(out, np.arange(256)), out)
        self.lut = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        self._lut_params = (black, white, gamma)

    def process(self, y: U8, u: U8, v: U8) -> None:
        want = self.measure(_frames.histogram(y))
        if self.params is None:
            self.params = want
        else:
            a = self.smoothing
            self.params = (
                self.params[0] + a * (want[0] - self.params[0]),
                self.params[1] + a * (want[1] - self.params[1]),
                self.params[2] + a * (want[2] - self.params[2]),
            )
        p, q = self.params, self._lut_params
        if q is None or max(abs(p[0] - q[0]) / 255, abs(p[1] - q[1]) / 255,
                            abs(p[2] - q[2])) > self.lut_epsilon:
            self._build_lut(*p)
        _frames.apply_lut(y, self.lut)


# ------------------------------------------------------------------ registry

EFFECTS: dict[str, type[Effect]] = {
    cls.name: cls for cls in (PixelateFace, BlurFace, BlurBackground, SmoothSkin, LowLight)
}


def create(name: str, **options: object) -> Effect:
    """A new instance (one per stream) of the effect registered as `name`."""
    try:
        cls = EFFECTS[name]
    except KeyError:
        raise ValueError(f"unknown effect {name!r}; known: {', '.join(sorted(EFFECTS))}") from None
    return cls(**options)
