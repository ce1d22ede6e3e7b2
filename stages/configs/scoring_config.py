"""The settings every command that scores a run on stored features shares (evaluate, zeroshot,
embed): the run first; TFM's two overrides, the device and the storage options after the
command's own, so each is declared once and reads the same in every ``--help``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mote.pipeline.config import (
    device_setting,
    scored_run_setting,
    storage_options_setting,
    tfm_override_setting,
)
from mote.pipeline.temporal.temporal_config import MoTEConfig

MEAN_POOLING = "CLIP mean pooling of the stored frames (no training needed)."


def with_scoring_settings(cls: type | None = None, *, run_optional: bool = False):
    """Add the shared fields to a settings class (before ``@dataclass`` makes it one); with
    ``run_optional`` the run may be left out (``mote embed``: CLIP mean pooling instead)."""
    if cls is None:
        return lambda c: with_scoring_settings(c, run_optional=run_optional)
    own = cls.__annotations__
    cls.__annotations__ = {"run": Path | None if run_optional else Path, **own}
    cls.run = scored_run_setting(MEAN_POOLING if run_optional else None)
    shared = {
        "tfm_gamma": (float | None, tfm_override_setting("tfm_gamma", MoTEConfig)),
        "tfm_k": (int | None, tfm_override_setting("tfm_k", MoTEConfig)),
        "device": (str, device_setting()),
        "storage_options": (dict[str, Any] | None, storage_options_setting()),
    }
    for name, (kind, field) in shared.items():
        cls.__annotations__[name] = kind
        setattr(cls, name, field)
    return cls
