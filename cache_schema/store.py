"""Create, open, resume and write mote's feature store (schema v1, see docs/store-format.md).

The store is a plain Zarr v3 group on local disk. Writers own whole chunks: ``write_chunk`` merges
results into one chunk of videos of every per-video array, data first and ``status`` last, so a
crash never leaves a video marked done without its data, and separate processes (dask workers)
may write separate chunks at the same time. Nothing time- or host-dependent is stored, so the
same data give byte-identical store directories.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.errors import ZarrUserWarning

from mote.cache_schema import v1
from mote.cache_schema.claim import CLAIM_FILE, StoreClaim
from mote.cache_schema.errors import StoreCorrupt, StoreError, StoreMismatch, StoreNotFound

# Measured on 1,024 videos x 3 views x 8 frames x 768 (fp16, CLIP-like spread per dimension):
# zstd level 1 stores 0.93 x the raw bytes at ~450 MB/s; blosc-lz4 with byte shuffle stores
# 1.00 x. Blosc is avoided because with internal threads on it orders blocks differently from
# run to run, which would break byte-identical stores. A CRC32C of the compressed bytes ends every
# chunk file, so a flipped bit or a truncated file fails loudly instead of decoding to garbage.
_COMPRESSORS = (ZstdCodec(level=1, checksum=False), Crc32cCodec())

Indices = slice | Sequence[int] | np.ndarray


def _plain(value: Any) -> Any:
    """The JSON form of ``value`` (tuples become lists, numpy scalars Python numbers)."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.ndarray | np.generic):
            return obj.tolist()
        raise TypeError(f"cannot store {type(obj).__name__} {obj!r} as a JSON attribute")

    return json.loads(json.dumps(value, default=default))


