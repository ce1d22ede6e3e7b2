"""The search itself, shared by ``mote search`` (one shot) and ``mote serve`` (resident): queries
as unit vectors, the scorers that rank them, and the top-k over a collection's rows.

A collection's rows come from a ``Rows`` source: the embeddings file streamed chunk by chunk
(``FileRows``, what one search reads once), or rows held on the device (``ResidentRows``, what
a server keeps between requests). Text queries rank by a score normalised against a text bank
(``scoring.py``); queries by example (a video, an image, a raw vector) rank by cosine.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from mote.cache_schema.embeddings import EmbeddingsFile
from mote.pipeline.errors import ConfigError, IndexMismatch
from mote.pipeline.progress import Progress
from mote.pipeline.search.banks import Bank, kept_beside, ranking_bank
from mote.pipeline.search.exact import compute_dtype, exact_top_k
from mote.pipeline.search.index import SearchIndex, build_index
from mote.pipeline.search.score_names import RAW_SCORE
from mote.pipeline.search.scoring import Scorer, collection_stats

MIN_CANDIDATES = 100  # an index hands at least this many (10 x k) candidates to a normalised score
RESIDENT_CHUNK = 262144  # rows per matmul over resident rows: bounds the [Q, n] score block
REFINE = 256  # extra candidates of a half-precision scan, re-scored in fp32
HALF_ERROR = 2.0**-9  # bound on an fp16 scan's error in a cosine of unit rows (rounding: 2^-11)


@dataclass
class Query:
    """One query: what the user asked, its unit vector, the row it must not return, and the
    score that ranks its videos."""

    text: str
    kind: str  # text, video, like, image, embedding
    vector: np.ndarray  # float32 (D,)
    exclude: tuple[int, ...] = ()
    score: str = RAW_SCORE
    moment: np.ndarray | None = None  # unit CLIP vector that finds each hit's best frame


class Rows(Protocol):
    """Where a search reads a collection's row vectors."""

    n_rows: int

    def chunks(self) -> Iterator[np.ndarray | torch.Tensor]: ...

    def read_vectors(self, rows: np.ndarray) -> np.ndarray: ...


class FileRows:
    """The rows of an embeddings file, streamed chunk by chunk (one search reads them once)."""

    def __init__(self, file: EmbeddingsFile) -> None:
        self.file, self.n_rows = file, file.n_rows

    def chunks(self) -> Iterator[np.ndarray]:
        return (chunk for _, chunk in self.file.iter_chunks())

    def read_vectors(self, rows: np.ndarray) -> np.ndarray:
        return self.file.read_vectors(rows)


class ResidentRows:
    """Every row read once and held on ``device`` in ``dtype`` (``scan_dtype``): a server scores
    each request against memory, never against the file."""

    def __init__(
        self, file: EmbeddingsFile, device: torch.device, dtype: torch.dtype | None = None
    ) -> None:
        self.dtype = dtype or compute_dtype(device)
        parts = [torch.from_numpy(np.asarray(c)).to(device, self.dtype) for _, c in
                 file.iter_chunks()]  # fmt: skip
        self.vectors = torch.cat(parts) if parts else torch.zeros(0, file.dim, dtype=self.dtype)
        self.n_rows = len(self.vectors)

    def chunks(self) -> Iterator[torch.Tensor]:
        return (self.vectors[i : i + RESIDENT_CHUNK] for i in range(0, self.n_rows, RESIDENT_CHUNK))

    def read_vectors(self, rows: np.ndarray) -> np.ndarray:
        return self.vectors[torch.as_tensor(rows, device=self.vectors.device)].float().cpu().numpy()


def scan_dtype(device: torch.device, dim: int) -> torch.dtype:
    """The dtype resident rows are scanned in: fp16 on CUDA; on a CPU fp16 where its matmul
    beats fp32's there (half the bytes read; a probe of 131,072 rows, since not every CPU has a
    fast fp16 kernel), else fp32. A half-precision scan's best candidates are re-scored in fp32
    (``REFINE``), so the final order carries no fp16 rounding."""
    if device.type == "cuda":
        return torch.float16
    if device.type != "cpu":
        return torch.float32
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(131072, dim, generator=generator)
    query = torch.randn(1, dim, generator=generator)

    def fastest(dtype: torch.dtype) -> float:
        x, q = rows.to(dtype), query.to(dtype)
        times = []
        for _ in range(4):
            started = time.perf_counter()
            q @ x.T
            times.append(time.perf_counter() - started)
        return min(times[1:])

    return torch.float16 if fastest(torch.float16) < 0.8 * fastest(torch.float32) else torch.float32


