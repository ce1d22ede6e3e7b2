"""`mote extract --devices`: one encoder process per device, real processes, real stores.

Two CPU encoder processes (``--devices cpu,cpu``) stand in for two GPUs: the same spawn, shared
batch buffers and out-of-order results. Each process starts torch and open_clip (~5 s here), so
the stores of both layouts are written once per module and checked by several tests.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import psutil
import pytest
import zarr

from mote.pipeline.config import build_config
from mote.pipeline.extraction.cluster import gpu_pins, local_cluster
from mote.stages import extract

SETTINGS = dict(decode_workers=2, chunk_videos=4, batch_size=16)
ARRAYS = (
    "embeddings",
    "status",
    "frame_indices",
    "num_frames",
    "labels",
    "video_ids",
    "failure_reason",
    "text_embeddings",
)


def _arrays(store: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(store, mode="r")
    assert set(ARRAYS) <= set(group.array_keys())  # a renamed array must not skip the check
    return {name: group[name][:] for name in group.array_keys()}


def _assert_same_store(a: Path, b: Path) -> None:
    """Every array equal byte for byte (float16 and float32 compared as raw bits)."""
    one, two = _arrays(a), _arrays(b)
    assert one.keys() == two.keys()
    for name in one:
        x, y = one[name], two[name]
        assert x.dtype == y.dtype and x.shape == y.shape, name
        if x.dtype.kind in "fiu":
            assert x.tobytes() == y.tobytes(), name
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.fixture(scope="module")
def stores(mixed_folder, tmp_path_factory, tiny_extract):
    """The mixed folder (good and broken videos) written on one device and on two encoder
    processes, with the two runs' summaries."""
    work = tmp_path_factory.mktemp("devices")
    one = extract.run(tiny_extract(mixed_folder, work / "one.zarr", **SETTINGS))
    two = extract.run(tiny_extract(mixed_folder, work / "two.zarr", devices="cpu,cpu", **SETTINGS))
    return {"one": (work / "one.zarr", one), "two": (work / "two.zarr", two)}


def test_two_encoder_processes_write_the_one_device_store(stores):
    _assert_same_store(stores["one"][0], stores["two"][0])


def test_each_device_reports_its_share(stores, mixed_folder):
    one, two = stores["one"][1], stores["two"][1]
    assert one["device"] == "cpu" and len(one["devices"]) == 1
    assert one["devices"][0]["videos"] == one["newly_done"]
    assert two["device"] == "cpu,cpu"
    rows = two["devices"]
    assert [row["device"] for row in rows] == ["cpu", "cpu"]
    assert all(row["videos"] > 0 and row["images"] > 0 for row in rows)  # both got work
    assert sum(row["videos"] for row in rows) == two["newly_done"] == len(mixed_folder.good)
    assert sum(row["images"] for row in rows) == 8 * len(mixed_folder.good)
    assert sum(row["videos_per_s"] for row in rows) == pytest.approx(
        two["newly_done"] / two["seconds"], abs=0.01
    )


def test_broken_videos_fail_and_the_multi_device_run_goes_on(stores, mixed_folder):
    summary = stores["two"][1]
    failed = {item["video"]: item["reason"] for item in summary["failures"]}
    assert set(failed) == set(mixed_folder.broken)
    assert all(reason.strip() for reason in failed.values())
    assert summary["n_done"] == len(mixed_folder.good) and summary["n_pending"] == 0


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mote.stages.cli", *args]


def _extract_args(data, out: Path) -> list[str]:
    """``SETTINGS`` on two CPU encoder processes, as command-line flags."""
    options = {
        "dataset": "list",
        "root": data.root,
        "list": data.list_file,
        "labels": data.labels_file,
        "model": "mote-tiny",
        "pretrained": "none",
        "devices": "cpu,cpu",
        **{key.replace("_", "-"): value for key, value in SETTINGS.items()},
        "out": out,
    }
    return [
        "extract",
        *(part for key, value in options.items() for part in (f"--{key}", str(value))),
    ]


def _encoder_processes(parent: psutil.Process) -> list[psutil.Process]:
    """The parent's spawned children that are encoders (not the resource tracker or the decode
    pool's fork server)."""
    found = []
    for child in parent.children():
        try:
            command = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in command:
            found.append(child)
    return found


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _some_video_resolved(store: Path) -> bool:
    """Whether the status array (every chunk written at creation) marks a video done or
    failed yet."""
    try:
        return bool((zarr.open_group(store, mode="r")["status"][:] != 0).any())
    except Exception:  # noqa: BLE001 - the store is still being created
        return False


