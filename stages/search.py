"""``mote search``: which videos show "a person juggling"? Text (or a video) against embeddings.

Text queries go through the run CLIP's text tower with the 28 templates, the very vectors
``predict --classes`` scores (``ClipEncoder.class_text_embeddings``). ``--video FILE`` is decoded
and encoded as ``predict`` does, then made one vector with the embeddings file's own variant (TFM
against its store's class bank, the store's frames and views), so it is comparable with the rows;
``--like ID`` takes a video's own row and leaves that video out of its results. Embeddings made
without a run (CLIP mean pooling) are searched without one: queries then go through the text
tower of the CLIP their store records, and a ``--video`` is mean-pooled the same way.

Text queries rank by ``--score`` (``pipeline/search/scoring.py``): by default the query's share of
a softmax over a text bank and the query, per video, which cancels the per-video constant the
raw cosine carries; the bank is the class text bank of the file's store (the same text tower and
templates as the queries) or, for a store without class names, the shipped action vocabulary.
Each video's statistics against the bank are made once and kept beside a local file.
Queries by example rank by cosine: normalising them against a text bank lowered their
precision (docs/evaluation.md, "Ranking scores").

The vectors come from an embeddings file (``mote embed``), or, with ``--store``, from ``mote
embed``'s code path into a temporary file that is deleted afterwards (a notice says so: one
``mote embed`` makes repeated searches fast). Search is exact by default (``exact_top_k``:
chunked matmuls on the device); ``--index hnsw|ivfpq`` builds a faiss index beside the file on
first use and reuses it while the file's fingerprint matches. ``--eval`` scores every class
name as a query against its class's videos and records the numbers in the run's metrics.json.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mote.cache_schema.embeddings import EmbeddingsFile
from mote.cache_schema.store import FeatureStore
from mote.pipeline.device import resolve_device
from mote.pipeline.errors import ConfigError, IndexMismatch
from mote.pipeline.locations import Url
from mote.pipeline.progress import NullProgress, Progress
from mote.pipeline.runs.files import write_atomic
from mote.pipeline.runs.run_clip import clip_for_run, recorded_clip, store_expectation
from mote.pipeline.runs.run_folder import BEST_FILE, Run, RunFolder, load_run
from mote.pipeline.search.banks import Bank, ranking_bank, test_bank
from mote.pipeline.search.evaluation import file_retrieval
from mote.pipeline.search.exact import exact_top_k
from mote.pipeline.search.index import KINDS, SearchIndex, build_index
from mote.pipeline.search.index_check import check_index
from mote.pipeline.search.page import PageHit, render_page, thumbnails
from mote.pipeline.search.score_names import RAW_SCORE, SCORES
from mote.pipeline.search.scoring import Scorer, collection_stats
from mote.pipeline.temporal.embedding import mean_pooled_vectors, video_vectors
from mote.pipeline.threads import command_threads, use_threads
from mote.pipeline.video.decode_pool import DecodePool
from mote.pipeline.video.sampling import parse_views
from mote.stages import embed
from mote.stages.configs.search_config import CHECK_SAMPLE, SearchConfig  # noqa: F401
from mote.stages.predict import decode_and_encode

MIN_CANDIDATES = 100  # an index hands at least this many (10 x k) candidates to a normalised score


def _check(cfg: SearchConfig) -> list[str]:
    """The text queries, after refusing what cannot be searched."""
    if (cfg.store is None) == (cfg.embeddings is None):
        raise ConfigError(
            "mote search needs one collection: --embeddings E (from `mote embed`) or --store S"
        )
    texts = [q.strip() for q in cfg.queries]
    if any(not q for q in texts):
        raise ConfigError("mote search: an empty QUERY; give words to search for, e.g. 'juggling'")
    if not texts and cfg.video is None and cfg.like is None and not cfg.evaluate:
        if not cfg.check_index:
            raise ConfigError(
                "mote search: no query; give a QUERY text, --video FILE, --like VIDEO_ID, or --eval"
            )
    if cfg.score not in SCORES:
        raise ConfigError(f"--score {cfg.score!r}: use one of {', '.join(SCORES)}")
    if cfg.index is not None and cfg.index not in KINDS:
        raise ConfigError(f"--index {cfg.index!r}: use one of {', '.join(KINDS)}")
    if cfg.evaluate and cfg.run is None:
        raise ConfigError("--eval records retrieval quality in a run's metrics.json: add --run RUN")
    if cfg.check_index and cfg.index is None:
        raise ConfigError("--check-index checks an index: add --index hnsw or --index ivfpq")
    if cfg.index is not None and cfg.store is not None:
        raise ConfigError(
            "--index is saved beside an embeddings file: run `mote embed --run RUN --store S "
            "--out E` once and search with --embeddings E"
        )
    if cfg.index is not None and isinstance(cfg.embeddings, Url):
        raise ConfigError(
            f"--index with --embeddings {cfg.embeddings}: the index is saved beside the "
            "embeddings file, which must then be a local folder; copy it here (`aws s3 sync "
            f"{cfg.embeddings} E.zarr`) and search --embeddings E.zarr, or search without --index"
        )
    if cfg.video is not None and not Path(cfg.video).is_file():
        raise ConfigError(f"--video {cfg.video}: no such file")
    return texts


@contextlib.contextmanager
def collection(cfg: SearchConfig, progress: Progress) -> Iterator[EmbeddingsFile]:
    """The embeddings to search: --embeddings as given (finished), or --store embedded by
    ``mote embed``'s code into a temporary file, deleted on the way out."""
    if cfg.embeddings is not None:
        file = EmbeddingsFile.open(cfg.embeddings, storage_options=cfg.storage_options)
        file.read_table()  # an unfinished file is refused here, naming how to finish it
        yield file
        return
    # A store of another encoder is refused before the notice and any work.
    expect = store_expectation(load_run(cfg.run)) if cfg.run is not None else None
    FeatureStore.open(cfg.store, expect=expect, storage_options=cfg.storage_options)
    run = f" --run {cfg.run}" if cfg.run is not None else ""
    progress.message(
        f"embedding {cfg.store} for this search only; `mote embed{run} --store "
        f"{cfg.store} --out E` once, then `mote search --embeddings E`, makes searches fast"
    )
    with tempfile.TemporaryDirectory(prefix="mote-search-") as folder:
        out = Path(folder) / "embeddings.zarr"
        made = embed.EmbedConfig(
            run=cfg.run,
            store=cfg.store,
            out=out,
            device=cfg.device,
            storage_options=cfg.storage_options,
        )
        embed.run(made, progress)
        yield EmbeddingsFile.open(out)


