"""Opt-in video effects (face cover, background blur, skin smoothing, low light).

The registry is in effects.py (EFFECTS, create); the models in models.py.
Importing this package loads nothing heavy: the effects are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .effects import EFFECTS as EFFECTS
    from .effects import Effect as Effect
    from .effects import create as create

__all__ = ["EFFECTS", "Effect", "create"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import effects

        return getattr(effects, name)
    raise AttributeError(name)
