"""How a batch splits into micro-batches (``tensor_split`` sizes, larger ones first) and the
equal-size groups the fused step runs them as, padded where the batch is uneven."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from mote.pipeline.errors import ConfigError


def micro_batch_sizes(batch: int, micro_batches: int) -> list[int]:
    """Sizes of the micro-batches a batch splits into (``tensor_split``: larger ones first)."""
    parts = min(micro_batches, batch)
    base, extra = divmod(batch, parts)
    return [base + (j < extra) for j in range(parts)]


@dataclass(frozen=True)
class MicroBatchGroups:
    """A batch as M equal micro-batch groups: e (M, b, T, D), labels (M, b), valid (M, b) row
    weights (None when every micro-batch is full) and ``order``, the grouped rows of the batch
    order (None when grouping kept it)."""

    e: Tensor
    labels: Tensor
    valid: Tensor | None = None
    order: Tensor | None = None

    def restore_order(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        """``out`` with its per-row "logits" back in batch order."""
        if self.order is None:
            return out
        return {**out, "logits": out["logits"][self.order]}


@functools.lru_cache(maxsize=64)
def _uneven_layout(
    batch: int, micro_batches: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """(rows, valid, order) of an uneven batch on ``device``, built once per shape: the last
    batch of every epoch reuses them instead of copying lists to the GPU each time."""
    parts = micro_batch_sizes(batch, micro_batches)
    b = parts[0]
    rows, keep, start = [], [], 0
    for n in parts:  # pad each micro-batch to b with copies of its first row, weighted 0
        rows += list(range(start, start + n)) + [start] * (b - n)
        keep += [float(i < n) for i in range(b)]
        start += n
    order = [m * b + i for m, n in enumerate(parts) for i in range(n)]
    return (
        torch.tensor(rows).to(device),
        torch.tensor(keep, dtype=dtype).view(micro_batches, b).to(device),
        torch.tensor(order).to(device),
    )


def group_micro_batches(e: Tensor, labels: Tensor, micro_batches: int) -> MicroBatchGroups:
    """Split a batch as the per-micro-batch loop does (``micro_batch_sizes``) into equal groups.

    e (M, b, T, D) with labels (M, b) is taken as grouped already; e (B, T, D) with labels (B,)
    is viewed as (M, b, ...) when B = M b, else padded (``_uneven_layout``)."""
    if e.ndim == 4:
        if e.shape[0] != micro_batches or labels.shape != e.shape[:2]:
            raise ConfigError(
                f"fused features {tuple(e.shape)} / labels {tuple(labels.shape)} do not "
                f"hold {micro_batches} micro-batches as (M, b, T, D) / (M, b)"
            )
        return MicroBatchGroups(e, labels)
    batch = e.shape[0]
    parts = micro_batch_sizes(batch, micro_batches)
    if len(parts) != micro_batches:
        raise ConfigError(
            f"a batch of {batch} makes {len(parts)} micro-batches, but the draws are for "
            f"{micro_batches}; draw for min(micro_batches, batch)"
        )
    b = parts[0]
    if batch == b * micro_batches:
        return MicroBatchGroups(
            e.reshape(micro_batches, b, *e.shape[1:]), labels.reshape(micro_batches, b)
        )
    rows, valid, order = _uneven_layout(batch, micro_batches, e.device, e.dtype)
    return MicroBatchGroups(
        e[rows].view(micro_batches, b, *e.shape[1:]),
        labels[rows].view(micro_batches, b),
        valid,
        order,
    )
