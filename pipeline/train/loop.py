"""The epoch loop every training command runs, on one process or many (torchrun).

A command brings its model head, optimiser groups, data and validation; the ``Trainer`` does the
rest the same way for all: spec 7's lr blocks, micro-batch routing draws, AMP, gradients summed
over ranks in one collective, metrics summed over ranks, history / model / checkpoint writes on
rank 0 only, and an exact ``--resume``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch

from mote.pipeline.device import tf32_matmuls
from mote.pipeline.errors import TrainingDiverged
from mote.pipeline.progress import NullProgress, Progress
from mote.pipeline.runs.metric_logs import MetricLogs, open_logs
from mote.pipeline.runs.run_folder import RunFolder
from mote.pipeline.train.checkpoint import RandomState, load_checkpoint, save_checkpoint
from mote.pipeline.train.distributed import DistContext
from mote.pipeline.train.grad_sync import GradientSync
from mote.pipeline.train.sampler import check_micro_batches
from mote.pipeline.train.schedule import lr_changes_at, lr_factor, set_lr
from mote.pipeline.train.step import (
    LOSS_TERMS,
    LossModule,
    fused_step,
    make_scaler,
    resolve_precision,
    train_step,
)
from mote.pipeline.train.train_settings import CHANGED_KEY, TrainingSettings


class EpochData(Sized, Iterable, Protocol):
    """This rank's share of each global batch: iterating yields ``StepBatch``es (or triples
    ``(inputs, labels, global_size)``), tensors on the CPU or the device; ``len`` is the steps
    per epoch (the same on every rank)."""

    def set_epoch(self, epoch: int) -> None: ...


class StepBatch(NamedTuple):
    """One step's data on this rank: its share of the global batch, and how many videos the
    global batch holds (every rank knows it from the shared sampler, so no rank asks)."""

    inputs: torch.Tensor
    labels: torch.Tensor
    global_size: int


@dataclass
class FitResult:
    start_epoch: int  # epochs done before this call (a resume)
    last_epoch: int  # epochs done after it
    best: dict  # {"top1": best val top-1 or -1, "epoch": its epoch or -1}
    epochs: int  # the run's planned epochs

    @property
    def stopped(self) -> bool:
        """Stopped by --stop-after-epochs before the last epoch."""
        return self.last_epoch < self.epochs


MAX_SKIPPED_FRACTION = 0.5  # of an epoch's steps a loss scaler may skip (and more than 10)
# A weight beyond float16's largest value is a diverged run even while the loss stays finite
# (LayerNorm and cosine logits hide it: an lr of 1e30 gives weights of 1e29 and a chance-level
# model): no trained weight is that large, and mixed precision turns it into inf.
WEIGHT_LIMIT = 65504.0


class EpochHealth(NamedTuple):
    """An epoch's numeric health, summed over ranks: steps whose loss was not finite (no
    scaler), rank 0's first such step + 1 (0: none), steps a loss scaler skipped, and whether
    some rank's weights are not finite at the end."""

    bad_steps: float
    first_bad_step: float
    skipped: float
    weights_broken: float


def check_health(
    health: EpochHealth, epoch: int, steps: int, world_size: int, scaled: bool
) -> None:
    """Stop a diverged run with one line: where, what, and the fix."""
    fix = (
        "the weights of this epoch were not saved; the run's last checkpoint is the last "
        "good epoch: lower --lr, or train with --precision fp32, then --resume (or start a "
        "new --out)"
    )
    what = diverged_what(health, epoch, steps, world_size, scaled)
    if what is not None:
        raise TrainingDiverged(f"{what}; {fix}", what)


