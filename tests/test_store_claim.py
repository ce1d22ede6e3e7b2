"""One writer per store, and resumes that never damage a readable store (real `mote` processes).

Overlaps are made deterministic without sleeps: a run is frozen with SIGSTOP once its claim file
names it, or the claim is held by a helper process that waits on its stdin.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from helpers import tiny_extract_config

from mote.cache_schema import v1
from mote.cache_schema.claim import CLAIM_FILE, ClaimOwner, StoreBusy, StoreClaim
from mote.cache_schema.feature_store import FeatureStore
from mote.cache_schema.store_errors import StoreError
from mote.pipeline.progress import NullProgress
from mote.stages import extract

HOLD = (
    "import sys; from mote.cache_schema.claim import StoreClaim; "
    "c = StoreClaim.acquire(sys.argv[1]); print('claimed', flush=True); sys.stdin.read(); "
    "c.release()"
)
DIE_HOLDING = (
    "import os, sys; from mote.cache_schema.claim import StoreClaim; "
    "StoreClaim.acquire(sys.argv[1]); os._exit(0)"
)


def extract_args(data, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mote.stages",
        "extract",
        "--dataset",
        "list",
        "--root",
        str(data.root),
        "--list",
        str(data.list_file),
        "--labels",
        str(data.labels_file),
        "--model",
        "mote-tiny",
        "--pretrained",
        "none",
        "--device",
        "cpu",
        "--decode-workers",
        "0",
        "--chunk-videos",
        "4",
        "--out",
        str(out),
        *extra,
    ]


def mote_extract(data, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}  # rich would wrap long lines at 80 columns
    return subprocess.run(
        extract_args(data, out, *extra), capture_output=True, text=True, timeout=300, env=env
    )


def files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def snapshot(path: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file's inode, mtime and bytes: any write, even of the same bytes, changes it."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(path))] = (st.st_ino, st.st_mtime_ns, p.read_bytes())
    return out


def one_line_error(result: subprocess.CompletedProcess, code: int = 2) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def assert_fully_readable(path: Path, n_videos: int) -> None:
    """Every array opens with mote, with plain zarr (with and without consolidated metadata) and
    dask, and every video is resolved."""
    store = FeatureStore.open(path)
    assert store.n_videos == n_videos and len(store.todo()) == 0
    root = json.loads((path / "zarr.json").read_text())
    assert set(root["consolidated_metadata"]["metadata"]) == set(v1.ARRAYS)
    for consolidated in (True, False):
        group = zarr.open_group(path, mode="r", use_consolidated=consolidated)
        for name in v1.ARRAYS:
            assert group[name][:].shape[0] > 0
    emb = da.from_zarr(str(path), component="embeddings").compute()
    assert emb.shape[0] == n_videos and np.isfinite(emb).all()
    assert not (path / CLAIM_FILE).exists()


class Holder:
    """A helper process that holds a store's claim until it is told to let go."""

    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout.readline().strip() == "claimed"

    def let_go(self) -> None:
        self.process.communicate("", timeout=60)
        assert self.process.returncode == 0


