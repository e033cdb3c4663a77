"""Opt-in video effects (face cover, background blur, skin smoothing, low light).

The registry is in effects.py (EFFECTS, create); the models in models.py.
Importing this package loads nothing heavy: the effects are imported on first use.
They need the optional 'effects' extra (OpenCV, LiteRT) and the model wheel; the
server runs without them, so nothing outside this package imports effects.py or
models.py at import time: `registry()` does, and says what is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .effects import EFFECTS as EFFECTS
    from .effects import Effect as Effect
    from .effects import create as create

__all__ = ["EFFECTS", "Effect", "EffectsUnavailable", "check_face_cover", "create", "registry"]

EXTRA_HINT = "pip install 'mediaserver[effects]' and pip install --no-deps mediapipe==0.10.21"


class EffectsUnavailable(RuntimeError):
    """The effects cannot run here: a module, the runtime or a model is missing."""


def registry() -> dict[str, type[Effect]]:
    """The effects by name, importing their modules (OpenCV, NumPy) now.

    Raises:
        EffectsUnavailable: the 'effects' extra is not installed.
    """
    try:
        from . import effects
    except ImportError as exc:
        raise EffectsUnavailable(f"{_one_line(exc)} ({EXTRA_HINT})") from None
    return effects.EFFECTS


def check_face_cover() -> None:
    """Build one face cover, as mutual reveal needs for every match: its modules,
    the LiteRT runtime and the face model all load.

    Raises:
        EffectsUnavailable: one of them does not (the message says which).
    """
    cover = registry()["pixelate_face"]
    try:
        cover()
    except Exception as exc:  # ModelsUnavailable, ImportError, a model that does not load
        raise EffectsUnavailable(f"{_one_line(exc)} ({EXTRA_HINT})") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def __getattr__(name: str) -> Any:
    if name in ("EFFECTS", "Effect", "create"):
        from . import effects

        return getattr(effects, name)
    raise AttributeError(name)
