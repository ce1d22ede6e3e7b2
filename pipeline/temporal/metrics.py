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


def confusion_matrix(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(C, C) int64 counts of videos: row = true class, column = top-1 predicted class.

    A few lines of torch, not torchmetrics: no extra dependency, exact integer counts, and it
    runs on whatever device the scores are on (``scores`` is (N, C), ``labels`` (N,)).
    """
    classes = scores.shape[1]
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < classes:
        raise ValueError(f"labels must lie in [0, {classes}), got {labels.min()}..{labels.max()}")
    # topk, as topk_accuracy ranks: on tied scores both pick the same class
    predicted = scores.topk(1, dim=1).indices[:, 0]
    flat = labels.to(scores.device).long() * classes + predicted
    return torch.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def per_class_top1(confusion: torch.Tensor, class_names: Sequence[str]) -> list[dict]:
    """One row per class: its name, its number of videos and its top-1 (%) (None: no video)."""
    counts = confusion.sum(dim=1).tolist()
    correct = confusion.diagonal().tolist()
    return [
        {"class": name, "n_videos": n, "top1": 100.0 * hit / n if n else None}
        for name, n, hit in zip(class_names, counts, correct, strict=True)
    ]


def top_confusions(confusion: torch.Tensor, class_names: Sequence[str], k: int = 10) -> list[dict]:
    """The ``k`` largest off-diagonal counts: which true class went to which predicted one."""
    off = confusion.clone()
    off.fill_diagonal_(0)
    flat = off.flatten()
    k = min(k, int((flat > 0).sum()))
    if k == 0:
        return []
    values, where = flat.topk(k)
    classes = confusion.shape[1]
    return [
        {
            "true": class_names[i // classes],
            "predicted": class_names[i % classes],
            "n_videos": int(n),
            "share_of_true": 100.0 * int(n) / max(1, int(confusion[i // classes].sum())),
        }
        for n, i in zip(values.tolist(), where.tolist(), strict=True)
    ]
