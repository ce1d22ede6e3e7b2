"""Retrieval quality of embeddings as numbers (``mote search --eval``): every class name is a text
query whose relevant videos are that class's, scored against every video; beside it, zero-shot
top-1 from the same vectors (each video takes the class whose text vector scores it highest).

Scores are computed chunk by chunk on the device; the [classes, videos] matrix is kept on the
host in float32 (400 classes x 1M videos is 1.6 GB), since average precision sorts every video.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from mote.cache_schema.embeddings import EmbeddingsFile
from mote.pipeline.errors import ConfigError
from mote.pipeline.search.exact import compute_dtype
from mote.pipeline.search.score_names import DEFAULT_SCORE, RAW_SCORE
from mote.pipeline.search.scoring import Scorer, normalise, stats_of
from mote.pipeline.search.search_metrics import retrieval_metrics

KS = (10, 50)


def class_scores(
    text: torch.Tensor, chunks: Iterable[np.ndarray], device: str | torch.device = "cpu"
) -> np.ndarray:
    """float32 [C, N]: each class text vector (unit rows) against every video vector."""
    device = torch.device(device)
    dtype = compute_dtype(device)
    q = text.to(device=device, dtype=dtype)
    parts = [
        (q @ torch.as_tensor(np.asarray(c)).to(device=device, dtype=dtype).T).float().cpu()
        for c in chunks
    ]
    if not parts:
        return np.zeros((len(text), 0), np.float32)
    return torch.cat(parts, dim=1).numpy()


def class_retrieval(
    text: torch.Tensor,
    class_ids: np.ndarray,
    chunks: Iterable[np.ndarray],
    labels: np.ndarray,
    device: str | torch.device = "cpu",
    *,
    scores: Sequence[str] = (RAW_SCORE,),
    bank: torch.Tensor | None = None,
    scale: float = 100.0,
) -> dict:
    """mAP and precision@10/@50 (text -> video) and zero-shot top-1 (video -> class), percent.

    ``text`` [C, D] unit class vectors for the classes ``class_ids`` [C]; ``labels`` [N] each
    video's class (-1: none, left out of top-1 and relevant to no query). Each ranking of
    ``scores`` (``scoring.normalise`` against ``bank`` [B, D] at logit ``scale``) is measured
    under ``rankings``; the first one's numbers are also the result's own (``map``, ``p@k``).
    """
    labels = np.asarray(labels)
    class_ids = np.asarray(class_ids)
    labelled = labels >= 0
    if not labelled.any():
        raise ConfigError("retrieval evaluation needs labelled videos; these have no labels")
    bank = text[:0] if bank is None else bank.to(text)
    both = class_scores(torch.cat([text, bank]), chunks, device)
    raw, bank_cos = both[: len(text)], both[len(text) :]
    if raw.shape[1] != len(labels):
        raise ConfigError(f"retrieval evaluation: {raw.shape[1]} vectors, {len(labels)} labels")
    stats = stats_of(torch.from_numpy(bank_cos), scale) if len(bank) else None
    rankings = {}
    for name in scores:
        scored = normalise(name, torch.from_numpy(raw), stats, scale).numpy()
        rankings[name] = retrieval_metrics(scored, labels, class_ids, KS)
    result = dict(rankings[scores[0]])
    result["score"] = scores[0]
    result["rankings"] = {
        name: {key: m[key] for key in ("map", *(f"p@{k}" for k in KS))}
        for name, m in rankings.items()
    }
    predicted = class_ids[raw.argmax(axis=0)]
    result["zeroshot_top1"] = 100.0 * float(np.mean(predicted[labelled] == labels[labelled]))
    # A random ranking's expected precision at any k: the floor to read p@k against.
    result["chance_precision"] = 100.0 * float(np.mean([np.mean(labels == c) for c in class_ids]))
    result["n_videos"] = int(len(labels))
    result["n_labelled"] = int(labelled.sum())
    result["classes"] = int(len(class_ids))
    return result


def file_retrieval(
    file: EmbeddingsFile,
    table: dict[str, list],
    clip: Any,
    device: torch.device,
    scorer: Scorer,
    source: str,
) -> dict:
    """Every class of the collection as a text query: ``class_retrieval``'s numbers, for the
    chosen score and, beside it, the raw cosine (or the default score, when cosine is chosen)."""
    labels = np.asarray(table["label"], dtype=np.int64)
    names = dict(zip(table["label"], table["label_name"], strict=True))
    class_ids = np.array(sorted(c for c in names if c >= 0), dtype=np.int64)
    if not len(class_ids):
        raise ConfigError(
            f"--eval: {file.path} has no labelled video (every label is -1); evaluate on a "
            "store extracted with labels"
        )
    text = clip.class_text_embeddings([names[int(c)] for c in class_ids]).float()
    chunks = (chunk for _, chunk in file.iter_chunks())
    other = DEFAULT_SCORE if scorer.method == RAW_SCORE else RAW_SCORE
    result = class_retrieval(
        text, class_ids, chunks, labels, device, scores=(scorer.method, other),
        bank=scorer.bank, scale=scorer.scale,
    )  # fmt: skip
    result.pop("ap")
    result["bank"] = source
    result["variant"] = file.attrs["variant"]["name"]
    result["embeddings"] = str(file.path)
    return _rounded(result)


def _rounded(numbers: dict) -> dict:
    """Floats to 4 decimals, nested dicts too (the rankings)."""
    return {
        key: round(v, 4) if isinstance(v, float) else _rounded(v) if isinstance(v, dict) else v
        for key, v in numbers.items()
    }
