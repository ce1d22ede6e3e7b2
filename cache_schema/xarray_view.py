"""A store as an ``xarray.Dataset``: named dimensions and labelled videos for notebooks.

xarray is optional (``pip install 'mote[xarray]'``). The per-video arrays stay lazy, one dask
block per store chunk read through the reader's checked reads, so a large store opens at once
and only what is selected is read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from mote.cache_schema import v1

if TYPE_CHECKING:
    import xarray

    from mote.cache_schema.reader import StoreReader

MISSING = "FeatureStore.to_xarray() needs the xarray package: pip install xarray"


def to_xarray(store: StoreReader) -> xarray.Dataset:
    """``embeddings`` (video, view, frame, dim) and ``frame_indices`` (lazy), ``labels``,
    ``status`` ("done", "failed", "pending": only done rows hold data) and ``text_embeddings``
    (class, dim); video ids and class names as coordinates, the store's facts as attributes."""
    try:
        import xarray
    except ModuleNotFoundError:
        raise ModuleNotFoundError(MISSING, name="xarray") from None
    spec = store.spec
    done, failed = store.done_mask(), store.failed_mask()
    data = {
        "embeddings": _lazy(store, "embeddings", store.read_embeddings),
        "frame_indices": _lazy(store, "frame_indices", store.read_frame_indices),
        "labels": (("video",), store.labels),
        "status": (("video",), np.where(done, "done", np.where(failed, "failed", "pending"))),
        "text_embeddings": (v1.ARRAYS["text_embeddings"].dims, store.text_embeddings),
    }
    attrs = {k: v for k, v in spec.to_attrs().items() if k not in ("preprocess", "class_names")}
    attrs.update({f"preprocess_{k}": v for k, v in spec.preprocess.items()}, path=str(store.path))
    coords = {"video": list(store.video_ids), "class": list(spec.class_names)}
    return xarray.Dataset(data, coords=coords, attrs=attrs)


def _lazy(store: StoreReader, name: str, read: Callable) -> tuple[tuple[str, ...], object]:
    """(dims, dask array) of per-video array ``name``: one block per store chunk, each read
    with ``read(slice)`` when computed."""
    import dask
    import dask.array as da

    dims = v1.ARRAYS[name].dims
    sizes = store.spec.sizes(store.n_videos)
    tail, dtype = tuple(sizes[d] for d in dims[1:]), np.dtype(v1.ARRAYS[name].dtype)
    blocks = []
    for chunk in range(store.n_chunks):
        start, stop = store.chunk_range(chunk)
        block = dask.delayed(read)(slice(start, stop))
        blocks.append(da.from_delayed(block, shape=(stop - start, *tail), dtype=dtype))
    return dims, da.concatenate(blocks) if blocks else da.empty((0, *tail), dtype=dtype)
