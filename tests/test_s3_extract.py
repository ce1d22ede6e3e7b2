"""`mote extract --out s3://...` from one process, against a real S3 server (moto) on loopback.

The store it writes must be the one a local run writes, object for object and byte for byte;
kill -9 in the middle, then the same command, must end there too; a second writer is refused
naming the first while it holds the claim; `mote info --verify` reads the result clean.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import zarr
from helpers import S3_BUCKET
from test_claim_anywhere import Holder

from mote.cache_schema.claim import CLAIM_FILE


def args(data) -> list[str]:
    return [
        "extract", "--dataset", "list", "--root", str(data.root), "--list", str(data.list_file),
        "--labels", str(data.labels_file), "--model", "mote-tiny", "--pretrained", "none",
        "--device", "cpu", "--chunk-videos", "2", "--decode-workers", "1", "--batch-size", "8",
    ]  # fmt: skip


def objects(s3, key: str) -> dict[str, bytes]:
    """Every object under ``key``, by its path below it."""
    s3.invalidate_cache()
    return {path[len(key) + 1 :]: s3.cat_file(path) for path in s3.find(key)}


def test_extract_writes_the_local_store_to_s3_and_it_verifies(s3, motion_data, reference, mote_cli):
    key = f"{S3_BUCKET}/write/s.zarr"
    code, out, err = mote_cli(*args(motion_data), "--out", f"s3://{key}", "--json")
    assert code == 0, err
    assert json.loads(out)["store"] == f"s3://{key}"
    assert objects(s3, key) == reference  # no claim object left behind
    code, out, err = mote_cli("info", f"s3://{key}", "--verify", "--json")
    assert code == 0, err
    verified = json.loads(out)["verify"]
    assert verified["problems"] == [] and verified["chunks_read"] > 0
    code, out, err = mote_cli(*args(motion_data), "--out", f"s3://{key}", "--json")
    assert code == 0 and json.loads(out)["attempted"] == 0, err  # resumed: nothing left
    s3.pipe_file(f"{key}/embeddings/c/0/0/0/0", b"stale")  # replaced by --overwrite
    code, out, err = mote_cli(*args(motion_data), "--out", f"s3://{key}", "--overwrite", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["attempted"] == summary["n_videos"], err
    assert objects(s3, key) == reference
    s3.rm_file(f"{key}/labels/zarr.json")  # restored from the consolidated copy, with one PUT
    code, _, err = mote_cli(*args(motion_data), "--out", f"s3://{key}")
    assert code == 0 and "restored labels/zarr.json from the consolidated metadata" in err, err
    assert objects(s3, key) == reference


def some_video_done(url: str) -> bool:
    try:
        return bool((zarr.open_group(url, mode="r")["status"][:] == 1).any())
    except Exception:  # noqa: BLE001 - the store is still being created
        return False


def test_kill_9_mid_extraction_then_rerun_ends_byte_identical(s3, motion_data, reference, mote_cli):
    key = f"{S3_BUCKET}/killed/s.zarr"
    process = subprocess.Popen(
        [sys.executable, "-m", "mote.stages.cli", *args(motion_data), "--out", f"s3://{key}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if some_video_done(f"s3://{key}"):
            break  # at least one chunk is done: the run is in the middle
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    status = zarr.open_group(f"s3://{key}", mode="r")["status"][:]
    assert 0 < (status == 1).sum() < len(status)
    assert s3.exists(f"{key}/{CLAIM_FILE}")  # the dead run's claim object is still there

    code, out, err = mote_cli(*args(motion_data), "--out", f"s3://{key}", "--json")
    assert code == 0, err
    assert f"taking over the claim of a run that is gone (pid {process.pid} " in err
    assert 0 < json.loads(out)["attempted"] < len(status)
    assert objects(s3, key) == reference


def test_a_second_writer_is_refused_naming_the_holder(s3, motion_data, mote_cli, tmp_path: Path):
    url = f"s3://{S3_BUCKET}/held/s.zarr"
    holder = Holder(url)
    try:
        code, _, err = mote_cli(*args(motion_data), "--out", url)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"error: {url}: another run (pid {holder.process.pid} on host")
        assert not s3.exists(f"{S3_BUCKET}/held/s.zarr/zarr.json")  # nothing was written
    finally:
        holder.let_go()
