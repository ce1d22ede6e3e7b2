"""Exact top-k inner-product search over embeddings streamed in row chunks.

Each chunk is one matmul on the device, then a top-k merged into a running top-k that stays on
the device: nothing waits for the device inside the loop, and the result crosses to the host
once. Memory is one chunk, its scores and Q * k keys, whatever the number of rows.

Ties are broken by the lower row, and exactly: a score and its row are packed into one int64 key
(the score's float32 bits made order-preserving in the high half, the complement of the row in
the low half), so top-k of the keys is top-k by (score descending, row ascending) with no tie left
for ``torch.topk`` to break its own way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from mote.pipeline.errors import ConfigError

Array = np.ndarray | torch.Tensor
MAX_ROWS = 2**32 - 1  # the low half of a key holds the row
_LOW = 0xFFFFFFFF
_MAGNITUDE = 0x7FFFFFFF


def compute_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA (half the bytes, tensor cores); fp32 on the CPU, where converting fp16 rows
    costs more than the matmul itself (docs/performance.md, "Search")."""
    return torch.float16 if device.type == "cuda" else torch.float32


def exact_top_k(
    queries: Array,
    chunks: Iterable[Array],
    k: int,
    device: str | torch.device = "cpu",
    *,
    exclude: Sequence[Iterable[int]] | None = None,
    dtype: torch.dtype | None = None,
    rescore: Callable[[torch.Tensor, torch.Tensor, slice], torch.Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows with the highest inner product with each query, best first.

    ``queries`` is [Q, D], L2-normalised; ``chunks`` yields [n_i, D] arrays (numpy or torch) in
    row order, so row ids are global across chunks. ``exclude[q]`` lists rows query q must not
    return (the query video itself, for a search by example). Returns ``(scores, rows)``, both
    [Q, k'] (float32, int64) with k' = min(k, N - the most rows any query excludes): every slot
    holds a real row. ``dtype`` overrides the compute dtype (``compute_dtype``). ``rescore(scores,
    rows, where)`` turns the [Q, n] inner products of a chunk's rows, the collection's rows
    ``where``, into the scores ranked (``scoring.Scorer``).
    """
    if k < 1:
        raise ConfigError(f"top-k search: k must be at least 1, got {k}")
    device = torch.device(device)
    dtype = dtype or compute_dtype(device)
    q = _checked_queries(queries).to(device=device, dtype=dtype)
    excluded = _exclusions(exclude, len(q))
    want = k + max((len(rows) for rows in excluded), default=0)
    best: torch.Tensor | None = None  # [Q, <= want] int64 keys on the device
    total = 0
    for chunk in chunks:
        rows = _checked_chunk(chunk, q.shape[1], total)
        if len(rows) == 0:
            continue
        rows = rows.to(device=device, dtype=dtype, non_blocking=True)
        scores = (q @ rows.T).float()
        if rescore is not None:
            scores = rescore(scores, rows, slice(total, total + len(rows)))
        keys = _pack(scores, total)
        top = keys.topk(min(want, keys.shape[1]), dim=1, sorted=False).values
        if best is not None:
            merged = torch.cat([best, top], dim=1)
            top = merged.topk(min(want, merged.shape[1]), dim=1, sorted=False).values
        best, total = top, total + len(rows)
        if total > MAX_ROWS:
            raise ConfigError(f"top-k search: more than {MAX_ROWS} rows; split the embeddings")
    keep = min(k, total - max((len(_in_range(r, total)) for r in excluded), default=0))
    if best is None or keep <= 0:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    if any(excluded):
        best = _drop(best, excluded, device)
    best = best.sort(dim=1, descending=True).values[:, :keep].cpu()
    scores, rows = _unpack(best)
    return scores.numpy(), rows.numpy()


def _checked_queries(queries: Array) -> torch.Tensor:
    """The queries as a float tensor, after checking they are [Q, D], finite and unit length."""
    q = torch.as_tensor(queries)
    if q.ndim != 2:
        raise ConfigError(f"top-k search: queries must be [Q, D], got shape {tuple(q.shape)}")
    norms = q.double().norm(dim=1) if len(q) else q.new_ones(0, dtype=torch.float64)
    bad = ~torch.isclose(norms, torch.ones_like(norms), atol=1e-2)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise ConfigError(
            f"top-k search: query {first} has norm {float(norms[first]):.4g}; queries must be "
            "L2-normalised (divide each by its norm)"
        )
    return q


def _checked_chunk(chunk: Array, dim: int, first_row: int) -> torch.Tensor:
    rows = torch.as_tensor(chunk)
    if rows.ndim != 2 or rows.shape[1] != dim:
        raise ConfigError(
            f"top-k search: the embeddings from row {first_row} have shape {tuple(rows.shape)}, "
            f"the queries have D={dim}; embed the queries with the model of the embeddings"
        )
    return rows


def _exclusions(exclude: Sequence[Iterable[int]] | None, queries: int) -> list[list[int]]:
    if exclude is None:
        return [[] for _ in range(queries)]
    if len(exclude) != queries:
        raise ConfigError(
            f"top-k search: exclude has {len(exclude)} entries for {queries} queries; give one "
            "list of rows per query"
        )
    return [sorted({int(r) for r in rows}) for rows in exclude]


def _in_range(rows: list[int], total: int) -> list[int]:
    return [r for r in rows if 0 <= r < total]


_ARANGE: dict[tuple[int, torch.device], torch.Tensor] = {}


def _pack(scores: torch.Tensor, first_row: int) -> torch.Tensor:
    """[Q, n] float32 scores of rows first_row.. -> int64 keys ordered as (score, -row)."""
    bits = (scores + 0.0).contiguous().view(torch.int32)  # + 0.0: -0.0 becomes 0.0, one key
    bits = bits ^ ((bits >> 31) & _MAGNITUDE)  # negative floats: reverse their order
    n = scores.shape[1]
    local = _ARANGE.get((n, scores.device))
    if local is None:
        local = _ARANGE.setdefault((n, scores.device), torch.arange(n, device=scores.device))
    return bits.to(torch.int64) * 2**32 + ((_LOW - first_row) - local)  # low half >= 0


def _unpack(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 keys -> (float32 scores, int64 rows)."""
    rows = _LOW - (keys & _LOW)
    bits = (keys >> 32).to(torch.int32)
    bits = bits ^ ((bits >> 31) & _MAGNITUDE)
    return bits.view(torch.float32), rows


def _drop(keys: torch.Tensor, excluded: list[list[int]], device: torch.device) -> torch.Tensor:
    """Keys whose rows a query excludes, made the lowest of all (they sort last, then are cut)."""
    width = max(len(rows) for rows in excluded)
    table = torch.full((len(excluded), width), -1, dtype=torch.int64)
    for i, rows in enumerate(excluded):
        table[i, : len(rows)] = torch.tensor(rows, dtype=torch.int64)
    rows = _LOW - (keys & _LOW)
    hit = (rows[:, :, None] == table.to(device)[:, None, :]).any(dim=2)
    return torch.where(hit, torch.iinfo(torch.int64).min, keys)
