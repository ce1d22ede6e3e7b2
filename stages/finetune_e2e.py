"""Stage three (optional), ``mote finetune-e2e``: tune CLIP's visual tower and MoTE together on
decoded videos, the reference's own recipe (spec 7), on one process or many (torchrun).

Clips are decoded, sampled (spec 7.1) and augmented (spec 7.2) in DataLoader worker processes;
the loop (schedule, micro-batch routing draws, AMP, DDP, checkpoints, exact ``--resume``) is the
shared one of mote.pipeline.train, with the visual tower as the feature function, so DDP averages
its gradients and the checkpoint holds it. A video that cannot be decoded is skipped, counted and
listed in ``RUN/failures.jsonl``. The run folder is a cache run's plus the tuned tower, so
``mote extract --run``, ``evaluate``, ``zeroshot`` and ``report`` read it as they read any run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mote.pipeline import __version__
from mote.pipeline.config import carried_clip
from mote.pipeline.data.datasets import DatasetSpec, open_dataset
from mote.pipeline.data.folders import check_root
from mote.pipeline.errors import ConfigError
from mote.pipeline.locations import Url, locate, resolved
from mote.pipeline.progress import Progress
from mote.pipeline.runs.e2e_run import run_config, save_end_to_end, warm_start
from mote.pipeline.runs.run_config import RunConfig
from mote.pipeline.runs.run_folder import RunFolder
from mote.pipeline.temporal.e2e import EndToEnd, build_end_to_end
from mote.pipeline.temporal.metrics import confusion_matrix, topk_accuracy
from mote.pipeline.threads import command_threads, local_processes, usable_cores, use_threads
from mote.pipeline.train.clip_batches import FailureLog, FrameFeatures, VideoBatches, predict_clips
from mote.pipeline.train.distributed import DistContext
from mote.pipeline.train.train_settings import check_training, model_config
from mote.pipeline.train.training_run import (
    TrainedModel,
    TrainingParts,
    TrainingSet,
    run_training,
)
from mote.pipeline.video.augment import AREA_RANGE
from mote.pipeline.video.clips import ClipDataset, make_loader
from mote.pipeline.video.flips import FlipRule, mirror_warning
from mote.pipeline.video.nvdec import check_decoder_usable
from mote.stages.configs.finetune_config import (  # noqa: F401
    CHECKPOINTED_WIDTH,
    MAX_WORKERS,
    TRAIN_SPLIT,
    FinetuneConfig,
)

RESUME_IGNORED = ("resume", "stop_after_epochs", "device", "workers")
PATH_SETTINGS = (
    "root", "list_file", "labels_file", "kinetics_csv", "val_list", "val_labels", "val_root",
    "out", "init_run", "text_from",
)  # fmt: skip


def default_workers(env: Mapping[str, str] | None = None, cores: int | None = None) -> int:
    """One decode worker per core of this process's share of the node, up to ``MAX_WORKERS``:
    torchrun's ``LOCAL_WORLD_SIZE`` processes on a node share its cores, so 8 processes on 8
    cores get one worker each, not 8 (64 decoders fighting for 8 cores)."""
    env = os.environ if env is None else env
    share = (cores or usable_cores()) // local_processes(env)
    return max(1, min(MAX_WORKERS, share))


def _check(cfg: FinetuneConfig) -> None:
    check_root(cfg.dataset, cfg.root, storage_options=cfg.storage_options)
    if cfg.val_root is not None:
        check_root("list", cfg.val_root, "--val-root", cfg.storage_options)
    if cfg.val_split is not None and cfg.val_list is not None:
        raise ConfigError("--val-split and --val-list both name validation videos: pass one")
    if cfg.val_split is not None and cfg.dataset == "list":
        raise ConfigError("--val-split needs a shipped --dataset; for a list use --val-list FILE")
    check_training(cfg)
    check_decoder_usable(cfg.decoder)


# ------------------------------------------------------------------------------ data


def datasets(
    cfg: FinetuneConfig,
) -> tuple[DatasetSpec, Path | Url, DatasetSpec | None, Path | Url | None]:
    """The training split and its root; the validation split (same classes) and its root
    (folders or URL prefixes)."""
    split = cfg.split or TRAIN_SPLIT.get(cfg.dataset, "custom")
    options = cfg.storage_options
    outside = cfg.allow_outside_root
    train, root = open_dataset(
        cfg.dataset, split, cfg.list_file, cfg.labels_file, cfg.kinetics_csv, cfg.root, options
    )
    train.require_labels("finetune-e2e")
    if cfg.val_split is None and cfg.val_list is None:
        return train, root, None, None
    if cfg.val_list is not None:
        labels = cfg.val_labels or Path(train.labels_file)
        val, val_root = open_dataset(
            "list", "val", cfg.val_list, labels, None, cfg.val_root, allow_outside_root=outside
        )
        if cfg.val_root is None and cfg.root is not None:
            val_root = locate(cfg.root)
    else:
        labels = cfg.val_labels or cfg.labels_file  # ssv2's labels JSON serves both splits
        val, val_root = open_dataset(
            cfg.dataset, cfg.val_split, None, labels, cfg.kinetics_csv, cfg.root, options,
            allow_outside_root=outside,
        )  # fmt: skip
        val_root = locate(cfg.val_root) if cfg.val_root is not None else val_root
    if tuple(val.class_names) != tuple(train.class_names):
        raise ConfigError(
            f"validation list {val.list_file}: its {len(val.class_names)} classes differ from "
            f"the training list's {len(train.class_names)}; close-set validation needs the same "
            "classes in the same order (pass --val-labels with the training label file)"
        )
    if cfg.val_limit is not None and cfg.val_limit < len(val.items):
        keep = np.unique(np.linspace(0, len(val.items) - 1, cfg.val_limit).round().astype(int))
        val = replace(val, items=tuple(val.items[i] for i in keep))
    return train, root, val, val_root


def training_flip(cfg: FinetuneConfig, train: DatasetSpec) -> tuple[FlipRule, str | None]:
    """What a flip does to a training clip's label (--flip, else the dataset's: SSv2's pairs
    are looked up here, where clips flip), and the warning when it mirrors classes whose names
    say left or right and keeps their labels."""
    if cfg.flip is None:
        flip = train.flip
    else:
        flip = FlipRule.parse(cfg.flip)
        flip.check_classes(train.num_classes, f"training list {train.list_file}")
    return flip, mirror_warning(flip, train.class_names)


# ------------------------------------------------------------------------------ the run


@command_threads()
def run(cfg: FinetuneConfig, progress: Progress | None = None) -> dict:
    """Fine-tune, validate per epoch, write the run folder and return the final metrics.

    Under torchrun every process runs this; rank 0 alone writes and reports, the others return
    ``{"run": ..., "rank": r}``.
    """
    _check(cfg)
    return run_training(ClipParts(), cfg, progress)


def _carried_clip(cfg: FinetuneConfig) -> FinetuneConfig:
    """--model / --pretrained when not given: the run resumed, else the --init-run's (both
    record their CLIP), else the defaults."""
    source = cfg.out if cfg.resume and RunFolder(cfg.out).is_run() else cfg.init_run
    recorded = None
    if source is not None:
        clip = RunFolder(source).read_config(reader=source != cfg.out).clip
        recorded = (clip.model, clip.pretrained) if clip.model and clip.pretrained else None
    model, pretrained = carried_clip(cfg.model, cfg.pretrained, recorded)
    return replace(cfg, model=model, pretrained=pretrained)


def clips(
    cfg: FinetuneConfig,
    items: tuple,
    root: Path | Url | None,
    model: EndToEnd,
    rule: str,
    **augment: Any,
) -> ClipDataset:
    """The clips of a list's videos, sampled by ``rule`` (train: with spec 7.2's augmentation)."""
    return ClipDataset(
        items, root, model.preprocess, cfg.frames, rule, cfg.seed, cfg.decoder,
        storage_options=cfg.storage_options, **augment,
    )  # fmt: skip


class ClipParts(TrainingParts):
    """finetune-e2e's parts of the shared run: decoded videos in, CLIP's visual tower and a
    MoTE head tuned together."""

    path_settings = PATH_SETTINGS
    resume_ignored = RESUME_IGNORED
    what = "training list"

    def open(self, cfg: FinetuneConfig, ctx: DistContext) -> TrainingSet:
        """The lists, and the CLIP with its class text: the tower sets the width."""
        cfg = _carried_clip(cfg)
        self.train_set, self.root, self.val_set, self.val_root = datasets(cfg)
        self.flip, self.flip_warning = training_flip(cfg, self.train_set)
        self.e2e = build_end_to_end(
            cfg.model,
            cfg.pretrained,
            self.train_set.class_names,
            device=ctx.device,
            seed=cfg.seed,
            config=lambda dim: model_config(cfg, dim),
            text_from=cfg.text_from,
            storage_options=cfg.storage_options,
        )
        return TrainingSet(cfg, len(self.train_set.items), self.e2e.clip.dim)

    def settle(self, cfg: FinetuneConfig, dim: int) -> FinetuneConfig:
        """Gradient checkpointing for ViT-L/14, a decode worker per core of this process."""
        if cfg.grad_checkpointing is None:
            cfg = replace(cfg, grad_checkpointing=dim == CHECKPOINTED_WIDTH)
        if cfg.workers is None:
            cfg = replace(cfg, workers=default_workers())
        return cfg

    def model(self, cfg: FinetuneConfig, ctx: DistContext) -> TrainedModel:
        model = self.e2e
        # The decode workers need cores too: measured on 2 cores with 2 workers, the run did
        # 21-28 videos/s with one torch thread and 8-10 with two (bench/finetune_e2e.py).
        use_threads(ctx.device, width=model.clip.dim, workers=cfg.workers)
        model.set_grad_checkpointing(cfg.grad_checkpointing)
        self.init = warm_start(model, cfg.init_run) if cfg.init_run is not None else None
        title = (
            f"fine-tune {model.clip.model} + {model.temporal.cfg.arch} on "
            f"{len(self.train_set.items)} videos"
        )
        return TrainedModel(
            model.temporal,
            model.class_text,
            title,
            visual=model.visual,
            features_of=FrameFeatures(model),
            save=lambda folder, best: save_end_to_end(folder, model, best),
        )

    def warnings(self) -> list[str]:
        return [self.flip_warning] if self.flip_warning else []

    def run_config(self, cfg: FinetuneConfig, settings: dict, details: dict) -> RunConfig:
        val_set = self.val_set
        own = {
            "datasets": {
                "train": _describe(self.train_set, self.root),
                "val": _describe(val_set, self.val_root) if val_set is not None else None,
            },
            "val_sampling": {"frames": cfg.frames, "views": "1x1", "rule": "eval", "blend": None},
            "init_run": self.init,
            "text": str(cfg.text_from) if cfg.text_from is not None else "class templates",
            "grad_checkpointing": cfg.grad_checkpointing,
        }
        sampling = {
            "frames": cfg.frames,
            "rule": "train",
            "augment": "spec 7.2",
            "crop_area": [cfg.min_crop_area, AREA_RANGE[1]],
            "flip": self.flip.text,
        }
        return run_config(
            self.e2e, {**own, **details}, tool_version=__version__, train=settings,
            train_sampling=sampling,
        )  # fmt: skip

    def begin(self, folder: RunFolder, cfg: FinetuneConfig, ctx: DistContext) -> list[str]:
        """The failed-videos log, with the resumed run's failures."""
        self.failures = FailureLog(folder, ctx)
        if ctx.is_main and cfg.resume:
            self.failures.load()
        return []

    def validation(self, cfg: FinetuneConfig, ctx: DistContext) -> Callable[[], float | None]:
        """Rank 0's validation clips (one view, eval sampling), decoded by their own loader."""
        self.val_loader = None
        if self.val_set is not None and ctx.is_main:
            val_clips = clips(cfg, self.val_set.items, self.val_root, self.e2e, "eval")
            self.val_loader = make_loader(
                val_clips,
                batch_size=math.ceil(cfg.batch_size / cfg.micro_batches),
                workers=cfg.workers,
                shuffle=False,
                pin_memory=ctx.device.type == "cuda",
            )
        return self.val_top1

    def val_top1(self) -> float | None:
        if self.val_loader is None:
            return None
        scores, labels = predict_clips(self.e2e, self.val_loader, self.failures, self.data.epoch)
        return topk_accuracy(scores, labels, (1,))["top1"] if len(labels) else None

    def batches(self, cfg: FinetuneConfig, ctx: DistContext, progress: Progress) -> VideoBatches:
        def tell(rows: list[dict]) -> None:
            for row in rows:
                progress.message(f"skipped {row['video']}: {row['reason']}")

        train_clips = clips(
            cfg, self.train_set.items, self.root, self.e2e, "train",
            flip=self.flip, min_crop_area=cfg.min_crop_area,
        )  # fmt: skip
        self.data = VideoBatches(
            train_clips, cfg.batch_size, cfg.micro_batches, ctx, cfg.seed, cfg.workers,
            self.failures, on_failure=tell,
        )  # fmt: skip
        return self.data

    def evaluate(self, cfg: FinetuneConfig, folder: RunFolder) -> tuple[dict, list[str]]:
        """The last weights on the validation clips (with TFM unless --no-tfm), and the
        confusion matrix."""
        if self.val_loader is None:
            return {"top1": None, "top5": None, "views": None, "n_videos": 0}, []
        scores, labels = predict_clips(
            self.e2e, self.val_loader, self.failures, cfg.epochs - 1, tfm=cfg.tfm
        )
        metrics = {**topk_accuracy(scores, labels), "views": "1x1", "n_videos": len(labels)}
        metrics.update(tfm=cfg.tfm, n_failed_skipped=len(self.val_set.items) - len(labels))
        folder.write_confusion(
            confusion_matrix(scores, labels),
            list(self.e2e.class_names),
            store=_split_name(self.val_set),
            views="1x1",
            tfm=cfg.tfm,
        )
        return metrics, []

    def results(self) -> dict:
        return {"failed_videos": self.failures.count["train"]}


def _split_name(dataset: DatasetSpec) -> str:
    """ "ucf101 test1": what an end-to-end run's final evaluation scored."""
    return f"{dataset.name} {dataset.split}"


def _describe(dataset: DatasetSpec, root: Path | Url | None) -> dict:
    return {
        "name": dataset.name,
        "split": dataset.split,
        "videos": len(dataset.items),
        "list": dataset.list_file,
        "labels": dataset.labels_file,
        "root": resolved(root) if root is not None else None,
    }
