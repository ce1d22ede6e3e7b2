"""Who takes a store's claim: the writing run, never the store (see cache_schema/feature_store.py).

A writer without a claim of its own (a test, a benchmark) takes none, but is refused on a store
that a live run has claimed, naming that run; a record left by a process that is gone is no bar.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from test_store import CHUNK, done, make_spec, new_store, text_bank, video_list

from mote.cache_schema.claim import CLAIM_FILE, ClaimOwner, StoreBusy, StoreClaim
from mote.cache_schema.feature_store import FeatureStore
from mote.cache_schema.reader import StoreReader


def test_a_writer_without_a_claim_is_refused_while_a_run_holds_it(tmp_path: Path) -> None:
    path, spec = tmp_path / "s.zarr", make_spec()
    ids, labels = video_list()
    with StoreClaim.acquire(path) as claim:
        with pytest.raises(StoreBusy, match=f"another run \\(pid {os.getpid()} "):
            new_store(path, spec)
        with pytest.raises(StoreBusy, match="is writing this store"):
            FeatureStore.open_or_create(path, spec, ids, labels, text_bank(spec))
        assert sorted(p.name for p in path.iterdir()) == [CLAIM_FILE]  # nothing was written
        store = FeatureStore.open_or_create(path, spec, ids, labels, text_bank(spec), CHUNK, claim)
        store.write_chunk(0, [done(spec, 0)])
    assert not (path / CLAIM_FILE).exists()  # the store took no claim of its own
    resumed = FeatureStore.open_or_create(path, spec, ids, labels, text_bank(spec), CHUNK)
    resumed.write_chunk(1, [done(spec, 4)])  # unclaimed, as before: still writable
    assert resumed.todo().size == 8 and not (path / CLAIM_FILE).exists()
    assert FeatureStore.resume(path, spec, ids, labels)._writable is False


def test_a_claim_record_of_a_process_that_is_gone_is_no_bar(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    record = ClaimOwner.me()
    path.mkdir()
    dead = ClaimOwner(**{**record.__dict__, "pid": int(gone.stdout), "process_start": None})
    (path / CLAIM_FILE).write_text(dead.to_json())
    assert new_store(path).n_videos == 10


def test_stores_pickle_as_their_path_and_mode(tmp_path: Path) -> None:
    writer = new_store(tmp_path / "s.zarr")
    again = pickle.loads(pickle.dumps(writer))
    assert type(again) is FeatureStore and again._writable and again.path == writer.path
    reader = StoreReader.open(tmp_path / "s.zarr")
    assert type(pickle.loads(pickle.dumps(reader))) is StoreReader
    assert not hasattr(reader, "write_chunk") and isinstance(writer, StoreReader)
