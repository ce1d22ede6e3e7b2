"""Spec 7's optimiser and learning-rate schedule, shared by every training command."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from mote.pipeline.temporal.fused import adamw

LR_BLOCK = 10  # spec 7: the lr is piecewise constant over blocks of 10 iterations


def lr_factor(epoch: float, warmup: float, epochs: int) -> float:
    """Spec 7: linear warm-up from 0, then cosine to 0 at the last epoch."""
    if epoch < warmup:
        return epoch / warmup
    span = max(epochs - warmup, 1e-12)
    return 0.5 * (1 + math.cos(math.pi * min((epoch - warmup) / span, 1.0)))


def lr_changes_at(iteration: int) -> bool:
    """Whether iteration ``i`` of an epoch sets a new lr: i = 0 and every (i + 1) % 10 == 0."""
    return iteration == 0 or (iteration + 1) % LR_BLOCK == 0


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Every group at its base lr x ``factor``; returns the first group's lr (for the history)."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return optimizer.param_groups[0]["lr"]


def build_optimizer(
    groups: Iterable[tuple[str, Iterable[torch.nn.Parameter], float]], weight_decay: float
) -> torch.optim.AdamW:
    """AdamW over named groups ``(name, params, base_lr)``, weight decay on everything (spec 7).

    Empty groups are left out; the lr starts at 0 until ``set_lr``. The group order is the
    checkpoint's optimiser layout, so keep it fixed for a command.
    """
    param_groups = []
    for name, params, base_lr in groups:
        kept = [p for p in params if p.requires_grad]
        if kept:
            param_groups.append({"params": kept, "name": name, "base_lr": base_lr, "lr": 0.0})
    device = param_groups[0]["params"][0].device if param_groups else torch.device("cpu")
    return adamw(param_groups, device, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)


def mote_groups(
    head: torch.nn.Module,
    lr: float,
    clip_lr_ratio: float,
    visual: torch.nn.Module | None = None,
) -> list[tuple[str, list[torch.nn.Parameter], float]]:
    """Spec 7's two groups: "temporal" at ``lr``; "clip" (logit_scale, and the visual tower
    when fine-tuned end to end) at ``lr x clip_lr_ratio``."""
    temporal, scale = head.architecture.parameter_groups(head)
    clip = scale + (list(visual.parameters()) if visual is not None else [])
    return [("temporal", temporal, lr), ("clip", clip, lr * clip_lr_ratio)]


def spec_optimizer(
    cfg: Any, head: torch.nn.Module, visual: torch.nn.Module | None = None
) -> torch.optim.AdamW:
    """Spec 7's AdamW of a run's settings: the temporal group at ``cfg.lr``, the CLIP side
    (logit_scale, and ``visual`` when tuned end to end) at ``cfg.lr x cfg.clip_lr_ratio``."""
    groups = mote_groups(head, cfg.lr, cfg.clip_lr_ratio, visual=visual)
    return build_optimizer(groups, cfg.weight_decay)
