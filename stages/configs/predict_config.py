"""Settings of ``mote predict``: the run, the videos to label, the vocabulary and decoding;
no torch here (stages/predict.py imports it when labelling)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mote.pipeline.config import (
    Settings,
    batch_size_setting,
    decode_timeout_setting,
    decode_workers_setting,
    decoder_setting,
    device_setting,
    setting,
    storage_options_setting,
    strict_setting,
)
from mote.pipeline.video.files import VIDEO_EXTENSIONS

RUN_CLASSES = "the run's classes"  # what predict scores against without --classes or --labels
DEFAULT_FRAMES = 8  # the paper's T, for runs that do not record their training frames


@dataclass(frozen=True)
class PredictConfig(Settings):
    """Everything ``mote predict`` needs; flags and ``--config`` keys use these names."""

    run: Path = setting(
        help="Run folder: train-temporal, import-reference (with clip. weights) or finetune-e2e."
    )
    videos: tuple[Path, ...] = setting(
        (),
        "Video files, or folders of them ("
        + ", ".join(e[1:] for e in VIDEO_EXTENSIONS)
        + "); URLs too (s3://bucket/x.mp4, or a prefix s3://bucket/videos).",
        argument=True,
        metavar="VIDEO",
        url="read",
    )
    recursive: bool = setting(False, "Look for videos in the subfolders of folder arguments.")
    top_k: int = setting(5, "Classes to show per video.", min=1)
    classes: str | None = setting(
        None,
        "Open vocabulary: comma-separated class names to score against instead of the run's "
        "classes (text templates and TFM, the zero-shot path).",
        default_text=RUN_CLASSES,
    )
    labels_file: Path | None = setting(
        None,
        "Open vocabulary from an 'id,name' label CSV (like --classes).",
        flag="--labels",
        default_text=RUN_CLASSES,
    )
    frames: int | None = setting(
        None,
        "Frames per view T.",
        default_text=f"the run's training frames, {DEFAULT_FRAMES} when it records none",
        min=1,
    )
    views: str = setting("1x1", "CLIPSxCROPS: 1x1, 3x1, 4x3; the views are fused (spec 8.1).")
    tfm: bool = setting(True, "Temporal Feature Modulation (the run's fine-tuning text bank).")
    device: str = device_setting()
    batch_size: int | None = batch_size_setting()
    decode_workers: int | None = decode_workers_setting("one per core, at most one per video")
    decoder: str = decoder_setting()
    decode_timeout: float = decode_timeout_setting()
    strict: bool = strict_setting()
    storage_options: dict[str, Any] | None = storage_options_setting()
