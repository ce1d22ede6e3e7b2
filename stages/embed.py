"""``mote embed``: one unit vector per done video of a store, for text-to-video search.

The run's temporal module runs over the stored frames of every view through the evaluation path
(``pipeline/temporal/embedding.py``), TFM on by default with the store's class names as the test
bank (the zero-shot path; docs/evaluation.md says why), and the views' vectors are averaged.
Without ``--run``, CLIP mean pooling of the stored frames with the store's own encoder (the
paper's baseline), so any collection is searchable with no training. The
vectors go to an embeddings file (``cache_schema/embeddings.py``) chunk by chunk, so memory holds
a chunk, not the store; a rerun continues where a stopped one left off, and the Parquet table of
ids is written last.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from mote.cache_schema.embeddings import EmbeddingsFile, claim_embeddings
from mote.cache_schema.embeddings_v1 import NO_LABEL
from mote.cache_schema.feature_store import FeatureStore
from mote.pipeline import __version__
from mote.pipeline.device import resolve_device
from mote.pipeline.errors import ConfigError, MoteWarning
from mote.pipeline.progress import NullProgress, Progress
from mote.pipeline.runs.run_clip import store_expectation
from mote.pipeline.runs.run_folder import Run, load_run
from mote.pipeline.temporal.embedding import embed_rows, mean_pooled_vectors, video_vectors
from mote.pipeline.temporal.evaluation import check_tfm, override_tfm
from mote.pipeline.threads import command_threads, use_threads
from mote.stages.configs.embed_config import EmbedConfig  # noqa: F401

MEAN_POOLING = "clip-meanpool"  # the variant of vectors made without a run


def identity(cfg: EmbedConfig, loaded: Run | None, store: FeatureStore, rows: np.ndarray) -> dict:
    """What the file records about how its vectors were made; a resume must match it all.
    Without a run: CLIP mean pooling, ``run`` null."""
    views = f"{store.spec.layout}: mean of unit view vectors, L2-normalised"
    if loaded is None:
        variant = {"name": MEAN_POOLING, "test_bank": None, "tfm_gamma": None, "tfm_k": None}
        variant.update(inference="frames: mean of unit frame vectors", views=views)
        dim = store.spec.dim
    else:
        model = loaded.model.cfg
        variant = {
            "name": "tfm" if cfg.tfm and loaded.model.architecture.uses_tfm else "plain",
            "test_bank": "store classes" if cfg.tfm else None,
            "tfm_gamma": model.tfm_gamma if cfg.tfm else None,
            "tfm_k": model.tfm_k if cfg.tfm else None,
            "inference": model.inference,
            "views": views,
        }
        dim = model.dim
    spec = store.spec
    return {
        "run": loaded.identity() if loaded is not None else None,
        "store": store.identity(),
        "clip": {"model": spec.model, "pretrained": spec.pretrained, "weights_id": spec.weights_id},
        "variant": variant,
        "dim": dim,
        "n_rows": int(len(rows)),
    }


def table_columns(cfg: EmbedConfig, store: FeatureStore, rows: np.ndarray) -> dict:
    """The Parquet columns besides ``row``: the store row, id, path, label and its name."""
    ids = [store.video_ids[i] for i in rows]
    labels = np.asarray(store.labels)[rows].astype(np.int32)  # all NO_LABEL when unlabelled
    names = store.class_names
    return {
        "store_row": rows.astype(np.int64),
        "video_id": ids,
        "path": [str(cfg.root / i) for i in ids] if cfg.root is not None else ids,
        "label": labels,
        "label_name": [names[k] if k != NO_LABEL else None for k in labels],
    }


def _reader(store: FeatureStore):
    """Read the features of sorted store rows: one slice when they are contiguous."""

    def read(rows: np.ndarray) -> np.ndarray:
        first, last = int(rows[0]), int(rows[-1])
        if last - first + 1 == len(rows):
            return store.read_embeddings(slice(first, last + 1))
        return store.read_embeddings(rows)

    return read


def vectors_of(
    cfg: EmbedConfig, loaded: Run | None, store: FeatureStore, device: torch.device
) -> Callable[[np.ndarray], np.ndarray]:
    """Stored features (N, V, T, D) -> unit vectors: the run's evaluation path (TFM against
    the store's class text when on), or CLIP mean pooling without a run."""
    if loaded is None:
        return lambda features: mean_pooled_vectors(features, device)
    text = torch.from_numpy(np.array(store.text_embeddings))
    return lambda features: video_vectors(loaded.model, features, text, cfg.tfm, device)


