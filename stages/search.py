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
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mote.cache_schema.embeddings import EmbeddingsFile
from mote.cache_schema.feature_store import FeatureStore
from mote.pipeline.device import resolve_device
from mote.pipeline.errors import ConfigError
from mote.pipeline.locations import Url
from mote.pipeline.progress import NullProgress, Progress
from mote.pipeline.runs.file_run import query_clip, run_for_file
from mote.pipeline.runs.run_clip import store_expectation
from mote.pipeline.runs.run_files import write_atomic
from mote.pipeline.runs.run_folder import Run, RunFolder, load_run
from mote.pipeline.search.banks import file_store
from mote.pipeline.search.engine import (
    FileRows,
    Query,
    Rows,
    embedding_query,
    hits_of,
    index_path,
    like_query,
    logit_scale,
    make_scorers,
    open_index,
    search,
    text_queries,
    unit,
)
from mote.pipeline.search.examples import example_vector, image_query
from mote.pipeline.search.index import check_index_option
from mote.pipeline.search.index_check import check_index
from mote.pipeline.search.moments import add_moments
from mote.pipeline.search.page import PageHit, render_page, thumbnails
from mote.pipeline.search.score_names import check_score
from mote.pipeline.search.search_evaluation import file_retrieval
from mote.pipeline.threads import command_threads, use_threads
from mote.pipeline.video.decode_pool import DecodePool
from mote.pipeline.video.nvdec import check_decoder_usable
from mote.pipeline.video.sampling import parse_views
from mote.stages import embed
from mote.stages.configs.search_config import CHECK_SAMPLE, SearchConfig  # noqa: F401
from mote.stages.predict import decode_and_encode


def _check(cfg: SearchConfig) -> list[str]:
    """The text queries, after refusing what cannot be searched."""
    if (cfg.store is None) == (cfg.embeddings is None):
        raise ConfigError(
            "mote search needs one collection: --embeddings E (from `mote embed`) or --store S"
        )
    texts = [q.strip() for q in cfg.queries]
    if any(not q for q in texts):
        raise ConfigError("mote search: an empty QUERY; give words to search for, e.g. 'juggling'")
    examples = (cfg.video, cfg.like, cfg.image, cfg.embedding or None)
    if not texts and all(e is None for e in examples) and not cfg.evaluate:
        if not cfg.check_index:
            raise ConfigError(
                "mote search: no query; give a QUERY text, --video FILE, --like VIDEO_ID, "
                "--image FILE, --embedding X1,X2,..., or --eval"
            )
    check_score(cfg.score)
    check_decoder_usable(cfg.decoder)  # --video and the page's thumbnails decode
    check_index_option(cfg.index)
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
    if cfg.image is not None and not Path(cfg.image).is_file():
        what = "a folder, not an image file" if Path(cfg.image).is_dir() else "no such file"
        raise ConfigError(f"--image {cfg.image}: {what}")
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
    vector = example_vector(encoded[0], file, loaded, clip, cfg.storage_options)
    return Query(f"video {cfg.video}", "video", unit(vector, f"--video {cfg.video}"))


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
                        cache[hit["path"]], hit["frame"], hit["time_s"])
            )  # fmt: skip
        sections.append((entry["query"], hits))
    made = f"run {cfg.run}" if cfg.run is not None else "CLIP mean pooling"
    meta = f"{made}, {cfg.embeddings or cfg.store}, top {cfg.top_k}"
    write_atomic(Path(cfg.html), render_page("mote search", meta, sections).encode())


def build_queries(
    cfg: SearchConfig,
    texts: list[str],
    file: EmbeddingsFile,
    loaded: Run | None,
    clip: Any,
    ids: list[str],
    rows: Rows,
    progress: Progress,
) -> list[Query]:
    """Every query the settings ask, in a fixed order: texts, --video, --like, --image,
    --embedding."""
    queries = text_queries(texts, clip, cfg.score)
    if cfg.video is not None:
        queries.append(video_query(cfg, file, loaded, clip, progress))
    if cfg.like is not None:
        queries.append(like_query(cfg.like, file, ids, rows))
    if cfg.image is not None:
        what = f"image {cfg.image}"
        queries.append(image_query(cfg.image, what, file, loaded, clip, cfg.storage_options))
    if cfg.embedding:
        queries.append(embedding_query(np.array(cfg.embedding), file.dim, "--embedding"))
    return queries


def with_moments(
    queries: list[Query], results: list[dict], file: EmbeddingsFile, table: dict, options: Any
) -> None:
    """Each hit's best-matching frame (``frame``, ``time_s``) for queries in CLIP space."""
    store = file_store(file, options) if any(q.moment is not None for q in queries) else None
    for query, entry in zip(queries, results, strict=True):
        store_rows = [table["store_row"][hit["row"]] for hit in entry["hits"]]
        add_moments(entry["hits"], query.moment, store, store_rows)


@command_threads()
def run(cfg: SearchConfig, progress: Progress | None = None) -> dict:
    """Search; return the hits per query and, when asked, the index check and evaluation."""
    progress = progress or NullProgress()
    texts = _check(cfg)
    device = resolve_device(cfg.device)
    started = time.perf_counter()
    with collection(cfg, progress) as file:
        loaded = run_for_file(file, cfg.run, device)
        use_threads(device, width=file.dim)
        table = file.read_table().to_pydict()
        rows = FileRows(file)
        needs_clip = bool(texts) or cfg.video is not None or cfg.image is not None or cfg.evaluate
        clip = query_clip(file, cfg.run, device) if needs_clip else None
        queries = build_queries(cfg, texts, file, loaded, clip, table["video_id"], rows, progress)
        index, built = (None, False)
        if cfg.index is not None:
            index, built = open_index(file, cfg.index, progress)
        names = {q.score for q in queries} | ({cfg.score} if cfg.evaluate else set())
        scorers, bank = make_scorers(names, {q.score for q in queries}, file,
                                     logit_scale(loaded, clip), clip, device,
                                     cfg.storage_options, with_bank=cfg.evaluate)  # fmt: skip
        found = search(queries, rows, cfg.top_k, device, index, scorers)
        results = [
            {"query": q.text, "kind": q.kind, "hits": hits_of(q, s, r, table, cfg.root)}
            for q, (s, r) in zip(queries, found, strict=True)
        ]
        with_moments(queries, results, file, table, cfg.storage_options)
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
