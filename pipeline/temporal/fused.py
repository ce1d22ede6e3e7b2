"""The fused training step (issue 10): M micro-batches in one batched pass, same numbers.

The per-micro-batch loop (``plain_train_step``, the reference) runs 2 x M passes of the temporal
module and M backward passes per optimiser step: thousands of small operator calls. The fused
step runs ``MoTE.training_losses_fused`` once on the whole batch with the draws made up front on
the CPU generator(s) (``draw_step``), one backward, and a multi-tensor AdamW. On CUDA the loss
can also be compiled (``torch.compile(mode="reduce-overhead")``, CUDA graphs); elsewhere it
stays eager.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from mote.pipeline.temporal.mote_model import (
    MoTE,
    StepDraws,
    draw_step,
    group_micro_batches,
    micro_batch_sizes,
)

LOSS_KEYS = ("total", "ce", "wmr", "mse")
FUSED_ADAMW_DEVICES = ("cuda", "cpu")  # torch >= 2.4 has the fused AdamW kernel on both
LossFn = Callable[[Tensor, Tensor, Tensor, StepDraws], dict[str, Tensor]]

__all__ = [
    "LOSS_KEYS",
    "adamw",
    "adamw_options",
    "compile_options",
    "drop_unrouted_grads",
    "draw_step",
    "fused_loss_fn",
    "fused_train_step",
    "micro_batch_sizes",
    "optimizer_step",
    "plain_train_step",
]


def adamw_options(device: torch.device | str) -> dict[str, bool]:
    """The fastest AdamW implementation for ``device``: the fused kernel on CUDA and CPU, the
    multi-tensor (foreach) one elsewhere; all compute the per-tensor loop's update."""
    if torch.device(device).type in FUSED_ADAMW_DEVICES:
        return {"fused": True}
    return {"foreach": True}


def adamw(
    params: Iterable[Tensor] | Iterable[dict[str, Any]],
    device: torch.device | str,
    **kwargs: Any,
) -> torch.optim.AdamW:
    """``torch.optim.AdamW(params, **kwargs)`` with ``adamw_options(device)``."""
    return torch.optim.AdamW(params, **kwargs, **adamw_options(device))


def compile_options(device: torch.device | str) -> dict[str, Any]:
    """How ``--compile`` compiles the grouped losses: inductor with CUDA graphs on CUDA (one
    graph replay instead of hundreds of kernel launches per step); elsewhere ``aot_eager``,
    the same capture (dynamo + AOT autograd, one graph, no breaks) run by eager kernels, so
    CI exercises the compiled path without a GPU or a C compiler."""
    if torch.device(device).type == "cuda":
        return {"mode": "reduce-overhead", "dynamic": False}
    return {"backend": "aot_eager", "dynamic": False}


def fused_loss_fn(model: MoTE, compile: bool = False) -> LossFn:
    """``model.training_losses_fused``; with ``compile``, its grouped part is compiled
    (``compile_options`` for the model's device). Grouping the batch stays eager, so the
    compiled graph sees fixed shapes: one graph for full batches, one recompile for the
    epoch's last, smaller batch."""
    if not compile:
        return model.training_losses_fused
    device = model.logit_scale.device
    grouped = torch.compile(model.training_losses_grouped, **compile_options(device))
    graphed = device.type == "cuda"

    def losses(e: Tensor, labels: Tensor, text: Tensor, draws: StepDraws) -> dict[str, Tensor]:
        group = group_micro_batches(e, labels, draws.micro_batches)
        if graphed:  # a new training step: the last step's graph outputs may be reused
            torch.compiler.cudagraph_mark_step_begin()
        return group.restore_order(grouped(group.e, group.labels, group.valid, text, draws))

    return losses


def drop_unrouted_grads(model: MoTE, routed: list[set[int]] | None) -> None:
    """Without WMR the loop never touches an expert no micro-batch routed to: its gradient
    stays None and AdamW skips it (no decay, no moment update). The fused pass gives such an
    expert an exact zero gradient; setting it back to None keeps the update identical.

    ``routed``: per layer, the experts any micro-batch of the whole world routed to
    (``StepDraws.routed_experts`` of the world's draws, which every rank makes: no
    communication, no read of the GPU); None when every expert takes part.
    """
    if routed is None or model.cfg.arch != "mote":
        return
    for layer, block in enumerate(model.transformer.resblocks):
        for expert in range(model.cfg.experts):
            if expert not in routed[layer]:
                for linear in (block.mlp.fc_up[expert], block.mlp.fc_dn[expert]):
                    linear.weight.grad = None
                    linear.bias.grad = None


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: Any) -> None:
    """``optimizer.step()``, through the loss scaler when fp16 training has one."""
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def fused_train_step(
    model: MoTE,
    optimizer: torch.optim.Optimizer,
    features: Tensor,
    labels: Tensor,
    text: Tensor,
    draws: StepDraws,
    scaler: Any = None,
    loss_fn: LossFn | None = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """One optimiser step on a batch, all micro-batches in one pass (same numbers as
    ``plain_train_step`` with the same draws).

    ``features`` (B, T, D) / ``labels`` (B,) on the model's device, split into
    ``draws.micro_batches`` as the loop splits them; ``draws`` from ``draw_step`` (CPU; moved
    here). ``scaler`` a CUDA GradScaler for fp16 autocast, or None. ``loss_fn`` e.g. from
    ``fused_loss_fn(model, compile=True)``. Returns the loss terms summed over videos and the
    number of correct routed predictions, as device tensors: nothing here waits for the GPU.
    """
    optimizer.zero_grad(set_to_none=True)
    device_draws = draws.to(features.device)
    with torch.autocast("cuda", dtype=torch.float16, enabled=scaler is not None):
        out = (loss_fn or model.training_losses_fused)(features.float(), labels, text, device_draws)
    loss = out["loss"]
    (scaler.scale(loss) if scaler is not None else loss).backward()
    drop_unrouted_grads(model, draws.routed_experts())
    optimizer_step(optimizer, scaler)
    sizes = out["sizes"].detach().float()
    sums = {key: (out[key].detach().float() * sizes).sum() for key in LOSS_KEYS}
    correct = (out["logits"].detach().argmax(dim=1) == labels.reshape(-1)).sum()
    return sums, correct


def plain_train_step(
    model: MoTE,
    optimizer: torch.optim.Optimizer,
    features: Tensor,
    labels: Tensor,
    text: Tensor,
    micro_batches: int,
    generator: torch.Generator | Sequence[torch.Generator] | None,
    scaler: Any = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """The per-micro-batch step the fused one is proven against (and its fallback): each
    micro-batch draws from ``generator`` (or ``generator[j]``), runs ``training_losses`` and
    backpropagates its loss / M."""
    optimizer.zero_grad(set_to_none=True)
    zero = torch.zeros((), device=features.device)
    sums = dict.fromkeys(LOSS_KEYS, zero)
    correct = zero
    parts = torch.arange(len(labels)).tensor_split(min(micro_batches, len(labels)))
    gens = list(generator) if isinstance(generator, Sequence) else [generator] * len(parts)
    for part, gen in zip(parts, gens, strict=True):
        e, y = features[part].float(), labels[part]
        with torch.autocast("cuda", dtype=torch.float16, enabled=scaler is not None):
            losses = model.training_losses(e, y, text, generator=gen)
        loss = losses["total"] / len(parts)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        for key in sums:
            sums[key] = sums[key] + losses[key].detach().float() * len(part)
        correct = correct + (losses["logits"].argmax(dim=1) == y).sum()
    optimizer_step(optimizer, scaler)
    return sums, correct
