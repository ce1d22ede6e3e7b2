"""Checks made when a store is opened, created or resumed, each failing with a one-line error.

``check_expected`` compares root attributes with what a command asked for, ``check_layout`` the
arrays with what the attributes imply; ``check_inputs`` and ``video_list_difference`` look at
the video list, labels and text bank a store is created or resumed with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from mote.cache_schema import v1
from mote.cache_schema.spec import StoreSpec, plain, show
from mote.cache_schema.store_errors import StoreCorrupt, StoreError, StoreMismatch


def check_expected(attrs: Mapping[str, Any], expect: Mapping[str, Any], path: Path) -> None:
    """Fail naming both values for every expected root attribute the store disagrees with."""
    unknown = [k for k in expect if k not in v1.ROOT_ATTRS]
    if unknown:
        raise ValueError(f"cannot check {unknown} of a store; known keys: {list(v1.ROOT_ATTRS)}")
    diffs = [
        f"{key} is {show(attrs.get(key))} but the command asked for {show(want)}"
        for key, want in expect.items()
        if plain(attrs.get(key)) != plain(want)
    ]
    if diffs:
        raise StoreMismatch(
            f"{path}: {'; '.join(diffs)}; point the command at a store extracted with those "
            "settings, or extract one into a new folder (`mote extract ... --out NEW.zarr`, with "
            "`--run RUN` for a run's tuned CLIP); keep this store: other runs may use it."
        )


def check_layout(group: zarr.Group, attrs: Mapping[str, Any], path: Path) -> dict[str, zarr.Array]:
    """The store's arrays, checked to have the dtype, dims and shape its attributes imply."""
    fix = f"re-run `mote extract ... --out {path} --overwrite`"
    missing = [k for k in v1.ROOT_ATTRS if k not in attrs]
    if missing:
        raise StoreCorrupt(f"{path}: root attributes {missing} are missing; {fix}.")
    try:
        spec = StoreSpec.from_attrs(attrs)
    except (TypeError, ValueError) as err:
        raise StoreCorrupt(f"{path}: invalid root attributes ({err}); {fix}.") from err
    if attrs.get(v1.LABELLED, True) is not spec.labelled:
        said = "unlabelled" if v1.LABELLED in attrs else "labelled (no 'labelled' attribute)"
        raise StoreCorrupt(
            f"{path}: the store says it is {said} but names {len(spec.class_names)} classes; {fix}."
        )
    arrays = {}
    for name in v1.ARRAYS:
        node = group.get(name)
        if not isinstance(node, zarr.Array):
            raise StoreCorrupt(f"{path}: array {name!r} is missing; {fix}.")
        arrays[name] = node
    sizes = spec.sizes(arrays["video_ids"].shape[0])
    for name, a in v1.ARRAYS.items():
        arr, want = arrays[name], v1.shape_of(name, sizes)
        dims = tuple(arr.metadata.dimension_names or ())
        ok_dtype = arr.dtype.kind in "OTU" if a.dtype == "str" else arr.dtype == np.dtype(a.dtype)
        if arr.shape != want or dims != a.dims or not ok_dtype:
            raise StoreCorrupt(
                f"{path}: array {name!r} is {arr.dtype} {arr.shape} with dims {dims}, expected "
                f"{a.dtype} {want} with dims {a.dims}; {fix}."
            )
        if a.per_video and arr.chunks[0] != attrs["chunk_videos"]:
            raise StoreCorrupt(
                f"{path}: array {name!r} is chunked by {arr.chunks[0]} videos but the store "
                f"says {attrs['chunk_videos']}; {fix}."
            )
    return arrays


