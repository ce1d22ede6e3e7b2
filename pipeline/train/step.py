"""One optimiser step over micro-batches, each with its own routing and WMR draw (spec 3.1, 12).

The reference draws routing per GPU process; here each micro-batch slot of a global batch has its
own generator, so 2 ranks x 1 micro-batch and 1 rank x 2 micro-batches make the same draws.

Two steps compute the same update: ``fused_step`` (the default) runs all of a rank's
micro-batches in one batched pass (``fused.fused_losses``) with the draws made up front
on the CPU generators, one backward; ``train_step`` runs them one by one (``--no-fused``, and the
reference the fused one is tested against).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from mote.pipeline.temporal.architectures import get_architecture
from mote.pipeline.temporal.fused import drop_unrouted_grads, fused_loss_fn, optimizer_step
from mote.pipeline.temporal.micro_batches import micro_batch_sizes
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.temporal.routing import StepDraws, draw_step
from mote.pipeline.train.precisions import resolved_precision

LOSS_TERMS = ("total", "ce", "wmr", "mse")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """``precision``, or what ``auto`` means on ``device`` (``precisions.auto_precision``).

    fp16 and bf16 given explicitly run on the CPU too: CPU autocast and ``GradScaler("cpu")``
    are the CPU twin of the CUDA path, so CI runs the same code (slow; meant for tests).
    Emulated bf16 (pre-Ampere GPUs) counts as unsupported: fp16 + scaler is faster there.
    """
    cuda = device.type == "cuda"
    bf16 = cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    return resolved_precision(precision, device.type, bf16)


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A dynamic loss scaler for fp16 only (bf16 has fp32's range), on CUDA or the CPU."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


class LossModule(torch.nn.Module):
    """``head.training_losses(features_of(inputs), ...)``: the one module whose gradients the
    ranks sum (``grad_sync.GradientSync``).

    ``features_of`` maps a micro-batch of inputs to (B, T, D) frame features: None for cached
    features, the CLIP visual tower on the clip frames for end-to-end training. When it is an
    ``nn.Module`` its parameters are part of this module, so they are synchronised too.
    """

    def __init__(
        self,
        head: torch.nn.Module,
        features_of: Callable[[torch.Tensor], torch.Tensor] | None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.head = head
        if isinstance(features_of, torch.nn.Module):
            self.features_of = features_of
        else:
            self._features_of = features_of
        # Compiled (CUDA graphs) only on CUDA and on request; eager everywhere else.
        self._fused_losses = fused_loss_fn(head, compile) if isinstance(head, MoTE) else None

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        fn = self.features_of if "features_of" in self._modules else self._features_of
        return inputs if fn is None else fn(inputs)

    def forward(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        text: torch.Tensor,
        generator: torch.Generator | None = None,
        draws: StepDraws | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-micro-batch losses (``generator``), or every micro-batch at once (``draws``)."""
        if len(labels) == 0:  # a rank with no data this step: zero gradients
            zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            return {key: zero for key in LOSS_TERMS}
        features = self.features(inputs).float()
        if draws is not None:
            return self._fused_losses(features, labels, text, draws)
        return self.head.training_losses(features, labels, text, generator)

    @property
    def can_fuse(self) -> bool:
        return self._fused_losses is not None

    def leaves_parameters_unused(self, fused: bool) -> bool:
        """Whether a step can leave a parameter without a gradient, so the gradient sync must
        ask the ranks which ones some rank used (a flag all-reduce and a host read): only the
        per-micro-batch step of routed MoTE without WMR (spec pitfall 12). The fused pass gives
        an unrouted expert a zero gradient, and ``drop_unrouted_grads`` removes it after the
        all-reduce."""
        cfg = getattr(self.head, "cfg", None)
        return (
            not fused
            and cfg is not None
            and get_architecture(cfg.arch).unrouted_experts_possible(cfg)
        )


def micro_batch_weight(global_size: int, micro_batches: int) -> float:
    """The factor on each micro-batch's mean loss: 1 / (non-empty micro-batches of the global
    batch of ``global_size`` videos). The ranks sum their gradients, so the sum is the whole
    batch's mean with no division. A Python number: nothing is copied to the device."""
    return 1.0 / max(1, min(global_size, micro_batches))


def own_slots(global_size: int, micro_batches: int, rank: int, world_size: int) -> range:
    """The non-empty micro-batch slots of ``rank`` in a global batch (a prefix of its slots:
    only a batch smaller than M leaves slots empty, and those are the last ones)."""
    per_rank = micro_batches // world_size
    start = rank * per_rank
    return range(start, min(start + per_rank, max(start, min(global_size, micro_batches))))


@dataclass(frozen=True)
class StepPlace:
    """Where this rank's step stands in the world's: the global batch's size (every rank knows
    it), this rank of ``world_size``, the factor on each micro-batch's mean loss
    (``micro_batch_weight``), the autocast dtype (None: fp32), the fp16 loss scaler, and the
    gradient sum over ranks to run after the last backward (``GradientSync.sync``)."""

    global_size: int
    rank: int
    world_size: int
    weight: float
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    sync: Callable[[], None] | None = None

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def sync_gradients(self) -> None:
        """After the step's last backward: sum the gradients over ranks (one collective)."""
        if self.sync is not None:
            self.sync()


StepSums = tuple[dict[str, torch.Tensor], torch.Tensor]