def wait_until_claimed_by(path: Path, process: subprocess.Popen) -> None:
    """Poll until the claim file names ``process`` (a condition, not a timed sleep)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        owner = None
        if (path / CLAIM_FILE).exists():
            owner = ClaimOwner.parse((path / CLAIM_FILE).read_text())
        if owner is not None and owner.pid == process.pid:
            return
        time.sleep(0.005)
    raise AssertionError(f"the run never claimed {path} (exit code {process.poll()})")


@pytest.fixture(scope="module")
def reference(motion_data, tmp_path_factory, tiny_extract):
    """An uninterrupted store of the settings every test here uses."""
    out = tmp_path_factory.mktemp("reference") / "whole.zarr"
    extract.run(tiny_extract(motion_data, out, chunk_videos=4))
    return out


def test_second_extract_is_refused_naming_the_first_and_nothing_is_lost(
    motion_data, tmp_path, reference
):
    out = tmp_path / "s.zarr"
    first = subprocess.Popen(
        extract_args(motion_data, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until_claimed_by(out, first)
        os.killpg(first.pid, signal.SIGSTOP)  # frozen while it holds the claim
        for extra in ((), ("--overwrite",)):
            message = one_line_error(mote_extract(motion_data, out, *extra))
            assert f"pid {first.pid} on host {socket.gethostname()}" in message
            assert "mote extract" in message and "since" in message
            assert "--overwrite" not in message  # it would wipe the first run's work
        assert ClaimOwner.parse((out / CLAIM_FILE).read_text()).pid == first.pid
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert files(out) == files(reference)  # byte-identical: nothing lost, nothing doubled
    assert_fully_readable(out, len(FeatureStore.open(reference).video_ids))


def test_overwrite_and_partial_cleanup_wait_for_the_claim_holder(motion_data, tmp_path, reference):
    out = tmp_path / "s.zarr"
    extract.run(tiny_extract_config(motion_data, out, chunk_videos=4))
    in_flight = out / "embeddings" / "c" / "0" / "0" / "0" / "0.in-flight.partial"
    in_flight.parent.mkdir(parents=True, exist_ok=True)
    in_flight.write_bytes(b"another writer's chunk")
    holder = Holder(out)
    before = files(out)
    try:
        for extra in (("--overwrite",), ()):
            message = one_line_error(mote_extract(motion_data, out, *extra))
            assert f"pid {holder.process.pid} on host {socket.gethostname()}" in message
        assert files(out) == before  # nothing deleted, the in-flight chunk included
    finally:
        holder.let_go()
    resumed = mote_extract(motion_data, out)
    assert resumed.returncode == 0, resumed.stderr
    assert files(out) == files(reference)  # the leftover .partial is cleaned under the claim


def test_claim_of_a_dead_process_is_taken_over_with_a_notice(motion_data, tmp_path, reference):
    out = tmp_path / "s.zarr"
    dead = subprocess.run([sys.executable, "-c", DIE_HOLDING, str(out)], timeout=60)
    assert dead.returncode == 0
    owner = ClaimOwner.parse((out / CLAIM_FILE).read_text())
    assert owner is not None and not owner.alive()
    result = mote_extract(motion_data, out)
    assert result.returncode == 0, result.stderr
    assert f"taking over the claim of a run that is gone (pid {owner.pid} " in result.stderr
    assert files(out) == files(reference)


def test_claim_refuses_a_live_owner_in_process(tmp_path):
    """The library API: a second claim of a held store names the holder; release frees it."""
    holder = Holder(tmp_path / "s.zarr")
    try:
        with pytest.raises(StoreBusy, match=f"pid {holder.process.pid} on host"):
            StoreClaim.acquire(tmp_path / "s.zarr")
    finally:
        holder.let_go()
    with StoreClaim.acquire(tmp_path / "s.zarr") as claim:
        assert claim.taken_over is None and (tmp_path / "s.zarr" / CLAIM_FILE).exists()
    assert not (tmp_path / "s.zarr").exists()  # the claim made the folder and nothing else


def test_store_killed_during_creation_is_recreated_not_refused(motion_data, tmp_path, reference):
    out = tmp_path / "s.zarr"
    # What `FeatureStore.create` leaves when killed before its root attributes: a root group
    # without attributes, some arrays, a temporary file, and the claim of the killed process.
    group = zarr.create_group(store=str(out), zarr_format=3)
    group.create_array("embeddings", shape=(3, 2), dtype="float16")
    group.create_array("video_ids", shape=(3,), dtype=str)
    (out / "labels").mkdir()
    (out / "labels" / "zarr.json.4242.partial").write_text("{")
    assert subprocess.run([sys.executable, "-c", DIE_HOLDING, str(out)]).returncode == 0
    result = mote_extract(motion_data, out)
    assert result.returncode == 0, result.stderr
    assert files(out) == files(reference)


def test_a_folder_that_is_not_a_mote_store_is_never_deleted(motion_data, tmp_path):
    out = tmp_path / "s.zarr"
    zarr.create_group(store=str(out), zarr_format=3)  # a group without attributes ...
    (out / "thesis.tex").write_text("precious")  # ... that holds something else
    before = files(out)
    for overwrite in (False, True):
        cfg = tiny_extract_config(motion_data, out, chunk_videos=4, overwrite=overwrite)
        with pytest.raises(StoreError, match=str(out)) as error:
            extract.run(cfg)
        assert "choose another --out" in str(error.value)
        assert "pass --overwrite" not in str(error.value)
    assert files(out) == before


def test_resume_after_a_deleted_array_metadata_file_keeps_every_array(
    mixed_folder, tmp_path, tiny_extract
):
    out = tmp_path / "s.zarr"
    extract.run(tiny_extract(mixed_folder, out, chunk_videos=4))
    n = FeatureStore.open(out).n_videos
    (out / "status" / "zarr.json").unlink()
    FeatureStore.open(out)  # readers are fine: the consolidated metadata holds it
    result = mote_extract(mixed_folder, out, "--retry-failed")  # rewrites chunks, reconsolidates
    assert result.returncode == 0, result.stderr
    assert "restored status/zarr.json" in result.stderr
    assert_fully_readable(out, n)
    assert FeatureStore.open(out).summary()["n_failed"] == len(mixed_folder.broken)


def _make_read_only(path: Path, read_only: bool) -> None:
    """chmod a-w; as root (which chmod does not stop) the immutable attribute instead."""
    if os.geteuid() == 0:
        flag = "+i" if read_only else "-i"
        subprocess.run(["chattr", "-R", flag, str(path)], check=True)
        return
    for p in [path, *path.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod(mode & ~0o222 if read_only else mode | 0o200)


def test_finished_read_only_store_resumes_with_nothing_to_do(motion_data, tmp_path):
    out = tmp_path / "s.zarr"
    extract.run(tiny_extract_config(motion_data, out, chunk_videos=4))
    before = snapshot(out)
    _make_read_only(out, True)
    try:
        with pytest.raises(OSError):
            (out / "probe").write_text("")  # it really is read-only
        result = mote_extract(motion_data, out)
        more = mote_extract(motion_data, out, "--frames", "4")
    finally:
        _make_read_only(out, False)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stderr
    assert snapshot(out) == before  # not one byte written
    assert "frames is 8 in the store but 4 now" in one_line_error(more)


class Messages(NullProgress):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


def test_writable_finished_store_writes_nothing(motion_data, tmp_path):
    cfg = tiny_extract_config(motion_data, tmp_path / "s.zarr", chunk_videos=4)
    extract.run(cfg)
    before = snapshot(cfg.out)
    progress = Messages()
    assert extract.run(cfg, progress)["attempted"] == 0
    assert any("nothing to do" in line for line in progress.lines)
    assert snapshot(cfg.out) == before


def test_broken_array_metadata_is_a_one_line_error(motion_data, tmp_path):
    out = tmp_path / "s.zarr"
    extract.run(tiny_extract_config(motion_data, out, chunk_videos=4))
    broken = out / "embeddings" / "zarr.json"
    broken.write_text(broken.read_text()[:40])
    before = files(out)
    message = one_line_error(mote_extract(motion_data, out), code=3)  # damage found
    assert str(broken) in message and "delete it" in message
    assert files(out) == before
    assert FeatureStore.open(out).read_embeddings(slice(0, 2)).shape[0] == 2  # still readable
    broken.unlink()  # the fix the message gives
    fixed = mote_extract(motion_data, out)
    assert fixed.returncode == 0, fixed.stderr
    assert_fully_readable(out, FeatureStore.open(out).n_videos)


@contextlib.contextmanager
def catching_sigint():
    """Children started in here begin with Python's Ctrl-C handler, as a terminal's foreground
    job does: a pytest started in the background of a script (``cmd &``) ignores SIGINT, and a
    child inherits an ignored signal, which Python then leaves ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("sent,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_release_the_claim(motion_data, tmp_path, reference, sent, code):
    # mote-tiny extracts these 24 videos in well under a second: on a loaded machine a run
    # can finish between the claim appearing and the signal. Such a try cannot test the
    # signal, so it is repeated on a fresh folder; one interrupted run is required.
    for attempt in range(5):
        out = tmp_path / f"s{attempt}.zarr"
        with catching_sigint():
            run = subprocess.Popen(
                extract_args(motion_data, out), stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
        with contextlib.suppress(AssertionError):  # it may finish before the poll sees it
            wait_until_claimed_by(out, run)
        run.send_signal(sent)
        _, err = run.communicate(timeout=120)
        if run.returncode != 0:
            break
    assert run.returncode == code, err
    assert not (out / CLAIM_FILE).exists()
    resumed = mote_extract(motion_data, out)  # no takeover needed: the claim was released
    assert resumed.returncode == 0 and "taking over" not in resumed.stderr, resumed.stderr
    assert files(out) == files(reference)
