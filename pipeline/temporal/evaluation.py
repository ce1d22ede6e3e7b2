"""Score cached features with a trained MoTE: per-view cosines, TFM rho, fused predictions.

Shared by ``train-temporal`` (its final evaluation), ``evaluate`` and ``zeroshot``. Evaluation
runs in fp32 without the logit scale (spec 8.1, pitfall 8). Prediction files are written by
``mote.pipeline.runs.run_folder``, which owns every run file format.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from mote.pipeline.errors import ConfigError
from mote.pipeline.temporal.metrics import confusion_matrix, fuse_views, topk_accuracy
from mote.pipeline.temporal.mote_model import MoTE


@dataclass
class Scores:
    """Everything an evaluation computed, per video and per view."""

    video_ids: list[str]
    labels: torch.Tensor  # (N,) int64
    view_logits: torch.Tensor  # (N, V, C) cosine logits (TFM applied when on)
    rho: torch.Tensor  # (N, V) TFM rho per view (1 when TFM is off)
    fused: torch.Tensor  # (N, C) spec 8.1 fused class scores

    def metrics(self) -> dict:
        result = topk_accuracy(self.fused, self.labels)
        result["n_videos"] = len(self.labels)
        return result

    def view_top1(self) -> list[float]:
        """Top-1 (%) of each view alone, in store view order."""
        if not len(self.labels):
            return []
        hits = self.view_logits.argmax(dim=-1) == self.labels[:, None]  # (N, V)
        return (100.0 * hits.float().mean(dim=0)).tolist()

    def confusion(self) -> torch.Tensor:
        """(C, C) counts of the fused top-1: row = true class, column = predicted class."""
        return confusion_matrix(self.fused, self.labels)


# Clips (videos x views) per forward pass: large, so a 20k-video store is a handful of passes.
EVAL_CLIPS = 8192


@torch.no_grad()
def score_views(
    model: MoTE,
    embeddings: np.ndarray,
    text: torch.Tensor,
    tfm: bool,
    device: torch.device | str = "cpu",
    batch_videos: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine logits (N, V, C) and rho (N, V) for features (N, V, T, D), in batches of videos.

    Sync-free: the results stay on ``device`` until the one transfer at the end, so the GPU
    never waits for the host between batches (default batch: ``EVAL_CLIPS`` clips).
    """
    model.eval().to(device)
    text = torch.nn.functional.normalize(text.float().to(device), dim=-1)
    n, v = embeddings.shape[:2]
    batch_videos = batch_videos or max(1, EVAL_CLIPS // max(1, v))
    logits = torch.empty(n, v, text.shape[0], device=device)
    rho = torch.empty(n, v, device=device)
    for start in range(0, n, batch_videos):
        block = torch.from_numpy(np.array(embeddings[start : start + batch_videos]))
        e = block.to(device=device, dtype=torch.float32, non_blocking=True)
        b = e.shape[0]
        flat_logits, flat_rho = model.predict(e.reshape(b * v, *e.shape[2:]), text, tfm=tfm)
        logits[start : start + b] = flat_logits.reshape(b, v, -1)
        rho[start : start + b] = flat_rho.reshape(b, v)
    return logits.cpu(), rho.cpu()


def check_tfm(model: MoTE, tfm: bool) -> None:
    """TFM needs the run's fine-tuning class text bank: say so before any work."""
    if tfm and model.finetune_text.shape[0] == 0:
        raise ConfigError(
            "TFM needs the run's fine-tuning class text bank, and this run has none; "
            "pass --no-tfm or use a run trained by mote train-temporal"
        )


def score(
    model: MoTE,
    embeddings: np.ndarray,
    labels: np.ndarray,
    video_ids: list[str],
    text: torch.Tensor,
    tfm: bool,
    device: torch.device | str = "cpu",
) -> Scores:
    """Score every view, then fuse them as the reference does."""
    check_tfm(model, tfm)
    logits, rho = score_views(model, embeddings, text, tfm, device)
    return Scores(
        video_ids, torch.as_tensor(labels, dtype=torch.long), logits, rho, fuse_views(logits)
    )


def override_tfm(model: MoTE, gamma: float | None, k: int | None) -> None:
    """Evaluate with another TFM gamma or K than the run was configured with (Tables 2f, 7b)."""
    changes = {
        name: value for name, value in (("tfm_gamma", gamma), ("tfm_k", k)) if value is not None
    }
    if changes:
        model.cfg = dataclasses.replace(model.cfg, **changes)
