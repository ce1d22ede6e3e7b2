"""Stage two, ``mote train-temporal``: train MoTE (or a baseline) on cached CLIP features.

Reads the training store into memory once (or streams it chunk by chunk when it does not fit),
trains with the spec's optimiser and schedule (section 7), validates every epoch, writes the run
folder, then evaluates the final weights on the validation store with every view it holds.
The loop itself (schedule, micro-batch steps, checkpoints, torchrun DDP) is the shared one in
mote.pipeline.train; this module keeps what is specific to cached features.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mote.cache_schema.feature_store import FeatureStore
from mote.pipeline import __version__
from mote.pipeline.errors import ConfigError
from mote.pipeline.progress import Progress
from mote.pipeline.runs.run_config import RunClip, RunConfig
from mote.pipeline.runs.run_folder import RunFolder
from mote.pipeline.temporal.evaluation import score
from mote.pipeline.temporal.features import InMemoryFeatures, StreamingFeatures
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.threads import command_threads, use_threads
from mote.pipeline.train.checkpoint import save_checkpoint
from mote.pipeline.train.distributed import DistContext
from mote.pipeline.train.feature_batches import (
    FeatureBatches,
    ValidationView,
    device_budget,
)
from mote.pipeline.train.train_settings import (
    check_training,
    few_steps_warnings,  # noqa: F401  (tests read it here)
    model_config,
)
from mote.pipeline.train.training_run import (
    TrainedModel,
    TrainingParts,
    TrainingSet,
    run_training,
)
from mote.stages.configs.train_config import TrainConfig  # noqa: F401

RESUME_IGNORED = (
    "resume",
    "stop_after_epochs",
    "device",
    "fused",
    "compile",
    "device_memory_gb",
)
PATH_SETTINGS = ("train", "val", "out")  # compared as resolved paths on --resume


def _check(cfg: TrainConfig) -> None:
    check_training(cfg)
    if cfg.epoch_size is not None and cfg.epoch_size < 1:
        raise ConfigError(f"epoch_size must be >= 1, got {cfg.epoch_size}")


def open_stores(cfg: TrainConfig) -> tuple[FeatureStore, FeatureStore | None]:
    """The training store, and a validation store that must match its model and classes."""
    train = FeatureStore.open(cfg.train, storage_options=cfg.storage_options)
    train.require_labels("train-temporal")
    counts = train.counts()
    if counts["pending"] and not cfg.allow_partial:
        raise ConfigError(
            f"{cfg.train}: {counts['pending']} of {train.n_videos} videos are still pending "
            f"(extraction unfinished or still running); finish it with `mote extract ... --out "
            f"{cfg.train}` (a rerun resumes), or pass --allow-partial to train on the "
            f"{counts['done']} done videos"
        )
    if cfg.val is None:
        return train, None
    t = train.spec
    val = FeatureStore.open(
        cfg.val,
        expect={"model": t.model, "weights_id": t.weights_id, "dim": t.dim},
        storage_options=cfg.storage_options,
    )
    val.require_labels("train-temporal --val")
    if tuple(val.class_names) != tuple(train.class_names):
        raise ConfigError(
            f"{cfg.val}: its {len(val.class_names)} classes differ from the training store "
            f"{cfg.train} ({len(train.class_names)} classes, first difference: "
            f"{_first_difference(train.class_names, val.class_names)}); close-set validation "
            "needs the same classes in the same order"
        )
    return train, val


def _first_difference(a, b) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"class {i} is '{x}' vs '{y}'"
    return f"{len(a)} vs {len(b)} classes"


def feature_source(store: FeatureStore, memory_gb: float | None):
    """In memory when the done features fit the budget (default: half the RAM), else streamed."""
    spec = store.spec
    n_bytes = store.n_videos * spec.views * spec.frames * spec.dim * 2
    budget = (memory_gb * 2**30) if memory_gb else _ram_bytes() / 2
    if n_bytes <= budget:
        return InMemoryFeatures(store)
    return StreamingFeatures(store, block_chunks=max(1, int(budget / 4 / _chunk_bytes(store))))


def _chunk_bytes(store: FeatureStore) -> int:
    s = store.spec
    return max(1, store.chunk_videos * s.views * s.frames * s.dim * 2)


def _ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def centre_view(crops: int) -> int:
    """The view index of the first clip's centre crop (crop order: left, right, centre)."""
    return crops - 1 if crops == 3 else 0


