"""Create, resume and write mote's feature store (schema v1, see docs/store-format.md).

The store is a plain Zarr v3 group on local disk. Writers own whole chunks: ``write_chunk`` merges
results into one chunk of videos of every per-video array, data first and ``status`` last, so a
crash never leaves a video marked done without its data, and separate processes (dask workers)
may write separate chunks at the same time. Nothing time- or host-dependent is stored, so the
same data give byte-identical store directories.

The writer's claim (claim.py) belongs to the caller, who takes it before anything is written and
holds it for the whole run; ``create``, ``open_or_create`` and ``resume`` only check it. Without
one (tests and benchmarks that build stores in folders of their own) they refuse a store another
live run has claimed, and ``resume`` opens read-only.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.errors import ZarrUserWarning

from mote.cache_schema import v1
from mote.cache_schema.checks import check_inputs, spec_difference, video_list_difference
from mote.cache_schema.claim import StoreClaim
from mote.cache_schema.folder import clear_target, creation_interrupted, remove_partial_files
from mote.cache_schema.reader import StoreReader
from mote.cache_schema.remote import LiveFiles, files_at
from mote.cache_schema.remote_claim import check_claim_at
from mote.cache_schema.repair import (
    array_metadata_missing,
    needs_consolidation,
    restore_array_metadata,
)
from mote.cache_schema.spec import StoreSpec, VideoResult
from mote.cache_schema.store_errors import StoreCorrupt, StoreError, StoreMismatch
from mote.pipeline.locations import Url, locate

# Measured on 1,024 videos x 3 views x 8 frames x 768 (fp16, CLIP-like spread per dimension):
# zstd level 1 stores 0.93 x the raw bytes at ~450 MB/s; blosc-lz4 with byte shuffle stores
# 1.00 x. Blosc is avoided because with internal threads on it orders blocks differently from
# run to run, which would break byte-identical stores. A CRC32C of the compressed bytes ends every
# chunk file, so a flipped bit or a truncated file fails loudly instead of decoding to garbage.
CHUNK_CODECS = (ZstdCodec(level=1, checksum=False), Crc32cCodec())


def _where(
    path: str | Path, storage_options: dict[str, Any] | None
) -> tuple[Path | Url, Path | LiveFiles]:
    """The store's location, and what its files are looked at through: the folder itself, or
    for a URL the objects under it, asked afresh each time (the store is being written)."""
    location = locate(path)
    return location, files_at(location, storage_options, live=True)


def _zarr_store(path: Path | Url, storage_options: dict[str, Any] | None) -> Any:
    """What zarr opens: a folder's path, or an fsspec store for a URL with its options."""
    if isinstance(path, Url):
        return zarr.storage.FsspecStore.from_url(
            str(path), storage_options=storage_options, read_only=False
        )
    return str(path)