def load_for(file: EmbeddingsFile, cfg: SearchConfig, device: torch.device) -> Run | None:
    """The run with the weights the file was made with, refused when it is another run; None
    for a file made without a run (CLIP mean pooling), searched without one."""
    made = file.attrs["run"]
    if made is None or cfg.run is None:
        _check_runless(file, cfg)
        return None
    loaded = load_run(cfg.run, device, best=made.get("weights_file") == BEST_FILE)
    have = loaded.identity()
    # The folder may have moved: the weights' hash, their file and the run's source decide.
    differ = [
        f"{key} is {made.get(key)} not {have[key]}"
        for key in ("weights_sha256", "weights_file", "source")
        if made.get(key) != have[key]
    ]
    if differ:
        raise ConfigError(
            f"{file.path}: embeddings of another run than {cfg.run} ({'; '.join(differ)}; made "
            f"from {made.get('path')}); embed with this run: mote embed --run {cfg.run} --store "
            f"STORE --out {file.path} --overwrite"
        )
    return loaded


def _check_runless(file: EmbeddingsFile, cfg: SearchConfig) -> None:
    """A file made without a run is searched without one, and a run's file with its run."""
    if file.attrs["run"] is not None:
        raise ConfigError(
            f"{file.path}: embeddings of the run {file.attrs['run'].get('path')}; search them "
            "with --run RUN (that run), or embed the store without --run for CLIP mean pooling"
        )
    if cfg.run is not None:
        raise ConfigError(
            f"{file.path}: embeddings made without a run (CLIP mean pooling); search without "
            f"--run, or embed with it: mote embed --run {cfg.run} --store STORE --out E"
        )


