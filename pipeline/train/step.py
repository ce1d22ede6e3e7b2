"""One optimiser step over micro-batches, each with its own routing and WMR draw (spec 3.1, 12).

The reference draws routing per GPU process; here each micro-batch slot of a global batch has its
own generator, so 2 ranks x 1 micro-batch and 1 rank x 2 micro-batches make the same draws.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from mote.pipeline.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
LOSS_TERMS = ("total", "ce", "wmr", "mse")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: fp16 with a loss scaler on CUDA (the reference), fp32 on CPU."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs CUDA; use bf16 or fp32 on the CPU")
    return precision


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A dynamic loss scaler for fp16 only (bf16 has fp32's range)."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


class LossModule(torch.nn.Module):
    """``head.training_losses(features_of(inputs), ...)``: the one module DDP wraps.

    ``features_of`` maps a micro-batch of inputs to (B, T, D) frame features: None for cached
    features, the CLIP visual tower on the clip frames for end-to-end training. When it is an
    ``nn.Module`` its parameters are part of this module, so DDP averages their gradients too.
    """

    def __init__(
        self, head: torch.nn.Module, features_of: Callable[[torch.Tensor], torch.Tensor] | None
    ) -> None:
        super().__init__()
        self.head = head
        if isinstance(features_of, torch.nn.Module):
            self.features_of = features_of
        else:
            self._features_of = features_of

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        fn = self.features_of if "features_of" in self._modules else self._features_of
        return inputs if fn is None else fn(inputs)

    def forward(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        text: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        if len(labels) == 0:  # a rank with no data this step still joins DDP's gradient sync
            zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            return {key: zero for key in LOSS_TERMS}
        return self.head.training_losses(self.features(inputs).float(), labels, text, generator)


def train_step(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    text: torch.Tensor,
    generators: Sequence[torch.Generator],
    *,
    world_size: int = 1,
    scaler: torch.amp.GradScaler | None = None,
    precision: str = "fp32",
    global_size: torch.Tensor | int | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One optimiser step on this rank's share of a global batch (tensors on the device).

    The share is split into ``len(generators)`` contiguous micro-batches, micro-batch j routed
    with ``generators[j]``. Each micro-batch's mean loss is divided by the number of non-empty
    micro-batches of the global batch (of ``global_size`` videos; DDP's averaging over ranks
    supplies the factor ``world_size``), so gradients equal one process's on the whole batch.
    Returns summed loss terms (x videos) and correct routed predictions, as device tensors:
    nothing here waits for the GPU.
    """
    local_parts = len(generators)
    micro_batches = local_parts * world_size
    n_global = len(labels) if global_size is None else global_size
    used = torch.clamp(torch.as_tensor(n_global, device=labels.device), max=micro_batches)
    weight = world_size / used.clamp(min=1).float()
    optimizer.zero_grad(set_to_none=True)
    zero = torch.zeros((), device=labels.device)
    sums = dict.fromkeys(LOSS_TERMS, zero)
    correct = zero
    parts = torch.arange(len(labels), device=labels.device).tensor_split(local_parts)
    non_empty = [j for j, part in enumerate(parts) if len(part)] or [local_parts - 1]
    dtype = _DTYPES.get(precision)
    for j in non_empty:
        part = parts[j]
        last = j == non_empty[-1]
        sync = contextlib.nullcontext() if last or world_size == 1 else module.no_sync()
        with sync:
            with torch.autocast(labels.device.type, dtype=dtype, enabled=dtype is not None):
                losses = module(inputs[part], labels[part], text, generators[j])
            loss = losses["total"] * weight
            (scaler.scale(loss) if scaler is not None else loss).backward()
        if len(part):
            for key in LOSS_TERMS:
                sums[key] = sums[key] + losses[key].detach().float() * len(part)
            correct = correct + (losses["logits"].argmax(dim=1) == labels[part]).sum()
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return sums, correct
