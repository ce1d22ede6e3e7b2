"""The extraction's chunk writer: chunks are written behind the caller, on one thread, in the
order they complete; a failed write reaches the caller; an error drops the writes not started."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_store import done, make_spec, new_store, tree

from mote.cache_schema import v1
from mote.cache_schema.feature_store import FeatureStore
from mote.cache_schema.store_errors import StoreError
from mote.pipeline.extraction.local import ChunkWriter


def statuses(path: Path) -> np.ndarray:
    return np.asarray(FeatureStore.open(path).status())


def test_chunks_are_written_off_the_callers_thread_in_the_order_they_complete(
    tmp_path: Path,
) -> None:
    store = new_store(tmp_path / "s.zarr")
    spec = make_spec()
    writes: list[tuple[int, str]] = []
    write_chunk = store.write_chunk

    def recorded(chunk, results):  # the real write, with who made it and when
        writes.append((chunk, threading.current_thread().name))
        write_chunk(chunk, results)

    store.write_chunk = recorded
    with ChunkWriter(store, list(range(10))) as writer:
        for index in (8, 9, 4, 5, 6, 7, 0, 1, 2, 3):  # chunks complete as 2, 1, 0
            writer.add(done(spec, index))
    assert [chunk for chunk, _ in writes] == [2, 1, 0]
    assert {name for _, name in writes} != {threading.current_thread().name}
    assert all(name.startswith("mote-chunk-writer") for _, name in writes)
    assert (statuses(tmp_path / "s.zarr") == v1.DONE).all()

    # The same data written in the caller's thread gives the same bytes.
    other = new_store(tmp_path / "t.zarr")
    for chunk, rows in ((0, range(4)), (1, range(4, 8)), (2, range(8, 10))):
        other.write_chunk(chunk, [done(spec, i) for i in rows])
    assert tree(tmp_path / "s.zarr") == tree(tmp_path / "t.zarr")


def test_a_failed_write_is_raised_to_the_caller(tmp_path: Path) -> None:
    new_store(tmp_path / "s.zarr")
    read_only = FeatureStore.open(tmp_path / "s.zarr")
    spec = make_spec()
    with pytest.raises(StoreError, match="opened read-only"):
        with ChunkWriter(read_only, list(range(10))) as writer:
            for index in range(10):
                writer.add(done(spec, index))
    assert (statuses(tmp_path / "s.zarr") == v1.PENDING).all()


def test_an_error_drops_the_writes_not_started_and_keeps_those_done(tmp_path: Path) -> None:
    store = new_store(tmp_path / "s.zarr")
    spec = make_spec()
    release = threading.Event()
    write_chunk = store.write_chunk

    def held(chunk, results):  # the first write waits until the caller has failed
        release.wait(timeout=30)
        write_chunk(chunk, results)

    store.write_chunk = held
    writer = ChunkWriter(store, list(range(10)))

    def release_once_dropped() -> None:  # chunk 0's write goes on once chunk 1's is cancelled
        while not (len(writer._writes) == 2 and writer._writes[1].cancelled()):
            time.sleep(0.01)
        release.set()

    threading.Thread(target=release_once_dropped, daemon=True).start()
    with pytest.raises(RuntimeError, match="the encoder broke"):
        with writer:
            for index in range(8):  # chunk 0 is being written, chunk 1 waits for it
                writer.add(done(spec, index))
            raise RuntimeError("the encoder broke")
    assert release.is_set()
    status = statuses(tmp_path / "s.zarr")
    assert (status[:4] == v1.DONE).all()  # the write already running finished
    assert (status[4:] == v1.PENDING).all()  # the queued one was dropped: a rerun redoes it
