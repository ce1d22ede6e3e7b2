"""``mote.open_store`` and ``mote.open_embeddings``: a feature store and an embeddings file to
read in Python."""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mote.cache_schema.feature_store import FeatureStore


def open_store(path: str | PathLike, storage_options: dict | None = None) -> FeatureStore:
    """Open a store written by ``mote extract``, read-only and checked (schema first).

    ``path`` may be a URL (``s3://bucket/s.zarr``), read through fsspec with
    ``storage_options`` (credentials otherwise from the AWS_* environment).

    The reader's methods: ``summary()``, ``read_done()`` (indices, float16 embeddings
    (N, views, frames, dim), labels), ``video_ids``, ``class_names``, ``text_embeddings``,
    ``failures()``, and ``to_xarray()`` (needs the optional ``xarray`` package).
    """
    from mote.cache_schema.feature_store import FeatureStore  # zarr: only when a store is opened

    return FeatureStore.open(path, storage_options=storage_options)


@dataclass(frozen=True)
class Embeddings:
    """An embeddings file (``mote embed``) in memory: row i of ``vectors`` is the video
    ``video_ids[i]``. A text query embedded by the run's CLIP text tower scores every video
    with ``vectors @ query``."""

    vectors: np.ndarray  # float32 (N, D) unit rows (the file stores float16)
    video_ids: list[str]
    paths: list[str]
    labels: np.ndarray  # int32 (N,), -1 where a video has none
    label_names: list[str | None]
    store_rows: np.ndarray  # int64 (N,): each video's row in the feature store
    attrs: dict[str, Any]  # the run, store, CLIP and variant that made the vectors
    path: Path | str | None = None  # the file (a URL: str) they were read from; None: temporary

    def __len__(self) -> int:
        return len(self.video_ids)


def open_embeddings(path: str | PathLike, storage_options: dict | None = None) -> Embeddings:
    """Read a finished embeddings file written by ``mote embed`` (vectors and its table);
    ``path`` may be a URL (``s3://bucket/E.zarr``), read with ``storage_options``."""
    from mote.cache_schema.embeddings import EmbeddingsFile  # zarr: only when one is opened

    file = EmbeddingsFile.open(path, storage_options=storage_options)
    table = file.read_table()
    return Embeddings(
        vectors=file.read_vectors().astype(np.float32),
        video_ids=table.column("video_id").to_pylist(),
        paths=table.column("path").to_pylist(),
        labels=table.column("label").to_numpy().astype(np.int32),
        label_names=table.column("label_name").to_pylist(),
        store_rows=table.column("store_row").to_numpy().astype(np.int64),
        attrs=file.attrs,
        path=file.path,
    )
