"""Accuracy, view fusion and the paper's summary scores, as plain functions over arrays."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def fuse_views(view_logits: torch.Tensor) -> torch.Tensor:
    """Spec 8.1: softmax of each view's raw cosines, mean over views, softmax again.

    ``view_logits`` is (N, V, C); returns (N, C). The second softmax keeps the ranking; it is
    there so the fused scores are the reference's numbers.
    """
    probs = view_logits.float().softmax(dim=-1).mean(dim=1)
    return probs.softmax(dim=-1)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict:
    """Per-video top-k accuracy in percent (0-100), keys ``top1``, ``top5``, ...

    A k larger than the number of classes counts every video as correct at k.
    """
    if len(scores) == 0:
        return {f"top{k}": 0.0 for k in ks}
    kmax = min(max(ks), scores.shape[1])
    ranked = scores.topk(kmax, dim=1).indices  # (N, kmax)
    hits = ranked == labels.view(-1, 1)
    return {f"top{k}": 100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (the spec leaves sample vs population open)."""
    if not values:
        return 0.0, 0.0
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def harmonic_mean(values: Sequence[float]) -> float:
    """Spec 8.4 HM ZS: n / sum(1/v); 0 if any value is 0."""
    if not values or any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def tradeoff(close_set_top1: float, zero_shot_hm: float) -> float:
    """Spec 8.4: harmonic mean of the close-set top-1 and the zero-shot HM."""
    return harmonic_mean([close_set_top1, zero_shot_hm])
