"""Text -> video retrieval quality: each class name is a query, the videos of that class are its
relevant results. Plain functions over score matrices and rankings, in percent (0-100) like
``pipeline/temporal/metrics.py``'s accuracies.

Average precision is scikit-learn's ``average_precision_score`` definition (not interpolated):
AP = sum_n (R_n - R_(n-1)) P_n over the distinct score thresholds n, highest first, where P_n and
R_n are the precision and recall of the videos scoring at least that threshold. Without ties it
is the mean, over the relevant videos, of the precision at each one's rank; videos that tie count
as one step. Precision@k divides the relevant videos in the top k by k (a class with fewer than
k videos cannot reach 100); the ranking breaks ties by the lower row, as ``exact_top_k`` does.
Queries without any relevant video (a class absent from the store) are left out of the means.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mote.pipeline.errors import ConfigError


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """AP of one query: ``scores`` [N] of every video, ``relevant`` [N] booleans. NaN when no
    video is relevant."""
    relevant = np.asarray(relevant, dtype=bool)
    positives = int(relevant.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranked_scores = np.asarray(scores, dtype=np.float64)[order]
    hits = np.cumsum(relevant[order])
    # The last position of each run of equal scores: one threshold each.
    ends = np.flatnonzero(np.append(np.diff(ranked_scores) != 0, True))
    precision = hits[ends] / (ends + 1)
    recall = hits[ends] / positives
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def ranking(scores: np.ndarray, k: int | None = None) -> np.ndarray:
    """Rows of each query [Q, N] by score descending, ties by the lower row; the first ``k``."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), axis=1, kind="stable")
    return order if k is None else order[:, :k]


def precision_at_k(
    rows: np.ndarray, labels: np.ndarray, query_labels: np.ndarray, k: int
) -> np.ndarray:
    """Per query, the share (percent) of relevant videos among the first ``k`` rows of a ranking
    ``rows`` [Q, >= k or all]; relevant means ``labels[row] == query_labels[q]``."""
    top = np.asarray(rows)[:, :k]
    hits = np.asarray(labels)[top] == np.asarray(query_labels)[:, None]
    return 100.0 * hits.sum(axis=1) / k


def retrieval_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    query_labels: np.ndarray | None = None,
    ks: Sequence[int] = (10, 50),
) -> dict:
    """mAP and precision@k (percent) of queries [Q] over videos [N], from ``scores`` [Q, N].

    ``labels`` [N] is each video's class; ``query_labels`` [Q] the class each query asks for
    (default: query q is class q, one query per class name). Returns ``map``, ``p@k`` for each
    k, ``queries`` (the number with a relevant video) and ``ap`` (per query, NaN without one).
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    wanted = np.arange(len(scores)) if query_labels is None else np.asarray(query_labels)
    if scores.ndim != 2 or scores.shape != (len(wanted), len(labels)):
        raise ConfigError(
            f"retrieval metrics: scores {scores.shape} must be [queries {len(wanted)}, "
            f"videos {len(labels)}]"
        )
    ap = np.array([average_precision(s, labels == c) for s, c in zip(scores, wanted, strict=True)])
    used = ~np.isnan(ap)
    result: dict = {"queries": int(used.sum())}
    result["map"] = 100.0 * float(ap[used].mean()) if used.any() else 0.0
    order = ranking(scores, max(ks, default=0))
    for k in ks:
        p = precision_at_k(order, labels, wanted, k)
        result[f"p@{k}"] = float(p[used].mean()) if used.any() else 0.0
    result["ap"] = [float(x) for x in ap]
    return result
