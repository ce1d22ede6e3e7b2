"""Settings of ``mote train-temporal``: the shared training settings, the stores and memory
budgets of a cached-feature run; no torch, so its ``--help`` is quick."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mote.pipeline.config import run_out_setting, setting, storage_options_setting, store_in_setting
from mote.pipeline.locations import Url
from mote.pipeline.train.train_settings import TrainingSettings, training_setting

COMPILE_HELP = "Compile the fused step with CUDA graphs (torch.compile, CUDA only)."


@dataclass(frozen=True, kw_only=True)
class TrainConfig(TrainingSettings):
    """Settings of ``mote train-temporal``: the shared training settings (and MoTE switches) of
    ``TrainingSettings``, plus the stores and the memory a run of cached features needs."""

    train: Path | Url = store_in_setting("Feature store to train on (mote extract).")
    out: Path = run_out_setting()
    val: Path | Url | None = store_in_setting(
        "Feature store to validate on each epoch and at the end.", None
    )
    storage_options: dict[str, Any] | None = storage_options_setting()
    fused: bool = training_setting(
        True,
        "Run a step's micro-batches in one batched pass (same update as one by one, far fewer "
        "operator calls); --no-fused runs them one by one.",
    )
    compile: bool = training_setting(False, COMPILE_HELP)
    memory_gb: float | None = setting(
        None,
        "Stream the store chunk by chunk when it is larger than this.",
        default_text="half the RAM",
        above=0,
    )
    device_memory_gb: float | None = setting(
        None,
        "Keep the training (and validation) features on the GPU when they take at most this "
        "many GB, so a step gathers its batch there; else batches are copied from pinned "
        "memory (0: never keep them there).",
        default_text="half the GPU memory free at the start",
        min=0,
    )
    allow_partial: bool = setting(
        False, "Train on the done videos of a store that is still being extracted."
    )
    videos: tuple[int, ...] | None = None  # train on these store rows only (few-shot)
    epoch_size: int | None = None  # samples per epoch, repeating the videos (few-shot)
