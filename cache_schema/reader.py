"""Read a mote.features v1 store, checking what it returns (``StoreReader``).

Every read is checked, because a store can be damaged after it was written: a chunk that fails
to decode (or its checksum) raises a ``StoreCorrupt`` naming the array, the chunk, its videos and
the fix; a done video must have its chunk file and valid data; ids, labels and the text bank are
checked when first read. ``FeatureStore`` (feature_store.py) adds creating and writing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import zarr

from mote.cache_schema import v1
from mote.cache_schema.checks import (
    check_expected,
    check_layout,
    done_row_problems,
    ends_with_checksums,
    label_problems,
    label_rule,
)
from mote.cache_schema.folder import refuse_no_store
from mote.cache_schema.remote import RemoteFiles, files_at, total_bytes
from mote.cache_schema.spec import StoreSpec, fingerprint
from mote.cache_schema.store_errors import StoreCorrupt, UnlabelledStore, short_error
from mote.pipeline.errors import system_fault
from mote.pipeline.locations import Url, locate, resolved
from mote.pipeline.runs.layout import is_run_folder

Indices = slice | Sequence[int] | np.ndarray
Reader = TypeVar("Reader", bound="StoreReader")


class StoreReader:
    """A mote.features v1 store on local disk or at a URL, opened with
    ``open``; reads only."""

    def __init__(
        self,
        path: Path | Url,
        group: zarr.Group,
        arrays: Mapping[str, zarr.Array],
        writable: bool,
        files: Path | RemoteFiles | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.files = path if files is None else files  # what checks of files by path look at
        self._storage_options = storage_options
        self._arrays = dict(arrays)
        if writable:  # an all-pending status chunk stays a file (v1.STATUS_CHUNKS_KEPT)
            self._arrays["status"] = self._arrays["status"].with_config(
                {"write_empty_chunks": True}
            )
        self._writable = writable
        self._attrs = group.attrs.asdict()
        self._spec = StoreSpec.from_attrs(self._attrs)
        self._video_ids: tuple[str, ...] | None = None
        self._labels: np.ndarray | None = None
        self._text: np.ndarray | None = None

    @property
    def storage_options(self) -> dict[str, Any] | None:
        """The fsspec options the store at a URL is reached with (None for a folder)."""
        return self._storage_options

    def __reduce__(self) -> tuple:
        """Pickle as (path, writable) so dask workers reopen the store instead of copying it."""
        return (type(self).open, (str(self.path), None, self._writable, self._storage_options))

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({str(self.path)!r}, model={self._spec.model!r}, n={self.n_videos})"

    @classmethod
    def open(
        cls: type[Reader],
        path: str | Path,
        expect: Mapping[str, Any] | None = None,
        writable: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> Reader:
        """Open a store, checking schema and version first, then every key of ``expect``.

        ``path`` may be a URL (``s3://bucket/s.zarr``, read with fsspec and
        ``storage_options``); such a store opens read-only."""
        path = locate(path)
        # written under a claim, a store changes: then look afresh each time
        files = files_at(path, storage_options, live=writable)
        refuse_no_store(path, files, is_run_folder(files))
        try:
            group = zarr.open_group(
                str(path),
                mode="r+" if writable else "r",
                zarr_format=3,
                storage_options=storage_options if isinstance(path, Url) else None,
            )
        except Exception as err:  # zarr raises many types for unreadable metadata
            raise StoreCorrupt(
                f"{path}: cannot be read as a Zarr v3 group ({err}); re-run "
                f"`mote extract ... --out {path} --overwrite`."
            ) from err
        attrs = group.attrs.asdict()
        v1.check_schema(attrs, path)
        if expect:
            check_expected(attrs, expect, path)
        arrays = check_layout(group, attrs, path)
        return cls(path, group, arrays, writable, files, storage_options)

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
            bad = np.flatnonzero(label_problems(labels, n_classes))
            if bad.size:
                row = int(bad[0])
                what = f"gives video {row} label {int(labels[row])}, {label_rule(n_classes)}"
                raise self.damage("labels", self._chunk(row), what)
            labels.flags.writeable = False
            self._labels = labels
        return self._labels

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._spec.class_names

    @property
    def labelled(self) -> bool:
        """Whether the videos have classes (an unlabelled store: labels -1, no text bank)."""
        return self._spec.labelled

    def require_labels(self, command: str) -> None:
        """The one refusal of an unlabelled store by a command that needs classes (training,
        accuracy, the class text bank): one line with the way out."""
        if not self.labelled:
            raise UnlabelledStore(
                f"{self.path}: an unlabelled store (extracted without classes: every label "
                f"{v1.NO_LABEL}, no class text bank), and {command} needs labelled videos; "
                "extract them with classes into a new store (`mote extract --dataset folder "
                "--root DIR`, one sub-folder per class, or `--dataset list --list L --labels "
                "CSV`); `mote embed` and `mote search` take it as it is"
            )

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
        """uint8 (video,) current status of every video; use the masks below to interpret it.

        In a store that keeps every status chunk, a missing one is damage (its videos would
        otherwise read as pending and be skipped or redone silently)."""
        for chunk in self.missing_status_chunks():
            raise self.damage("status", chunk, "is missing (its file was deleted)")
        return self._stored_status()

    def _stored_status(self) -> np.ndarray:
        """The status array as stored; a missing chunk reads as pending (``summary`` shows it
        beside ``missing_status_chunks``, so ``mote info`` still opens a damaged store)."""
        return self._checked_status(self._read("status", slice(None)), 0)

    @property
    def keeps_status_chunks(self) -> bool:
        """Whether every status chunk was written at creation and is kept (v1 attribute)."""
        return bool(self._arrays["status"].attrs.get(v1.STATUS_CHUNKS_KEPT, False))

    def missing_status_chunks(self) -> list[int]:
        """Status chunks whose file is gone, in a store that keeps them all (else none)."""
        if not self.keeps_status_chunks:
            return []
        return [c for c in range(self.n_chunks) if not self.chunk_file("status", c).is_file()]

    def done_mask(self) -> np.ndarray:
        """bool (video,): the videos whose data are valid."""
        return self.status() == v1.DONE

    def failed_mask(self) -> np.ndarray:
        """bool (video,): the videos extraction gave up on (their reasons are in failures())."""
        return self.status() == v1.FAILED

    def counts(self, status: np.ndarray | None = None) -> dict[str, int]:
        """How many videos are done, failed and pending (of ``status``, default the store's)."""
        st = self.status() if status is None else status
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

    # ------------------------------------------------------------------ chunks and damage

    def chunk_file(self, name: str, chunk: int) -> Path | RemoteFiles:
        """The file that holds chunk ``chunk`` of array ``name`` (for checks and repairs; a
        ``RemoteFiles`` for a store at a URL)."""
        arr = self._arrays[name]
        coords = (int(chunk),) + (0,) * (arr.ndim - 1)
        return self.files / name / arr.metadata.encode_chunk_key(coords)

    def has_checksums(self) -> bool:
        """Whether every array ends its chunks with a CRC32C (v1 stores written before may not)."""
        return ends_with_checksums(self._arrays.values())

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
            fix = (
                f"rewrite it from the video list with `mote extract ... --out {self.path} "
                "--repair` (the same list and model)"
            )
        return StoreCorrupt(f"{self.path}: array {name!r} {where} {what}; {fix}.")

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
            if system_fault(err):  # a failing disk or network: the chunk may be fine
                raise
            if "checksum" in str(err).lower():
                return None, "fails its checksum (the file is damaged or truncated)"
            return None, f"cannot be decoded ({short_error(err)})"

    def _chunk(self, row: int) -> int:
        return int(row) // self.chunk_videos

    def _chunks_of(self, name: str, rows: np.ndarray) -> np.ndarray:
        if not v1.ARRAYS[name].per_video:
            return np.zeros(1, np.int64)
        return np.unique(np.asarray(rows, dtype=np.int64) // self.chunk_videos)

    # ------------------------------------------------------------------ checked reads

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
            if system_fault(err):  # a failing disk or network: the chunk may be fine
                raise
            for chunk in self._chunks_of(name, rows):
                problem = self.chunk_problem(name, int(chunk))
                if problem:
                    raise self.damage(name, int(chunk), problem) from err
            raise StoreCorrupt(
                f"{self.path}: array {name!r} cannot be read ({short_error(err)}); "
                f"re-create it with `mote extract ... --out {self.path} --overwrite`."
            ) from err

    def _read_all(self, name: str) -> np.ndarray:
        """A whole array that is written at creation, so every chunk file must exist."""
        n_chunks = self.n_chunks if v1.ARRAYS[name].per_video else int(self._arrays[name].size > 0)
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
        bad, what = done_row_problems(name, np.asarray(data[done]))
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

    def failures(self, status: np.ndarray | None = None) -> list[dict[str, str]]:
        """Every failed video as {video, reason}, in store order (of ``status``, default the
        store's)."""
        idx = np.flatnonzero((self.status() if status is None else status) == v1.FAILED)
        if not idx.size:
            return []
        reasons = self._read("failure_reason", idx)
        ids = self.video_ids
        return [{"video": ids[i], "reason": str(r)} for i, r in zip(idx, reasons, strict=True)]

    def to_xarray(self):
        """The store as an ``xarray.Dataset`` (``xarray_view.to_xarray``; needs xarray)."""
        from mote.cache_schema.xarray_view import to_xarray

        return to_xarray(self)

    # ------------------------------------------------------------------ summary

    def bytes_on_disk(self) -> int:
        """Total size of the files under the store folder (the objects under its URL)."""
        return total_bytes(self.files)

    def identity(self) -> dict[str, Any]:
        """What this store holds, as something derived files record and compare: its folder,
        the CLIP and sampling that made it, its video list and which videos are done (each as
        a ``sha256:<16 hex>`` fingerprint), so a file made from another store, or from this
        one before more videos were extracted, is told apart."""
        s = self._spec
        return {
            "path": resolved(self.path),
            "schema": v1.SCHEMA,
            "schema_version": v1.VERSION,
            "model": s.model,
            "weights_id": s.weights_id,
            "dataset": s.dataset,
            "split": s.split,
            "frames": s.frames,
            "views": s.layout,
            "sampling": s.sampling,
            "sampling_seed": s.sampling_seed,
            "n_videos": self.n_videos,
            "video_ids": fingerprint(self.video_ids),
            "done": fingerprint(np.flatnonzero(self.done_mask())),
        }

    def summary(self) -> dict[str, Any]:
        """What `mote info --json` prints: identity, sampling, shapes and progress."""
        status = self._stored_status()  # what is on disk, even when a status chunk is missing
        s, counts = self._spec, self.counts(status)
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
            "labelled": s.labelled,
            "failures": self.failures(status),
            "missing_status_chunks": self.missing_status_chunks(),
            "chunk_videos": self.chunk_videos,
            "bytes_on_disk": self.bytes_on_disk(),
        }
