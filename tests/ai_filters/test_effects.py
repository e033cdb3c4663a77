"""The video effects on real faces (scikit-image's astronaut photo ships in its wheel;
nothing is downloaded) at 640x480 yuv420p."""

from __future__ import annotations

import itertools
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from skimage import data

from mediaserver.ai_filters import EFFECTS, create
from mediaserver.ai_filters.effects import BlurFace, LowLight, PixelateFace
from mediaserver.ai_filters.models import FaceDetector, PersonSegmenter, yuv_planes

W, H = 640, 480
SCALE = 480 / 512  # astronaut (512x512) resized to 480x480, pasted at x = 80
OX = 80
# The astronaut's face in the 512x512 photo, by hand: x 170..300, y 50..190.
FACE = (OX + int(170 * SCALE), int(50 * SCALE), int(130 * SCALE), int(140 * SCALE))
FAR = (slice(330, 480), slice(0, 70))  # grey margin + flag, far from the face
FAR_TEXTURED = (slice(300, 480), slice(90, 200))  # the suit's left arm, far from the face


def astronaut_rgb(dx: int = 0, dy: int = 0, face: bool = True) -> np.ndarray:
    img = cv2.resize(data.astronaut(), (480, 480), interpolation=cv2.INTER_AREA)
    if not face:  # paint the face (and hair) over with the wall's colour
        x, y, w, h = 150, 0, 170, 210
        img[y : y + h, x : x + w] = (196, 182, 170)
    canvas = np.full((H, W, 3), 200, np.uint8)
    canvas[:, OX : OX + 480] = img
    return np.roll(canvas, (dy, dx), axis=(0, 1))


def yuv(rgb: np.ndarray, pts: int = 0) -> av.VideoFrame:
    f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(
        format="yuv420p"
    )
    f.pts = pts
    f.time_base = Fraction(1, 90000)
    return f


def luma(frame: av.VideoFrame) -> np.ndarray:
    return yuv_planes(frame)[0].copy()


def lap_var(y: np.ndarray, rect: tuple[int, int, int, int] | None = None) -> float:
    if rect is not None:
        x, yy, w, h = rect
        y = y[yy : yy + h, x : x + w]
    return float(cv2.Laplacian(y.astype(np.float64), cv2.CV_64F).var())


def detail_kept(before: np.ndarray, after: np.ndarray, rect: tuple[int, int, int, int]) -> float:
    """How much of the original's fine detail (the image minus its gaussian blur,
    sigma 2) is still in `after` over `rect`: their correlation (1 = all of it, ~0 =
    none). Unlike the Laplacian's variance it is not fooled by a mosaic's cell edges."""
    x, y, w, h = rect
    x, y = max(0, x), max(0, y)
    a = before[y : y + h, x : x + w].astype(np.float64)
    b = after[y : y + h, x : x + w].astype(np.float64)
    ha = a - cv2.GaussianBlur(a, (0, 0), 2)
    hb = b - cv2.GaussianBlur(b, (0, 0), 2)
    den = float(np.sqrt((ha * ha).sum() * (hb * hb).sum()))
    return float((ha * hb).sum() / den) if den > 0 else 0.0


def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over the smaller box."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / min(a[2] * a[3], b[2] * b[3])


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="module")
def segmenter() -> PersonSegmenter:
    return PersonSegmenter()


def make(name: str, detector: FaceDetector, segmenter: PersonSegmenter, **kw: object):
    if name in ("pixelate_face", "blur_face"):
        kw.setdefault("detector", detector)
    if name == "blur_background":
        kw.setdefault("segmenter", segmenter)
    return create(name, **kw)


# ------------------------------------------------------------------ models


def test_detector_finds_the_astronaut(detector: FaceDetector) -> None:
    boxes = detector.detect(yuv(astronaut_rgb()))
    assert len(boxes) == 1, boxes
    b = boxes[0]
    assert b.score > 0.6
    assert overlap(b[:4], FACE) > 0.7, (b, FACE)
    assert 60 < b.w < 200 and 60 < b.h < 200