# Validation videos per forward pass: large, so a 20k-video store is a handful of passes.
VAL_BATCH = 4096


@torch.no_grad()
def _val_top1(
    model,
    features: InMemoryFeatures | ValidationView | None,
    text,
    device,
    view: int = 0,
    batch_videos: int = VAL_BATCH,
) -> float | None:
    """Per-epoch validation: one view (the first clip's centre crop), no TFM (spec 7).

    Without gradients: validation must not build (and hold) an autograd graph per batch.
    Sync-free: the features are on the device already and the correct count stays there; one
    ``.item()`` at the end."""
    if features is None:
        return None
    if not isinstance(features, ValidationView):
        features = ValidationView(features, view, torch.device(device), float("inf"))
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=features.device)
    for block, labels in features.blocks(batch_videos):
        logits, _ = model.predict(block.float(), text, tfm=False)
        correct += (logits.argmax(dim=1) == labels).sum()
    return 100.0 * correct.item() / len(features)


@command_threads()
def run(cfg: TrainConfig, progress: Progress | None = None) -> dict:
    """Train, validate per epoch, write the run folder and return the final metrics.

    Under torchrun every process runs this; rank 0 alone writes and reports, the others return
    ``{"run": ..., "rank": r}``.
    """
    _check(cfg)
    return run_training(FeatureParts(), cfg, progress)


def training_source(cfg: TrainConfig, store: FeatureStore) -> InMemoryFeatures | StreamingFeatures:
    """The training rows: few-shot's chosen videos and epoch size, else every done video (in
    memory or streamed)."""
    if cfg.videos is not None or cfg.epoch_size is not None:
        videos = None if cfg.videos is None else np.asarray(cfg.videos)
        source = InMemoryFeatures(store, videos, cfg.epoch_size)
    else:
        source = feature_source(store, cfg.memory_gb)
    if len(source) == 0:
        raise ConfigError(f"{cfg.train}: no video is done in this store; run `mote extract` first")
    return source


def validation_features(
    cfg: TrainConfig, store: FeatureStore | None, ctx: DistContext
) -> InMemoryFeatures | None:
    """Rank 0's validation features (every view), read once."""
    if store is None or not ctx.is_main:
        return None
    features = InMemoryFeatures(store)
    if len(features) == 0:
        raise ConfigError(f"{cfg.val}: no video is done in this store; run `mote extract` first")
    return features


