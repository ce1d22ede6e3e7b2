"""Settings of ``mote info``: the store to describe, and ``--verify``'s re-encoding sample;
light, so ``mote info --help`` imports no torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mote.pipeline.config import (
    Settings,
    device_setting,
    setting,
    storage_options_setting,
    store_in_setting,
)
from mote.pipeline.locations import Url

# Re-encoded embeddings may differ from stored ones by fp16 rounding (2^-11 relative) and by
# other kernels on another device or batch size; 2 % of a video's largest value covers both,
# while any real substitution (another video, other weights, scaled values) is far above it.
SAMPLE_TOLERANCE = 0.02


@dataclass(frozen=True)
class InfoConfig(Settings):
    """Settings of ``mote info``."""

    store: Path | Url = store_in_setting("A feature store written by mote extract.", argument=True)
    verify: bool = setting(
        False,
        "Read every chunk: checksums, missing files, NaN/inf or all-zero done rows, labels, ids. "
        "Exits 3 if anything is damaged.",
    )
    sample: int = setting(
        0,
        "With --verify: re-encode this many random done videos (needs --root) and compare them "
        "with the stored embeddings.",
        min=0,
    )
    root: Path | None = setting(
        None,
        "Folder (or URL prefix, s3://bucket/videos) the store's video ids are relative to.",
        url="read",
    )
    storage_options: dict[str, Any] | None = storage_options_setting()
    seed: int = 0  # which videos --sample draws
    device: str = device_setting("Device for --sample: ")
    decoder: str = "auto"
    tolerance: float = SAMPLE_TOLERANCE