class FeatureStore(StoreReader):
    """A mote.features v1 store on local disk; build it with create, open or open_or_create."""

    restored_metadata: Sequence[str] = ()  # array files a resume restored (resume)
    restored_creation: Sequence[str] = ()  # creation chunks a repair rewrote (resume)

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
        storage_options: dict[str, Any] | None = None,
    ) -> FeatureStore:
        """Create an empty store (every video pending); the root attributes are written last.

        Runs under ``claim``, the caller's claim on ``path``; without one, only when no live run
        holds the store's claim. ``path`` may be an s3:// URL (``storage_options`` for fsspec).
        """
        path, files = _where(path, storage_options)
        if isinstance(chunk_videos, bool) or not isinstance(chunk_videos, int | np.integer):
            raise ValueError(f"chunk_videos must be a positive integer, got {chunk_videos!r}")
        chunk_videos = int(chunk_videos)
        if chunk_videos < 1:
            raise ValueError(f"chunk_videos must be a positive integer, got {chunk_videos}")
        ids, labs, text = check_inputs(spec, video_ids, labels, text_embeddings)
        check_claim_at(path, claim, storage_options)
        clear_target(files, overwrite)
        group = zarr.create_group(store=_zarr_store(path, storage_options), zarr_format=3)
        sizes = spec.sizes(len(ids))
        arrays = {}
        for name, a in v1.ARRAYS.items():
            shape = v1.shape_of(name, sizes)
            arrays[name] = group.create_array(
                name,
                shape=shape,
                chunks=(chunk_videos, *shape[1:]) if a.per_video else shape,
                dtype=str if a.dtype == "str" else a.dtype,
                fill_value=a.fill_value,
                compressors=CHUNK_CODECS,
                dimension_names=a.dims,
            )
        arrays["video_ids"][:] = np.asarray(ids, dtype=object)
        # Kept on disk even when all NO_LABEL (an unlabelled store): a missing chunk is damage.
        arrays["labels"].with_config({"write_empty_chunks": True})[:] = labs
        arrays["text_embeddings"][:] = text
        # Every status chunk on disk, all pending, so a missing one later is damage.
        arrays["status"].with_config({"write_empty_chunks": True})[:] = v1.PENDING
        arrays["status"].attrs[v1.STATUS_CHUNKS_KEPT] = True
        # Written last: a store whose creation was interrupted has no schema and is refused.
        root = {"schema": v1.SCHEMA, "schema_version": v1.VERSION, **spec.to_attrs()}
        root.update(views=spec.layout, chunk_videos=chunk_videos)
        if not spec.labelled:  # absent in labelled stores, which stay as they always were
            root[v1.LABELLED] = False
        # One write: ``attrs.update`` would rewrite zarr.json once per key (18 PUTs on S3).
        group.update_attributes(root)
        return cls(path, group, arrays, True, files, storage_options)

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
        repair: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> FeatureStore:
        """Resume the store at ``path`` if it holds this spec and video list, else create it.

        ``text_embeddings`` may be a function, called only when the store is created (the text
        tower is slow on a CPU). A resumed store keeps its own chunking and text embeddings;
        any mote version may resume a store of the same schema version. A store whose creation
        was interrupted is created again. Runs under ``claim`` (see ``create``). ``repair``
        first rewrites damaged chunks of the arrays written at creation (labels, video ids,
        text bank) from these inputs (``restored_creation`` lists them).
        """
        path, files = _where(path, storage_options)
        check_claim_at(path, claim, storage_options)
        text = text_embeddings if callable(text_embeddings) else lambda: text_embeddings
        if not (files / "zarr.json").is_file() or creation_interrupted(files):
            return cls.create(
                path,
                spec,
                video_ids,
                labels,
                text(),
                chunk_videos,
                claim=claim,
                storage_options=storage_options,
            )
        restore = None
        if repair:

            def restore(store: FeatureStore) -> list[str]:
                return store.restore_creation_arrays(video_ids, labels, text)

        return cls._resume(
            path, spec, video_ids, labels, True, restore, storage_options=storage_options
        )

    @classmethod
    def resume(
        cls,
        path: str | Path,
        spec: StoreSpec,
        video_ids: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        claim: StoreClaim | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> FeatureStore:
        """Open an existing store to continue it, checking it holds this spec and video list.

        With ``claim`` the store opens writable and array metadata files that were deleted are
        restored from the consolidated copy; without, it opens read-only and writes nothing.
        """
        path = locate(path)
        if claim is not None:
            claim.check(path)
        return cls._resume(
            path, spec, video_ids, labels, claim is not None, storage_options=storage_options
        )

    @classmethod
    def _resume(
        cls,
        path: Path,
        spec: StoreSpec,
        video_ids: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        writable: bool,
        restore: Callable[[FeatureStore], list[str]] | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> FeatureStore:
        """``resume`` once the claim is checked; a writable resume restores deleted metadata,
        and ``restore`` (``open_or_create(repair=True)``) damaged creation arrays, before the
        video list is compared."""
        path, files = _where(path, storage_options)
        root_attrs = _root_attributes(files)
        if root_attrs is not None:
            if "schema" not in root_attrs:  # interrupted creations never get here
                raise StoreMismatch(
                    f"{path}: a Zarr group but not a mote feature store (no 'schema' root "
                    "attribute), so mote will not write there; choose another --out."
                )
            v1.check_schema(root_attrs, path)  # another schema version
        missing = array_metadata_missing(files)  # raises on a broken file, before zarr reads it
        if missing and writable:
            restore_array_metadata(files, missing)
        store = cls.open(path, writable=writable, storage_options=storage_options)
        store.restored_metadata = missing if writable else []
        store.restored_creation = restore(store) if restore is not None else []
        fix = "pass --overwrite to start again, or choose another --out"
        diffs = spec_difference(store.spec, spec)
        if diffs:
            raise StoreMismatch(f"{path}: cannot resume: {'; '.join(diffs)}; {fix}.")
        ids, labs, _ = check_inputs(spec, video_ids, labels, None)
        problem = video_list_difference(store.video_ids, store.labels, ids, labs)
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
        return remove_partial_files(self.files)

    # ------------------------------------------------------------------ writing

    def _check_writable(self) -> None:
        if not self._writable:
            raise StoreError(f"{self.path}: opened read-only; open it with writable=True to write.")

    def restore_creation_arrays(
        self,
        video_ids: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        text_embeddings: Callable[[], np.ndarray],
    ) -> list[str]:
        """Rewrite the chunks of the arrays written at creation that are missing or do not
        decode, from the inputs the store was made from: labels and ids from the video list,
        the text bank from ``text_embeddings()`` (called only when it is damaged). Returns one
        line per chunk rewritten. The list must have the store's length; the chunks that were
        not damaged are compared with it afterwards, as on every resume."""
        self._check_writable()
        ids, labs, _ = check_inputs(self.spec, video_ids, labels, None)
        if len(ids) != self.n_videos:
            raise StoreMismatch(
                f"{self.path}: cannot repair from a list of {len(ids)} videos: the store holds "
                f"{self.n_videos}; pass the list it was made from."
            )
        values = {"video_ids": np.asarray(ids, dtype=object), "labels": labs}
        done = []
        for name, column in values.items():
            for chunk in range(self.n_chunks):
                _, why = self.try_read_chunk(name, chunk)
                if why or not self.chunk_file(name, chunk).is_file():
                    start, stop = self.chunk_range(chunk)
                    kept = self._arrays[name].with_config({"write_empty_chunks": True})
                    kept[start:stop] = column[start:stop]
                    done.append(f"{name} chunk {chunk} (videos {start}..{stop - 1})")
        stored, why = self.try_read_chunk("text_embeddings", 0)
        missing = not self.chunk_file("text_embeddings", 0).is_file()
        damaged = why or missing or not np.isfinite(np.asarray(stored)).all()
        if damaged and self.spec.labelled:  # an unlabelled store has no text bank to restore
            _, _, text = check_inputs(self.spec, ids, labs, text_embeddings())
            self._arrays["text_embeddings"][:] = text
            done.append("text_embeddings")
        self._video_ids = self._labels = self._text = None  # read again from the rewritten data
        return done

    def mark_pending(self, videos: Sequence[int] | np.ndarray) -> None:
        """Set these videos back to pending so extraction redoes them (``--repair``).

        A status chunk that cannot be decoded is rewritten whole, its videos pending.
        """
        self._check_writable()
        rows = np.unique(np.asarray(videos, dtype=np.int64))
        for chunk in np.unique(rows // self.chunk_videos):
            start, stop = self.chunk_range(int(chunk))
            old, _ = self.try_read_chunk("status", int(chunk))
            new = np.full(stop - start, v1.PENDING, np.uint8) if old is None else old.copy()
            new[rows[(rows >= start) & (rows < stop)] - start] = v1.PENDING
            self._arrays["status"][start:stop] = new

    def write_chunk(self, chunk: int, results: Sequence[VideoResult]) -> None:
        """Merge ``results`` into chunk ``chunk``: data arrays first, the status array last.

        Videos of the chunk without a result keep their stored data; when the results cover the
        whole chunk no data array is read. A done video that is rewritten is first marked
        pending, so a crash never leaves it done with half-written data.
        """
        self._check_writable()
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
            _fill_row(block, row, res)
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

    # ------------------------------------------------------------------ consolidation

    def needs_consolidation(self) -> bool:
        """Whether the root's consolidated metadata is missing, or differs from an array's own.

        A missing array file counts as "differs": its restore is a change to write.
        """
        return needs_consolidation(self.files)

    def consolidate(self) -> bool:
        """Write consolidated metadata into the root zarr.json (one read opens the store).

        Writes only when it would change (a finished store is left untouched, read-only ones
        included) and never drops an array: a deleted array file is restored from the
        consolidated copy first, a broken one is refused. Returns whether it wrote.
        """
        missing = array_metadata_missing(self.files)
        if not self.needs_consolidation():
            return False
        self._check_writable()
        restore_array_metadata(self.files, missing)
        with warnings.catch_warnings():
            # zarr notes that consolidated metadata is not yet in the v3 spec; readers ignore it.
            warnings.simplefilter("ignore", ZarrUserWarning)
            zarr.consolidate_metadata(_zarr_store(self.path, self._storage_options))
        if self.needs_consolidation():  # never leave a store whose readers miss an array
            raise StoreCorrupt(
                f"{self.path}: its consolidated metadata does not hold every array after "
                f"consolidation; re-run `mote extract ... --out {self.path} --overwrite`."
            )
        return True


def _root_attributes(path: Path | LiveFiles) -> dict | None:
    """The root attributes of the group at ``path``, or None when unreadable (open says why)."""
    try:
        root = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    if isinstance(root, dict) and isinstance(root.get("attributes"), dict):
        return root["attributes"]
    return None


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
