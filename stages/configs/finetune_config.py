"""Settings of ``mote finetune-e2e``: the shared training settings plus videos, CLIP, decoding
and augmentation; no torch at import, for a quick ``--help``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mote.pipeline import config as shared
from mote.pipeline.config import setting
from mote.pipeline.locations import Url
from mote.pipeline.train.train_settings import TrainingSettings
from mote.pipeline.video.augment import AREA_RANGE

# The training split when --split is not given (k600 ships only its zero-shot test splits).
TRAIN_SPLIT = {
    "k400": "train", "k600": "split1", "ucf101": "train1", "hmdb51": "train1", "ssv2": "train",
}  # fmt: skip


CHECKPOINTED_WIDTH = 768  # ViT-L/14: gradient checkpointing on by default (spec 7)


MAX_WORKERS = 8


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(TrainingSettings):
    """Settings of ``mote finetune-e2e``: the shared training settings (and MoTE switches) of
    ``TrainingSettings``, plus the videos, the CLIP to tune and its decoding."""

    dataset: str = shared.dataset_setting()
    out: Path = shared.run_out_setting()
    root: Path | None = shared.video_root_setting(default_text="the list file's folder (list)")
    allow_outside_root: bool = shared.allow_outside_root_setting()
    split: str | None = setting(
        None,
        "Training split: k400 train (with --list or --kinetics-csv); ucf101/hmdb51 train1-3; "
        "ssv2 train.",
        default_text=", ".join(f"{s} for {d}" for d, s in TRAIN_SPLIT.items()),
    )
    list_file: Path | None = shared.list_file_setting("Training video list", "")
    labels_file: Path | None = shared.labels_file_setting("")
    kinetics_csv: Path | None = shared.kinetics_csv_setting()
    model: str | None = shared.model_setting(carried="the --init-run's (or the run resumed)")
    pretrained: str | None = shared.pretrained_setting(carried="that run's with its model")
    frames: int = setting(8, "Frames per clip T.", min=1)
    val_split: str | None = setting(
        None, "Validation split of the same dataset (1 view, eval sampling, spec 7)."
    )
    val_list: Path | None = setting(None, "Validation video list (instead of --val-split).")
    val_labels: Path | None = setting(
        None, "Validation label CSV.", default_text="the training labels"
    )
    val_root: Path | None = setting(
        None,
        "Folder (or URL prefix) of the validation videos.",
        default_text="--root, else the list's folder",
        url="read",
    )
    val_limit: int | None = setting(
        None,
        "Validate on N videos spread evenly over the list (a quick per-epoch check).",
        min=1,
    )
    grad_checkpointing: bool | None = setting(
        None,
        "Recompute each CLIP block in the backward pass (less memory, same numbers).",
        flag="--grad-checkpointing/--no-grad-checkpointing",
        default_text=f"on for D={CHECKPOINTED_WIDTH} (ViT-L/14), else off",
    )
    workers: int | None = setting(
        None,
        "Decode worker processes per training process (0: decode in the training process).",
        default_text=f"the node's cores / its torchrun processes, up to {MAX_WORKERS}",
        min=0,
    )
    decoder: str = shared.decoder_setting()
    storage_options: dict[str, Any] | None = shared.storage_options_setting()
    flip: str | None = setting(
        None,
        "What spec 7.2's horizontal flip does to a training clip's label: 'keep' it, 'off' (never "
        "flip: for classes whose mirror image is another class), or class-index pairs swapped "
        "on a flip, 'A:B,C:D' (spec 8.3).",
        default_text="the dataset's: ssv2 swaps 86:87,93:94,166:167, others keep",
    )
    min_crop_area: float = setting(
        AREA_RANGE[0],
        "The smallest random-resized training crop, as a share of the frame (spec 7.2: 0.08); "
        "raise it when the action fills a small part of small frames.",
        min=0.01,
        max=1.0,
    )
    init_run: Path | None = setting(
        None, "Warm start: the temporal module and logit scale of a train-temporal run."
    )
    text_from: Path | Url | None = shared.store_in_setting(
        "Take the class text embeddings from this feature store (same CLIP weights).", None
    )