@dataclass
class Query:
    """One query: what the user asked, its unit vector, the row it must not return, and the
    score that ranks its videos."""

    text: str
    kind: str  # text, video, like
    vector: np.ndarray  # float32 (D,)
    exclude: tuple[int, ...] = ()
    score: str = RAW_SCORE


def text_queries(texts: list[str], clip: Any, score: str = RAW_SCORE) -> list[Query]:
    if not texts:
        return []
    vectors = clip.class_text_embeddings(texts).float().numpy()
    return [Query(t, "text", v, score=score) for t, v in zip(texts, vectors, strict=True)]


def like_query(video_id: str, file: EmbeddingsFile, ids: list[str]) -> Query:
    try:
        row = ids.index(video_id)
    except ValueError:
        raise ConfigError(
            f"--like {video_id!r}: no such video id in {file.path} ({len(ids)} videos, e.g. "
            f"{ids[0]!r}); the ids are the table's video_id column"
        ) from None
    vector = file.read_vectors([row])[0].astype(np.float32)
    return Query(f"like {video_id}", "like", vector / np.linalg.norm(vector), (row,))


def video_query(
    cfg: SearchConfig, file: EmbeddingsFile, loaded: Run | None, clip: Any, progress: Progress
) -> Query:
    """The example video as one vector of the file's variant: the store's frames and views
    (evaluation sampling), the run's CLIP, then the views averaged as ``mote embed`` does."""
    made = file.attrs
    views = parse_views(made["store"]["views"])
    frames = int(made["store"]["frames"])
    progress.start(1, f"query video {Path(cfg.video).name}")
    try:
        with DecodePool(0, cfg.decode_timeout) as pool:
            encoded, failed = decode_and_encode(
                [Path(cfg.video)], pool, clip, frames, views, None, cfg.decoder, progress
            )
    finally:
        progress.finish()
    if 0 not in encoded:
        raise ConfigError(f"--video {cfg.video}: cannot be used as a query: {failed.get(0)}")
    if loaded is None:  # a file of CLIP mean pooling
        vector = mean_pooled_vectors(encoded[0][None], clip.device)[0]
    else:
        bank = test_bank(file, cfg.storage_options)
        text = bank if bank is not None else torch.zeros(1, loaded.model.cfg.dim)
        vector = video_vectors(loaded.model, encoded[0][None], text, bank is not None, clip.device)[
            0
        ]
    return Query(f"video {cfg.video}", "video", vector.astype(np.float32))


def query_clip(cfg: SearchConfig, file: EmbeddingsFile, device: torch.device) -> Any:
    """The CLIP whose text tower embeds the queries: the run's, or without a run the one that
    made the file's store (its model and weights as the file records them)."""
    if cfg.run is not None:
        return clip_for_run(cfg.run, str(device))
    return recorded_clip(file.attrs["clip"], str(device))


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
    file: EmbeddingsFile, bank: Bank, scale: float, device: torch.device
) -> np.ndarray:
    """Every row's ``bank_stats`` [2, N] against ``bank``: one pass over the file, kept beside
    a local file (``bank-stats-<key>.npy``, keyed by the file's fingerprint, the bank and the
    scale) so that the next search reads them instead."""
    made = f"{file.fingerprint}:{scale!r}".encode() + bank.vectors.numpy().tobytes()
    path = None
    if isinstance(file.path, Path):
        path = file.path / f"bank-stats-{hashlib.sha256(made).hexdigest()[:16]}.npy"
    if path is not None and path.is_file():
        kept = np.load(path)
        if kept.shape == (2, file.n_rows):
            return kept
    chunks = (chunk for _, chunk in file.iter_chunks())
    stats = collection_stats(bank.vectors, chunks, scale, device)
    if path is not None:
        buffer = io.BytesIO()
        np.save(buffer, stats)
        with contextlib.suppress(OSError):  # a read-only folder: compute them again next time
            write_atomic(path, buffer.getvalue())
    return stats


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