def test_a_killed_encoder_is_one_error_naming_its_device_and_a_rerun_resumes(
    mixed_folder, stores, tmp_path, tiny_extract
):
    out = tmp_path / "killed.zarr"
    process = subprocess.Popen(
        _cli(*_extract_args(mixed_folder, out)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        parent = psutil.Process(process.pid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if _some_video_resolved(out):
                break  # a chunk is written: the run is in the middle
            time.sleep(0.02)
        encoders = _encoder_processes(parent)
        assert process.poll() is None and len(encoders) == 2, "the run ended before the kill"
        encoders[1].send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)  # an error, not a hang
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 4, stderr  # a system fault (faults.EXIT_CODES)
    assert "encoder process on cpu" in stderr and "SIGKILL" in stderr, stderr
    assert "rerun the same command" in stderr and "Traceback" not in stderr, stderr
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in encoders) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in encoders), "an encoder process outlived its run"
    left = zarr.open_group(out, mode="r")["status"][:]
    assert (left == 0).any()  # videos were still to do

    rerun = extract.run(tiny_extract(mixed_folder, out, devices="cpu,cpu", **SETTINGS))
    assert 0 < rerun["attempted"] < len(left)
    _assert_same_store(out, stores["one"][0])


def test_device_is_an_alias_of_devices(tmp_path):
    assert extract.ExtractConfig(dataset="list", out=tmp_path, device="cpu").devices == "cpu"
    file = tmp_path / "extract.yaml"
    file.write_text("dataset: list\nout: s.zarr\ndevice: cpu,cpu\n")
    assert build_config(extract.ExtractConfig, file).devices == "cpu,cpu"
    assert build_config(extract.ExtractConfig, file, devices="cpu").devices == "cpu"


def test_local_cluster_pins_each_worker_to_a_gpu():
    from dask.distributed import Client

    with local_cluster(2, gpus=[0, 1]) as cluster, Client(cluster) as client:
        workers = sorted(client.scheduler_info()["workers"])
        assert all(address.startswith("tcp://127.0.0.1:") for address in workers)
        visible = functools.partial(os.getenv, "CUDA_VISIBLE_DEVICES")  # read in the worker
        seen = [
            client.submit(visible, workers=[address], pure=False).result(timeout=60)
            for address in workers
        ]
    assert sorted(seen) == ["0", "1"]


def test_gpu_pins_follow_this_process_visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_pins(3, []) == [None, None, None]
    assert gpu_pins(5, [0, 1]) == ["0", "1", "0", "1", "0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6,7")
    assert gpu_pins(3, [1, 2]) == ["6", "7", "6"]


# A script read from stdin, without a __main__ guard: spawned children that re-imported the
# caller's __main__ would look for a file named "<stdin>" and die.
FROM_STDIN = """
import json, sys
import mote
common = json.loads(sys.argv[1])
for out, how in json.loads(sys.argv[2]).items():
    summary = mote.extract(out=out, **common, **how)
    print(json.dumps({"out": out, "done": summary["n_done"], "devices": summary["devices"]}))
"""


def test_encoder_processes_and_a_local_dask_cluster_start_from_python_stdin(
    motion_data, tmp_path, tiny_extract
):
    """``python - <<EOF`` calling ``mote.extract`` on two encoder processes, then on a local
    dask cluster: both stores equal the one-process store (4 videos: each run starts Python
    and torch in every child)."""
    videos = tmp_path / "four.txt"
    videos.write_text("\n".join(motion_data.list_file.read_text().splitlines()[:4]) + "\n")
    data = types.SimpleNamespace(
        root=motion_data.root, list_file=videos, labels_file=motion_data.labels_file
    )
    settings = dict(decode_workers=0, chunk_videos=2, batch_size=16)
    extract.run(tiny_extract(data, tmp_path / "one.zarr", **settings))
    common = {
        "dataset": "list", "root": str(data.root), "list_file": str(videos),
        "labels_file": str(data.labels_file), "model": "mote-tiny", "pretrained": "none",
        **settings,
    }  # fmt: skip
    runs = {
        str(tmp_path / "two.zarr"): {"devices": "cpu,cpu"},
        str(tmp_path / "dask.zarr"): {"devices": "cpu", "dask": "local:2"},
    }
    result = subprocess.run(
        [sys.executable, "-", json.dumps(common), json.dumps(runs)],
        input=FROM_STDIN, capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    printed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [(p["out"], p["done"]) for p in printed] == [(out, 4) for out in runs]
    assert [row["device"] for row in printed[0]["devices"]] == ["cpu", "cpu"]
    assert all(row["worker"].startswith("tcp://") for row in printed[1]["devices"])
    assert sum(row["videos"] for row in printed[1]["devices"]) == 4
    for out in runs:
        _assert_same_store(tmp_path / "one.zarr", Path(out))
