"""Settings of ``mote fewshot``: the K-shot protocol's stores, shots and seeds, plus every
train-temporal setting nested; nothing heavy is imported."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mote.pipeline.config import (
    Settings,
    device_setting,
    seed_setting,
    setting,
    storage_options_setting,
    store_in_setting,
)
from mote.pipeline.locations import Url
from mote.stages.configs.train_config import TrainConfig


@dataclass(frozen=True)
class FewShotConfig(Settings):
    train: Path | Url = store_in_setting("Store to draw the K shots per class from.")
    test: Path | Url = store_in_setting("Store to evaluate on (single view).")
    out: Path = setting(help="Folder for the runs and fewshot.json.")
    shots: tuple[int, ...] = setting((2, 4, 8, 16), "K values, comma-separated.", min=1)
    seeds: tuple[int, ...] = seed_setting("Sampling/training seeds per K, each", (0, 1, 2))
    epochs: int = setting(
        10, "Training epochs per run: 10 for UCF101/HMDB51, 2 for SSv2 (spec 8.3).", min=1
    )
    device: str = device_setting()
    storage_options: dict[str, Any] | None = storage_options_setting()
    # Every other train-temporal setting (arch, lr, MoTE switches, ...) is a fewshot flag too;
    # the K-shot protocol sets these per run itself.
    training: TrainConfig | None = dataclasses.field(
        default=None,
        metadata={
            "nested": TrainConfig,
            "fixed": ("val", "seed", "resume", "stop_after_epochs", "tfm"),
        },
    )
