"""One training run, told once for every training command: settings, data, model, optimiser,
claim, epochs, checkpoints, final evaluation, run files.

``train-temporal`` and ``finetune-e2e`` differ in what they train on and what they tune; the
order of a run is the same. Each command builds its ``TrainingParts`` and hands them to
``run_training``, which calls ``train`` on every rank; ``train`` reads top to bottom as the run
goes, and the parts answer the questions only the command can (its data, model, record and
final evaluation). The settings (``lr`` among them) go from the command to the optimiser here.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mote.pipeline.errors import ConfigError
from mote.pipeline.progress import NullProgress, Progress
from mote.pipeline.runs.run_config import RunConfig
from mote.pipeline.runs.run_folder import RunFolder
from mote.pipeline.train.checkpoint import save_checkpoint
from mote.pipeline.train.distributed import DistContext, run_on_every_rank
from mote.pipeline.train.loop import EpochData, FitResult, Trainer
from mote.pipeline.train.sampler import check_micro_batches
from mote.pipeline.train.schedule import spec_optimizer
from mote.pipeline.train.train_settings import (
    CHANGED_KEY,
    Resumed,
    TrainingSettings,
    changed_on_resume,
    check_resume,
    epoch_message,
    few_steps_warnings,
    plan,
    recorded_settings,
    steps_per_epoch,
)

MICRO_BATCH_NOTE = (
    "micro-batches emulate the reference's data-parallel GPUs: each draws its own expert "
    "routing and WMR temperatures; their losses are averaged. Under torchrun each process "
    "trains micro_batches / world_size of them"
)
EPOCH_LINES = 20  # about this many epoch lines per run


@dataclass(frozen=True)
class TrainingSet:
    """What a command opened to train on: the settings as it completed them (e.g. the CLIP a
    resumed run recorded), how many videos, and the embedding width (the spec's defaults)."""

    cfg: Any
    videos: int
    dim: int


@dataclass(frozen=True)
class TrainedModel:
    """What the loop trains: the MoTE head and the class text it scores against; the visual
    tower and the feature function when tuned end to end; how the weights are saved (None:
    the head alone, ``RunFolder.save_model``); the progress bar's title."""

    head: torch.nn.Module
    text: torch.Tensor
    title: str
    visual: torch.nn.Module | None = None
    features_of: Callable[[torch.Tensor], torch.Tensor] | None = None
    save: Callable[[RunFolder, bool], None] | None = None


class TrainingParts(ABC):
    """What a training command brings to ``train``, step by step; the parts keep what they
    opened and built for the later steps (one object per process: one rank)."""

    path_settings: tuple[str, ...] = ("out",)  # compared as resolved paths on --resume
    resume_ignored: tuple[str, ...] = ("resume", "stop_after_epochs", "device")
    what: str = "store"  # the training set in the small-set line

    @abstractmethod
    def open(self, cfg: Any, ctx: DistContext) -> TrainingSet:
        """Open and check the training (and validation) data."""

    def small_store(self, cfg: Any) -> bool:
        """Whether a small training set gets the small-store settings (a protocol may fix them)."""
        return True

    def settle(self, cfg: Any, dim: int) -> Any:
        """The command's own defaults, once the spec's are planned."""
        return cfg

    @abstractmethod
    def model(self, cfg: Any, ctx: DistContext) -> TrainedModel:
        """The model to train, on ``ctx.device``, seeded by ``cfg.seed``."""

    def warnings(self) -> list[str]:
        """The command's warnings besides the shared ones."""
        return []

    @abstractmethod
    def run_config(self, cfg: Any, settings: dict, details: dict) -> RunConfig:
        """The run's config.json: ``settings`` recorded, the shared ``details`` after its own."""

    def begin(self, folder: RunFolder, cfg: Any, ctx: DistContext) -> list[str]:
        """Every rank, once rank 0 has written the run's config: lines to say first."""
        return []

    @abstractmethod
    def batches(self, cfg: Any, ctx: DistContext, progress: Progress) -> EpochData:
        """This rank's share of every epoch's batches."""

    @abstractmethod
    def validation(self, cfg: Any, ctx: DistContext) -> Callable[[], float | None]:
        """Rank 0's per-epoch validation top-1 (None without a validation set)."""

    @abstractmethod
    def evaluate(self, cfg: Any, folder: RunFolder) -> tuple[dict, list[str]]:
        """Rank 0's final evaluation of the last weights (written to ``folder`` as it goes),
        and the warnings it gives."""

    def results(self) -> dict:
        """What the command adds to its result, stopped early or not."""
        return {}

    def checkpoint(self, *args: Any) -> None:
        """``save_checkpoint``; a command's parts may route it through its own module."""
        save_checkpoint(*args)


def run_training(parts: TrainingParts, cfg: TrainingSettings, progress: Progress | None) -> dict:
    """``train`` on every rank of a torchrun world (or alone), under the run folder's claim:
    rank 0 holds it for the whole job, so a second writer is refused before any rank starts.
    The folder must be new unless ``cfg.resume``."""

    def on_rank(ctx: DistContext, shown: Progress) -> dict:
        folder = RunFolder(cfg.out)
        with folder.writer_claim(ctx.is_main, shown):
            if cfg.micro_batches is not None:
                check_micro_batches(cfg.micro_batches, ctx.world_size)
            if cfg.resume:
                check_every_rank_sees(folder, ctx)
            on_rank_0(ctx, lambda: folder.check_new(cfg.resume))
            return train(parts, cfg, ctx, shown)

    return run_on_every_rank(cfg.device, progress or NullProgress(), on_rank)


def train(parts: TrainingParts, cfg: Any, ctx: DistContext, progress: Progress) -> dict:
    """One rank's run, in order. Rank 0 alone writes the run folder and reports; the other
    ranks return ``{"run": ..., "rank": r}``."""
    folder = RunFolder(cfg.out)
    opened = parts.open(cfg, ctx)  # data
    cfg, notes = settings(parts, opened, ctx.world_size)  # settings
    model = parts.model(cfg, ctx)  # model
    optimizer = spec_optimizer(cfg, model.head, model.visual)  # optimiser: --lr lands here
    trainer = Trainer(cfg, ctx, model.head, optimizer, model.features_of, parts.checkpoint)
    warnings = [*few_steps_warnings(opened.videos, cfg.batch_size, cfg.epochs), *parts.warnings()]
    resumed = changed_on_resume(folder, cfg, parts.path_settings)  # before config.json changes
    details = run_details(cfg, ctx, trainer.precision, opened.videos, warnings, notes, resumed)
    record = parts.run_config(cfg, recorded_settings(cfg, parts.path_settings), details)
    claim(parts, folder, cfg, ctx, record, [*notes, *warnings], progress)  # claim
    validate = parts.validation(cfg, ctx)  # before the batches: it may keep its set on the GPU
    data = parts.batches(cfg, ctx, progress)
    result = trainer.fit(  # epochs, checkpoints
        data,
        model.text,
        folder,
        validate=validate,
        save_model=None if model.save is None else lambda best: model.save(folder, best),
        on_epoch=epoch_reporter(cfg.epochs, progress),
        progress=progress,
        title=model.title,
        changed=resumed.now,
    )
    return finish(parts, folder, cfg, ctx, result, warnings)  # final evaluation, run files


def settings(parts: TrainingParts, opened: TrainingSet, world_size: int) -> tuple[Any, list]:
    """The settings the run trains with (the spec's for this width and set size, then the
    command's own) and a line for each choice made for the user."""
    small = parts.small_store(opened.cfg)
    cfg, notes = plan(opened.cfg, opened.dim, opened.videos, world_size, small, parts.what)
    return parts.settle(cfg, opened.dim), notes


def run_details(
    cfg: Any,
    ctx: DistContext,
    precision: str,
    videos: int,
    warnings: list[str],
    notes: list[str],
    resumed: Resumed,
) -> dict:
    """What config.json records of how every command trained (after the command's own)."""
    return {
        "device": str(ctx.device),
        "world_size": ctx.world_size,
        "precision": precision,
        "amp": precision != "fp32",
        "effective_batch": cfg.batch_size,
        "micro_batch": math.ceil(cfg.batch_size / cfg.micro_batches),
        "steps_per_epoch": steps_per_epoch(videos, cfg.batch_size),
        "warnings": warnings,
        "chosen_for_you": notes,
        "note": MICRO_BATCH_NOTE,
        **({CHANGED_KEY: resumed.record} if resumed.record else {}),
    }


def claim(
    parts: TrainingParts,
    folder: RunFolder,
    cfg: Any,
    ctx: DistContext,
    record: RunConfig,
    lines: list[str],
    progress: Progress,
) -> None:
    """Check a ``--resume`` on every rank, then rank 0 makes the folder and writes the run's
    config; the command begins (``parts.begin``) and rank 0 says what was chosen and why."""
    notice = None
    if cfg.resume:
        notice = check_resume(folder, cfg, parts.resume_ignored, parts.path_settings)
    ctx.barrier()  # every rank has checked the folder before rank 0 writes to it
    if ctx.is_main:
        if notice:
            progress.message(notice)
        folder.create()
        folder.write_config(record)
    said = parts.begin(folder, cfg, ctx)
    if ctx.is_main:
        for line in (*said, *lines):
            progress.message(line)


def epoch_reporter(epochs: int, progress: Progress) -> Callable[[dict, int], None]:
    """Rank 0's per-epoch line, about ``EPOCH_LINES`` per run and always the last."""
    every = max(1, epochs // EPOCH_LINES)

    def report(line: dict, last_epoch: int) -> None:
        if line["epoch"] % every == 0 or line["epoch"] == last_epoch:
            progress.message(epoch_message(line, epochs))

    return report


def finish(
    parts: TrainingParts,
    folder: RunFolder,
    cfg: Any,
    ctx: DistContext,
    result: FitResult,
    warnings: list[str],
) -> dict:
    """The run's end: curves, then (unless stopped early) rank 0's final evaluation and
    metrics.json, while the other ranks wait for it."""
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
            **parts.results(),
            "warnings": warnings,
        }
    metrics, more = parts.evaluate(cfg, folder)
    validated = result.best["epoch"] > 0
    metrics.update(
        best_epoch=result.best["epoch"] if validated else None,
        best_val_top1=result.best["top1"] if validated else None,
        checkpoint="last",
        epochs=cfg.epochs,
        **parts.results(),
        run=str(cfg.out),
    )
    folder.write_metrics(metrics)
    ctx.barrier()
    return {**metrics, "warnings": [*warnings, *more]}


def on_rank_0(ctx: DistContext, check: Callable[[], None]) -> None:
    """``check`` the run folder as its writer sees it (rank 0: on a shared disk the others could
    already see rank 0's first files); its ``ConfigError`` stops every rank with the same line."""
    problem = None
    if ctx.is_main:
        try:
            check()
        except ConfigError as error:
            problem = str(error)
    problem = ctx.broadcast(problem)
    if problem is not None:
        raise ConfigError(problem)


def check_every_rank_sees(folder: RunFolder, ctx: DistContext) -> None:
    """``--resume`` reads the run (settings, checkpoint, failures) on every rank: a node that
    does not see it would start over while the others continue, so refuse that up front."""
    seen = ctx.everyone(folder.is_run())
    if any(seen) and not all(seen):
        blind = ", ".join(str(rank) for rank, yes in enumerate(seen) if not yes)
        raise ConfigError(
            f"--resume: ranks {blind} do not see the run {folder.path} that the other ranks see; "
            "every node reads the run folder to resume, so put it on a disk all nodes share "
            "(the same path on each)"
        )
