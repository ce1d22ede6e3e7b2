"""Check every chunk of a feature store and say exactly what is damaged (``mote info --verify``).

Readers check the data they read; this reads everything, so damage in rows no command has read
yet is found too, and ``mote extract --repair`` knows which videos to redo. Each problem names
the store, the array, the chunk and the videos it makes invalid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mote.cache_schema import v1
from mote.cache_schema.checks import label_problems, label_rule
from mote.cache_schema.feature_store import FeatureStore
from mote.cache_schema.repair import array_metadata_missing

MISSING = "is missing (its file was deleted)"


@dataclass(frozen=True)
class Problem:
    """One damaged chunk, or damaged videos inside a chunk that decodes."""

    store: str
    array: str
    chunk: int
    videos: tuple[int, ...]  # store rows whose data this damage makes invalid
    reason: str
    whole_chunk: bool  # the chunk cannot be used at all (missing or undecodable)
    metadata_only: bool = False  # the array's own zarr.json, not its data

    def line(self) -> str:
        """The problem as one line of text."""
        if self.metadata_only:
            return f"{self.store}: array {self.array!r} {self.reason}"
        shown = ", ".join(str(v) for v in self.videos[:8])
        more = f" (+{len(self.videos) - 8} more)" if len(self.videos) > 8 else ""
        where = f"videos {shown}{more}" if self.videos else "no videos"
        return f"{self.store}: array {self.array!r} chunk {self.chunk} ({where}) {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["videos"] = list(self.videos)
        out["line"] = self.line()
        return out


@dataclass
class VerifyReport:
    """The outcome of ``verify``: every problem found and what was checked."""

    store: str
    checksums: bool  # False for stores written before chunk checksums (damage may go unseen)
    chunks_read: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def repairable(self) -> bool:
        """Re-extraction can fix every problem (arrays written at creation it cannot)."""
        return not self.unrepairable()

    def unrepairable(self) -> list[Problem]:
        """Problems a repair cannot fix: wrong values in a readable chunk of an array written at
        creation (labels, ids, text). Missing or undecodable ones it rewrites from the video
        list (``FeatureStore.restore_creation_arrays``)."""
        return [
            p
            for p in self.problems
            if p.array in v1.CREATION_ARRAYS and not (p.whole_chunk or p.metadata_only)
        ]

    def damaged_videos(self) -> np.ndarray:
        """int64 store rows to mark pending for a repair; whole chunks where a chunk is unusable."""
        rows = {v for p in self.problems if p.array not in v1.CREATION_ARRAYS for v in p.videos}
        return np.asarray(sorted(rows), dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "ok": self.ok,
            "checksums": self.checksums,
            "chunks_read": self.chunks_read,
            "repairable": self.repairable,
            "problems": [p.to_dict() for p in self.problems],
        }


def verify(store: FeatureStore) -> VerifyReport:
    """Read every chunk of every array: decoding (checksums), missing files, and the values of
    done rows (finite, not all zero, frame indices in range), labels in range, ids non-empty."""
    report = VerifyReport(str(store.path), store.has_checksums())
    for name in array_metadata_missing(store.files):
        reason = (
            "has no zarr.json of its own (deleted); readers use the copy in the store's root "
            "zarr.json, and any extract run on the store (e.g. --repair) writes it back"
        )
        report.problems.append(Problem(str(store.path), name, 0, (), reason, False, True))
    for chunk in range(store.n_chunks):
        _verify_chunk(store, chunk, report)
    _verify_text(store, report)
    return report


def _verify_chunk(store: FeatureStore, chunk: int, report: VerifyReport) -> None:
    start, stop = store.chunk_range(chunk)
    every = tuple(range(start, stop))
    path = str(store.path)

    def add(name: str, reason: str, rows: np.ndarray | None = None) -> None:
        videos = every if rows is None else tuple(int(r) + start for r in rows)
        report.problems.append(Problem(path, name, chunk, videos, reason, rows is None))

    data: dict[str, np.ndarray | None] = {}
    for name in v1.ARRAYS:
        if not v1.ARRAYS[name].per_video:
            continue
        data[name], why = store.try_read_chunk(name, chunk)
        report.chunks_read += 1
        if why:
            add(name, why)
    status = data["status"]
    if status is None:
        return
    if store.keeps_status_chunks and not store.chunk_file("status", chunk).is_file():
        add("status", MISSING)  # its videos' state is unknown: redo the whole chunk
        return
    status = np.asarray(status, dtype=np.uint8)
    unknown = ~np.isin(status, v1.STATUS_CODES)
    if unknown.any():
        add("status", f"holds unknown status codes {sorted(set(status[unknown].tolist()))}")
        return
    done = status == v1.DONE
    required = ["labels", "video_ids"]
    if done.any():
        required += ["embeddings", "frame_indices", "num_frames"]
    for name in required:
        if data[name] is not None and not store.chunk_file(name, chunk).is_file():
            extracted = name not in v1.CREATION_ARRAYS
            add(name, MISSING + (" but holds done videos" if extracted else ""))
            data[name] = None
    _check_values(store, data, status, add)


def _check_values(store: FeatureStore, data: dict, status: np.ndarray, add) -> None:
    """Row checks on the chunks that decoded."""
    done = status == v1.DONE
    n_classes = len(store.class_names)
    if data["labels"] is not None:
        bad = np.flatnonzero(label_problems(data["labels"], n_classes))
        if bad.size:
            add("labels", f"holds labels {label_rule(n_classes)}", bad)
    if data["video_ids"] is not None:
        bad = np.flatnonzero([not str(v) for v in data["video_ids"]])
        if bad.size:
            add("video_ids", "holds empty video ids", bad)
    rows = np.flatnonzero(done)
    if data["embeddings"] is not None and rows.size:
        flat = np.asarray(data["embeddings"])[rows].reshape(len(rows), -1)
        nonfinite = ~np.isfinite(flat).all(axis=1)
        if nonfinite.any():
            add("embeddings", "holds NaN or inf in done videos", rows[nonfinite])
        zero = ~flat.any(axis=1)
        if zero.any():
            add("embeddings", "holds all-zero embeddings for done videos", rows[zero])
    if data["num_frames"] is not None and rows.size:
        num = np.asarray(data["num_frames"])[rows]
        bad = num < 1
        if bad.any():
            add("num_frames", "holds no frame count for done videos", rows[bad])
        if data["frame_indices"] is not None:
            idx = np.asarray(data["frame_indices"])[rows].reshape(len(rows), -1)
            bad = (idx < 0).any(axis=1) | (idx >= num[:, None]).any(axis=1)
            if bad.any():
                add("frame_indices", "holds frame indices outside the video", rows[bad])
    if data["failure_reason"] is not None:
        failed = np.flatnonzero(status == v1.FAILED)
        empty = [r for r in failed if not str(data["failure_reason"][r])]
        if empty:
            add("failure_reason", "holds no reason for failed videos", np.asarray(empty))


def _verify_text(store: FeatureStore, report: VerifyReport) -> None:
    if not store.labelled:  # no classes, no text bank: the array has no rows and no chunk
        return
    path, name = str(store.path), "text_embeddings"
    text, why = store.try_read_chunk(name, 0)
    report.chunks_read += 1
    if not why and not store.chunk_file(name, 0).is_file():
        why = MISSING
    if not why and not np.isfinite(np.asarray(text)).all():
        why = "holds NaN or inf"
    if why:
        report.problems.append(Problem(path, name, 0, (), why, True))
