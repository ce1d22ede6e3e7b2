"""mote's embeddings file (``mote.embeddings`` v1, see docs/store-format.md): one unit vector per
video of a feature store, from a run's temporal module, with the ids beside it in Parquet.

``E.zarr`` is a Zarr v3 group: ``embeddings`` float16 (row, dim) and ``status`` uint8 (row,),
chunked together by rows, plus root attributes naming the run, the store and the variant that made
the vectors. ``E.zarr/videos.parquet`` holds one row per vector (row, store_row, video_id, path,
label, label_name), so pandas, DuckDB and pyarrow read it without mote. The rules are the feature
store's: a writer owns whole chunks and writes the vectors first and the status last, the root
attributes are written last at creation (a file without them was interrupted and is made again),
and one writer at a time holds the folder's claim (``EmbeddingsClaim``, claim.py's record and lock).
The Parquet table is written last of all, once every row is done, to a temporary file renamed into
place; a file whose rows are done but whose table is missing gets it on the next run.

The file may live at an s3:// URL: zarr writes it through fsspec, the claim is the store's claim
object (``remote_claim.py``, ``claim_embeddings``), and the table is one PUT, which S3 applies
whole, so no rename is needed. Files are looked at through ``remote.py`` (a listing to read,
fresh questions while written).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from mote.cache_schema.claim import StoreClaim
from mote.cache_schema.embeddings_v1 import (
    CHUNK_ROWS,
    DONE,
    DTYPE,
    IDENTITY_ATTRS,
    PENDING,
    ROOT_ATTRS,
    SCHEMA,
    TABLE_COLUMNS,
    TABLE_FILE,
    VERSION,
)
from mote.cache_schema.feature_store import CHUNK_CODECS
from mote.cache_schema.folder import empty_folder
from mote.cache_schema.remote import RemoteFiles, files_at, total_bytes
from mote.cache_schema.remote_claim import check_claim_at, claim_location
from mote.cache_schema.spec import fingerprint, plain, show
from mote.cache_schema.store_errors import StoreCorrupt, StoreError, StoreMismatch, StoreNotFound
from mote.pipeline.locations import Url, locate

Files = Path | RemoteFiles  # a file's folder, or its objects at a URL (remote.py)


class EmbeddingsClaim(StoreClaim):
    """One writer per embeddings file: the store claim's record and lock, on ``E/``."""

    KIND = "embeddings file"


def claim_embeddings(
    location: str | Path, storage_options: dict[str, Any] | None = None
) -> StoreClaim:
    """The writer's claim on an embeddings file: a folder's lock, or an s3:// claim object."""
    return claim_location(location, storage_options, local=EmbeddingsClaim)


def _options(location: Path | Url, storage_options: dict[str, Any] | None) -> dict | None:
    """What zarr gets as ``storage_options``: fsspec's options for a URL, none for a folder."""
    return storage_options if isinstance(location, Url) else None


def _claimed(
    path: str | Path, claim: StoreClaim | None, storage_options: dict[str, Any] | None
) -> tuple[Path | Url, Files]:
    """Where a writer writes and its files, once the claim it holds there is checked."""
    path = locate(path)
    check_claim_at(path, claim, storage_options)
    return path, files_at(path, storage_options, live=True)


def _root_attrs(path: Files) -> dict | None:
    try:
        root = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    return root.get("attributes") if isinstance(root, dict) else None


def _interrupted(path: Files) -> bool:
    """A group whose creation never wrote its attributes, holding only what create writes."""
    attrs = _root_attrs(path)
    if attrs is None or attrs:
        return False
    allowed = {"zarr.json", "embeddings", "status", ".mote-claim.json"}
    return all(e.name in allowed or e.name.endswith(".partial") for e in path.iterdir())


def _clear(path: Files, overwrite: bool) -> None:
    """Make room for a new file at ``path``: only an embeddings file (with ``overwrite``) or an
    interrupted creation is deleted; anything else is refused."""
    if not path.exists():
        return
    if not path.is_dir():
        raise StoreError(f"{path}: exists and is a file; choose another --out.")
    if all(e.name == ".mote-claim.json" for e in path.iterdir()) or _interrupted(path):
        empty_folder(path)
        return
    attrs = _root_attrs(path) or {}
    if attrs.get("schema") != SCHEMA:
        raise StoreError(
            f"{path}: holds something other than a mote embeddings file, so mote will not write "
            "or delete anything there; choose another --out."
        )
    if not overwrite:
        raise StoreError(f"{path}: already exists; pass --overwrite to replace it.")
    empty_folder(path)


