"""Face detection (BlazeFace short range) and person segmentation (MediaPipe selfie
segmentation, landscape) on decoded YUV420 frames.

The model files ship inside a PyPI wheel, nothing is downloaded at run time: the
mediapipe 0.10.21 wheel, installed with ``pip install --no-deps`` and used only as a
carrier of its ``.tflite`` files (mediapipe itself is never imported: it needs
numpy<2). They run on LiteRT (``ai-edge-litert``, XNNPACK, one thread); OpenCV 5's
``cv2.dnn`` was measured slower and cannot return BlazeFace's two heads (docs/effects.md).

Inputs are made from the Y/U/V planes with the least conversion: each plane is
downscaled to the model's size first (cv2.resize, INTER_AREA), then the small I420
image is converted to RGB (BT.601, cv2.cvtColor) and scaled to float.
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import av
import cv2
import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

FACE_MODEL = "modules/face_detection/face_detection_short_range.tflite"
SEGMENTATION_MODEL = "modules/selfie_segmentation/selfie_segmentation_landscape.tflite"
MODEL_CARRIER = "mediapipe"  # mediapipe==0.10.21, installed with --no-deps


class ModelsUnavailable(RuntimeError):
    """The wheel carrying the model files (or a runtime to run them) is not installed."""


class Box(NamedTuple):
    """A face box in frame pixels."""

    x: float
    y: float
    w: float
    h: float
    score: float


def model_path(rel: str) -> str:
    """Path of a model file inside the carrier wheel, found without importing it."""
    override = os.environ.get("MEDIASERVER_MODEL_DIR")
    if override:
        path = os.path.join(override, os.path.basename(rel))
        if os.path.isfile(path):
            return path
    spec = importlib.util.find_spec(MODEL_CARRIER)  # locates the package, runs nothing
    if spec is None or spec.origin is None:
        raise ModelsUnavailable(
            "the effects' models ship in the mediapipe 0.10.21 wheel: "
            "pip install --no-deps mediapipe==0.10.21"
        )
    path = os.path.join(os.path.dirname(spec.origin), rel)
    if not os.path.isfile(path):
        raise ModelsUnavailable(f"{rel} is missing from the installed {MODEL_CARRIER} wheel")
    return path


def plane_view(plane: av.video.plane.VideoPlane) -> U8:
    """A writable 2-D uint8 view of a PyAV plane, honouring line_size."""
    w, h = plane.width, plane.height
    buf: Any = plane  # PyAV planes expose the (writable) buffer protocol
    arr: U8 = np.frombuffer(buf, np.uint8).reshape(h, plane.line_size)[:, :w]
    return arr


def yuv_planes(frame: av.VideoFrame) -> tuple[U8, U8, U8]:
    p = frame.planes
    return plane_view(p[0]), plane_view(p[1]), plane_view(p[2])


def small_rgb(
    y: U8, u: U8, v: U8, width: int, height: int, interpolation: int = cv2.INTER_AREA
) -> U8:
    """Downscale the three planes to width x height (even) and convert that small
    I420 image to RGB; width x height must be even."""
    i420 = np.empty((height * 3 // 2, width), np.uint8)
    cv2.resize(y, (width, height), dst=i420[:height], interpolation=interpolation)
    cw, ch = width // 2, height // 2
    uu = cv2.resize(u, (cw, ch), interpolation=interpolation)
    vv = cv2.resize(v, (cw, ch), interpolation=interpolation)
    chroma = i420[height:].reshape(-1)
    chroma[: cw * ch] = uu.reshape(-1)
    chroma[cw * ch :] = vv.reshape(-1)
    rgb = cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
    return np.asarray(rgb, np.uint8)


class _Runner:
    """One .tflite model on LiteRT (XNNPACK, one thread): NHWC float32 in, outputs by name."""

    def __init__(self, path: str, outputs: tuple[str, ...] = ()) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-untyped]
        except ImportError:
            raise ModelsUnavailable("the effects need ai-edge-litert (the 'effects' extra)") from None
        self._lock = threading.Lock()
        it: Any = Interpreter(model_path=path, num_threads=1)
        it.allocate_tensors()
        inp = it.get_input_details()[0]
        self.input_shape = tuple(int(s) for s in inp["shape"])
        by_name = {d["name"]: d["index"] for d in it.get_output_details()}
        names = outputs or tuple(by_name)
        index = inp["index"]

        def run(x: F32) -> dict[str, F32]:
            it.set_tensor(index, x)
            it.invoke()
            return {n: it.get_tensor(by_name[n]) for n in names}

        self._run: Callable[[F32], dict[str, F32]] = run

    def __call__(self, x: F32) -> dict[str, F32]:
        with self._lock:  # one interpreter is not re-entrant
            return self._run(x)


def _ssd_anchors() -> F32:
    """The 896 anchor centres (x, y) of BlazeFace short range (128x128 input; strides
    8, 16, 16, 16; 2 anchors per cell at stride 8 and 6 at stride 16; fixed size 1)."""
    centres: list[tuple[float, float]] = []
    for grid, per_cell in ((16, 2), (8, 6)):
        for row in range(grid):
            for col in range(grid):
                for _ in range(per_cell):
                    centres.append(((col + 0.5) / grid, (row + 0.5) / grid))
    return np.asarray(centres, np.float32)


def _iou(a: Box, b: Box) -> float:
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


@dataclass
class FaceDetector:
    """BlazeFace short range (faces within ~2 m of the camera, the webcam case)."""

    min_score: float = 0.5
    nms_iou: float = 0.3

    SIZE = 128

    def __post_init__(self) -> None:
        self._runner = _Runner(model_path(FACE_MODEL), ("regressors", "classificators"))
        self._anchors = _ssd_anchors()

    def detect(self, frame: av.VideoFrame) -> list[Box]:
        """Faces in a yuv420p frame, as boxes in frame pixels, best first."""
        y, u, v = yuv_planes(frame)
        return self.detect_planes(y, u, v)

    def detect_planes(self, y: U8, u: U8, v: U8) -> list[Box]:
        fh, fw = y.shape
        s = self.SIZE
        # Letterbox: keep the aspect ratio, pad with black to a square.
        scale = s / max(fw, fh)
        sw = max(2, round(fw * scale) // 2 * 2)
        sh = max(2, round(fh * scale) // 2 * 2)
        rgb = small_rgb(y, u, v, sw, sh)
        x = np.zeros((1, s, s, 3), np.float32)
        ox, oy = (s - sw) // 2, (s - sh) // 2
        x[0, oy : oy + sh, ox : ox + sw] = rgb.astype(np.float32) * (2.0 / 255.0) - 1.0
        return self._decode(self._runner(x), fw, fh, ox, oy, sw, sh)

    def detect_rgb(self, rgb: U8) -> list[Box]:
        """Faces in an RGB image (any size)."""
        fh, fw = rgb.shape[:2]
        s = self.SIZE
        scale = s / max(fw, fh)
        sw, sh = max(1, round(fw * scale)), max(1, round(fh * scale))
        small = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
        x = np.zeros((1, s, s, 3), np.float32)
        ox, oy = (s - sw) // 2, (s - sh) // 2
        x[0, oy : oy + sh, ox : ox + sw] = small.astype(np.float32) * (2.0 / 255.0) - 1.0
        return self._decode(self._runner(x), fw, fh, ox, oy, sw, sh)

    def _decode(
        self, out: dict[str, F32], fw: int, fh: int, ox: int, oy: int, sw: int, sh: int
    ) -> list[Box]:
        raw = out["regressors"].reshape(-1, 16)
        logits = np.clip(out["classificators"].reshape(-1), -80.0, 80.0)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = np.nonzero(scores >= self.min_score)[0]
        if keep.size == 0:
            return []
        s = float(self.SIZE)
        a = self._anchors[keep]
        r = raw[keep]
        cx = r[:, 0] / s + a[:, 0]
        cy = r[:, 1] / s + a[:, 1]
        w = r[:, 2] / s
        h = r[:, 3] / s
        # from the padded square (0..1) to frame pixels
        kx, ky = s / sw * fw, s / sh * fh
        x0 = (cx - w / 2) * s - ox
        y0 = (cy - h / 2) * s - oy
        cand = [
            Box(float(x0[i] / s * kx), float(y0[i] / s * ky), float(w[i] * kx), float(h[i] * ky),
                float(scores[keep[i]]))
            for i in np.argsort(-scores[keep])
        ]
        result: list[Box] = []
        for b in cand:  # greedy NMS, best score first
            if b.w > 0 and b.h > 0 and all(_iou(b, k) < self.nms_iou for k in result):
                result.append(b)
        return result


@dataclass
class PersonSegmenter:
    """MediaPipe selfie segmentation, landscape (256x144 input)."""

    WIDTH = 256
    HEIGHT = 144

    def __post_init__(self) -> None:
        self._runner = _Runner(model_path(SEGMENTATION_MODEL))

    def mask(self, frame: av.VideoFrame) -> U8:
        """uint8 person mask (255 = person) at the frame's size."""
        y, u, v = yuv_planes(frame)
        return self.mask_planes(y, u, v)

    def small_mask(self, y: U8, u: U8, v: U8) -> F32:
        """The model's own 256x144 probability map (0..1)."""
        # INTER_LINEAR: 640x480 -> 256x144 is no integer ratio, where INTER_AREA is slow
        rgb = small_rgb(y, u, v, self.WIDTH, self.HEIGHT, cv2.INTER_LINEAR)
        x = (rgb.astype(np.float32) * (1.0 / 255.0))[None]
        out = next(iter(self._runner(x).values()))
        prob: F32 = out.reshape(self.HEIGHT, self.WIDTH).astype(np.float32, copy=False)
        if prob.min() < 0.0 or prob.max() > 1.0:  # logits, not probabilities
            prob = (1.0 / (1.0 + np.exp(-prob))).astype(np.float32)
        return prob

    def mask_planes(self, y: U8, u: U8, v: U8) -> U8:
        prob = self.small_mask(y, u, v)
        fh, fw = y.shape
        small8 = np.empty(prob.shape, np.uint8)
        np.multiply(prob, 255.0, out=prob)
        np.rint(prob, out=prob)
        small8[...] = prob
        m = cv2.resize(small8, (fw, fh), interpolation=cv2.INTER_LINEAR)
        return np.asarray(m, np.uint8)


def expand(box: Box, margin: float, fw: int, fh: int, even: bool = True) -> tuple[int, int, int, int]:
    """The box grown by `margin` of its size on each side, clipped to the frame, as
    integer (x, y, w, h); with even=True, x/y/w/h are even (so the U/V rectangle
    at half resolution covers exactly the same pixels)."""
    mx, my = box.w * margin, box.h * margin
    x0 = max(0, math.floor(box.x - mx))
    y0 = max(0, math.floor(box.y - my))
    x1 = min(fw, math.ceil(box.x + box.w + mx))
    y1 = min(fh, math.ceil(box.y + box.h + my))
    if even:
        x0, y0 = x0 & ~1, y0 & ~1
        x1 = min(fw, x1 + (x1 & 1))
        y1 = min(fh, y1 + (y1 & 1))
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)