def diverged_what(
    health: EpochHealth, epoch: int, steps: int, world_size: int, scaled: bool
) -> str | None:
    """What went wrong in a diverged epoch (where, and what became NaN or too large); None
    for a healthy one."""
    where = f"epoch {epoch + 1}"
    if health.bad_steps:
        step = int(health.first_bad_step)
        at = f", step {step} of {steps}" if step else ""
        count = int(health.bad_steps)
        return (
            f"{where}{at}: the loss became NaN or infinite ({count} step"
            f"{'s' if count != 1 else ''} of {steps * world_size} over the processes)"
        )
    if health.weights_broken:
        return f"{where}: the weights became NaN, infinite or larger than {WEIGHT_LIMIT:g}"
    skipped = round(health.skipped / world_size)  # every rank counts the same steps
    if scaled and skipped > max(10, MAX_SKIPPED_FRACTION * steps):
        return (
            f"{where}: the fp16 loss scaler skipped {skipped} of {steps} steps (the gradients "
            "overflowed)"
        )
    return None


def routing_seed(seed: int, slot: int) -> int:
    """The routing/WMR generator seed of micro-batch slot ``slot`` (``seed`` initialises the
    model, so the slots start one above it)."""
    return seed + 1 + slot


class Trainer:
    """Holds one rank's training state: the loss module and its gradient sync, optimiser,
    scaler, routing generators. Build it on every rank with the same arguments."""

    def __init__(
        self,
        loop: TrainingSettings,
        ctx: DistContext,
        head: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        features_of: Callable[[torch.Tensor], torch.Tensor] | None = None,
        checkpoint: Callable[..., None] = save_checkpoint,
    ) -> None:
        check_micro_batches(loop.micro_batches, ctx.world_size)
        self.loop, self.ctx, self.head, self.optimizer = loop, ctx, head, optimizer
        self.checkpoint = checkpoint  # ``save_checkpoint``'s signature: a test's kill goes here
        self.precision = resolve_precision(loop.precision, ctx.device)
        self.scaler = make_scaler(self.precision, ctx.device)
        self.losses = LossModule(head, features_of, compile=loop.compile).to(ctx.device)
        self.fused = loop.fused and self.losses.can_fuse
        self.step = fused_step if self.fused else train_step
        self.module = self.losses
        self.gradients = GradientSync(
            self.losses, ctx.world_size, self.losses.leaves_parameters_unused(self.fused)
        )
        # One generator per micro-batch slot of the whole world on every rank: a rank draws its
        # own slots, and every slot when an expert can miss its gradient (routed, no WMR: the
        # fused step then knows which experts the world routed to); the checkpoint keeps each
        # slot from the rank that trains it.
        self.generators = [
            torch.Generator().manual_seed(routing_seed(loop.seed, s))
            for s in range(loop.micro_batches)
        ]
        per_rank = loop.micro_batches // ctx.world_size
        self.random = RandomState(
            {s: self.generators[s] for s in range(loop.micro_batches)},
            owned=range(ctx.rank * per_rank, (ctx.rank + 1) * per_rank),
        )
        self.lr = 0.0

    # ------------------------------------------------------------------ one epoch

    def train_epoch(self, data: EpochData, text: torch.Tensor, epoch: int) -> dict:
        """One epoch; the returned stats are sums over every rank (one sync per epoch).

        Raises ``TrainingDiverged`` when a step's loss or the weights at the end are not finite
        (not for steps a loss scaler skipped: it leaves the weights alone), or when the scaler
        skipped most of the epoch's steps; the caller has saved nothing of this epoch yet."""
        self.module.train()
        data.set_epoch(epoch)
        with tf32_matmuls(self.precision != "fp32"):
            totals = self.run_steps(data, text, epoch)
        values = self.ctx.all_reduce_sum(totals).tolist()  # the epoch's one host read
        health = EpochHealth(*values[-len(EpochHealth._fields) :])
        values = values[: -len(EpochHealth._fields)]
        seen = max(values[-1], 1.0)
        stats = {
            ("loss" if key == "total" else f"loss_{key}"): value / seen
            for key, value in zip(LOSS_TERMS, values, strict=False)
        }
        stats.update(lr=self.lr, train_top1=100.0 * values[-2] / seen, videos=int(values[-1]))
        if self.scaler is not None:  # every rank skips the same steps (gradients all-reduced)
            stats["skipped_steps"] = round(health.skipped / self.ctx.world_size)
        check_health(health, epoch, max(1, len(data)), self.ctx.world_size, self.scaler is not None)
        return stats

    def run_steps(self, data: EpochData, text: torch.Tensor, epoch: int) -> torch.Tensor:
        """Every step of an epoch; returns this rank's sums (loss terms x videos, correct,
        videos) and its ``EpochHealth`` on the device. Nothing here waits for the GPU: batch
        sizes are Python numbers, draws go to the device from pinned memory, metrics and the
        health counts stay on the device."""
        ctx, loop = self.ctx, self.loop
        iters = max(1, len(data))
        device = ctx.device
        totals = torch.zeros(len(LOSS_TERMS) + 1, device=device)  # terms, correct
        bad_steps = torch.zeros((), device=device)
        first_bad = torch.full((), -1.0, device=device)
        skipped = torch.zeros((), device=device)
        videos = 0
        for i, batch in enumerate(data):
            inputs, labels, global_size = batch
            if lr_changes_at(i):  # spec 7: lr stepped in blocks of 10 iterations
                factor = lr_factor(epoch + i / iters, loop.warmup_epochs, loop.epochs)
                self.lr = set_lr(self.optimizer, factor)
            inputs = inputs.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            scale = self._scale()
            sums, correct = self.step(
                self.module,
                self.optimizer,
                inputs,
                labels,
                text,
                self.generators,
                global_size=global_size,
                rank=ctx.rank,
                world_size=ctx.world_size,
                scaler=self.scaler,
                precision=self.precision,
                sync=self.gradients.sync if ctx.distributed else None,
            )
            terms = torch.stack([*(sums[k] for k in LOSS_TERMS), correct.float()])
            finite = torch.isfinite(terms).all()
            if self.scaler is not None:  # a skipped step halves the scale, keeps the weights
                if scale is not None:  # None before the scaler's first step
                    skipped += (self._scale() < scale).float()
            else:
                bad_steps += (~finite).float()
                first_bad = torch.where((first_bad < 0) & ~finite, float(i), first_bad)
            totals += torch.where(finite, terms, torch.zeros_like(terms))
            videos += len(labels)
        first = first_bad if ctx.rank == 0 else torch.full_like(first_bad, -1.0)
        health = torch.stack([bad_steps, first + 1, skipped, self.weights_broken()])
        return torch.cat([totals, totals.new_full((1,), videos), health])

    def weights_broken(self) -> torch.Tensor:
        """1.0 when a trained weight is NaN, infinite or beyond ``WEIGHT_LIMIT``, else 0.0, on
        the device: once per epoch, one multi-tensor max-abs (``_foreach_norm`` with ord inf)
        for all parameter tensors instead of four ops per tensor."""
        params = [p for p in self.losses.parameters() if p.requires_grad]
        with torch.no_grad():
            largest = torch.stack(torch._foreach_norm(params, float("inf")))
        return (~(largest <= WEIGHT_LIMIT).all()).float()  # NaN compares False: broken too

    def _scale(self) -> torch.Tensor | None:
        """The loss scaler's current scale as a device tensor (a copy), None without one."""
        scale = getattr(self.scaler, "_scale", None)  # made lazily by the first scale()
        return None if scale is None else scale.clone()

    # ------------------------------------------------------------------ the run

    def fit(
        self,
        data: EpochData,
        text: torch.Tensor,
        folder: RunFolder,
        *,
        validate: Callable[[], float | None] | None = None,
        save_model: Callable[[bool], None] | None = None,
        on_epoch: Callable[[dict, int], None] | None = None,
        progress: Progress | None = None,
        title: str = "train",
        changed: dict | None = None,
    ) -> FitResult:
        """Train from epoch 0, or from the checkpoint when ``loop.resume``, to ``loop.epochs``
        (or ``stop_after_epochs`` more). Every rank calls it.

        Rank 0 alone runs ``validate()`` (per-epoch top-1 or None), appends the history line,
        calls ``save_model(best)`` (default: the head through ``folder.save_model``) for the last
        weights and, on a new best val top-1, the best ones; then ``on_epoch(line, last_epoch)``.
        The checkpoint is written at the end of every epoch; then rank 0 writes the line to the
        metric logs (``loop.log``), so they never hold an epoch a resume does again. ``changed``
        (the recovery settings this resume changed, ``changed_on_resume``) goes on the first
        epoch's line.
        """
        ctx = self.ctx
        progress = progress if progress is not None and ctx.is_main else NullProgress()
        save_model = save_model or (lambda best: folder.save_model(self.head, best=best))
        ends = EpochEnds(self.head, validate, save_model)
        start, best = self.starting_point(folder)
        last = self.last_epoch(start)
        progress.start(last - start, title, unit="epochs")
        logs = open_logs(self.loop.log, folder, start + 1) if ctx.is_main else MetricLogs()
        try:
            for epoch in range(start, last):
                started = time.perf_counter()
                stats = self.train_epoch(data, text, epoch)
                if ctx.is_main:
                    line = ends.line(epoch, stats, started, changed if epoch == start else None)
                    best = ends.record(folder, line, best)
                self.save_checkpoint(folder, epoch + 1, best)
                progress.update(done=1)
                if ctx.is_main:
                    logs.write(line)
                    if on_epoch is not None:
                        on_epoch(line, last)
        finally:
            logs.close()
        progress.finish()
        return FitResult(start, last, ctx.broadcast(best), self.loop.epochs)

    def starting_point(self, folder: RunFolder) -> tuple[int, dict]:
        """The epochs done and the best so far: the checkpoint's on ``--resume``, else none."""
        ctx, loop = self.ctx, self.loop
        start, best = 0, {"top1": -1.0, "epoch": -1}
        if loop.resume and folder.has_checkpoint():
            start, best = load_checkpoint(
                folder, ctx, self.losses, self.optimizer, self.scaler, self.random
            )
        if loop.resume and ctx.is_main:
            folder.keep_history(start)  # a kill between history line and checkpoint: redo it
        ctx.barrier()
        return start, best

    def last_epoch(self, start: int) -> int:
        """Where this call stops: the run's last epoch, or ``stop_after_epochs`` after ``start``."""
        if self.loop.stop_after_epochs is None:
            return self.loop.epochs
        return min(self.loop.epochs, start + self.loop.stop_after_epochs)

    def save_checkpoint(self, folder: RunFolder, epoch: int, best: dict) -> None:
        """A collective: every rank calls it (a test may replace it to simulate a kill)."""
        self.checkpoint(
            folder, self.ctx, self.losses, self.optimizer, self.scaler, epoch, best, self.random
        )


@dataclass
class EpochEnds:
    """Rank 0's end of an epoch: validation, the history line, the last and best weights."""

    head: torch.nn.Module
    validate: Callable[[], float | None] | None
    save_model: Callable[[bool], None]

    def line(self, epoch: int, stats: dict, started: float, changed: dict | None) -> dict:
        """The epoch's history line (``changed``: this resume's changes, on its first line)."""
        val_top1 = None
        if self.validate is not None:
            self.head.eval()
            val_top1 = self.validate()
        seconds = time.perf_counter() - started
        line = {
            "epoch": epoch + 1,
            **stats,
            "val_top1": val_top1,
            "seconds": round(seconds, 3),
            "videos_per_s": round(stats["videos"] / seconds, 1),
        }
        if changed:
            line[CHANGED_KEY] = changed
        return line

    def record(self, folder: RunFolder, line: dict, best: dict) -> dict:
        """Append ``line`` to the history, save the last weights and, on a new best val top-1,
        the best ones; returns the best so far."""
        folder.append_history(line)
        self.save_model(False)
        val_top1 = line["val_top1"]
        if val_top1 is not None and val_top1 > best["top1"]:
            best = {"top1": val_top1, "epoch": line["epoch"]}
            self.save_model(True)
        return best
