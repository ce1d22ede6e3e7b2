"""Rank videos across a collection by a score normalised against a bank of texts.

A video's raw cosine with a text is mostly a per-video constant when texts sit close together
(hubness of cross-modal retrieval): the classifier's softmax over its class bank cancels that
constant, a ranking across videos keeps it. Each normalised score here compares the query with
the bank *on the same video*, so it needs per video only two numbers over the bank: the
log-sum-exp of its scaled cosines and their mean (``bank_stats``), whatever the query. They cost
a [bank, N] matmul, so a collection's are computed once (``collection_stats``) and kept.

- ``softmax``: the log of the query's share of a softmax over bank + query at the run's logit
  scale s, ``log sigmoid(s x - lse)``: the classifier's probability, read across videos
  (inverted softmax, Smith et al. 2017; querybank normalisation, Bogolin et al. 2022).
- ``dual-softmax``: the cosine times that share (CAMoE's dual softmax, 2021).
- ``centred``: the cosine less the video's mean cosine with the bank (the query centred by the
  bank's mean text).
- ``cosine``: the raw inner product.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from mote.pipeline.errors import ConfigError
from mote.pipeline.search.score_names import RAW_SCORE, SCORES, check_score


def bank_stats(bank: torch.Tensor, rows: torch.Tensor, scale: float) -> torch.Tensor:
    """float32 [2, n] per video row: log-sum-exp of ``scale`` x its cosines with the bank [C, D]
    (unit rows, in the rows' dtype and device), and their mean."""
    return stats_of((bank @ rows.T).float(), scale)


def collection_stats(
    bank: torch.Tensor, chunks: Iterable[np.ndarray], scale: float, device: torch.device
) -> np.ndarray:
    """float32 [2, N]: ``bank_stats`` of every row, chunk by chunk (fp32 on every device)."""
    unit = F.normalize(bank.float(), dim=-1).to(device)
    parts = [
        bank_stats(unit, torch.as_tensor(np.asarray(c)).to(device, torch.float32), scale).cpu()
        for c in chunks
    ]
    return torch.cat(parts, dim=1).numpy() if parts else np.zeros((2, 0), np.float32)


def stats_of(cos: torch.Tensor, scale: float) -> torch.Tensor:
    """float32 [2, n]: ``bank_stats`` from the bank's cosines with the videos [C, n]."""
    return torch.stack([torch.logsumexp(scale * cos, dim=0), cos.mean(dim=0)])


def normalise(
    method: str, scores: torch.Tensor, stats: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """float32 [Q, n]: the raw cosines ``scores`` [Q, n] of queries with n videos, scored by
    ``method`` from the videos' ``bank_stats`` [2, n]."""
    scores = scores.float()
    if method == RAW_SCORE:
        return scores
    if stats is None:
        raise ConfigError(f"--score {method}: needs a bank of texts to normalise against")
    lse, mean = stats[0], stats[1]
    if method == "centred":
        return scores - mean
    log_share = F.logsigmoid(scale * scores - lse)  # log e^sx / (e^sx + sum_bank e^sb)
    if method == "softmax":
        return log_share
    if method == "dual-softmax":
        return scores * log_share.exp()
    raise ConfigError(f"--score {method!r}: use one of {', '.join(SCORES)}")


class Scorer:
    """``exact_top_k``'s rescore: a method, its bank and the run's logit scale, and the rows'
    ``bank_stats`` [2, N] when already known (else computed from each chunk's rows)."""

    def __init__(
        self,
        method: str,
        bank: torch.Tensor | None,
        scale: float,
        stats: np.ndarray | None = None,
    ) -> None:
        check_score(method)
        if method != RAW_SCORE and (bank is None or not len(bank)):
            raise ConfigError(f"--score {method}: needs a bank of texts to normalise against")
        self.method, self.scale = method, float(scale)
        self.bank = None if bank is None else F.normalize(bank.float(), dim=-1)
        self.stats = None if stats is None else torch.from_numpy(stats)

    @property
    def slope(self) -> float:
        """The most the score moves per unit of cosine: 1 for cosine and centred, the scale
        for softmax (log sigmoid), 1 + scale / 4 for the dual softmax (x sigmoid)."""
        if self.method == "softmax":
            return self.scale
        if self.method == "dual-softmax":
            return 1.0 + self.scale / 4
        return 1.0

    def __call__(
        self, scores: torch.Tensor, rows: torch.Tensor, where: slice | np.ndarray
    ) -> torch.Tensor:
        """The scores of the rows at ``where`` (a slice or row numbers of the collection)."""
        if self.method == RAW_SCORE:
            return scores.float()
        if self.stats is not None:
            at = where if isinstance(where, slice) else torch.as_tensor(where)
            stats = self.stats[:, at].to(scores.device)
        else:
            stats = bank_stats(self.bank.to(rows.device, rows.dtype), rows, self.scale)
        return normalise(self.method, scores, stats, self.scale)