def unit(vector: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    """``vector`` as float32 of norm 1; refused when it is not a finite, non-zero vector."""
    v = np.asarray(vector.detach().cpu() if isinstance(vector, torch.Tensor) else vector)
    v = v.astype(np.float32).reshape(-1)
    norm = float(np.linalg.norm(v)) if v.size else 0.0
    if not np.isfinite(v).all() or norm == 0.0:
        raise ConfigError(f"{what}: not a usable vector (zero, empty, or not finite)")
    return v / norm


def text_queries(texts: list[str], clip: Any, score: str = RAW_SCORE) -> list[Query]:
    if not texts:
        return []
    vectors = clip.class_text_embeddings(texts).float().numpy()
    return [Query(t, "text", v, score=score, moment=v) for t, v in zip(texts, vectors, strict=True)]


def like_query(video_id: str, file: EmbeddingsFile, ids: list[str], rows: Rows) -> Query:
    try:
        row = ids.index(video_id)
    except ValueError:
        raise ConfigError(
            f"--like {video_id!r}: no such video id in {file.path} ({len(ids)} videos, e.g. "
            f"{ids[0]!r}); the ids are the table's video_id column"
        ) from None
    vector = rows.read_vectors(np.array([row]))[0]
    return Query(f"like {video_id}", "like", unit(vector, f"--like {video_id}"), (row,))


def embedding_query(vector: np.ndarray | torch.Tensor, dim: int, label: str = "embedding") -> Query:
    """A raw vector in the collection's space (from Python or the API), ranked by cosine."""
    v = np.asarray(vector.detach().cpu() if isinstance(vector, torch.Tensor) else vector)
    if v.ndim != 1 or v.shape[0] != dim:
        raise ConfigError(
            f"{label}: a vector of {dim} numbers (the collection's dimension), got shape "
            f"{tuple(v.shape)}"
        )
    return Query(label, "embedding", unit(v, label))


def hits_of(
    query: Query, scores: np.ndarray, rows: np.ndarray, table: dict[str, list], root: Path | None
) -> list[dict]:
    """One record per hit: what ``--json`` prints a line of."""
    out = []
    for rank, (score, row) in enumerate(zip(scores.tolist(), rows.tolist(), strict=True), 1):
        video_id = table["video_id"][row]
        out.append(
            {
                "query": query.text,
                "rank": rank,
                "score": round(float(score), 6),
                "video_id": video_id,
                "path": str(root / video_id) if root is not None else table["path"][row],
                "label": table["label_name"][row],
                "row": int(row),
                "scoring": query.score,
            }
        )
    return out


def bank_statistics(
    file: EmbeddingsFile, bank: Bank, scale: float, device: torch.device, rows: Rows | None = None
) -> np.ndarray:
    """Every row's ``bank_stats`` [2, N] against ``bank``: one pass over the rows, kept beside
    the file (keyed by its fingerprint, the bank and the scale) for the next search."""
    key = f"{file.fingerprint}:{scale!r}".encode() + bank.vectors.numpy().tobytes()
    return kept_beside(
        file, "bank-stats", key, (2, file.n_rows),
        lambda: collection_stats(bank.vectors, (rows or FileRows(file)).chunks(), scale, device),
    )  # fmt: skip


def logit_scale(loaded: Any, clip: Any) -> float:
    """The softmax scores' temperature: the run's learned scale, else (CLIP mean pooling) the
    CLIP's own; 1 when neither is loaded (queries by example rank by cosine, no softmax)."""
    if loaded is not None:
        return float(loaded.model.logit_scale.detach().exp())
    if clip is not None:
        return float(clip.model.logit_scale.detach().exp())
    return 1.0


def make_scorers(
    names: set[str],
    ranked: set[str],
    file: EmbeddingsFile,
    scale: float,
    clip: Any,
    device: torch.device,
    storage_options: dict[str, Any] | None,
    rows: Rows | None = None,
    with_bank: bool = False,
) -> tuple[dict[str, Scorer], Bank | None]:
    """A scorer per score in ``names`` at ``scale``, and the bank when any needs one (or
    ``with_bank``); the rows' statistics are made (or read) only when a score in ``ranked``
    ranks queries."""
    needed = with_bank or bool(names - {RAW_SCORE})
    bank = ranking_bank(file, clip, storage_options) if needed else None
    ranked = ranked - {RAW_SCORE}
    stats = bank_statistics(file, bank, scale, device, rows) if ranked and bank else None
    vectors = None if bank is None else bank.vectors
    return {name: Scorer(name, vectors, scale, stats) for name in names}, bank


def search(
    queries: list[Query],
    rows: Rows,
    k: int,
    device: torch.device,
    index: SearchIndex | None,
    scorers: dict[str, Scorer],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(scores, rows) per query, best first, excluded rows left out: one pass over the rows (or
    the index) per score the queries rank by."""
    found: list[Any] = [None] * len(queries)
    for score in dict.fromkeys(q.score for q in queries):
        group = [i for i, q in enumerate(queries) if q.score == score]
        part = _search([queries[i] for i in group], rows, k, device, index, scorers[score])
        for i, hits in zip(group, part, strict=True):
            found[i] = hits
    return found


def _search(
    queries: list[Query],
    rows: Rows,
    k: int,
    device: torch.device,
    index: SearchIndex | None,
    scorer: Scorer,
) -> list[tuple[np.ndarray, np.ndarray]]:
    vectors = np.stack([q.vector for q in queries]).astype(np.float32)
    raw = scorer.method == RAW_SCORE
    if index is None:
        exclude = [q.exclude for q in queries]
        rescore = None if raw else scorer
        dtype = getattr(rows, "dtype", None)
        half = dtype in (torch.float16, torch.bfloat16)
        scores, found = exact_top_k(vectors, rows.chunks(), k + REFINE if half else k, device,
                                    exclude=exclude, rescore=rescore, dtype=dtype)  # fmt: skip
        if half:
            return [refined(q, s, r, rows, scorer, k, device)
                    for q, s, r in zip(queries, scores, found, strict=True)]  # fmt: skip
        return list(zip(scores, found, strict=True))
    extra = max(len(q.exclude) for q in queries)
    scores, candidates = index.search(
        vectors, k + extra if raw else max(10 * k, MIN_CANDIDATES) + extra
    )
    out = []
    for q, s, r in zip(queries, scores, candidates, strict=True):
        keep = (r >= 0) & ~np.isin(r, q.exclude)
        out.append((s[keep][:k], r[keep][:k]) if raw else rescored(q, r[keep], rows, scorer, k))
    return out


def refined(
    query: Query,
    scanned: np.ndarray,
    candidates: np.ndarray,
    rows: Rows,
    scorer: Scorer,
    k: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of a half-precision scan's candidates, re-scored in fp32; exact when the
    k-th of them beats anything the scan left out by more than its error (every row is a
    candidate, or the last candidate's scan score plus ``HALF_ERROR`` times how fast the score
    moves with the cosine is below it). Else near-ties run past the candidates: the query is
    scanned again in fp32."""
    best = rescored(query, candidates, rows, scorer, k)
    if len(candidates) < k + REFINE:  # every row not excluded was a candidate
        return best
    if len(best[0]) == k and best[0][-1] > scanned[-1] + scorer.slope * HALF_ERROR:
        return best
    chunks = (chunk.float() for chunk in rows.chunks())
    rescore = None if scorer.method == RAW_SCORE else scorer
    scores, found = exact_top_k(query.vector[None], chunks, k, device, exclude=[query.exclude],
                                rescore=rescore, dtype=torch.float32)  # fmt: skip
    return scores[0], found[0]


def rescored(
    query: Query, candidates: np.ndarray, rows: Rows, scorer: Scorer, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of an index's candidate rows by the query's normalised score (from their
    stored vectors); a video outside the candidates cannot be found this way."""
    candidates = np.sort(candidates)
    vectors = torch.from_numpy(rows.read_vectors(candidates).astype(np.float32))
    raw = torch.from_numpy(query.vector[None].astype(np.float32)) @ vectors.T
    scores = scorer(raw, vectors, candidates)[0].numpy()
    best = np.lexsort((candidates, -scores))[:k]  # score descending, ties by the lower row
    return scores[best], candidates[best]


def index_path(file: EmbeddingsFile, kind: str) -> Path:
    return file.path / f"index-{kind}.faiss"


def open_index(file: EmbeddingsFile, kind: str, progress: Progress) -> tuple[SearchIndex, bool]:
    """The saved index of ``kind`` beside the file, or a new one (saved); True when built."""
    path = index_path(file, kind)
    if path.is_file():
        try:
            return SearchIndex.load(path, file.fingerprint), False
        except IndexMismatch as stale:
            progress.message(f"rebuilding the index: {stale}")
    progress.message(f"building a {kind} index over {file.n_rows} embeddings: {path}")
    index = build_index(
        lambda: (chunk for _, chunk in file.iter_chunks()),
        file.n_rows,
        file.dim,
        kind,
        file.fingerprint,
    )
    index.save(path)
    return index, True