def search(
    queries: list[Query],
    file: EmbeddingsFile,
    k: int,
    device: torch.device,
    index: SearchIndex | None,
    scorers: dict[str, Scorer],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(scores, rows) per query, best first, excluded rows left out: one pass over the file (or
    the index) per score the queries rank by."""
    found: list[Any] = [None] * len(queries)
    for score in dict.fromkeys(q.score for q in queries):
        group = [i for i, q in enumerate(queries) if q.score == score]
        part = _search([queries[i] for i in group], file, k, device, index, scorers[score])
        for i, hits in zip(group, part, strict=True):
            found[i] = hits
    return found


def _search(
    queries: list[Query],
    file: EmbeddingsFile,
    k: int,
    device: torch.device,
    index: SearchIndex | None,
    scorer: Scorer,
) -> list[tuple[np.ndarray, np.ndarray]]:
    vectors = np.stack([q.vector for q in queries]).astype(np.float32)
    raw = scorer.method == RAW_SCORE
    if index is None:
        exclude = [q.exclude for q in queries]
        chunks = (chunk for _, chunk in file.iter_chunks())
        rescore = None if raw else scorer
        scores, rows = exact_top_k(vectors, chunks, k, device, exclude=exclude, rescore=rescore)
        return list(zip(scores, rows, strict=True))
    extra = max(len(q.exclude) for q in queries)
    scores, rows = index.search(vectors, k + extra if raw else max(10 * k, MIN_CANDIDATES) + extra)
    found = []
    for q, s, r in zip(queries, scores, rows, strict=True):
        keep = (r >= 0) & ~np.isin(r, q.exclude)
        found.append((s[keep][:k], r[keep][:k]) if raw else rescored(q, r[keep], file, scorer, k))
    return found


def rescored(
    query: Query, rows: np.ndarray, file: EmbeddingsFile, scorer: Scorer, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of an index's candidate rows by the query's normalised score (from their
    stored vectors); a video outside the candidates cannot be found this way."""
    rows = np.sort(rows)
    vectors = torch.from_numpy(file.read_vectors(rows).astype(np.float32))
    raw = torch.from_numpy(query.vector[None].astype(np.float32)) @ vectors.T
    scores = scorer(raw, vectors, rows)[0].numpy()
    best = np.lexsort((rows, -scores))[:k]  # score descending, ties by the lower row
    return scores[best], rows[best]


def page(cfg: SearchConfig, results: list[dict]) -> None:
    """Write ``--html``: frames of every hit, decoded once per video."""
    cache: dict[str, Any] = {}
    sections = []
    for entry in results:
        hits = []
        for hit in entry["hits"]:
            if hit["path"] not in cache:
                cache[hit["path"]] = thumbnails(hit["path"], cfg.decoder)
            hits.append(
                PageHit(hit["rank"], hit["score"], hit["video_id"], hit["label"], hit["path"],
                        cache[hit["path"]])
            )  # fmt: skip
        sections.append((entry["query"], hits))
    made = f"run {cfg.run}" if cfg.run is not None else "CLIP mean pooling"
    meta = f"{made}, {cfg.embeddings or cfg.store}, top {cfg.top_k}"
    write_atomic(Path(cfg.html), render_page("mote search", meta, sections).encode())


def logit_scale(loaded: Run | None, clip: Any) -> float:
    """The softmax scores' temperature: the run's learned scale, else (CLIP mean pooling) the
    CLIP's own; 1 when neither is loaded (queries by example rank by cosine, no softmax)."""
    if loaded is not None:
        return float(loaded.model.logit_scale.detach().exp())
    if clip is not None:
        return float(clip.model.logit_scale.detach().exp())
    return 1.0


def scorers_for(
    cfg: SearchConfig,
    queries: list[Query],
    file: EmbeddingsFile,
    loaded: Run | None,
    clip: Any,
    device: torch.device,
) -> tuple[dict[str, Scorer], Bank | None]:
    """A scorer per score the queries (and --eval) rank by, at ``logit_scale``, and the
    bank when any needs one; the rows' statistics are made (or read) only for queries."""
    names = {q.score for q in queries} | ({cfg.score} if cfg.evaluate else set())
    bank = None
    if names - {RAW_SCORE} or cfg.evaluate:
        bank = ranking_bank(file, clip, cfg.storage_options)
    scale = logit_scale(loaded, clip)
    ranked = {q.score for q in queries} - {RAW_SCORE}
    stats = bank_statistics(file, bank, scale, device) if ranked and bank else None
    vectors = None if bank is None else bank.vectors
    return {name: Scorer(name, vectors, scale, stats) for name in names}, bank


@command_threads()
def run(cfg: SearchConfig, progress: Progress | None = None) -> dict:
    """Search; return the hits per query and, when asked, the index check and evaluation."""
    progress = progress or NullProgress()
    texts = _check(cfg)
    device = resolve_device(cfg.device)
    started = time.perf_counter()
    with collection(cfg, progress) as file:
        loaded = load_for(file, cfg, device)
        use_threads(device, width=file.dim)
        table = file.read_table().to_pydict()
        needs_clip = bool(texts) or cfg.video is not None or cfg.evaluate
        clip = query_clip(cfg, file, device) if needs_clip else None
        queries = text_queries(texts, clip, cfg.score)
        if cfg.video is not None:
            queries.append(video_query(cfg, file, loaded, clip, progress))
        if cfg.like is not None:
            queries.append(like_query(cfg.like, file, table["video_id"]))
        index, built = (None, False)
        if cfg.index is not None:
            index, built = open_index(file, cfg.index, progress)
        scorers, bank = scorers_for(cfg, queries, file, loaded, clip, device)
        found = search(queries, file, cfg.top_k, device, index, scorers)
        results = [
            {"query": q.text, "kind": q.kind, "hits": hits_of(q, s, r, table, cfg.root)}
            for q, (s, r) in zip(queries, found, strict=True)
        ]
        result: dict[str, Any] = {
            "run": str(cfg.run) if cfg.run is not None else None,
            "embeddings": str(cfg.embeddings) if cfg.embeddings else None,
            "store": str(cfg.store) if cfg.store else None,
            "n_videos": file.n_rows,
            "variant": file.attrs["variant"]["name"],
            "search": f"index {cfg.index}" if index is not None else "exact",
            "top_k": cfg.top_k,
            "score": cfg.score,
            "bank": bank.source if bank is not None else None,
            "results": results,
        }
        if index is not None:
            result["index"] = {"path": str(index_path(file, index.kind)), "built": built}
        if cfg.check_index and index is not None:
            result["check_index"] = check_index(
                [q.vector for q in queries], file, index, device, CHECK_SAMPLE
            )
        if cfg.evaluate:
            store_key = file.attrs["store"]["path"]
            numbers = file_retrieval(file, table, clip, device, scorers[cfg.score], bank.source)
            result["retrieval"] = {"store": store_key, **numbers}
            RunFolder(cfg.run).write_retrieval(store_key, _recorded(result["retrieval"]))
        if cfg.html is not None:
            page(cfg, results)
            result["html"] = str(cfg.html)
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def _recorded(retrieval: dict) -> dict:
    """What metrics.json keeps of an evaluation (the store is its key there)."""
    return {key: value for key, value in retrieval.items() if key != "store"}


def records(result: dict) -> list[dict]:
    """Every hit of every query as one flat record, best first per query: ``--json``'s lines."""
    return [hit for entry in result["results"] for hit in entry["hits"]]
