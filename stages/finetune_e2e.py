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
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from mote.pipeline import __version__
from mote.pipeline.config import (
    carried_clip,
    check_decoder,
)
from mote.pipeline.data.datasets import DatasetSpec, open_dataset
from mote.pipeline.data.folders import check_root
from mote.pipeline.errors import ConfigError
from mote.pipeline.locations import Url, locate, resolved
from mote.pipeline.progress import Progress
from mote.pipeline.runs.e2e_run import run_config, save_end_to_end, warm_start
from mote.pipeline.runs.run_folder import RunFolder
from mote.pipeline.temporal.e2e import build_end_to_end
from mote.pipeline.temporal.metrics import confusion_matrix, topk_accuracy
from mote.pipeline.threads import command_threads, local_processes, usable_cores, use_threads
from mote.pipeline.train.checkpoint import save_checkpoint
from mote.pipeline.train.clip_batches import FailureLog, FrameFeatures, VideoBatches, predict_clips
from mote.pipeline.train.distributed import DistContext
from mote.pipeline.train.loop import Trainer, run_training
from mote.pipeline.train.schedule import build_optimizer, mote_groups
from mote.pipeline.train.train_settings import (
    CHANGED_KEY,
    changed_on_resume,
    check_resume,
    check_training,
    epoch_message,
    few_steps_warnings,
    model_config,
    plan,
    recorded_settings,
    steps_per_epoch,
)
from mote.pipeline.video.augment import AREA_RANGE
from mote.pipeline.video.clips import ClipDataset, make_loader
from mote.pipeline.video.flips import FlipRule, mirror_warning
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
    check_decoder(cfg.decoder)


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
    return run_training(cfg, cfg.out, progress, _train)


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