class FeatureParts(TrainingParts):
    """train-temporal's parts of the shared run: cached features in, a MoTE head out."""

    path_settings = PATH_SETTINGS
    resume_ignored = RESUME_IGNORED

    def open(self, cfg: TrainConfig, ctx: DistContext) -> TrainingSet:
        self.train_store, self.val_store = open_stores(cfg)
        self.counts = self.train_store.counts()
        use_threads(ctx.device, width=self.train_store.spec.dim)
        self.source = training_source(cfg, self.train_store)
        self.val_features = validation_features(cfg, self.val_store, ctx)
        return TrainingSet(cfg, len(self.source), self.train_store.spec.dim)

    def small_store(self, cfg: TrainConfig) -> bool:
        return cfg.videos is None  # fewshot's protocol fixes its settings

    def model(self, cfg: TrainConfig, ctx: DistContext) -> TrainedModel:
        """MoTE from the seed, with the store's class text (normalised for the loss)."""
        self.device = ctx.device
        torch.manual_seed(cfg.seed)
        self.head = MoTE(model_config(cfg, self.train_store.spec.dim)).to(ctx.device)
        text = torch.from_numpy(np.array(self.train_store.text_embeddings)).float()
        text = text.to(ctx.device)
        self.head.set_finetune_text(text)
        self.text = torch.nn.functional.normalize(text, dim=-1)
        title = f"train {self.head.cfg.arch} on {len(self.source)} videos"
        return TrainedModel(self.head, self.text, title)

    def run_config(self, cfg: TrainConfig, settings: dict, details: dict) -> RunConfig:
        spec, counts = self.train_store.spec, self.counts
        return RunConfig(
            source="train-temporal",
            tool_version=__version__,
            model=self.head.cfg,
            clip=RunClip(spec.model, spec.pretrained, spec.weights_id, spec.dim),
            classes=tuple(self.train_store.class_names),
            train=settings,
            train_sampling={"frames": spec.frames, "views": spec.layout, "rule": spec.sampling},
            params_merged=self.head.num_params(merged=True),
            params_train=self.head.num_params(merged=False),
            details={
                "stores": {"train": str(cfg.train), "val": str(cfg.val) if cfg.val else None},
                "train_videos": {"done": counts["done"], "failed_skipped": counts["failed"]},
                **details,
            },
        )

    def begin(self, folder: RunFolder, cfg: TrainConfig, ctx: DistContext) -> list[str]:
        counts = self.counts
        return [
            f"training store: {counts['done']} videos done, {counts['failed']} failed and "
            f"{counts['pending']} pending (skipped)"
        ]

    def batches(self, cfg: TrainConfig, ctx: DistContext, progress: Progress) -> FeatureBatches:
        return FeatureBatches(
            self.source, cfg.batch_size, cfg.micro_batches, ctx, cfg.seed, cfg.device_memory_gb
        )

    def validation(self, cfg: TrainConfig, ctx: DistContext) -> Callable[[], float | None]:
        """The centre view of the validation features, kept on the device when it fits."""
        view = None
        if self.val_features is not None:
            budget = device_budget(ctx.device, cfg.device_memory_gb)
            centre = centre_view(self.val_store.spec.crops)
            view = ValidationView(self.val_features, centre, ctx.device, budget)
        return lambda: _val_top1(self.head, view, self.text, ctx.device)

    def evaluate(self, cfg: TrainConfig, folder: RunFolder) -> tuple[dict, list[str]]:
        metrics = final_metrics(
            self.head, self.val_store, self.val_features, self.text, cfg, self.device, folder
        )
        return metrics, fused_views_warnings(metrics, self.train_store.spec)

    def checkpoint(self, *args: Any) -> None:
        """Through this module's name, so a test can simulate a kill by replacing it here."""
        save_checkpoint(*args)


FUSED_GAP = 10.0  # fused top-1 this many points below the best view alone: say why


def fused_views_warnings(metrics: dict, train_spec) -> list[str]:
    """A warning when fusing the validation views scores far below the best view alone:
    the model learnt the training store's clips (e.g. one eval-sampled view: fixed frame
    offsets), not the videos."""
    per_view = metrics.get("top1_per_view") or []
    if not per_view or metrics["top1"] >= max(per_view) - FUSED_GAP:
        return []
    best = max(range(len(per_view)), key=per_view.__getitem__)
    return [
        f"the {metrics['views']} validation views fused score top-1 {metrics['top1']:.1f}, far "
        f"below view {best}'s {per_view[best]:.1f} alone: the training store "
        f"({train_spec.layout}, {train_spec.sampling} sampling) shows one set of clips; "
        "extract it with --sampling train and more views (--views 4x1) so the model sees the "
        "clips it is scored on"
    ]


def final_metrics(
    model, val_store, features, text, cfg: TrainConfig, device, folder: RunFolder | None = None
) -> dict:
    """Close-set top-1/top-5 of the last weights on every view of the validation store; with
    ``folder``, its confusion matrix goes to the run folder too (the predictions are here)."""
    if val_store is None:
        return {"top1": None, "top5": None, "views": None, "n_videos": 0}
    indices = features.indices
    # No video ids: they only name rows of prediction files, which train-temporal does not
    # write, and reading a 20k-video store's ids costs about 0.5 s of the run's fixed cost.
    scores = score(model, features.embeddings, features.labels, [], text, cfg.tfm, device)
    result = scores.metrics()
    per_view = scores.view_top1()
    if len(per_view) > 1:
        result["top1_per_view"] = [round(v, 2) for v in per_view]
    result.update(
        views=val_store.spec.layout,
        tfm=cfg.tfm,
        store=str(cfg.val),
        n_failed_skipped=int(val_store.n_videos - len(indices)),
    )
    if folder is not None:
        folder.write_confusion(
            scores.confusion(),
            list(val_store.class_names),
            store=str(cfg.val),
            views=val_store.spec.layout,
            tfm=cfg.tfm,
        )
    return result
