"""`mote extract` end to end: real videos, real decord, mote-tiny, a real Zarr store on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from mote.cache_schema.store_errors import StoreMismatch
from mote.stages import extract


@pytest.fixture
def tiny_config(tiny_extract):
    """mote-tiny extraction with 2 decode workers, chunks of 4 videos, CLIP batches of 16."""

    def build(data, out: Path, **overrides) -> extract.ExtractConfig:
        return tiny_extract(
            data, out, **{"decode_workers": 2, "chunk_videos": 4, "batch_size": 16, **overrides}
        )

    return build


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mote.stages.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def test_broken_videos_are_recorded_and_good_ones_stored(mixed_folder, tmp_path, tiny_config):
    out = tmp_path / "mixed.zarr"
    summary = extract.run(tiny_config(mixed_folder, out))

    failed = {item["video"]: item["reason"] for item in summary["failures"]}
    assert set(failed) == set(mixed_folder.broken)
    assert all(reason.strip() for reason in failed.values())
    assert "not found" in failed["broken/missing.mp4"]
    assert summary["n_done"] == len(mixed_folder.good)
    assert summary["n_pending"] == 0

    group = zarr.open_group(out, mode="r")
    ids = list(group["video_ids"][:])
    status = group["status"][:]
    embeddings = group["embeddings"][:]
    for row, video in enumerate(ids):
        if video in failed:
            assert status[row] == 2
        else:
            assert status[row] == 1
            assert np.isfinite(embeddings[row]).all()
            assert np.abs(embeddings[row]).sum(axis=-1).min() > 0  # every frame encoded


def test_info_json_lists_the_failures(mixed_folder, tmp_path, tiny_config):
    out = tmp_path / "info.zarr"
    extract.run(tiny_config(mixed_folder, out, decode_workers=0))
    result = cli("info", str(out), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    for key in (
        "schema_version",
        "model",
        "pretrained",
        "dim",
        "frames",
        "views",
        "n_videos",
        "n_done",
        "n_failed",
        "n_pending",
        "classes",
        "failures",
    ):
        assert key in info
    assert info["n_failed"] == len(mixed_folder.broken)
    assert {f["video"] for f in info["failures"]} == set(mixed_folder.broken)
    assert info["model"] == "mote-tiny" and info["frames"] == 8 and info["views"] == "1x1"


def test_rerun_skips_done_videos_and_retry_failed_retries(mixed_folder, tmp_path, tiny_config):
    out = tmp_path / "resume.zarr"
    first = extract.run(tiny_config(mixed_folder, out))
    again = extract.run(tiny_config(mixed_folder, out))
    assert again["attempted"] == 0
    retried = extract.run(tiny_config(mixed_folder, out, retry_failed=True))
    assert retried["attempted"] == len(mixed_folder.broken)
    assert retried["n_done"] == first["n_done"]


def test_multi_view_store_shapes_and_indices(motion_data, tmp_path, tiny_config):
    out = tmp_path / "views.zarr"
    extract.run(tiny_config(motion_data, out, views="3x3", frames=4, limit=5))
    group = zarr.open_group(out, mode="r")
    assert group["embeddings"].shape == (5, 9, 4, 64)
    indices = group["frame_indices"][:]
    assert (indices[:, 0] == indices[:, 2]).all()  # the 3 crops of a clip share frames
    assert (indices[:, 0] != indices[:, 3]).any()  # clips differ


def test_reopening_with_other_settings_names_both_values(motion_data, tmp_path, tiny_config):
    out = tmp_path / "mismatch.zarr"
    extract.run(tiny_config(motion_data, out, limit=4))
    with pytest.raises(StoreMismatch) as error:
        extract.run(tiny_config(motion_data, out, limit=4, frames=4))
    assert "frames is 8 in the store but 4 now" in str(error.value)  # both values, named
    result = cli(
        "extract",
        "--dataset",
        "list",
        "--root",
        str(motion_data.root),
        "--list",
        str(motion_data.list_file),
        "--labels",
        str(motion_data.labels_file),
        "--out",
        str(out),
        "--model",
        "mote-tiny",
        "--pretrained",
        "none",
        "--limit",
        "4",
        "--seed",
        "3",
        "--device",
        "cpu",
    )
    assert result.returncode == 2
    assert "error" in result.stderr and "seed is 0 in the store but 3 now" in result.stderr


def test_decoded_frames_match_the_stored_indices(tmp_path):
    """The stored frame indices are the spec's evaluation indices of each video's length."""
    from mote.pipeline.data.synthetic import write_numbered_video
    from mote.pipeline.video.sampling import eval_indices

    root = tmp_path / "videos"
    lengths = [5, 30, 61]
    for n in lengths:
        write_numbered_video(root / f"v{n}.mp4", n, size=(64, 48), gop=7)
    (tmp_path / "list.txt").write_text("".join(f"v{n}.mp4 0\n" for n in lengths))
    (tmp_path / "labels.csv").write_text("id,name\n0,numbers\n")
    out = tmp_path / "numbers.zarr"
    cfg = extract.ExtractConfig(
        dataset="list",
        out=out,
        root=root,
        list_file=tmp_path / "list.txt",
        labels_file=tmp_path / "labels.csv",
        model="mote-tiny",
        pretrained="none",
        devices="cpu",
        views="4x1",
        decode_workers=1,
    )
    extract.run(cfg)
    group = zarr.open_group(out, mode="r")
    assert list(group["num_frames"][:]) == lengths
    for row, n in enumerate(lengths):
        np.testing.assert_array_equal(group["frame_indices"][row], eval_indices(n, 8, 4))


def _store_files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def _some_video_done(store: Path) -> bool:
    """Whether the status array (every chunk written at creation) marks a video done yet."""
    try:
        return bool((zarr.open_group(store, mode="r")["status"][:] == 1).any())
    except Exception:  # noqa: BLE001 - the store is still being created
        return False


@pytest.mark.slow
def test_resume_after_kill_9_is_bit_identical(motion_data, tmp_path):
    args = [
        "extract",
        "--dataset",
        "list",
        "--root",
        str(motion_data.root),
        "--list",
        str(motion_data.list_file),
        "--labels",
        str(motion_data.labels_file),
        "--model",
        "mote-tiny",
        "--pretrained",
        "none",
        "--device",
        "cpu",
        "--chunk-videos",
        "2",
        "--decode-workers",
        "1",
        "--batch-size",
        "8",
    ]
    whole = tmp_path / "whole.zarr"
    assert cli(*args, "--out", str(whole)).returncode == 0

    broken = tmp_path / "killed.zarr"
    process = subprocess.Popen(
        [sys.executable, "-m", "mote.stages.cli", *args, "--out", str(broken)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if _some_video_done(broken):
            break  # at least one chunk is done: the run is in the middle
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)  # the whole process group, like a power cut
    process.wait()
    done_before = zarr.open_group(broken, mode="r")["status"][:]
    assert 0 < (done_before == 1).sum() < len(done_before)

    resumed = cli(*args, "--out", str(broken), "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["attempted"] < len(done_before)
    assert _store_files(broken) == _store_files(whole)


def test_k400_training_split_from_the_official_csv(tmp_path):
    from mote.pipeline.data.synthetic import write_numbered_video

    root = tmp_path / "k400"
    rows = ["label,youtube_id,time_start,time_end,split"]
    for i, (label, split, present) in enumerate(
        [
            ("abseiling", "train", True),
            ("hurling (sport)", "train", True),
            ("abseiling", "train", False),
            ("zumba", "validate", True),
        ]
    ):
        youtube_id = f"vid{i:08d}"
        rows.append(f"{label},{youtube_id},{i},{i + 10},{split}")
        folder = label.replace(" ", "_").replace("(", "").replace(")", "")
        if present:
            write_numbered_video(root / folder / f"{youtube_id}_{i:06d}_{i + 10:06d}.mp4", 12)
    csv = tmp_path / "train.csv"
    csv.write_text("\n".join(rows) + "\n")
    summary = extract.run(
        extract.ExtractConfig(
            dataset="k400",
            out=tmp_path / "k400.zarr",
            root=root,
            kinetics_csv=csv,
            split="train",
            model="mote-tiny",
            pretrained="none",
            devices="cpu",
            decode_workers=0,
        )
    )
    assert summary["n_videos"] == 2 and summary["n_done"] == 2 and summary["classes"] == 400
    group = zarr.open_group(tmp_path / "k400.zarr", mode="r")
    assert list(group["video_ids"][:]) == [
        "abseiling/vid00000000_000000_000010.mp4",
        "hurling_sport/vid00000001_000001_000011.mp4",
    ]
    hurling = group.attrs["class_names"].index("hurling (sport)")
    assert list(group["labels"][:]) == [0, hurling]