def check_inputs(
    spec: StoreSpec,
    video_ids: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    text_embeddings: np.ndarray | None,
) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """Validate the per-video lists and class text embeddings a store is created with."""
    ids = [str(v) for v in video_ids]
    if not ids:
        raise StoreError("no videos to store: the video list is empty.")
    if any(not v for v in ids):
        raise StoreError(f"video {ids.index('')} has an empty id; every video needs its path.")
    labs = np.asarray(labels)
    if labs.shape != (len(ids),) or not np.issubdtype(labs.dtype, np.integer):
        raise StoreError(f"labels must be {len(ids)} integers (one per video), got {labs.shape}.")
    n_classes = len(spec.class_names)
    bad = np.flatnonzero(label_problems(labs, n_classes))
    if bad.size:
        i = int(bad[0])
        raise StoreError(
            f"video {ids[i]!r} has label {int(labs[i])}, {label_rule(n_classes)}; check the "
            "list and labels files."
        )
    if text_embeddings is None:  # resuming: the store keeps the text bank it was created with
        return ids, labs.astype(np.int32), None
    text = np.asarray(text_embeddings, dtype=np.float32)
    if text.shape != (n_classes, spec.dim) or not np.isfinite(text).all():
        raise StoreError(
            f"text embeddings must be finite float32 ({n_classes}, {spec.dim}) "
            f"(classes, dim), got shape {text.shape}."
        )
    return ids, labs.astype(np.int32), text


def done_row_problems(name: str, rows: np.ndarray) -> tuple[np.ndarray, str]:
    """Which done rows of per-video array ``name`` hold no valid result (bool per row), and the
    damage's wording with a ``{row}`` to fill: a chunk file zarr cannot tell from fill values."""
    flat = rows.reshape(len(rows), -1)
    if name == "embeddings":
        bad = ~np.isfinite(flat).all(axis=1)
        if bad.any():
            return bad, "holds NaN or inf in done video {row}"
        return ~flat.any(axis=1), "holds an all-zero embedding for done video {row}"
    if name == "frame_indices":
        return (flat < 0).any(axis=1), "holds a negative frame index for done video {row}"
    return (flat < 1).all(axis=1), "holds no frame count for done video {row}"


def ends_with_checksums(arrays: Iterable[zarr.Array]) -> bool:
    """Whether every array ends its chunks with a CRC32C (v1 stores written before may not)."""
    return all(any(isinstance(c, Crc32cCodec) for c in a.metadata.codecs) for a in arrays)


def label_problems(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """bool per label: outside 0..n_classes-1, or in an unlabelled store (no classes) other
    than ``v1.NO_LABEL``."""
    labels = np.asarray(labels)
    if not n_classes:
        return labels != v1.NO_LABEL
    return (labels < 0) | (labels >= n_classes)


def label_rule(n_classes: int) -> str:
    """What ``label_problems`` asks of a label, for messages."""
    if not n_classes:
        return f"in an unlabelled store (every label {v1.NO_LABEL})"
    return f"outside 0..{n_classes - 1}"


def spec_difference(stored: StoreSpec, wanted: StoreSpec) -> list[str]:
    """How a store's spec differs from the one a resume asks for (its tool version may differ)."""
    ours, theirs = stored.to_attrs(), wanted.to_attrs()
    return [
        f"{key} is {show(ours[key])} in the store but {show(theirs[key])} now"
        for key in v1.SPEC_ATTRS
        if key != "tool_version" and ours[key] != theirs[key]
    ]


def video_list_difference(
    stored_ids: Sequence[str], stored_labels: np.ndarray, ids: Sequence[str], labels: np.ndarray
) -> str:
    """Why a dataset's video list differs from a store's, or "" when they are identical."""
    if len(stored_ids) != len(ids):
        return f"the store lists {len(stored_ids)} videos but the dataset has {len(ids)}"
    for i, (old, new) in enumerate(zip(stored_ids, ids, strict=True)):
        if old != new:
            return f"video {i} is {old!r} in the store but {new!r} in the dataset"
    changed = np.flatnonzero(np.asarray(stored_labels) != np.asarray(labels))
    if changed.size:
        i = int(changed[0])
        return (
            f"video {ids[i]!r} has label {int(stored_labels[i])} in the store but "
            f"{int(labels[i])} in the dataset"
        )
    return ""
