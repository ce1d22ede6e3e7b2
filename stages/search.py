"""``mote search``: which videos show "a person juggling"? Text (or a video) against embeddings.

Text queries go through the run CLIP's text tower with the 28 templates, the very vectors
``predict --classes`` scores (``ClipEncoder.class_text_embeddings``). ``--video FILE`` is decoded
and encoded as ``predict`` does, then made one vector with the embeddings file's own variant (TFM
against its store's class bank, the store's frames and views), so it is comparable with the rows;
``--like ID`` takes a video's own row and leaves that video out of its results. Embeddings made
without a run (CLIP mean pooling) are searched without one: queries then go through the text
tower of the CLIP their store records, and a ``--video`` is mean-pooled the same way.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mote.cache_schema.embeddings import EmbeddingsFile
from mote.cache_schema.store import FeatureStore
from mote.pipeline.device import resolve_device
from mote.pipeline.errors import ConfigError, IndexMismatch
from mote.pipeline.locations import Url, locate
from mote.pipeline.progress import NullProgress, Progress
from mote.pipeline.runs.files import write_atomic
from mote.pipeline.runs.run_clip import clip_for_run, recorded_clip, store_expectation
from mote.pipeline.runs.run_folder import BEST_FILE, Run, RunFolder, load_run
from mote.pipeline.search.evaluation import class_retrieval
from mote.pipeline.search.exact import exact_top_k
from mote.pipeline.search.index import KINDS, SearchIndex, build_index, recall_at_k
from mote.pipeline.search.page import PageHit, render_page, thumbnails
from mote.pipeline.temporal.embedding import mean_pooled_vectors, video_vectors
from mote.pipeline.threads import command_threads, use_threads
from mote.pipeline.video.decode_pool import DecodePool
from mote.pipeline.video.sampling import parse_views
from mote.stages import embed
from mote.stages.configs.search_config import CHECK_SAMPLE, SearchConfig  # noqa: F401
from mote.stages.predict import decode_and_encode

RECALL_K = 10


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
    """One query: what the user asked, its unit vector, and the row it must not return."""

    text: str
    kind: str  # text, video, like
    vector: np.ndarray  # float32 (D,)
    exclude: tuple[int, ...] = ()


def text_queries(texts: list[str], clip: Any) -> list[Query]:
    if not texts:
        return []
    vectors = clip.class_text_embeddings(texts).float().numpy()
    return [Query(t, "text", v) for t, v in zip(texts, vectors, strict=True)]


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


def test_bank(file: EmbeddingsFile, storage_options: dict[str, Any] | None) -> torch.Tensor | None:
    """The class text bank TFM compared with when the file was made (its store's, local or at
    a URL), or None when its variant is plain."""
    variant = file.attrs["variant"]
    if variant.get("name") != "tfm":
        return None
    path = locate(file.attrs["store"]["path"])
    if isinstance(path, Path) and not path.exists():
        raise ConfigError(
            f"--video: {file.path} was made with TFM against the class names of {path}, which "
            "is gone; --video needs that store's text bank (or embeddings made with --no-tfm)"
        )
    store = FeatureStore.open(path, storage_options=storage_options)
    return torch.from_numpy(np.array(store.text_embeddings))


def video_query(
    cfg: SearchConfig, file: EmbeddingsFile, loaded: Run | None, clip: Any, progress: Progress
) -> Query:
    """The example video as one vector of the file's variant: the store's frames and views
    (evaluation sampling), the run's CLIP, then the views averaged as ``mote embed`` does."""
    made = file.attrs
    views = parse_views(made["store"]["views"])
    frames = int(made["store"]["frames"])
    progress.start(1, "encode --video")  # decode_and_encode counts into a started progress
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
            }
        )
    return out


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
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(scores, rows) per query, best first, excluded rows left out."""
    if not queries:
        return []
    vectors = np.stack([q.vector for q in queries]).astype(np.float32)
    if index is None:
        exclude = [q.exclude for q in queries]
        chunks = (chunk for _, chunk in file.iter_chunks())
        scores, rows = exact_top_k(vectors, chunks, k, device, exclude=exclude)
        return list(zip(scores, rows, strict=True))
    extra = max(len(q.exclude) for q in queries)
    scores, rows = index.search(vectors, k + extra)
    found = []
    for q, s, r in zip(queries, scores, rows, strict=True):
        keep = (r >= 0) & ~np.isin(r, q.exclude)
        found.append((s[keep][:k], r[keep][:k]))
    return found


def check_index(
    queries: list[Query], file: EmbeddingsFile, index: SearchIndex, device: torch.device
) -> dict:
    """recall@10 of the index against exact search, and how many times faster it answered."""
    if queries:
        vectors = np.stack([q.vector for q in queries]).astype(np.float32)
        source = "the queries"
    else:
        rng = np.random.default_rng(0)
        rows = np.sort(rng.choice(file.n_rows, min(CHECK_SAMPLE, file.n_rows), replace=False))
        vectors = file.read_vectors(rows).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        source = f"{len(rows)} of the collection's own rows"
    started = time.perf_counter()
    chunks = (chunk for _, chunk in file.iter_chunks())
    _, exact_rows = exact_top_k(vectors, chunks, RECALL_K, device)
    exact_s = time.perf_counter() - started
    started = time.perf_counter()
    _, index_rows = index.search(vectors, RECALL_K)
    index_s = time.perf_counter() - started
    return {
        "kind": index.kind,
        "queries": int(len(vectors)),
        "on": source,
        "recall@10": round(recall_at_k(index_rows, exact_rows, RECALL_K), 4),
        "exact_s": round(exact_s, 4),
        "index_s": round(index_s, 4),
        "speedup": round(exact_s / index_s, 1) if index_s > 0 else None,
    }


def evaluate(file: EmbeddingsFile, table: dict[str, list], clip: Any, device: torch.device) -> dict:
    """Every class of the collection as a text query: ``class_retrieval``'s numbers."""
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
    result = class_retrieval(text, class_ids, chunks, labels, device)
    result.pop("ap")
    result["variant"] = file.attrs["variant"]["name"]
    result["embeddings"] = str(file.path)
    return {key: round(v, 4) if isinstance(v, float) else v for key, v in result.items()}


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
        queries = text_queries(texts, clip)
        if cfg.video is not None:
            queries.append(video_query(cfg, file, loaded, clip, progress))
        if cfg.like is not None:
            queries.append(like_query(cfg.like, file, table["video_id"]))
        index, built = (None, False)
        if cfg.index is not None:
            index, built = open_index(file, cfg.index, progress)
        found = search(queries, file, cfg.top_k, device, index)
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
            "results": results,
        }
        if index is not None:
            result["index"] = {"path": str(index_path(file, index.kind)), "built": built}
        if cfg.check_index and index is not None:
            result["check_index"] = check_index(queries, file, index, device)
        if cfg.evaluate:
            store_key = file.attrs["store"]["path"]
            result["retrieval"] = {"store": store_key, **evaluate(file, table, clip, device)}
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
