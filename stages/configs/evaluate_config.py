"""Settings of ``mote evaluate``: a run, a store and the TFM switches to score it with
(imports nothing heavy: ``--help`` builds its options from this module alone)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mote.pipeline.config import Settings, best_setting, setting, store_in_setting
from mote.pipeline.locations import Url
from mote.stages.configs.scoring_config import with_scoring_settings


@dataclass(frozen=True)
@with_scoring_settings
class EvaluateConfig(Settings):
    store: Path | Url = store_in_setting("Feature store to score (any view layout).")
    tfm: bool = setting(True, "Temporal Feature Modulation.")
    best: bool = best_setting()
    save_predictions: Path | None = setting(
        None, "Write per-video scores, per-view logits and rho (.safetensors/.npz)."
    )
    per_class: bool = setting(
        False,
        "Also per-class top-1 and video counts, and the confusion matrix (rows: true class) "
        "with class names, in the result and the predictions file.",
    )
