"""A dask cluster with no shared disk extracting to S3 (a real moto server on loopback).

A scheduler and two `dask worker` processes stand in for three machines: each worker runs in a
folder of its own (its working directory, temp folder and dask scratch space), and the videos
and the store are on S3, so nothing reaches a worker through the driver's disk. The store they
write must be the one a local run writes, object for object and byte for byte; kill -9 of the
driver or of a worker in the middle, then the same command, must end there too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zarr
from helpers import S3_BUCKET, S3_ENV
from test_s3_extract import objects
from test_s3_videos import upload_videos

from mote.pipeline.errors import ConfigError
from mote.pipeline.extraction.dask_extraction import StoreTarget
from mote.pipeline.video.remote_videos import SPILL_PREFIX


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_workers(address: str, count: int, timeout: float = 90) -> None:
    from dask.distributed import Client

    with Client(address, timeout="30s") as client:
        client.wait_for_workers(count, timeout=timeout)


class Cluster:
    """`dask scheduler` and `dask worker` processes on 127.0.0.1, each worker in its own folder
    with the loopback S3's credentials in its environment, as a user would start them."""

    def __init__(self, home: Path, endpoint: str) -> None:
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        self.home, self.processes = home, []
        self.env = {
            **os.environ,
            **S3_ENV,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_CONFIG_FILE": str(home / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
            "HF_HUB_OFFLINE": "1",
        }
        port = self.address.rsplit(":", 1)[1]
        self.scheduler = self._start(
            "scheduler", ["scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"]
        )
        self.workers = [self.add_worker(f"worker{i}") for i in range(2)]
        _wait_for_workers(self.address, 2)

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        folder = self.home / name
        (folder / "tmp").mkdir(parents=True)
        env = {**self.env, "TMPDIR": str(folder / "tmp"), "HOME": str(folder)}
        process = subprocess.Popen(
            [sys.executable, "-m", "dask", *args],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(folder / "log.txt").open("w"),
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def add_worker(self, name: str) -> subprocess.Popen:
        """A worker without a nanny, so kill -9 of its pid kills the worker itself."""
        scratch = str(self.home / name / "dask")
        args = ["worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard"]
        return self._start(name, [*args, "--host", "127.0.0.1", "--local-directory", scratch])

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("no-shared-disk"), s3_server)
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def videos(s3_server, motion_data) -> str:
    """The motion videos uploaded to S3: the workers' only copy."""
    import s3fs

    s3 = s3fs.S3FileSystem(
        key=S3_ENV["AWS_ACCESS_KEY_ID"],
        secret=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=s3_server,
        skip_instance_cache=True,
    )
    names = [line.split()[0] for line in motion_data.list_file.read_text().splitlines()]
    return upload_videos(s3, motion_data.root, names, "dask/videos")


def args(data, videos: str, out: str, address: str) -> list[str]:
    return [
        "extract", "--dataset", "list", "--root", videos, "--list", str(data.list_file),
        "--labels", str(data.labels_file), "--model", "mote-tiny", "--pretrained", "none",
        "--device", "cpu", "--chunk-videos", "2", "--batch-size", "8", "--out", out,
        "--dask", address,
    ]  # fmt: skip


def _driver(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mote.stages.cli", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _wait_for_done_videos(url: str, process: subprocess.Popen, more_than: int) -> None:
    """Return once more than ``more_than`` videos are done, with ``process`` still running."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if int((_status(url) == 1).sum()) > more_than:
                return
        except Exception:  # noqa: BLE001 - the store is still being created
            pass
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed"


def _status(url: str):
    return zarr.open_group(url, mode="r")["status"][:]


def test_two_workers_with_no_shared_disk_write_the_local_store_to_s3(
    s3, cluster, videos, motion_data, reference, mote_cli
):
    key = f"{S3_BUCKET}/dask/whole.zarr"
    code, out, err = mote_cli(*args(motion_data, videos, f"s3://{key}", cluster.address), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["n_done"] == summary["n_videos"] == len(_status(f"s3://{key}"))
    assert len({row["worker"] for row in summary["devices"]}) == 2  # both "machines" wrote
    assert objects(s3, key) == reference  # no claim object left behind
    for name in ("worker0", "worker1"):  # the spills were removed, and no store went to disk
        left = [p.name for p in (cluster.home / name).rglob("*") if p.is_file()]
        assert not [n for n in left if n.startswith(SPILL_PREFIX) or n == "zarr.json"], left


def test_kill_9_of_the_driver_then_of_a_worker_ends_byte_identical(
    s3, cluster, videos, motion_data, reference
):
    """The driver is killed mid-run; its rerun takes the claim over, loses a worker mid-run
    to kill -9 and finishes on the other (the scheduler moves its chunks): the store is the
    uninterrupted local one."""
    key = f"{S3_BUCKET}/dask/killed.zarr"
    command = args(motion_data, videos, f"s3://{key}", cluster.address)
    first = _driver(command)
    _wait_for_done_videos(f"s3://{key}", first, more_than=0)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    status = _status(f"s3://{key}")
    done = int((status == 1).sum())
    assert 0 < done < len(status)

    rerun = _driver(command)
    _wait_for_done_videos(f"s3://{key}", rerun, more_than=done)
    victim = cluster.workers[0]
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    _, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, err.decode()
    assert f"taking over the claim of a run that is gone (pid {first.pid} " in err.decode()
    time.sleep(1)  # a chunk the dead driver's workers were still on may land (its bytes agree)
    assert objects(s3, key) == reference


def test_a_worker_without_the_local_store_says_to_write_to_s3(tmp_path):
    target = StoreTarget(str(tmp_path / "elsewhere.zarr"), None, None, run="r")
    with pytest.raises(ConfigError) as refused:
        target.open("tcp://10.0.0.7:4000")
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'elsewhere.zarr'}: not on dask worker tcp://10.0.0.7:")
    assert "--out s3://" in message
