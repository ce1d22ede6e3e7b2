"""Settings of ``mote evaluate``: a run, a store and the TFM switches to score it with
(imports nothing heavy: ``--help`` builds its options from this module alone)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mote.pipeline.config import (
    Settings,
    device_setting,
    scored_run_setting,
    setting,
    storage_options_setting,
    store_in_setting,
    tfm_override_setting,
)
from mote.pipeline.locations import Url
from mote.pipeline.temporal.config import MoTEConfig


@dataclass(frozen=True)
class EvaluateConfig(Settings):
    run: Path = scored_run_setting()
    store: Path | Url = store_in_setting("Feature store to score (any view layout).")
    tfm: bool = setting(True, "Temporal Feature Modulation.")
    best: bool = setting(False, "Use the best-validation weights, not the last.")
    tfm_gamma: float | None = tfm_override_setting("tfm_gamma", MoTEConfig)
    tfm_k: int | None = tfm_override_setting("tfm_k", MoTEConfig)
    device: str = device_setting()
    storage_options: dict[str, Any] | None = storage_options_setting()
    save_predictions: Path | None = setting(
        None, "Write per-video scores, per-view logits and rho (.safetensors/.npz)."
    )
    per_class: bool = setting(
        False,
        "Also per-class top-1 and video counts, and the confusion matrix (rows: true class) "
        "with class names, in the result and the predictions file.",
    )