def _short(err: BaseException, limit: int = 100) -> str:
    """An exception as a short one-line text for error messages."""
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: Any, limit: int = 80) -> str:
    """A short printable form of an attribute value for error messages."""
    text = repr(value) if isinstance(value, str) else json.dumps(_plain(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class StoreSpec:
    """What a store holds: the model, its weights, the sampling, the dataset split, the classes."""

    model: str
    pretrained: str
    weights_id: str
    dim: int
    frames: int
    clips: int
    crops: int
    sampling: str
    sampling_seed: int
    preprocess: dict
    dataset: str
    split: str
    class_names: tuple[str, ...]
    tool_version: str

    def __post_init__(self) -> None:
        for name in ("dim", "frames", "clips", "crops"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"StoreSpec.{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        object.__setattr__(self, "sampling_seed", int(self.sampling_seed))
        if self.sampling not in v1.SAMPLING_RULES:
            raise ValueError(
                f"StoreSpec.sampling must be one of {v1.SAMPLING_RULES}, got {self.sampling!r}"
            )
        missing = [k for k in v1.PREPROCESS_KEYS if k not in self.preprocess]
        if missing:
            raise ValueError(f"StoreSpec.preprocess lacks {missing}; it needs {v1.PREPROCESS_KEYS}")
        object.__setattr__(self, "preprocess", _plain(dict(self.preprocess)))
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        if not self.class_names:
            raise ValueError("StoreSpec.class_names is empty; a store needs the class names")

    @property
    def views(self) -> int:
        """Views per video; view index v = clip * crops + crop."""
        return self.clips * self.crops

    @property
    def layout(self) -> str:
        """The view layout as the CLI spells it: clips x crops, e.g. ``"3x1"``."""
        return f"{self.clips}x{self.crops}"

    def to_attrs(self) -> dict[str, Any]:
        """The spec as JSON-ready root attributes (one per field)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> StoreSpec:
        """Rebuild the spec from a store's root attributes."""
        return cls(**{name: attrs[name] for name in v1.SPEC_ATTRS})


@dataclass
class VideoResult:
    """What extraction produced for one video: its embeddings, or a failure reason."""

    index: int  # row of the video in the store
    embeddings: np.ndarray | None  # float16 (views, frames, dim); None when failed
    frame_indices: np.ndarray | None  # int32 (views, frames); None when failed
    num_frames: int  # frames the decoder reported (0 or -1 when unknown)
    reason: str = ""  # non-empty means the video failed

    @classmethod
    def failure(cls, index: int, reason: str, num_frames: int = -1) -> VideoResult:
        """A failed video: no data, only why."""
        return cls(index, None, None, num_frames, reason)

    @property
    def failed(self) -> bool:
        return bool(self.reason)


def _creation_interrupted(path: Path) -> bool:
    """Whether ``path`` is a mote store whose creation never finished, so nothing in it is valid.

    ``create`` writes an attribute-less root group, then the v1 arrays, then every root attribute
    at once; a folder with that root and nothing but v1 arrays (and temporary files) is one.
    """
    try:
        root = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(root, dict) or root.get("node_type") != "group" or root.get("attributes"):
        return False
    for entry in path.iterdir():
        if entry.name in v1.ARRAYS:
            if not entry.is_dir():
                return False
        elif entry.name not in ("zarr.json", CLAIM_FILE) and not entry.name.endswith(".partial"):
            return False
    return True


def _empty_folder(path: Path) -> None:
    """Delete everything in ``path`` but the claim file (the caller holds that claim)."""
    for entry in path.iterdir():
        if entry.name == CLAIM_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _clear_target(path: Path, overwrite: bool) -> None:
    """Make room for a new store under its claim, deleting only mote stores.

    An interrupted creation is cleared without ``--overwrite`` (nothing in it is valid); a
    finished store only with it; a folder holding anything else is never touched.
    """
    if not path.exists():
        return
    if not path.is_dir():
        raise StoreError(f"{path}: exists and is a file, not a store folder; choose another --out.")
    if not any(entry.name != CLAIM_FILE for entry in path.iterdir()):
        return
    if _creation_interrupted(path):
        _empty_folder(path)
        return
    if not (path / "zarr.json").is_file():
        raise StoreError(
            f"{path}: exists and is not a Zarr store (no zarr.json), so mote will not write or "
            "delete anything there; choose another --out."
        )
    if not overwrite:
        raise StoreError(
            f"{path}: already exists; pass --overwrite to replace it or choose another --out."
        )
    foreign = _foreign_entries(path)
    if foreign:
        raise StoreError(
            f"{path}: holds {foreign[0]!r}, which is no part of a mote feature store, so "
            "--overwrite will not delete it; choose another --out."
        )
    _empty_folder(path)


def _foreign_entries(path: Path) -> list[str]:
    """Names in ``path`` that a mote store of this or another schema version would not hold."""
    try:
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes") or {}
    except (OSError, ValueError, AttributeError):
        attrs = {}
    if isinstance(attrs, dict) and attrs.get("schema") == v1.SCHEMA:
        return []  # a mote store, maybe of another version: its layout is its own
    known = {*v1.ARRAYS, "zarr.json", CLAIM_FILE}
    return sorted(
        e.name for e in path.iterdir() if e.name not in known and not e.name.endswith(".partial")
    )


def _check_inputs(
    spec: StoreSpec,
    video_ids: Sequence[str],
    labels: Sequence[int],
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
    bad = np.flatnonzero((labs < 0) | (labs >= n_classes))
    if bad.size:
        i = int(bad[0])
        raise StoreError(
            f"video {ids[i]!r} has label {int(labs[i])}, outside 0..{n_classes - 1} "
            f"({n_classes} class names); check the list and labels files."
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


class FeatureStore:
    """A mote.features v1 store on local disk; build it with create, open or open_or_create."""

    def __init__(
        self, path: Path, group: zarr.Group, arrays: Mapping[str, zarr.Array], writable: bool
    ) -> None:
        self.path = path
        self._group = group
        self._arrays = dict(arrays)
        self._writable = writable
        self._attrs = group.attrs.asdict()
        self._spec = StoreSpec.from_attrs(self._attrs)
        self._video_ids: tuple[str, ...] | None = None
        self._labels: np.ndarray | None = None
        self._text: np.ndarray | None = None
        self.restored_metadata: list[str] = []  # array files a resume restored (resume)

    def __reduce__(self) -> tuple:
        """Pickle as (path, writable) so dask workers reopen the store instead of copying it."""
        return (FeatureStore.open, (str(self.path), None, self._writable))

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, model={self._spec.model!r}, n={self.n_videos})"

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls,
        path: str | Path,
        spec: StoreSpec,
        video_ids: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        text_embeddings: np.ndarray,
        chunk_videos: int = 32,
        overwrite: bool = False,
        claim: StoreClaim | None = None,
    ) -> FeatureStore:
        """Create an empty store (every video pending); the root attributes are written last.

        Runs under ``claim`` (the caller's claim on ``path``) or, without one, under a claim of
        its own that ends with this call.
        """
        path = Path(path)
        if isinstance(chunk_videos, bool) or not isinstance(chunk_videos, int | np.integer):
            raise ValueError(f"chunk_videos must be a positive integer, got {chunk_videos!r}")
        chunk_videos = int(chunk_videos)
        if chunk_videos < 1:
            raise ValueError(f"chunk_videos must be a positive integer, got {chunk_videos}")
        ids, labs, text = _check_inputs(spec, video_ids, labels, text_embeddings)
        if claim is None:
            with StoreClaim.acquire(path) as own:
                return cls.create(path, spec, ids, labs, text, chunk_videos, overwrite, own)
        claim.check(path)
        _clear_target(path, overwrite)
        group = zarr.create_group(store=str(path), zarr_format=3)
        sizes = {
            "video": len(ids),
            "view": spec.views,
            "frame": spec.frames,
            "dim": spec.dim,
            "class": len(spec.class_names),
        }
        arrays = {}
        for name, a in v1.ARRAYS.items():
            shape = v1.shape_of(name, sizes)
            arrays[name] = group.create_array(
                name,
                shape=shape,
                chunks=(chunk_videos, *shape[1:]) if a.per_video else shape,
                dtype=str if a.dtype == "str" else a.dtype,
                fill_value=a.fill_value,
                compressors=_COMPRESSORS,
                dimension_names=a.dims,
            )
        arrays["video_ids"][:] = np.asarray(ids, dtype=object)
        arrays["labels"][:] = labs
        arrays["text_embeddings"][:] = text
        # Written last: a store whose creation was interrupted has no schema and is refused.
        root = {"schema": v1.SCHEMA, "schema_version": v1.VERSION, **spec.to_attrs()}
        group.attrs.update({**root, "views": spec.layout, "chunk_videos": chunk_videos})
        return cls(path, group, arrays, writable=True)

    @classmethod
    def open(
        cls, path: str | Path, expect: Mapping[str, Any] | None = None, writable: bool = False
    ) -> FeatureStore:
        """Open a store, checking schema and version first, then every key of ``expect``."""
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreNotFound(
                f"{path}: no feature store here (no zarr.json); create one with "
                f"`mote extract ... --out {path}`."
            )
        try:
            group = zarr.open_group(str(path), mode="r+" if writable else "r", zarr_format=3)
        except Exception as err:  # zarr raises many types for unreadable metadata
            raise StoreCorrupt(
                f"{path}: cannot be read as a Zarr v3 group ({err}); re-run "
                f"`mote extract ... --out {path} --overwrite`."
            ) from err
        attrs = group.attrs.asdict()
        v1.check_root(attrs, path)
        if expect:
            _check_expected(attrs, expect, path)
        arrays = _check_layout(group, attrs, path)
        return cls(path, group, arrays, writable=writable)

    @classmethod
    def open_or_create(
        cls,
        path: str | Path,
        spec: StoreSpec,
        video_ids: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        text_embeddings: np.ndarray | Callable[[], np.ndarray],
        chunk_videos: int = 32,
        claim: StoreClaim | None = None,
    ) -> FeatureStore:
        """Resume the store at ``path`` if it holds this spec and video list, else create it.

        ``text_embeddings`` may be a function, called only when the store is created (the text
        tower is slow on a CPU). A resumed store keeps its own chunking and text embeddings;
        any mote version may resume a store of the same schema version. A store whose creation
        was interrupted is created again. Runs under ``claim`` (see ``create``).
        """
        path = Path(path)
        if claim is None:
            with StoreClaim.acquire(path) as own:
                return cls.open_or_create(
                    path, spec, video_ids, labels, text_embeddings, chunk_videos, own
                )
        claim.check(path)
        if not (path / "zarr.json").is_file() or _creation_interrupted(path):
            text = text_embeddings() if callable(text_embeddings) else text_embeddings
            return cls.create(path, spec, video_ids, labels, text, chunk_videos, claim=claim)
        return cls.resume(path, spec, video_ids, labels, claim)

    @classmethod
    def resume(
        cls,
        path: str | Path,
        spec: StoreSpec,
        video_ids: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        claim: StoreClaim | None = None,
    ) -> FeatureStore:
        """Open an existing store to continue it, checking it holds this spec and video list.

        With ``claim`` the store opens writable and array metadata files that were deleted are
        restored from the consolidated copy; without, it opens read-only and writes nothing.
        """
        path = Path(path)
        if claim is not None:
            claim.check(path)
        try:
            root = json.loads((path / "zarr.json").read_text())
        except (OSError, ValueError):
            root = None  # open names the problem
        if isinstance(root, dict) and isinstance(root.get("attributes"), dict):
            if "schema" not in root["attributes"]:  # interrupted creations never get here
                raise StoreMismatch(
                    f"{path}: a Zarr group but not a mote feature store (no 'schema' root "
                    "attribute), so mote will not write there; choose another --out."
                )
            v1.check_root(root["attributes"], path)  # another schema version
        missing = _array_metadata_missing(path)  # raises on a broken file, before zarr reads it
        if missing and claim is not None:
            _restore_array_metadata(path, missing)
        store = cls.open(path, writable=claim is not None)
        store.restored_metadata = missing if claim is not None else []
        fix = "pass --overwrite to start again, or choose another --out"
        ours, theirs = store.spec.to_attrs(), spec.to_attrs()
        diffs = [
            f"{key} is {_show(ours[key])} in the store but {_show(theirs[key])} now"
            for key in v1.SPEC_ATTRS
            if key != "tool_version" and ours[key] != theirs[key]
        ]
        if diffs:
            raise StoreMismatch(f"{path}: cannot resume: {'; '.join(diffs)}; {fix}.")
        ids, labs, _ = _check_inputs(spec, video_ids, labels, None)
        problem = _video_list_difference(store.video_ids, store.labels, ids, labs)
        if problem:
            raise StoreMismatch(f"{path}: cannot resume: {problem}; {fix}.")
        return store

    def remove_partial_files(self, claim: StoreClaim) -> int:
        """Delete temporary chunk files (``*.partial``) left by a writer that was killed.

        zarr writes each chunk to a temporary file and renames it into place, so a killed
        writer can leave one behind. Only the claim's holder may do this: another live writer's
        in-flight chunk is a ``.partial`` file too.
        """
        claim.check(self.path)
        leftovers = list(self.path.rglob("*.partial"))
        for leftover in leftovers:
            leftover.unlink(missing_ok=True)
        return len(leftovers)

    # ------------------------------------------------------------------ facts

    @property
    def spec(self) -> StoreSpec:
        return self._spec

    @property
    def n_videos(self) -> int:
        return int(self._arrays["status"].shape[0])

    @property
    def chunk_videos(self) -> int:
        return int(self._attrs["chunk_videos"])

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_videos / self.chunk_videos)

    @property
    def video_ids(self) -> tuple[str, ...]:
        """Video ids (paths relative to the dataset root), in store order; checked non-empty."""
        if self._video_ids is None:
            ids = self._read_all("video_ids")
            empty = np.flatnonzero(np.asarray([not str(v) for v in ids], dtype=bool))
            if empty.size:
                raise self.damage("video_ids", self._chunk(int(empty[0])), "holds an empty id")
            self._video_ids = tuple(str(v) for v in ids)
        return self._video_ids

    @property
    def labels(self) -> np.ndarray:
        """int32 (video,) class index of each video (read-only); checked in the class range."""
        if self._labels is None:
            labels = np.asarray(self._read_all("labels"), dtype=np.int32)
            n_classes = len(self._spec.class_names)
            bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
            if bad.size:
                row = int(bad[0])
                raise self.damage(
                    "labels",
                    self._chunk(row),
                    f"gives video {row} label {int(labels[row])}, outside 0..{n_classes - 1}",
                )
            labels.flags.writeable = False
            self._labels = labels
        return self._labels

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._spec.class_names

    @property
    def text_embeddings(self) -> np.ndarray:
        """float32 (class, dim) template-averaged class text embeddings (read-only)."""
        if self._text is None:
            text = np.asarray(self._read_all("text_embeddings"), dtype=np.float32)
            if not np.isfinite(text).all():
                raise self.damage("text_embeddings", 0, "holds NaN or inf")
            text.flags.writeable = False
            self._text = text
        return self._text

    def status(self) -> np.ndarray:
        """uint8 (video,) current status of every video; use the masks below to interpret it."""
        return self._checked_status(self._read("status", slice(None)), 0)

    def done_mask(self) -> np.ndarray:
        """bool (video,): the videos whose data are valid."""
        return self.status() == v1.DONE

    def failed_mask(self) -> np.ndarray:
        """bool (video,): the videos extraction gave up on (their reasons are in failures())."""
        return self.status() == v1.FAILED

    def pending_mask(self) -> np.ndarray:
        """bool (video,): the videos not extracted yet (extraction unfinished or interrupted)."""
        return self.status() == v1.PENDING

    def counts(self) -> dict[str, int]:
        """How many videos are done, failed and pending."""
        st = self.status()
        return {
            "done": int(np.sum(st == v1.DONE)),
            "failed": int(np.sum(st == v1.FAILED)),
            "pending": int(np.sum(st == v1.PENDING)),
        }

    def todo(self, retry_failed: bool = False) -> np.ndarray:
        """int64 indices of the videos still to extract: pending, plus failed when retrying."""
        st = self.status()
        mask = st == v1.PENDING
        if retry_failed:
            mask |= st == v1.FAILED
        return np.flatnonzero(mask).astype(np.int64)

    def chunk_of(self, video: int) -> int:
        """The chunk that holds video ``video``."""
        if not 0 <= video < self.n_videos:
            raise IndexError(f"video {video} is outside 0..{self.n_videos - 1} of {self.path}")
        return int(video) // self.chunk_videos

    def chunk_range(self, chunk: int) -> tuple[int, int]:
        """(start, stop) video indices of chunk ``chunk``."""
        if not 0 <= chunk < self.n_chunks:
            raise IndexError(f"chunk {chunk} is outside 0..{self.n_chunks - 1} of {self.path}")
        start = int(chunk) * self.chunk_videos
        return start, min(start + self.chunk_videos, self.n_videos)

    # ------------------------------------------------------------------ writing

    def write_chunk(self, chunk: int, results: Sequence[VideoResult]) -> None:
        """Merge ``results`` into chunk ``chunk``: data arrays first, the status array last.

        Videos of the chunk without a result keep their stored data; when the results cover the
        whole chunk no data array is read. A done video that is rewritten is first marked
        pending, so a crash never leaves it done with half-written data.
        """
        if not self._writable:
            raise StoreError(f"{self.path}: opened read-only; open it with writable=True to write.")
        start, stop = self.chunk_range(chunk)
        rows = self._rows_of(chunk, start, stop, results)
        if not rows:
            return
        status = self._arrays["status"]
        old = np.asarray(status[start:stop], dtype=np.uint8)
        whole = len(rows) == stop - start
        block = self._blank_block(stop - start) if whole else self._read_block(start, stop)
        new = old.copy()
        for row, res in rows.items():
            self._fill_row(block, row, res)
            new[row] = v1.FAILED if res.failed else v1.DONE
        redone = [row for row in rows if old[row] == v1.DONE]
        if redone:
            guard = old.copy()
            guard[redone] = v1.PENDING
            status[start:stop] = guard
        for name in v1.WRITE_ORDER[:-1]:
            self._arrays[name][start:stop] = block[name]
        status[start:stop] = new

    def _rows_of(
        self, chunk: int, start: int, stop: int, results: Sequence[VideoResult]
    ) -> dict[int, VideoResult]:
        """Map row-in-chunk -> result, rejecting results outside the chunk or malformed."""
        rows: dict[int, VideoResult] = {}
        for res in results:
            if not start <= res.index < stop:
                raise ValueError(
                    f"result for video {res.index} is outside chunk {chunk} "
                    f"(videos {start}..{stop - 1}) of {self.path}"
                )
            if res.index - start in rows:
                raise ValueError(f"two results for video {res.index} in one write_chunk call")
            if not res.failed:
                self._check_result(res)
            rows[res.index - start] = res
        return rows

    def _check_result(self, res: VideoResult) -> None:
        """A done result needs finite embeddings and in-range frame indices of the right shape."""
        s = self._spec
        emb, idx = res.embeddings, res.frame_indices
        where = f"video {res.index} of {self.path}"
        if emb is None or np.shape(emb) != (s.views, s.frames, s.dim):
            got = None if emb is None else np.shape(emb)
            raise ValueError(f"{where}: embeddings must be ({s.views}, {s.frames}, {s.dim}), {got}")
        if not np.isfinite(emb).all():
            raise ValueError(f"{where}: embeddings contain NaN or inf; record it as a failure")
        if idx is None or np.shape(idx) != (s.views, s.frames):
            got = None if idx is None else np.shape(idx)
            raise ValueError(f"{where}: frame_indices must be ({s.views}, {s.frames}), got {got}")
        if np.any(np.asarray(idx) < 0) or np.any(np.asarray(idx) >= res.num_frames):
            raise ValueError(f"{where}: frame_indices outside 0..{res.num_frames - 1}")

    def _blank_block(self, k: int) -> dict[str, np.ndarray]:
        """Fill-valued data for ``k`` videos, used when a write covers its whole chunk."""
        block = {}
        for name in v1.WRITE_ORDER[:-1]:
            a, shape = v1.ARRAYS[name], self._arrays[name].shape[1:]
            dtype = object if a.dtype == "str" else a.dtype
            block[name] = np.full((k, *shape), a.fill_value, dtype=dtype)
        return block

    def _read_block(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The stored data of videos start..stop-1, to merge a partial write into."""
        block = {name: self._read(name, slice(start, stop)) for name in v1.WRITE_ORDER[:-1]}
        block["failure_reason"] = np.asarray(block["failure_reason"], dtype=object)
        return block

    @staticmethod
    def _fill_row(block: dict[str, np.ndarray], row: int, res: VideoResult) -> None:
        """Put one result into the in-memory chunk; a failure clears any older data."""
        block["num_frames"][row] = res.num_frames
        if res.failed:
            block["embeddings"][row] = v1.ARRAYS["embeddings"].fill_value
            block["frame_indices"][row] = v1.ARRAYS["frame_indices"].fill_value
            block["failure_reason"][row] = str(res.reason)
        else:
            block["embeddings"][row] = np.asarray(res.embeddings, dtype=np.float16)
            block["frame_indices"][row] = np.asarray(res.frame_indices, dtype=np.int32)
            block["failure_reason"][row] = ""

    def needs_consolidation(self) -> bool:
        """Whether the root's consolidated metadata is missing, or differs from an array's own.

        A missing array file counts as "differs": its restore is a change to write.
        """
        try:
            copy = json.loads((self.path / "zarr.json").read_text())["consolidated_metadata"]
            held = copy["metadata"]
        except (OSError, ValueError, KeyError, TypeError):
            return True
        for name in v1.ARRAYS:
            try:
                own = json.loads((self.path / name / "zarr.json").read_text())
            except (OSError, ValueError):
                return True
            if held.get(name) != own:
                return True
        return False

    def consolidate(self) -> bool:
        """Write consolidated metadata into the root zarr.json (one read opens the store).

        Writes only when it would change (a finished store is left untouched, read-only ones
        included) and never drops an array: a deleted array file is restored from the
        consolidated copy first, a broken one is refused. Returns whether it wrote.
        """
        missing = _array_metadata_missing(self.path)
        if not self.needs_consolidation():
            return False
        if not self._writable:
            raise StoreError(f"{self.path}: opened read-only; open it with writable=True to write.")
        _restore_array_metadata(self.path, missing)
        with warnings.catch_warnings():
            # zarr notes that consolidated metadata is not yet in the v3 spec; readers ignore it.
            warnings.simplefilter("ignore", ZarrUserWarning)
            zarr.consolidate_metadata(str(self.path))
        if self.needs_consolidation():  # never leave a store whose readers miss an array
            raise StoreCorrupt(
                f"{self.path}: its consolidated metadata does not hold every array after "
                f"consolidation; re-run `mote extract ... --out {self.path} --overwrite`."
            )
        return True

    # ------------------------------------------------------------------ reading

    def chunk_file(self, name: str, chunk: int) -> Path:
        """The file that holds chunk ``chunk`` of array ``name`` (for checks and repairs)."""
        arr = self._arrays[name]
        coords = (int(chunk),) + (0,) * (arr.ndim - 1)
        return self.path / name / arr.metadata.encode_chunk_key(coords)

    def has_checksums(self) -> bool:
        """Whether every array ends its chunks with a CRC32C (v1 stores written before may not)."""
        return all(
            any(isinstance(codec, Crc32cCodec) for codec in arr.metadata.codecs)
            for arr in self._arrays.values()
        )

    def damage(self, name: str, chunk: int, what: str) -> StoreCorrupt:
        """The one-line error for a damaged chunk: store, array, chunk, its videos and the fix."""
        if v1.ARRAYS[name].per_video:
            start, stop = self.chunk_range(chunk)
            where = f"chunk {chunk} (videos {start}..{stop - 1})"
            fix = (
                f"repair it with `mote extract ... --out {self.path} --repair` "
                f"(`mote info {self.path} --verify` lists all damage)"
            )
        else:
            where = f"chunk {chunk}"
            fix = f"re-create it with `mote extract ... --out {self.path} --overwrite`"
        if name in v1.CREATION_ARRAYS:
            fix = f"re-create it with `mote extract ... --out {self.path} --overwrite`"
        return StoreCorrupt(f"{self.path}: array {name!r} {where} {what}; {fix}.")

    def _chunk(self, row: int) -> int:
        return int(row) // self.chunk_videos

    def _chunks_of(self, name: str, rows: np.ndarray) -> np.ndarray:
        if not v1.ARRAYS[name].per_video:
            return np.zeros(1, np.int64)
        return np.unique(np.asarray(rows, dtype=np.int64) // self.chunk_videos)

    def _read(self, name: str, indices: Indices) -> np.ndarray:
        """Read rows of ``name``; a chunk that fails to decode becomes a StoreCorrupt naming it."""
        arr = self._arrays[name]
        if isinstance(indices, slice):
            rows = np.arange(arr.shape[0])[indices]
            getter = arr.__getitem__
            key: Any = indices
        else:
            rows = np.asarray(indices, dtype=np.int64).reshape(-1)
            if rows.size == 0:
                return np.empty((0, *arr.shape[1:]), dtype=arr.dtype)
            if rows.min() < 0 or rows.max() >= self.n_videos:
                raise IndexError(f"video indices must be in 0..{self.n_videos - 1} for {self.path}")
            getter, key = arr.oindex.__getitem__, rows
        try:
            return getter(key)
        except Exception as err:  # codecs raise many types: find the chunk and name it
            for chunk in self._chunks_of(name, rows):
                problem = self.chunk_problem(name, int(chunk))
                if problem:
                    raise self.damage(name, int(chunk), problem) from err
            raise StoreCorrupt(
                f"{self.path}: array {name!r} cannot be read ({_short(err)}); "
                f"re-create it with `mote extract ... --out {self.path} --overwrite`."
            ) from err

    def chunk_problem(self, name: str, chunk: int) -> str:
        """Why chunk ``chunk`` of ``name`` cannot be decoded, or "" when it decodes."""
        return self.try_read_chunk(name, chunk)[1]

    def try_read_chunk(self, name: str, chunk: int) -> tuple[np.ndarray | None, str]:
        """(data, "") of one chunk as stored, unchecked; (None, why) when it cannot be decoded.

        An absent chunk file decodes to the fill value: check ``chunk_file`` where that matters.
        """
        arr = self._arrays[name]
        if v1.ARRAYS[name].per_video:
            start, stop = self.chunk_range(chunk)
            key: Any = slice(start, stop)
        else:
            key = slice(None)
        try:
            return arr[key], ""
        except Exception as err:  # codecs raise many types
            if "checksum" in str(err).lower():
                return None, "fails its checksum (the file is damaged or truncated)"
            return None, f"cannot be decoded ({_short(err)})"

    def mark_pending(self, videos: Sequence[int] | np.ndarray) -> None:
        """Set these videos back to pending so extraction redoes them (``--repair``).

        A status chunk that cannot be decoded is rewritten whole, its videos pending.
        """
        if not self._writable:
            raise StoreError(f"{self.path}: opened read-only; open it with writable=True to write.")
        rows = np.unique(np.asarray(videos, dtype=np.int64))
        for chunk in np.unique(rows // self.chunk_videos):
            start, stop = self.chunk_range(int(chunk))
            old, _ = self.try_read_chunk("status", int(chunk))
            new = np.full(stop - start, v1.PENDING, np.uint8) if old is None else old.copy()
            new[rows[(rows >= start) & (rows < stop)] - start] = v1.PENDING
            self._arrays["status"][start:stop] = new

    def _read_all(self, name: str) -> np.ndarray:
        """A whole array that is written at creation, so every chunk file must exist."""
        n_chunks = self.n_chunks if v1.ARRAYS[name].per_video else 1
        for chunk in range(n_chunks):
            if not self.chunk_file(name, chunk).is_file():
                raise self.damage(name, chunk, "is missing (its file was deleted)")
        return self._read(name, slice(None))

    def _checked_status(self, status: np.ndarray, first_row: int) -> np.ndarray:
        status = np.asarray(status, dtype=np.uint8)
        bad = np.flatnonzero(~np.isin(status, v1.STATUS_CODES))
        if bad.size:
            row = first_row + int(bad[0])
            raise self.damage("status", self._chunk(row), f"holds unknown status {status[bad[0]]}")
        return status

    def _read_done_rows(self, name: str, indices: Indices) -> np.ndarray:
        """Read per-video data, checking every done row it returns holds a valid result.

        A chunk file that is absent reads as the fill value in zarr, so the file of every chunk
        with a done row must exist; done embeddings must be finite and not all zero.
        """
        rows = (
            np.arange(self.n_videos)[indices]
            if isinstance(indices, slice)
            else np.asarray(indices, dtype=np.int64).reshape(-1)
        )
        data = self._read(name, indices)
        if rows.size == 0:
            return data
        status = self._read("status", indices)
        done = np.asarray(status) == v1.DONE
        for chunk in self._chunks_of(name, rows[done]):
            if not self.chunk_file(name, int(chunk)).is_file():
                raise self.damage(
                    name, int(chunk), "is missing (its file was deleted) but holds done videos"
                )
        if not done.any():
            return data
        part = np.asarray(data[done])
        flat = part.reshape(len(part), -1)
        if name == "embeddings":
            bad = ~np.isfinite(flat).all(axis=1)
            what = "holds NaN or inf in done video {row}"
            if not bad.any():
                bad = ~flat.any(axis=1)
                what = "holds an all-zero embedding for done video {row}"
        elif name == "frame_indices":
            bad = (flat < 0).any(axis=1)
            what = "holds a negative frame index for done video {row}"
        else:
            bad = (flat < 1).all(axis=1)
            what = "holds no frame count for done video {row}"
        if bad.any():
            row = int(rows[done][np.flatnonzero(bad)[0]])
            raise self.damage(name, self._chunk(row), what.format(row=row))
        return data

    def read_embeddings(self, indices: Indices) -> np.ndarray:
        """float16 (k, view, frame, dim); valid only for done videos (and checked for them)."""
        return self._read_done_rows("embeddings", indices)

    def read_frame_indices(self, indices: Indices) -> np.ndarray:
        """int32 (k, view, frame) sampled frame indices; -1 where not extracted."""
        return self._read_done_rows("frame_indices", indices)

    def read_num_frames(self, indices: Indices) -> np.ndarray:
        """int32 (k,) frames the decoder reported; -1 where never written."""
        return self._read_done_rows("num_frames", indices)

    def iter_done(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (indices, embeddings, labels) chunk by chunk for done videos only."""
        done_all, labels = self.done_mask(), self.labels
        for chunk in range(self.n_chunks):
            start, stop = self.chunk_range(chunk)
            done = np.flatnonzero(done_all[start:stop])
            if done.size:
                emb = self.read_embeddings(slice(start, stop))
                yield done + start, emb[done], labels[done + start]

    def read_done(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices int64, embeddings float16, labels int32) of every done video, in store order."""
        parts = list(self.iter_done())
        if not parts:
            s = self._spec
            empty = np.empty((0, s.views, s.frames, s.dim), dtype=np.float16)
            return np.empty(0, np.int64), empty, np.empty(0, np.int32)
        idx, emb, lab = zip(*parts, strict=True)
        return np.concatenate(idx), np.concatenate(emb), np.concatenate(lab)

    def failures(self) -> list[dict[str, str]]:
        """Every failed video as {video, reason}, in store order."""
        idx = np.flatnonzero(self.failed_mask())
        if not idx.size:
            return []
        reasons = self._read("failure_reason", idx)
        ids = self.video_ids
        return [{"video": ids[i], "reason": str(r)} for i, r in zip(idx, reasons, strict=True)]

    def bytes_on_disk(self) -> int:
        """Total size of the files under the store folder."""
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def summary(self) -> dict[str, Any]:
        """What `mote info --json` prints: identity, sampling, shapes and progress."""
        s, counts = self._spec, self.counts()
        return {
            "path": str(self.path),
            "schema": v1.SCHEMA,
            "schema_version": v1.VERSION,
            "model": s.model,
            "pretrained": s.pretrained,
            "weights_id": s.weights_id,
            "dim": s.dim,
            "frames": s.frames,
            "views": s.layout,
            "clips": s.clips,
            "crops": s.crops,
            "sampling": s.sampling,
            "sampling_seed": s.sampling_seed,
            "dataset": s.dataset,
            "split": s.split,
            "tool_version": s.tool_version,
            "n_videos": self.n_videos,
            "n_done": counts["done"],
            "n_failed": counts["failed"],
            "n_pending": counts["pending"],
            "checksums": self.has_checksums(),
            "classes": len(s.class_names),
            "failures": self.failures(),
            "chunk_videos": self.chunk_videos,
            "bytes_on_disk": self.bytes_on_disk(),
        }


def _check_expected(attrs: Mapping[str, Any], expect: Mapping[str, Any], path: Path) -> None:
    """Fail naming both values for every expected root attribute the store disagrees with."""
    unknown = [k for k in expect if k not in v1.ROOT_ATTRS]
    if unknown:
        raise ValueError(f"cannot check {unknown} of a store; known keys: {list(v1.ROOT_ATTRS)}")
    diffs = [
        f"{key} is {_show(attrs.get(key))} but the command asked for {_show(want)}"
        for key, want in expect.items()
        if _plain(attrs.get(key)) != _plain(want)
    ]
    if diffs:
        raise StoreMismatch(
            f"{path}: {'; '.join(diffs)}; point the command at a store extracted with those "
            f"settings, or re-extract with `mote extract ... --out {path} --overwrite`."
        )


def _check_layout(group: zarr.Group, attrs: Mapping[str, Any], path: Path) -> dict[str, zarr.Array]:
    """The store's arrays, checked to have the dtype, dims and shape its attributes imply."""
    fix = f"re-run `mote extract ... --out {path} --overwrite`"
    missing = [k for k in v1.ROOT_ATTRS if k not in attrs]
    if missing:
        raise StoreCorrupt(f"{path}: root attributes {missing} are missing; {fix}.")
    try:
        spec = StoreSpec.from_attrs(attrs)
    except (TypeError, ValueError) as err:
        raise StoreCorrupt(f"{path}: invalid root attributes ({err}); {fix}.") from err
    arrays = {}
    for name in v1.ARRAYS:
        node = group.get(name)
        if not isinstance(node, zarr.Array):
            raise StoreCorrupt(f"{path}: array {name!r} is missing; {fix}.")
        arrays[name] = node
    sizes = {
        "video": arrays["video_ids"].shape[0],
        "view": spec.views,
        "frame": spec.frames,
        "dim": spec.dim,
        "class": len(spec.class_names),
    }
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


def _video_list_difference(
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


def _array_metadata_missing(path: Path) -> list[str]:
    """The v1 arrays whose own zarr.json is deleted but held in the consolidated metadata.

    Raises StoreCorrupt naming the file when one is unreadable, differs from its consolidated
    copy (readers use the copy, so consolidating it would change what they read), or is deleted
    with no copy to restore it from.
    """
    root = path / "zarr.json"
    try:
        held = json.loads(root.read_text())["consolidated_metadata"]["metadata"]
        if not isinstance(held, dict):
            held = {}
    except (OSError, ValueError, KeyError, TypeError):
        held = {}
    missing = []
    for name in v1.ARRAYS:
        file = path / name / "zarr.json"
        copy = held.get(name)
        if not file.exists():
            if copy is None:
                raise StoreCorrupt(
                    f"{file}: missing, and {root} holds no copy of it; re-run "
                    f"`mote extract ... --out {path} --overwrite`."
                )
            missing.append(name)
            continue
        fix = (
            f"delete it and rerun `mote extract` to restore it from the consolidated metadata in "
            f"{root}, or re-run `mote extract ... --out {path} --overwrite`"
            if copy is not None
            else f"re-run `mote extract ... --out {path} --overwrite`"
        )
        try:
            own = json.loads(file.read_text())
        except (OSError, ValueError) as err:
            reason = getattr(err, "strerror", None) or f"not valid JSON: {err}"
            raise StoreCorrupt(f"{file}: unreadable array metadata ({reason}); {fix}.") from None
        if copy is not None and own != copy:
            raise StoreCorrupt(
                f"{file}: differs from its consolidated copy in {root} that readers use; {fix}."
            )
    return missing


def _restore_array_metadata(path: Path, names: Sequence[str]) -> None:
    """Write each named array's zarr.json back from the consolidated copy in the root."""
    if not names:
        return
    held = json.loads((path / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    for name in names:
        file = path / name / "zarr.json"
        file.parent.mkdir(exist_ok=True)
        partial = file.with_name(f"zarr.json.{os.getpid()}.partial")
        partial.write_text(json.dumps(held[name], indent=2))
        partial.replace(file)