def _train(cfg: FinetuneConfig, ctx: DistContext, progress: Progress) -> dict:
    folder = RunFolder(cfg.out)
    cfg = _carried_clip(cfg)
    train_set, root, val_set, val_root = datasets(cfg)
    flip, flip_warning = training_flip(cfg, train_set)
    device = ctx.device

    model = build_end_to_end(
        cfg.model,
        cfg.pretrained,
        train_set.class_names,
        device=device,
        seed=cfg.seed,
        config=lambda dim: model_config(cfg, dim),
        text_from=cfg.text_from,
        storage_options=cfg.storage_options,
    )
    dim = model.clip.dim
    # a small list gets train-temporal's small-store settings, with the same line
    cfg, notes = plan(cfg, dim, len(train_set.items), ctx.world_size, what="training list")
    if cfg.grad_checkpointing is None:
        cfg = replace(cfg, grad_checkpointing=dim == CHECKPOINTED_WIDTH)
    if cfg.workers is None:
        cfg = replace(cfg, workers=default_workers())
    # The decode workers need cores too: measured on 2 cores with 2 workers, the run did 21-28
    # videos/s with one torch thread and 8-10 with two (bench/finetune_e2e.py).
    use_threads(device, width=dim, workers=cfg.workers)
    model.set_grad_checkpointing(cfg.grad_checkpointing)
    init = warm_start(model, cfg.init_run) if cfg.init_run is not None else None

    text = model.class_text
    groups = mote_groups(model.temporal, cfg.lr, cfg.clip_lr_ratio, visual=model.visual)
    optimizer = build_optimizer(groups, cfg.weight_decay)
    trainer = Trainer(cfg, ctx, model.temporal, optimizer, features_of=FrameFeatures(model))
    # looked up at call time, so a test can simulate a kill by replacing save_checkpoint here
    trainer.save_checkpoint = lambda folder_, epoch, best: save_checkpoint(
        folder_, ctx, trainer.losses, optimizer, trainer.scaler, epoch, best, trainer.random
    )

    warnings = few_steps_warnings(len(train_set.items), cfg.batch_size, cfg.epochs)
    warnings += [flip_warning] if flip_warning else []
    micro_batch = math.ceil(cfg.batch_size / cfg.micro_batches)
    settings = recorded_settings(cfg, PATH_SETTINGS)
    details = {
        "datasets": {
            "train": _describe(train_set, root),
            "val": _describe(val_set, val_root) if val_set is not None else None,
        },
        "val_sampling": {"frames": cfg.frames, "views": "1x1", "rule": "eval", "blend": None},
        "init_run": init,
        "text": str(cfg.text_from) if cfg.text_from is not None else "class templates",
        "device": str(device),
        "world_size": ctx.world_size,
        "precision": trainer.precision,
        "amp": trainer.precision != "fp32",
        "grad_checkpointing": cfg.grad_checkpointing,
        "effective_batch": cfg.batch_size,
        "micro_batch": micro_batch,
        "steps_per_epoch": steps_per_epoch(len(train_set.items), cfg.batch_size),
        "warnings": warnings,
        "chosen_for_you": notes,
        "note": "micro-batches emulate the reference's data-parallel GPUs: each draws its own "
        "expert routing and WMR temperatures. Under torchrun each process trains "
        "micro_batches / world_size of them",
    }
    resumed = changed_on_resume(folder, cfg, PATH_SETTINGS)  # before config.json is rewritten
    if resumed.record:
        details[CHANGED_KEY] = resumed.record
    config = run_config(
        model,
        details,
        tool_version=__version__,
        train=settings,
        train_sampling={
            "frames": cfg.frames,
            "rule": "train",
            "augment": "spec 7.2",
            "crop_area": [cfg.min_crop_area, AREA_RANGE[1]],
            "flip": flip.text,
        },
    )
    notice = check_resume(folder, cfg, RESUME_IGNORED, PATH_SETTINGS) if cfg.resume else None
    ctx.barrier()  # every rank has checked the folder before rank 0 writes to it
    failures = FailureLog(folder, ctx)
    if ctx.is_main:
        if notice:
            progress.message(notice)
        folder.create()
        folder.write_config(config)
        if cfg.resume:
            failures.load()
        for line in (*notes, *warnings):
            progress.message(line)

    def tell(rows: list[dict]) -> None:
        for row in rows:
            progress.message(f"skipped {row['video']}: {row['reason']}")

    train_clips = ClipDataset(
        train_set.items,
        root,
        model.preprocess,
        cfg.frames,
        "train",
        cfg.seed,
        cfg.decoder,
        flip=flip,
        min_crop_area=cfg.min_crop_area,
        storage_options=cfg.storage_options,
    )
    data = VideoBatches(
        train_clips,
        cfg.batch_size,
        cfg.micro_batches,
        ctx,
        cfg.seed,
        cfg.workers,
        failures,
        on_failure=tell,
    )
    val_loader = None
    if val_set is not None and ctx.is_main:
        val_clips = ClipDataset(
            val_set.items,
            val_root,
            model.preprocess,
            cfg.frames,
            "eval",
            cfg.seed,
            cfg.decoder,
            storage_options=cfg.storage_options,
        )
        val_loader = make_loader(
            val_clips,
            batch_size=micro_batch,
            workers=cfg.workers,
            shuffle=False,
            pin_memory=device.type == "cuda",
        )

    def validate() -> float | None:
        if val_loader is None:
            return None
        scores, labels = predict_clips(model, val_loader, failures, data.epoch)
        return topk_accuracy(scores, labels, (1,))["top1"] if len(labels) else None

    every = max(1, cfg.epochs // 20)

    def report(line: dict, last_epoch: int) -> None:
        if line["epoch"] % every == 0 or line["epoch"] == last_epoch:
            progress.message(epoch_message(line, cfg.epochs))

    result = trainer.fit(
        data,
        text,
        folder,
        validate=validate,
        save_model=lambda best: save_end_to_end(folder, model, best),
        on_epoch=report,
        progress=progress,
        title=f"fine-tune {model.clip.model} + {model.temporal.cfg.arch} on "
        f"{len(train_set.items)} videos",
        changed=resumed.now,
    )
    if not ctx.is_main:
        if not result.stopped:
            ctx.barrier()  # wait for rank 0's final evaluation
        return {"run": str(cfg.out), "rank": ctx.rank}
    folder.write_curves()
    if result.stopped:
        return {
            "run": str(cfg.out),
            "stopped_after_epoch": result.last_epoch,
            "epochs": cfg.epochs,
            "failed_videos": failures.count["train"],
            "warnings": warnings,
        }
    metrics = {"top1": None, "top5": None, "views": None, "n_videos": 0}
    if val_loader is not None:
        scores, labels = predict_clips(model, val_loader, failures, cfg.epochs - 1, tfm=cfg.tfm)
        metrics = {**topk_accuracy(scores, labels), "views": "1x1", "n_videos": len(labels)}
        metrics.update(tfm=cfg.tfm, n_failed_skipped=len(val_set.items) - len(labels))
        folder.write_confusion(
            confusion_matrix(scores, labels),
            list(model.class_names),
            store=_split_name(val_set),
            views="1x1",
            tfm=cfg.tfm,
        )
    metrics.update(
        best_epoch=result.best["epoch"],
        best_val_top1=result.best["top1"],
        checkpoint="last",
        epochs=cfg.epochs,
        failed_videos=failures.count["train"],
        run=str(cfg.out),
    )
    folder.write_metrics(metrics)
    ctx.barrier()
    return {**metrics, "warnings": warnings}


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