def _fill(
    file: EmbeddingsFile, store: FeatureStore, rows: np.ndarray,
    vectors: Callable[[np.ndarray], np.ndarray], progress: Progress,
) -> int:  # fmt: skip
    """Embed every chunk that still has pending rows; returns how many rows this call wrote."""
    todo = file.todo_chunks()
    ranges = [file.chunk_range(c) for c in todo]
    total = sum(stop - start for start, stop in ranges)
    if not total:
        progress.message(f"{file.path}: nothing to do: every video is embedded")
        return 0
    read, views, frames = _reader(store), store.spec.views, store.spec.frames
    progress.start(total, f"embed {store.path.name}", "videos")
    try:
        for chunk, (start, stop) in zip(todo, ranges, strict=True):
            made = embed_rows(
                vectors, read, rows[start:stop], views,
                on_batch=lambda n: progress.update(done=n, frames=n * views * frames),
            )  # fmt: skip
            file.write_chunk(chunk, made)
    finally:
        progress.finish()
    return total


def _run_for(cfg: EmbedConfig, device: torch.device) -> Run | None:
    """The run with its TFM settings, checked; None without ``--run`` (CLIP mean pooling),
    where TFM's overrides mean nothing and are refused."""
    if cfg.run is None:
        overrides = (("--tfm-gamma", cfg.tfm_gamma), ("--tfm-k", cfg.tfm_k))
        given = [flag for flag, value in overrides if value is not None]
        if given:
            raise ConfigError(
                f"{' and '.join(given)} set TFM of a run's temporal module; without --run the "
                "vectors are CLIP mean pooling: drop them, or pass --run RUN"
            )
        return None
    loaded = load_run(cfg.run, device, best=cfg.best)
    override_tfm(loaded.model, cfg.tfm_gamma, cfg.tfm_k)
    check_tfm(loaded.model, cfg.tfm)
    return loaded


def check_vocabulary(cfg: EmbedConfig, loaded: Run | None, store: FeatureStore) -> None:
    """TFM compares each video with the store's class names: refuse a store that has none,
    warn (one line, the way out) where one class cannot tell videos apart."""
    if loaded is None or not cfg.tfm or not loaded.model.architecture.uses_tfm:
        return
    if not store.labelled:
        raise ConfigError(
            f"{cfg.store}: an unlabelled store, so TFM has no test bank (it compares each "
            "video with the store's class names); embed with --no-tfm for the run's plain "
            "temporal module (`mote embed --run RUN --store S --out E --no-tfm`), or leave out "
            "--run for CLIP mean pooling"
        )
    if len(store.class_names) == 1:
        warnings.warn(
            f"{cfg.store}: TFM compares each video with the store's class names, and this "
            f"store has one ({store.class_names[0]!r}), which cannot describe its videos; "
            "embed with --no-tfm (or leave out --run for CLIP mean pooling)",
            MoteWarning,
            stacklevel=2,
        )


@command_threads()
def run(cfg: EmbedConfig, progress: Progress | None = None) -> dict:
    progress = progress or NullProgress()
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    loaded = _run_for(cfg, device)
    expect = store_expectation(loaded) if loaded is not None else None
    store = FeatureStore.open(cfg.store, expect=expect, storage_options=cfg.storage_options)
    use_threads(device, width=store.spec.dim)
    check_vocabulary(cfg, loaded, store)
    rows = np.flatnonzero(store.done_mask()).astype(np.int64)
    if not len(rows):
        raise ConfigError(f"{cfg.store}: no video is done in this store; run `mote extract` first")
    made = identity(cfg, loaded, store, rows)
    claim = claim_embeddings(cfg.out, cfg.storage_options)
    try:
        if claim.taken_over is not None:
            progress.message(f"{cfg.out}: taking over the claim of {claim.gone}")
        file = EmbeddingsFile.open_or_create(
            cfg.out, made, cfg.chunk_rows, claim=claim, overwrite=cfg.overwrite,
            storage_options=cfg.storage_options,
        )  # fmt: skip
        resumed = bool(file.done_mask().any())
        embedded = _fill(file, store, rows, vectors_of(cfg, loaded, store, device), progress)
        if not file.table_file.is_file():
            file.write_table(table_columns(cfg, store, rows))
    finally:
        claim.release()
    seconds = time.perf_counter() - started
    result = file.summary()
    result.update(
        run=str(cfg.run) if cfg.run is not None else None,
        store=str(cfg.store),
        weights=loaded.weights_file if loaded is not None else None,
        n_embedded=embedded,
        resumed=resumed,
        n_store_videos=store.n_videos,
        n_not_done_skipped=int(store.n_videos - len(rows)),
        seconds=round(seconds, 2),
        videos_per_s=round(embedded / seconds, 1) if embedded and seconds > 0 else None,
        tool_version=__version__,
    )
    return result
