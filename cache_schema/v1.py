"""Schema v1 of mote's feature store, as data: names, dtypes, dimensions, status codes.

One module per schema version (as zarr-metadata does), so a reader can tell exactly what v1 means.
``docs/store-format.md`` describes the same layout for readers without mote. Adding an optional
root attribute keeps the version; any other change needs a ``v2`` module and a version bump.
Chunk checksums (a ``crc32c`` codec after ``zstd``) are such a compatible change: each array
declares its codecs in its own ``zarr.json``, so v1 stores with and without them read alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mote.cache_schema.store_errors import StoreMismatch

SCHEMA = "mote.features"
VERSION = 1

# Per-video status codes; a video's data are valid only when its status is DONE.
PENDING = 0
DONE = 1
FAILED = 2
STATUS_CODES = (PENDING, DONE, FAILED)

# Frame-sampling rules a store may record (pipeline/video/sampling.py, spec section 7.1).
SAMPLING_RULES = ("eval", "train")

# Keys of the preprocessing record (open_clip's preprocess config of the model).
PREPROCESS_KEYS = ("size", "mean", "std", "interpolation")

# Root attributes that describe what the store holds (the fields of StoreSpec, in order).
SPEC_ATTRS = (
    "model",
    "pretrained",
    "weights_id",
    "dim",
    "frames",
    "clips",
    "crops",
    "sampling",
    "sampling_seed",
    "preprocess",
    "dataset",
    "split",
    "class_names",
    "tool_version",
)

# Every root attribute of a v1 store, in the order they are written.
ROOT_ATTRS = ("schema", "schema_version", *SPEC_ATTRS, "views", "chunk_videos")

# An optional root attribute, written last and only as ``false``: an unlabelled store (videos
# without classes, e.g. a folder of clips to search), whose ``class_names`` is empty, every
# label NO_LABEL and ``text_embeddings`` has no rows. Absent means labelled, as in every store
# written before it, so labelled stores are unchanged (the version stays 1).
LABELLED = "labelled"
NO_LABEL = -1  # the label of every video of an unlabelled store (the labels' fill value)


@dataclass(frozen=True)
class ArraySpec:
    """One array of the store: its element type, named dimensions and fill value."""

    dtype: str  # a numpy dtype name, or "str" for variable-length UTF-8 strings
    dims: tuple[str, ...]
    fill_value: float | int | str

    @property
    def per_video(self) -> bool:
        """Per-video arrays share the chunking along ``video``, so one writer owns one chunk."""
        return self.dims[0] == "video"


ARRAYS: dict[str, ArraySpec] = {
    "embeddings": ArraySpec("float16", ("video", "view", "frame", "dim"), 0.0),
    "frame_indices": ArraySpec("int32", ("video", "view", "frame"), -1),
    "num_frames": ArraySpec("int32", ("video",), -1),
    "labels": ArraySpec("int32", ("video",), NO_LABEL),
    "video_ids": ArraySpec("str", ("video",), ""),
    "status": ArraySpec("uint8", ("video",), PENDING),
    "failure_reason": ArraySpec("str", ("video",), ""),
    "text_embeddings": ArraySpec("float32", ("class", "dim"), 0.0),
}

# The arrays written once when the store is created (from the dataset list and the text tower);
# extraction never rewrites them, so `--repair` cannot restore them.
CREATION_ARRAYS = ("labels", "video_ids", "text_embeddings")

# An attribute of the status array: every status chunk was written when the store was created
# (all pending) and is kept on disk even when it holds only pending videos, so a missing status
# chunk is damage, not a chunk nobody wrote. Stores written before it may lack status chunks
# that nobody wrote; for them a missing status chunk still reads as pending.
STATUS_CHUNKS_KEPT = "every_chunk_written"

# The arrays a writer fills per chunk, in write order: the status always comes last.
WRITE_ORDER = ("embeddings", "frame_indices", "num_frames", "failure_reason", "status")


def shape_of(name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
    """Shape of array ``name`` given the size of each dimension (video, view, frame, dim, class)."""
    return tuple(int(sizes[d]) for d in ARRAYS[name].dims)


def check_schema(attrs: Mapping, path: Path) -> None:
    """Fail unless root attributes ``attrs`` name this schema and version (mote.features v1)."""
    schema, version = attrs.get("schema"), attrs.get("schema_version")
    if schema is None:
        raise StoreMismatch(
            f"{path}: not a mote feature store, or its creation was interrupted (no 'schema' "
            f"root attribute); re-run `mote extract ... --out {path} --overwrite`."
        )
    from mote.cache_schema.embeddings_v1 import SCHEMA as EMBEDDINGS  # it imports this module

    if schema == EMBEDDINGS:
        raise StoreMismatch(
            f"{path}: an embeddings file (mote embed), not a feature store; search it with "
            f"`mote search --embeddings {path}`, or pass the store it was made from."
        )
    if (schema, version) != (SCHEMA, VERSION):
        writer = attrs.get("tool_version", "unknown")
        raise StoreMismatch(
            f"{path}: store is {schema} v{version} (written by mote {writer}), this mote reads "
            f"{SCHEMA} v{VERSION}; re-run `mote extract ... --out {path} --overwrite`."
        )
