"""An approximate nearest-neighbour index over the embeddings (faiss: the ``mote[faiss]`` extra),
for collections where exact search is too slow.

Two kinds, both inner product on L2-normalised rows:

- ``hnsw``: a graph over the full vectors (HNSW32); no training, one pass over the rows.
- ``ivfpq``: an inverted file of product-quantised codes, trained on a uniform sample of the rows,
  with the best candidates re-ranked on fp16 copies of the vectors (``Refine(SQfp16)``): PQ codes
  alone lose too much recall at 64 bytes a vector.

An index file starts with a header line, then one JSON line naming the embeddings it was built
from (the caller's fingerprint), then faiss's own bytes; ``load`` refuses a file whose fingerprint
is not the one of the embeddings being searched, before it reads the index itself.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mote.pipeline.errors import ConfigError, IndexMismatch, OutputError, os_fault_reason

KINDS = ("hnsw", "ivfpq")
MAGIC = b"mote.search-index\n"
VERSION = 1
REBUILD = "delete it and build the index again over these embeddings"


def require_faiss() -> Any:
    """The faiss module, or one line naming the extra that installs it."""
    try:
        import faiss
    except ImportError:
        raise ConfigError(
            "a faiss index needs faiss, which is not installed: pip install 'mote[faiss]' "
            "(faiss-cpu), or search exactly without --index"
        ) from None
    return faiss


@dataclass(frozen=True)
class IndexPlan:
    """How to build and search one index: a faiss factory string and its settings."""

    kind: str
    factory: str
    train_rows: int = 0  # rows sampled to train (0: no training)
    build: dict = field(default_factory=dict)  # efConstruction / k-means iterations
    search: dict = field(default_factory=dict)  # efSearch / nprobe, k_factor


def plan_index(kind: str, count: int, dim: int) -> IndexPlan:
    """Defaults from the number of rows and their width.

    HNSW: 32 links a node, efConstruction 80, efSearch 128. IVF-PQ: about 2 sqrt(N) lists (a
    power of two, at most N / 39 so k-means has 39 rows a centroid), D / 8 sub-quantizers of 8
    bits (fewer bits when there are too few rows to train 256 centroids), trained on 39 rows a
    list, 10 k-means iterations (lists and sub-quantizers); nprobe a 16th of the lists, and
    the 8k best codes re-ranked.
    """
    if kind not in KINDS:
        raise ConfigError(f"index kind {kind!r} is not one of {', '.join(KINDS)}")
    if count < 1:
        raise ConfigError("cannot build a search index over no embeddings")
    if kind == "hnsw":
        return IndexPlan(
            kind, "HNSW32,Flat", build={"efConstruction": 80}, search={"efSearch": 128}
        )
    lists = min(_power_of_two(2 * math.sqrt(count)), 2 ** int(math.log2(max(1, count // 39))))
    bits = min(8, max(4, int(math.log2(max(1, count // 39)))))
    subs = max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)
    train = min(count, max(39 * lists, 39 * 2**bits))
    return IndexPlan(
        kind,
        f"IVF{lists},PQ{subs}x{bits}np,Refine(SQfp16)",  # np: no polysemous training
        train_rows=train,
        build={"niter": 10},
        search={"nprobe": max(1, lists // 16), "k_factor": 8},
    )


def _power_of_two(value: float) -> int:
    return 2 ** max(0, round(math.log2(max(1.0, value))))


@dataclass
class SearchIndex:
    """A faiss index with the fingerprint of the embeddings it holds and its search settings."""

    index: Any  # faiss.Index
    kind: str
    fingerprint: str
    search_settings: dict

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int, **settings: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [Q, k'] float32, rows [Q, k'] int64), best first, k' = min(k, rows held);
        ``settings`` override the stored ones (efSearch, nprobe, k_factor)."""
        if k < 1:
            raise ConfigError(f"index search: k must be at least 1, got {k}")
        faiss = require_faiss()
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.index.d:
            raise ConfigError(
                f"index search: queries have shape {q.shape}, the index holds D={self.index.d}; "
                "embed the queries with the model of the embeddings"
            )
        k = min(k, self.count)
        scores, rows = self.index.search(q, k, params=self._params(faiss, k, settings))
        return scores.astype(np.float32), rows.astype(np.int64)

    def _params(self, faiss: Any, k: int, overrides: dict) -> Any:
        s = {**self.search_settings, **overrides}
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=max(int(s["efSearch"]), k))
        ivf = faiss.SearchParametersIVF(nprobe=int(s["nprobe"]))
        return faiss.IndexRefineSearchParameters(
            k_factor=float(s["k_factor"]), base_index_params=ivf
        )

    def save(self, path: Path) -> None:
        """Write the index to ``path`` (a temporary file renamed over it: never half written)."""
        faiss = require_faiss()
        header = {
            "version": VERSION,
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            "count": self.count,
            "dim": int(self.index.d),
            "search": self.search_settings,
        }
        partial = path.with_name(path.name + ".partial")
        try:
            with open(partial, "wb") as out:
                out.write(MAGIC + json.dumps(header).encode() + b"\n")
                faiss.write_index(self.index, faiss.PyCallbackIOWriter(out.write))
            os.replace(partial, path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise OutputError(f"{path}: cannot write the index: {os_fault_reason(exc)}") from exc

    @classmethod
    def load(cls, path: Path, fingerprint: str, rebuild: str = REBUILD) -> SearchIndex:
        """The index saved at ``path``, if it was built from the embeddings ``fingerprint``
        names; ``rebuild`` is the fix the error gives for a stale index."""
        faiss = require_faiss()
        try:
            with open(path, "rb") as source:
                header = _header(source, path, rebuild)
                if header["fingerprint"] != fingerprint:
                    raise IndexMismatch(
                        f"{path}: the index was built from embeddings {header['fingerprint']}, "
                        f"these are {fingerprint}; it is stale: {rebuild}"
                    )
                index = faiss.read_index(faiss.PyCallbackIOReader(source.read))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the index: {os_fault_reason(exc)}") from exc
        except RuntimeError as exc:  # faiss's own reader: the file was cut short or damaged
            raise IndexMismatch(f"{path}: the index is damaged ({exc}); {rebuild}") from exc
        return cls(index, header["kind"], fingerprint, header["search"])


def _header(source: Any, path: Path, rebuild: str) -> dict:
    if source.readline() != MAGIC:
        raise IndexMismatch(f"{path}: not a mote search index; {rebuild}")
    try:
        header = json.loads(source.readline())
    except ValueError as exc:
        raise IndexMismatch(f"{path}: the index header is damaged ({exc}); {rebuild}") from exc
    if header.get("version") != VERSION or header.get("kind") not in KINDS:
        raise IndexMismatch(
            f"{path}: index format v{header.get('version')} ({header.get('kind')}), this mote "
            f"reads v{VERSION}; {rebuild}"
        )
    return header


def build_index(
    chunks: Callable[[], Iterable[np.ndarray]],
    count: int,
    dim: int,
    kind: str,
    fingerprint: str,
    *,
    seed: int = 0,
) -> SearchIndex:
    """An index of kind ``kind`` over the ``count`` rows of width ``dim`` that ``chunks()``
    yields in row order.

    ``chunks`` is called once for HNSW and twice for IVF-PQ (a sample to train on, then every
    row), so memory is the index plus one chunk and the training sample.
    """
    faiss = require_faiss()
    plan = plan_index(kind, count, dim)
    index = faiss.index_factory(dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
    if plan.kind == "hnsw":
        faiss.downcast_index(index).hnsw.efConstruction = plan.build["efConstruction"]
    else:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        for clustering in (ivf.cp, ivf.pq.cp):  # lists, then each sub-quantizer
            clustering.niter, clustering.seed = plan.build["niter"], seed
        index.train(_sample(chunks(), count, dim, plan.train_rows, seed))
    added = 0
    for chunk in chunks():
        rows = _checked_rows(chunk, dim, added)
        index.add(rows)
        added += len(rows)
    if added != count:
        raise ConfigError(f"build index: the embeddings have {added} rows, not the {count} given")
    return SearchIndex(index, plan.kind, fingerprint, dict(plan.search))


def _checked_rows(chunk: np.ndarray, dim: int, first_row: int) -> np.ndarray:
    rows = np.ascontiguousarray(chunk, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != dim:
        raise ConfigError(
            f"build index: the embeddings from row {first_row} have shape {rows.shape}, "
            f"expected D={dim}"
        )
    return rows


def _sample(chunks: Iterable[np.ndarray], count: int, dim: int, size: int, seed: int) -> np.ndarray:
    """``size`` rows drawn uniformly (seeded) from the ``count`` rows, in row order."""
    picked = np.sort(np.random.default_rng(seed).choice(count, size, replace=False))
    parts, start = [np.zeros((0, dim), np.float32)], 0
    for chunk in chunks:
        rows = np.asarray(chunk)
        lo, hi = np.searchsorted(picked, [start, start + len(rows)])
        parts.append(_checked_rows(rows[picked[lo:hi] - start], dim, start))
        start += len(rows)
    return np.ascontiguousarray(np.concatenate(parts))


def recall_at_k(index_rows: np.ndarray, exact_rows: np.ndarray, k: int) -> float:
    """Mean over queries of the share of the exact top-k that the index's top-k found (rows
    of -1, faiss's "no result", find nothing). 1.0 when there is nothing to find."""
    found = []
    for got, truth in zip(np.asarray(index_rows), np.asarray(exact_rows), strict=True):
        wanted = set(truth[:k].tolist())
        if wanted:
            found.append(len(wanted & set(got[:k].tolist())) / len(wanted))
    return float(np.mean(found)) if found else 1.0


def check_index_option(kind: str | None) -> None:
    """``--index KIND`` (search, serve) names an index kind, or is absent."""
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"--index {kind!r}: use one of {', '.join(KINDS)}")