class StepData(NamedTuple):
    """This rank's share of a global batch, the class text, and one routing generator per
    micro-batch slot of the whole world."""

    inputs: torch.Tensor
    labels: torch.Tensor
    text: torch.Tensor
    generators: Sequence[torch.Generator]


Passes = Callable[[torch.nn.Module, StepData, StepPlace], StepSums]


@dataclass(frozen=True)
class OptimiserStep:
    """One optimiser step on this rank's share of a global batch: ``passes`` runs the forward
    and backward passes of the rank's micro-batches (``micro_batch_passes`` or ``fused_passes``),
    then the optimiser steps (through the loss scaler when there is one).

    ``generators`` holds one generator per micro-batch slot of the whole world (M); this rank
    trains slots ``rank * M/W`` onwards. Each micro-batch's mean loss is weighted by
    ``micro_batch_weight``, so gradients equal one process's on the whole batch. Returns summed
    loss terms (x videos) and correct routed predictions, as device tensors: nothing here
    waits for the GPU."""

    passes: Passes

    def __call__(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        text: torch.Tensor,
        generators: Sequence[torch.Generator],
        *,
        global_size: int,
        rank: int = 0,
        world_size: int = 1,
        scaler: torch.amp.GradScaler | None = None,
        precision: str = "fp32",
        sync: Callable[[], None] | None = None,
    ) -> StepSums:
        weight = micro_batch_weight(global_size, len(generators))
        dtype = _DTYPES.get(precision)
        place = StepPlace(global_size, rank, world_size, weight, dtype, scaler, sync)
        optimizer.zero_grad(set_to_none=True)
        sums = self.passes(module, StepData(inputs, labels, text, generators), place)
        optimizer_step(optimizer, scaler)
        return sums


def micro_batch_passes(module: torch.nn.Module, data: StepData, place: StepPlace) -> StepSums:
    """``train_step``'s passes, micro-batch by micro-batch: the rank's share is split into M/W
    contiguous micro-batches, each routed with its slot's generator; the ranks sum the gradients
    once, after the last."""
    inputs, labels, text, generators = data
    per_rank = len(generators) // place.world_size
    mine = generators[place.rank * per_rank : (place.rank + 1) * per_rank]
    zero = torch.zeros((), device=labels.device)
    sums = dict.fromkeys(LOSS_TERMS, zero)
    correct = zero
    sizes = micro_batch_sizes(len(labels), per_rank) if len(labels) else []
    sizes += [0] * (per_rank - len(sizes))
    non_empty = [j for j, n in enumerate(sizes) if n] or [per_rank - 1]
    start = 0
    for j in non_empty:
        part = slice(start, start + sizes[j])
        start += sizes[j]
        with place.autocast(labels.device):
            losses = module(inputs[part], labels[part], text, mine[j])
        place.backward(losses["total"] * place.weight)
        if sizes[j]:
            for key in LOSS_TERMS:
                sums[key] = sums[key] + losses[key].detach().float() * sizes[j]
            correct = correct + (losses["logits"].argmax(dim=1) == labels[part]).sum()
    place.sync_gradients()
    return sums, correct


def fused_passes(module: torch.nn.Module, data: StepData, place: StepPlace) -> StepSums:
    """``fused_step``'s passes: ``micro_batch_passes``'s update in one batched pass, the same
    split into micro-batches, the same draws from the same generators, one forward and one
    backward (issue 10).

    ``module`` is a ``LossModule`` whose head is a ``MoTE``.
    Each slot draws from its own generator, so a rank draws only its own slots (a few CPU
    random numbers; fewer per rank as the world grows) unless an expert can go without a
    gradient (routed experts without WMR): then it draws for every non-empty slot of the world
    and knows on the host which experts no rank routed to. The per-micro-batch step leaves
    those without a gradient (AdamW then skips them), and so must this, without asking the
    other ranks or the GPU.
    """
    inputs, labels, text, generators = data
    head = module.head
    used = min(place.global_size, len(generators))
    mine = own_slots(place.global_size, len(generators), place.rank, place.world_size)
    world = get_architecture(head.cfg.arch).unrouted_experts_possible(head.cfg)
    slots = range(used) if world else mine
    drawn = draw_step([generators[s] for s in slots], len(slots), head.cfg) if slots else None
    draws = None
    if drawn is not None and len(mine):
        draws = drawn.select(mine.start, mine.stop) if world else drawn
    with place.autocast(labels.device):
        if draws is None:  # nothing on this rank: join the gradient sync with a zero loss
            out = module(inputs, labels, text)
        else:
            out = module(inputs, labels, text, draws=draws.to(labels.device))
    place.backward(out["total"].sum() * place.weight)  # each micro-batch's mean, weighted
    place.sync_gradients()
    if world and drawn is not None:
        drop_unrouted_grads(head, drawn.routed_experts())
    if draws is None:
        zero = torch.zeros((), device=labels.device)
        return dict.fromkeys(LOSS_TERMS, zero), zero
    sizes = out["sizes"].detach().float()
    sums = {key: (out[key].detach().float() * sizes).sum() for key in LOSS_TERMS}
    correct = (out["logits"].detach().argmax(dim=1) == labels).sum()
    return sums, correct


# The two steps, with one signature (``OptimiserStep.__call__``): the loop runs one per run.
train_step = OptimiserStep(micro_batch_passes)  # --no-fused, and the fused step's reference
fused_step = OptimiserStep(fused_passes)  # the default
