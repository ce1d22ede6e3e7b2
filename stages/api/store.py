"""``mote.open_store``: a feature store to read in Python."""

from __future__ import annotations

from os import PathLike
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mote.cache_schema.store import FeatureStore


def open_store(path: str | PathLike) -> FeatureStore:
    """Open a store written by ``mote extract``, read-only and checked (schema first).

    The reader's methods: ``summary()``, ``read_done()`` (indices, float16 embeddings
    (N, views, frames, dim), labels), ``video_ids``, ``class_names``, ``text_embeddings``,
    ``failures()``, and ``to_xarray()`` (needs the optional ``xarray`` package).
    """
    from mote.cache_schema.store import FeatureStore  # zarr: only when a store is opened

    return FeatureStore.open(path)