def test_detector_follows_a_moved_face(detector: FaceDetector) -> None:
    b = detector.detect(yuv(astronaut_rgb(dx=-60, dy=40)))[0]
    assert overlap(b[:4], (FACE[0] - 60, FACE[1] + 40, FACE[2], FACE[3])) > 0.7


def test_detector_rgb_entry(detector: FaceDetector) -> None:
    boxes = detector.detect_rgb(astronaut_rgb())
    assert boxes and overlap(boxes[0][:4], FACE) > 0.7


def test_detector_no_face(detector: FaceDetector) -> None:
    assert detector.detect(yuv(astronaut_rgb(face=False))) == []
    assert detector.detect(yuv(np.full((H, W, 3), 128, np.uint8))) == []


def test_segmenter_covers_the_astronaut(segmenter: PersonSegmenter) -> None:
    m = segmenter.mask(yuv(astronaut_rgb()))
    assert m.shape == (H, W) and m.dtype == np.uint8
    x, y, w, h = FACE
    assert m[y + h // 4 : y + 3 * h // 4, x + w // 4 : x + 3 * w // 4].mean() > 220  # face
    assert m[300:400, 250:330].mean() > 220  # chest
    assert m[:, :60].mean() < 20  # the grey margin
    assert m[0:120, 420:560].mean() < 40  # the wall and the shuttle, top right


# ------------------------------------------------------------------ every effect


@pytest.mark.parametrize("name", sorted(EFFECTS))
def test_keeps_size_format_and_timing(
    name: str, detector: FaceDetector, segmenter: PersonSegmenter
) -> None:
    e = make(name, detector, segmenter)
    for i, (w, h, fmt) in enumerate([(W, H, "yuv420p"), (W, H, "rgb24"), (641, 479, "yuv420p")]):
        src = av.VideoFrame.from_ndarray(
            cv2.resize(astronaut_rgb(), (w, h)), format="rgb24"
        )
        frame = src if fmt == "rgb24" else src.reformat(format="yuv420p")
        frame.pts = 3000 * i + 7
        frame.time_base = Fraction(1, 90000)
        if (w, h) != (W, H):
            e.reset()
        out = e.apply(frame)
        assert (out.width, out.height) == (w, h)
        assert out.format.name == "yuv420p"
        assert out.pts == 3000 * i + 7 and out.time_base == Fraction(1, 90000)


def test_registry() -> None:
    assert set(EFFECTS) == {"pixelate_face", "blur_face", "blur_background", "smooth_skin",
                            "low_light"}
    with pytest.raises(ValueError):
        create("sepia")
    assert isinstance(create("low_light"), LowLight)


# ------------------------------------------------------------------ face cover


@pytest.mark.parametrize("cls", [PixelateFace, BlurFace])
def test_face_loses_its_detail_rest_unchanged(cls: type, detector: FaceDetector) -> None:
    e = cls(detector=detector)
    frame = yuv(astronaut_rgb())
    before = [p.copy() for p in yuv_planes(frame)]
    out = e.apply(frame)
    after = yuv_planes(out)
    assert not e.whole_frame
    assert detail_kept(before[0], after[0], FACE) < 0.1
    if cls is BlurFace:
        assert lap_var(after[0], FACE) < lap_var(before[0], FACE) / 20
    # pixels far from the face are untouched, in Y and in U/V
    assert np.array_equal(after[0][FAR_TEXTURED], before[0][FAR_TEXTURED])
    assert np.array_equal(after[0][FAR], before[0][FAR])
    cy, cx = slice(FAR_TEXTURED[0].start // 2, None), slice(FAR_TEXTURED[1].start // 2,
                                                            FAR_TEXTURED[1].stop // 2)
    assert np.array_equal(after[1][cy, cx], before[1][cy, cx])
    assert np.array_equal(after[2][cy, cx], before[2][cy, cx])
    # the face's colour is covered too
    x, y, w, h = FACE
    cr = (x // 2, y // 2, w // 2, h // 2)
    assert detail_kept(before[1], after[1], cr) < 0.2
    assert detail_kept(before[2], after[2], cr) < 0.2


def test_pixelate_blocks_are_coarse(detector: FaceDetector) -> None:
    out = PixelateFace(detector=detector).apply(yuv(astronaut_rgb()))
    x, y, w, h = FACE
    region = yuv_planes(out)[0][y : y + h, x : x + w]
    # a handful of flat cells across the face, not a fine (reversible) mosaic
    assert len(np.unique(region[h // 2])) <= 8
    assert len(np.unique(region[:, w // 2])) <= 8


@pytest.mark.parametrize("cls", [PixelateFace, BlurFace])
def test_moving_face_stays_covered_between_detections(cls: type, detector: FaceDetector) -> None:
    e = cls(detector=detector, detect_every=3)
    for i in range(12):
        dx, dy = -5 * i, 3 * i  # ~ 150 px/s at 30 fps
        out = e.apply(yuv(astronaut_rgb(dx=dx, dy=dy), pts=i))
        face = (FACE[0] + dx, FACE[1] + dy, FACE[2], FACE[3])
        orig = luma(yuv(astronaut_rgb(dx=dx, dy=dy)))
        assert detail_kept(orig, luma(out), face) < 0.15, i


@pytest.mark.parametrize("cls", [PixelateFace, BlurFace])
def test_fail_closed_when_the_face_is_lost(cls: type, detector: FaceDetector) -> None:
    e = cls(detector=detector, detect_every=3, max_misses=2)
    ref = luma(yuv(astronaut_rgb()))
    far = (90, 300, 110, 180)
    for i in range(4):
        e.apply(yuv(astronaut_rgb(), pts=i))
        assert not e.whole_frame
    # the detector stops finding the face (turned away, occluded, model miss): use the
    # real face frames but a detector that sees nothing, so we know what would show
    blind = FaceDetector(min_score=1.01)
    e.detector = blind
    outs = []
    for i in range(4, 20):
        out = e.apply(yuv(astronaut_rgb(), pts=i))
        outs.append(out)
        # never uncovered: the face is covered on every frame
        assert detail_kept(ref, luma(out), FACE) < 0.15, i
    assert e.whole_frame
    # at the end, the whole frame is covered, far from the face too
    assert detail_kept(ref, luma(outs[-1]), far) < 0.15
    # and the face comes back: only the face is covered again
    e.detector = detector
    for i in range(20, 24):
        out = e.apply(yuv(astronaut_rgb(), pts=i))
    assert not e.whole_frame
    assert np.array_equal(luma(out)[FAR_TEXTURED], luma(yuv(astronaut_rgb()))[FAR_TEXTURED])


@pytest.mark.parametrize("cls", [PixelateFace, BlurFace])
def test_fail_closed_from_the_start(cls: type, detector: FaceDetector) -> None:
    e = cls(detector=detector)
    src = yuv(astronaut_rgb(face=False))
    ref = luma(src)
    out = e.apply(src)
    assert e.whole_frame
    assert detail_kept(ref, luma(out), (90, 300, 110, 180)) < 0.15


def test_face_disappears_then_covered(detector: FaceDetector) -> None:
    """A real sequence: face frames, then frames without a face; ends covered."""
    e = PixelateFace(detector=detector, detect_every=3, max_misses=2)
    for i in range(3):
        e.apply(yuv(astronaut_rgb(), pts=i))
    ref = luma(yuv(astronaut_rgb(face=False)))
    for i in range(3, 12):
        out = e.apply(yuv(astronaut_rgb(face=False), pts=i))
    assert e.whole_frame
    assert detail_kept(ref, luma(out), (90, 300, 110, 180)) < 0.15


# ------------------------------------------------------------------ background


def test_blur_background(segmenter: PersonSegmenter) -> None:
    e = create("blur_background", segmenter=segmenter)
    src = yuv(astronaut_rgb())
    before = luma(src)
    for i in range(3):  # the mask is reused on the frames in between
        out = e.apply(yuv(astronaut_rgb(), pts=i))
    after = luma(out)
    bg = (450, 120, 100, 180)  # the shuttle, right
    bg2 = (430, 0, 130, 120)  # wall and shuttle top right
    assert lap_var(after, bg) < lap_var(before, bg) / 5
    assert lap_var(after, bg2) < lap_var(before, bg2) / 5
    x, y, w, h = FACE
    inner = (slice(y + h // 4, y + 3 * h // 4), slice(x + w // 4, x + 3 * w // 4))
    diff = np.abs(after[inner].astype(int) - before[inner].astype(int))
    assert diff.mean() < 3
    chest = (slice(300, 400), slice(250, 330))
    assert np.abs(after[chest].astype(int) - before[chest].astype(int)).mean() < 3


# ------------------------------------------------------------------ looks


def test_smooth_skin_reduces_noise_keeps_edges() -> None:
    rng = np.random.default_rng(1)
    y = np.full((H, W), 120.0)
    y[:, W // 2 :] = 40.0  # a strong edge
    y += rng.normal(0, 4, y.shape)
    y = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    frame = av.VideoFrame(W, H, "yuv420p")
    yv, u, v = yuv_planes(frame)
    yv[...] = y
    u[...] = 128
    v[...] = 128
    out = create("smooth_skin").apply(frame)
    ys = luma(out)
    flat = (slice(100, 380), slice(50, 250))
    assert ys[flat].astype(float).var() < y[flat].astype(float).var() / 3
    # the edge is kept: a few pixels either side keep their levels, and the step is sharp
    assert abs(ys[:, W // 2 - 4].mean() - 120) < 2 and abs(ys[:, W // 2 + 3].mean() - 40) < 2
    assert ys[:, W // 2 - 1].mean() - ys[:, W // 2].mean() > 60


def test_smooth_skin_faces_only(detector: FaceDetector) -> None:
    src = yuv(astronaut_rgb())
    before = luma(src)
    out = create("smooth_skin", faces_only=True, detector=detector).apply(src)
    after = luma(out)
    assert np.array_equal(after[FAR_TEXTURED], before[FAR_TEXTURED])
    assert not np.array_equal(after[FACE[1] : FACE[1] + FACE[3], FACE[0] : FACE[0] + FACE[2]],
                              before[FACE[1] : FACE[1] + FACE[3], FACE[0] : FACE[0] + FACE[2]])


def dark_rgb(k: float = 0.2) -> np.ndarray:
    return np.clip(astronaut_rgb().astype(np.float32) * k, 0, 255).astype(np.uint8)


def test_low_light_brightens() -> None:
    src = yuv(dark_rgb())
    before = luma(src)
    after = luma(create("low_light").apply(src))
    assert after.mean() > before.mean() + 30
    # order kept: the curve is monotonic
    e = LowLight()
    e.apply(yuv(dark_rgb()))
    assert np.all(np.diff(e.lut.astype(int)) >= 0)


def test_low_light_leaves_a_bright_frame_nearly_alone() -> None:
    src = yuv(astronaut_rgb())
    before = luma(src)
    after = luma(create("low_light").apply(src))
    assert abs(after.mean() - before.mean()) < 25


def test_low_light_no_flicker() -> None:
    e = create("low_light")
    means = [luma(e.apply(yuv(dark_rgb(), pts=i))).mean() for i in range(30)]
    assert max(abs(a - b) for a, b in itertools.pairwise(means)) < 0.5
    # a sudden change of the scene's light is followed smoothly, not in one jump
    means2 = [luma(e.apply(yuv(dark_rgb(0.35), pts=i))).mean() for i in range(30, 60)]
    jumps = [abs(a - b) for a, b in zip([means[-1]] + means2, means2)]
    # the curve moves by a fraction of the change a frame: after the scene's own jump,
    # the output drifts smoothly to the new curve
    assert max(jumps[1:]) < 4
    assert means2[-1] != pytest.approx(means2[0], abs=2)  # it did adapt


def test_models_come_from_an_installed_wheel_without_importing_it() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from mediaserver.ai_filters.models import FaceDetector, PersonSegmenter, model_path,"
        " FACE_MODEL, SEGMENTATION_MODEL\n"
        "FaceDetector(); PersonSegmenter()\n"
        "assert 'mediapipe' not in sys.modules\n"
        "print(model_path(FACE_MODEL)); print(model_path(SEGMENTATION_MODEL))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out[0].endswith("face_detection_short_range.tflite")
    assert out[1].endswith("selfie_segmentation_landscape.tflite")
    assert all("site-packages" in p for p in out)
