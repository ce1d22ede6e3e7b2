"""Settings of ``mote demo``: where to write, how many videos, epochs and the seed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mote.pipeline.config import Settings, seed_setting, setting


@dataclass(frozen=True)
class DemoConfig(Settings):
    workdir: Path = setting(Path("mote-demo"), "Where to write videos and stores.")
    videos_per_class: int = setting(24, "Generated videos per class.", min=4)
    epochs: int = setting(100, "Training epochs.", min=1)
    seed: int = seed_setting("Seed of the videos and the runs.")
    decode_workers: int | None = None
    e2e_epochs: int = 3  # finetune-e2e epochs of the last step (0: skip it)