class EmbeddingsFile:
    """An embeddings file on local disk or at an s3:// URL; build it with ``open_or_create``,
    read it with ``open``."""

    def __init__(
        self, path: Path | Url, group: zarr.Group, writable: bool, files: Files | None = None
    ) -> None:
        self.path = path
        self.files = path if files is None else files  # what checks of files by path look at
        self.attrs: dict[str, Any] = group.attrs.asdict()
        self._vectors = group["embeddings"]
        self._status = group["status"]
        if writable:  # every status chunk stays a file, so a missing one is damage
            self._status = self._status.with_config({"write_empty_chunks": True})
        self._writable = writable

    def __repr__(self) -> str:
        return f"EmbeddingsFile({str(self.path)!r}, n={self.n_rows}, dim={self.dim})"

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls,
        path: str | Path,
        identity: Mapping[str, Any],
        chunk_rows: int = CHUNK_ROWS,
        claim: StoreClaim | None = None,
        overwrite: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> EmbeddingsFile:
        """An empty file (every row pending) for ``identity`` (``IDENTITY_ATTRS``); the root
        attributes are written last. ``path`` may be an s3:// URL (``storage_options``)."""
        path, files = _claimed(path, claim, storage_options)
        missing = [k for k in IDENTITY_ATTRS if k not in identity]
        if missing:
            raise ValueError(f"an embeddings identity needs {missing}")
        n, dim = int(identity["n_rows"]), int(identity["dim"])
        if n < 1 or dim < 1 or chunk_rows < 1:
            raise ValueError(f"need n_rows, dim, chunk_rows >= 1, got {n}, {dim}, {chunk_rows}")
        _clear(files, overwrite)
        group = zarr.create_group(
            store=str(path), zarr_format=3, storage_options=_options(path, storage_options)
        )
        chunk_rows = min(int(chunk_rows), n)
        group.create_array(
            "embeddings",
            shape=(n, dim),
            chunks=(chunk_rows, dim),
            dtype=DTYPE,
            fill_value=0.0,
            compressors=CHUNK_CODECS,
            dimension_names=("row", "dim"),
        )
        status = group.create_array(
            "status",
            shape=(n,),
            chunks=(chunk_rows,),
            dtype="uint8",
            fill_value=PENDING,
            compressors=CHUNK_CODECS,
            dimension_names=("row",),
        )
        status.with_config({"write_empty_chunks": True})[:] = PENDING
        from mote.pipeline import __version__

        group.update_attributes(  # one write of zarr.json, not one per key
            {
                "schema": SCHEMA,
                "schema_version": VERSION,
                **plain(dict(identity)),
                "chunk_rows": chunk_rows,
                "dtype": DTYPE,
                "tool_version": __version__,
            }
        )
        return cls(path, group, writable=True, files=files)

    @classmethod
    def open(
        cls,
        path: str | Path,
        expect: Mapping[str, Any] | None = None,
        writable: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> EmbeddingsFile:
        """Open a file, checking schema and layout first, then every key of ``expect``;
        ``path`` may be a URL, read through fsspec with ``storage_options``."""
        path = locate(path)
        files = files_at(path, storage_options, live=writable)
        attrs = _root_attrs(files)
        if attrs is None:
            raise StoreNotFound(
                f"{path}: no embeddings file here (no zarr.json); write one with "
                f"`mote embed --run RUN --store STORE --out {path}`."
            )
        if attrs.get("schema") != SCHEMA or attrs.get("schema_version") != VERSION:
            got = f"{attrs.get('schema')} v{attrs.get('schema_version')}"
            raise StoreMismatch(
                f"{path}: is {got}, not a {SCHEMA} v{VERSION} file (an unfinished creation has "
                f"no schema); re-run `mote embed ... --out {path} --overwrite`."
            )
        fix = f"re-run `mote embed ... --out {path} --overwrite`"
        missing = [k for k in ROOT_ATTRS if k not in attrs]
        if missing:
            raise StoreCorrupt(f"{path}: root attributes {missing} are missing; {fix}.")
        try:
            group = zarr.open_group(
                str(path),
                mode="r+" if writable else "r",
                zarr_format=3,
                storage_options=_options(path, storage_options),
            )
            vectors, status = group["embeddings"], group["status"]
        except Exception as err:  # zarr raises many types for a broken group
            raise StoreCorrupt(f"{path}: cannot be read ({err}); {fix}.") from err
        n, dim = int(attrs["n_rows"]), int(attrs["dim"])
        if vectors.shape != (n, dim) or status.shape != (n,) or str(vectors.dtype) != DTYPE:
            raise StoreCorrupt(
                f"{path}: arrays are {vectors.shape} {vectors.dtype} and {status.shape}, the "
                f"attributes say ({n}, {dim}) {DTYPE}; {fix}."
            )
        if expect:
            _check_identity(attrs, expect, path, "the command asked for")
        return cls(path, group, writable, files)

    @classmethod
    def open_or_create(
        cls,
        path: str | Path,
        identity: Mapping[str, Any],
        chunk_rows: int = CHUNK_ROWS,
        claim: StoreClaim | None = None,
        overwrite: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> EmbeddingsFile:
        """Continue the file at ``path`` if it holds ``identity``, else create it; a file of
        another run or store is refused (``overwrite`` replaces it)."""
        path, files = _claimed(path, claim, storage_options)
        attrs = _root_attrs(files)
        if overwrite or attrs is None or _interrupted(files):
            return cls.create(path, identity, chunk_rows, claim, overwrite, storage_options)
        if attrs.get("schema") != SCHEMA:
            _clear(files, overwrite=False)  # refuses naming the folder: not an embeddings file
        file = cls.open(path, writable=True, storage_options=storage_options)
        _check_identity(file.attrs, identity, path, "this command makes")
        for leftover in files.rglob("*.partial"):  # a killed writer's temporary chunk files
            leftover.unlink(missing_ok=True)
        return file

    # ------------------------------------------------------------------ facts

    @property
    def n_rows(self) -> int:
        return int(self.attrs["n_rows"])

    @property
    def dim(self) -> int:
        return int(self.attrs["dim"])

    @property
    def chunk_rows(self) -> int:
        return int(self.attrs["chunk_rows"])

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_rows / self.chunk_rows)

    @property
    def fingerprint(self) -> str:
        """``sha256:<16 hex>`` of the identity attributes (run, store, CLIP, variant, shape):
        what made these vectors, so a search index built from other vectors is told stale."""
        made = {key: self.attrs[key] for key in IDENTITY_ATTRS}
        return fingerprint([json.dumps(plain(made), sort_keys=True)])

    @property
    def table_file(self) -> Files:
        return self.files / TABLE_FILE

    def chunk_range(self, chunk: int) -> tuple[int, int]:
        """(start, stop) rows of chunk ``chunk``."""
        if not 0 <= chunk < self.n_chunks:
            raise IndexError(f"chunk {chunk} is outside 0..{self.n_chunks - 1} of {self.path}")
        start = chunk * self.chunk_rows
        return start, min(start + self.chunk_rows, self.n_rows)

    def done_mask(self) -> np.ndarray:
        """bool (row,): the rows whose vectors are written; a missing status chunk is damage."""
        for chunk in range(self.n_chunks):
            key = self._status.metadata.encode_chunk_key((chunk,))
            if not (self.files / "status" / key).is_file():
                raise StoreCorrupt(
                    f"{self.path}: status chunk {chunk} is missing (its file was deleted); "
                    f"re-run `mote embed ... --out {self.path}` with --overwrite."
                )
        status = np.asarray(self._status[:], dtype=np.uint8)
        bad = np.flatnonzero((status != PENDING) & (status != DONE))
        if bad.size:
            raise StoreCorrupt(
                f"{self.path}: row {int(bad[0])} has unknown status {int(status[bad[0]])}; "
                f"re-run `mote embed ... --out {self.path} --overwrite`."
            )
        return status == DONE

    def todo_chunks(self) -> list[int]:
        """The chunks that still hold a pending row, in order."""
        done = self.done_mask()
        return [c for c in range(self.n_chunks) if not done[slice(*self.chunk_range(c))].all()]

    # ------------------------------------------------------------------ writing

    def write_chunk(self, chunk: int, vectors: np.ndarray) -> None:
        """Write the vectors of one whole chunk (unit rows), then mark its rows done."""
        if not self._writable:
            raise StoreError(f"{self.path}: opened read-only; open it with writable=True.")
        start, stop = self.chunk_range(chunk)
        vectors = np.asarray(vectors)
        if vectors.shape != (stop - start, self.dim):
            raise ValueError(f"chunk {chunk} needs ({stop - start}, {self.dim}), {vectors.shape}")
        norms = np.linalg.norm(vectors.astype(np.float32), axis=1)
        if not np.isfinite(norms).all() or np.abs(norms - 1).max() > 1e-2:
            raise ValueError(f"chunk {chunk} of {self.path}: rows must be finite unit vectors")
        self._status[start:stop] = PENDING  # a rewrite never leaves old rows marked done
        self._vectors[start:stop] = vectors.astype(DTYPE)
        self._status[start:stop] = DONE

    def write_table(self, columns: Mapping[str, Sequence | np.ndarray]) -> None:
        """Write ``videos.parquet`` (``TABLE_COLUMNS``, one row per vector) once every row is
        done, through a temporary file renamed into place."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.done_mask().all():
            raise StoreError(f"{self.path}: rows are still pending; the table is written last.")
        if set(columns) != set(TABLE_COLUMNS) - {"row"}:
            raise ValueError(f"table columns must be {TABLE_COLUMNS[1:]}, got {sorted(columns)}")
        n = self.n_rows
        types = {
            "row": pa.int64(),
            "store_row": pa.int64(),
            "video_id": pa.string(),
            "path": pa.string(),
            "label": pa.int32(),
            "label_name": pa.string(),
        }
        values = {"row": np.arange(n, dtype=np.int64), **columns}
        arrays = [pa.array(values[name], type=types[name]) for name in TABLE_COLUMNS]
        if any(len(a) != n for a in arrays):
            raise ValueError(f"every table column needs {n} values")
        meta = {b"mote.schema": SCHEMA.encode(), b"mote.schema_version": str(VERSION).encode()}
        table = pa.Table.from_arrays(arrays, names=list(TABLE_COLUMNS)).replace_schema_metadata(
            meta
        )
        if isinstance(self.table_file, RemoteFiles):  # one PUT: whole or absent, no rename
            buffer = pa.BufferOutputStream()
            pq.write_table(table, buffer)
            self.table_file.write_bytes(buffer.getvalue().to_pybytes())
            return
        partial = self.table_file.with_name(TABLE_FILE + ".partial")
        pq.write_table(table, partial)
        os.replace(partial, self.table_file)

    # ------------------------------------------------------------------ reading

    def _check_complete(self) -> None:
        done = self.done_mask()
        if not done.all() or not self.table_file.is_file():
            what = f"{int(done.sum())} of {self.n_rows} rows done" + (
                "" if not done.all() else ", its table not written"
            )
            raise StoreError(
                f"{self.path}: unfinished ({what}); rerun the same `mote embed` to finish it."
            )

    def read_vectors(self, rows: slice | Sequence[int] | np.ndarray = slice(None)) -> np.ndarray:
        """float16 (k, dim) unit vectors of a finished file."""
        self._check_complete()
        if isinstance(rows, slice):
            return np.asarray(self._vectors[rows])
        return np.asarray(self._vectors.oindex[np.asarray(rows, dtype=np.int64), :])

    def iter_chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float16 (k, dim) vectors) chunk by chunk: memory bounded by a chunk."""
        self._check_complete()
        for chunk in range(self.n_chunks):
            start, stop = self.chunk_range(chunk)
            yield start, np.asarray(self._vectors[start:stop])

    def read_table(self):
        """The ``videos.parquet`` table (a ``pyarrow.Table``), checked to have a row per vector."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._check_complete()
        source = self.table_file
        if isinstance(source, RemoteFiles):
            source = pa.BufferReader(source.read_bytes())
        table = pq.read_table(source)
        rows = table.column("row").to_numpy() if "row" in table.column_names else None
        if table.column_names != list(TABLE_COLUMNS) or rows is None or len(rows) != self.n_rows:
            raise StoreCorrupt(
                f"{self.table_file}: not the table of {self.n_rows} rows {TABLE_COLUMNS}; rerun "
                f"`mote embed ... --out {self.path}` (it writes the table again when missing)."
            )
        if not np.array_equal(rows, np.arange(self.n_rows)):
            raise StoreCorrupt(f"{self.table_file}: its row column is not 0..{self.n_rows - 1}.")
        return table

    def summary(self) -> dict[str, Any]:
        """The file's identity and progress, as ``--json`` prints it."""
        done = self.done_mask()
        return {
            "out": str(self.path),
            "schema": SCHEMA,
            "schema_version": VERSION,
            "n_rows": self.n_rows,
            "n_done": int(done.sum()),
            "dim": self.dim,
            "dtype": DTYPE,
            "variant": self.attrs["variant"],
            "table": str(self.table_file) if self.table_file.is_file() else None,
            "bytes_on_disk": self._bytes(),
        }

    def _bytes(self) -> int:
        """The size of every file of the embeddings file (objects, at a URL)."""
        return total_bytes(self.files)


def _differences(have: Any, want: Any, key: str) -> list[str]:
    """``key.sub is X but Y`` for every leaf where two attribute values differ."""
    if isinstance(have, Mapping) and isinstance(want, Mapping):
        out = []
        for sub in sorted(set(have) | set(want)):
            out += _differences(have.get(sub), want.get(sub), f"{key}.{sub}")
        return out
    return [] if plain(have) == plain(want) else [f"{key} is {show(have)} not {show(want)}"]


def _check_identity(attrs: Mapping, want: Mapping, path: Path, asker: str) -> None:
    """One line naming what differs between a file's identity and ``want`` (run first)."""
    diffs = []
    for key in want:
        diffs += _differences(attrs.get(key), want[key], key)
    if diffs:
        what = "run" if any(d.startswith("run.") for d in diffs) else "input"
        raise StoreMismatch(
            f"{path}: embeddings of another {what} than {asker} ({'; '.join(diffs[:3])}); pass "
            "--overwrite to replace them, or choose another --out."
        )
