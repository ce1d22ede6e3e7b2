"""One unit vector per video from a run's temporal module, or by CLIP mean pooling without a
run: what ``mote embed`` writes.

Each view goes through the evaluation path (``MoTE.view_embeddings``, the vectors whose dot
products with the class text rows are ``evaluate``'s per-view cosines, TFM applied when on); the
video's vector is the mean of its views' vectors, L2-normalised. A query's cosine with it is the
mean over views of the query's per-view cosines, divided by the length of that mean (a per-video
constant), the quantity spec 8.1's fusion averages before its softmax.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from mote.pipeline.temporal.evaluation import EVAL_CLIPS
from mote.pipeline.temporal.mote_model import MoTE


@torch.no_grad()
def video_vectors(
    model: MoTE,
    embeddings: np.ndarray,
    text: torch.Tensor,
    tfm: bool,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """float32 (N, D) unit vectors for stored features (N, V, T, D); ``text`` (C, D) is the
    test bank TFM compares with (unit rows are taken; it is normalised here)."""
    model.eval().to(device)
    text = F.normalize(text.float().to(device), dim=-1)
    e = torch.from_numpy(np.asarray(embeddings)).to(device=device, dtype=torch.float32)
    n, v = e.shape[:2]
    views, _ = model.view_embeddings(e.reshape(n * v, *e.shape[2:]), text, tfm=tfm)
    videos = F.normalize(views.reshape(n, v, -1).mean(dim=1), dim=-1)
    return videos.cpu().numpy()


@torch.no_grad()
def mean_pooled_vectors(embeddings: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """float32 (N, D) unit vectors by CLIP mean pooling, the paper's baseline and what needs
    no run: per view the mean over time of the L2-normalised frame features, L2-normalised;
    then the views averaged and L2-normalised, as ``video_vectors`` averages views."""
    e = torch.from_numpy(np.asarray(embeddings)).to(device=device, dtype=torch.float32)
    views = F.normalize(F.normalize(e, dim=-1).mean(dim=2), dim=-1)  # (N, V, D)
    return F.normalize(views.mean(dim=1), dim=-1).cpu().numpy()


def batches(rows: np.ndarray, views: int) -> Iterator[np.ndarray]:
    """Rows in groups of about ``EVAL_CLIPS`` clips, as evaluation batches them."""
    size = max(1, EVAL_CLIPS // max(1, views))
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def embed_rows(
    vectors_of: Callable[[np.ndarray], np.ndarray],
    read: Callable[[np.ndarray], np.ndarray],
    rows: np.ndarray,
    views: int,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """float32 (len(rows), D) vectors of the stored videos ``rows``: ``vectors_of`` (a run's
    ``video_vectors``, or ``mean_pooled_vectors``) of the features ``read(rows)`` gives, read one
    batch ahead in a thread (decoding chunks overlaps the model), so memory holds two batches."""
    parts = []
    groups = list(batches(rows, views))
    with ThreadPoolExecutor(1) as reader:
        ahead = reader.submit(read, groups[0]) if groups else None
        for i, group in enumerate(groups):
            features = ahead.result()
            ahead = reader.submit(read, groups[i + 1]) if i + 1 < len(groups) else None
            parts.append(vectors_of(features))
            if on_batch is not None:
                on_batch(len(group))
    return np.concatenate(parts) if parts else np.empty((0, 0), np.float32)
