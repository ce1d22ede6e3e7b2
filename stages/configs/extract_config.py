"""Settings of ``mote extract``: the videos, the CLIP that encodes them, sampling, devices and
the store; loaded by ``--help`` with no torch (stages/extract.py runs them)."""

from __future__ import annotations

from dataclasses import InitVar, dataclass, fields
from pathlib import Path
from typing import Any

from mote.pipeline.config import (
    DEVICES_CHOICES,
    Settings,
    allow_outside_root_setting,
    batch_size_setting,
    check_ranges,
    dataset_setting,
    decode_timeout_setting,
    decode_workers_setting,
    decoder_setting,
    kinetics_csv_setting,
    labels_file_setting,
    list_file_setting,
    model_setting,
    pretrained_setting,
    seed_setting,
    setting,
    storage_options_setting,
    strict_setting,
    video_root_setting,
)
from mote.pipeline.temporal.temporal_config import MoTEConfig

DEFAULT_SPLIT = {
    "k400": "val", "k600": "split1", "ucf101": "test1", "hmdb51": "test1", "ssv2": "validation",
}  # fmt: skip


DEFAULT_VIEWS = {"k600": "3x1", "ucf101": "3x1", "hmdb51": "3x1"}  # zero-shot protocol (spec 8.2)


# Frames per view: no more than MoTE's positional table has rows (spec 2.3), or none can be scored.
MAX_FRAMES = next(f.default for f in fields(MoTEConfig) if f.name == "context")


@dataclass(frozen=True)
class ExtractConfig(Settings):
    """Everything ``mote extract`` needs; CLI flags and ``--config`` keys use these names.

    ``devices`` owns which devices encode (``--devices``, resolved by
    ``pipeline.device.resolve_devices``). ``device`` is its old spelling, kept as an alias: an
    init-only argument (``ExtractConfig(device="cpu")``), a ``--config`` key and ``--device``
    all set ``devices``; it is not stored.
    """

    dataset: str = dataset_setting()
    out: Path = setting(
        help="Zarr store to write (resumed if it exists): a path, or an s3:// URL (which dask "
        "workers write straight to, with no disk shared).",
        url="store",
    )
    root: Path | None = video_root_setting()
    allow_outside_root: bool = allow_outside_root_setting()
    split: str | None = setting(
        None,
        "k400: val|test|train; k600: split1-3; ucf101/hmdb51: test1-3|train1-3; "
        "ssv2: validation|train.",
        default_text=lambda: (
            ", ".join(f"{s} for {d}" for d, s in DEFAULT_SPLIT.items()) + ", else custom"
        ),
    )
    list_file: Path | None = list_file_setting()
    labels_file: Path | None = labels_file_setting()
    kinetics_csv: Path | None = kinetics_csv_setting()
    storage_options: dict[str, Any] | None = storage_options_setting()
    model: str | None = model_setting(carried="the store's when continuing or repairing it")
    pretrained: str | None = pretrained_setting(carried="the store's with its model")
    frames: int = setting(8, f"Frames per view T, 1 to {MAX_FRAMES}.")
    views: str | None = setting(
        None,
        "CLIPSxCROPS: 1x1, 3x1, 4x3.",
        default_text=lambda: (
            ", ".join(f"{v} for {d}" for d, v in DEFAULT_VIEWS.items()) + ", else 1x1"
        ),
    )
    sampling: str = setting("eval", "eval (segment starts, spec 7.1) or train (seeded random).")
    seed: int = seed_setting("Seed for random weights and train sampling.")
    devices: str = setting(
        "all",
        f"Encoder devices: {DEVICES_CHOICES}, or cpu. Each device past the first runs its own "
        "encoder process, all fed by one decode pool; cpu,cpu runs two CPU encoder processes "
        "(how CI tests several devices). With --dask local:N, worker i is pinned to GPU i mod "
        "G. --device is the same option.",
        aliases=("device",),
    )
    batch_size: int | None = batch_size_setting()
    decode_workers: int | None = decode_workers_setting("one per core")
    decoder: str = decoder_setting()
    decode_timeout: float = decode_timeout_setting()
    chunk_videos: int = setting(32, "Videos per Zarr chunk.", min=1)
    limit: int | None = setting(None, "Only the first N videos of the list.", min=1)
    overwrite: bool = setting(False, "Start the store over.")
    retry_failed: bool = setting(False, "Retry videos that failed before.")
    repair: bool = setting(
        False, "Verify every chunk and re-extract the videos whose stored data are damaged."
    )
    strict: bool = strict_setting()
    run: Path | None = setting(
        None,
        "Encode with this run's CLIP: its model, and its tuned visual weights blended 0.99/0.01 "
        "with the original (spec 7.4), e.g. a run from import-reference.",
    )
    blend: bool = setting(
        True,
        "With --run: blend the tuned visual weights 0.99/0.01 with the original (spec 7.4); "
        "--no-blend encodes with the tuned weights as trained.",
    )
    dask: str | None = setting(
        None,
        "Scale out on dask.distributed: a scheduler address (tcp://host:8786; workers need mote, "
        "and the same paths unless --out and --root are s3:// URLs, and encode on the GPU they "
        "were started with) or local:N for a "
        "local cluster of N workers, each pinned to one GPU of --devices (CUDA_VISIBLE_DEVICES).",
        default_text="one local process with --decode-workers",
    )
    device: InitVar[str | None] = None  # the old name of ``devices``

    def __post_init__(self, device: str | None) -> None:
        if device is not None:
            object.__setattr__(self, "devices", device)
        check_ranges(self)

    @property
    def resolved_split(self) -> str:
        return self.split or DEFAULT_SPLIT.get(self.dataset, "custom")

    @property
    def resolved_views(self) -> str:
        return self.views or DEFAULT_VIEWS.get(self.dataset, "1x1")
