"""An object store that stops answering is a system fault (exit 4) naming its endpoint, never
damage: the store is untouched and the same command continues it (issue 26). The server is a
real moto process on loopback, killed mid-run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from helpers import S3_ENV
from test_faults_exit_codes import SYSTEM, one_line

BUCKET = "mote-outage"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """A moto S3 server in a process of its own, with a bucket: (endpoint, its process)."""
    import boto3

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="t", aws_secret_access_key="t")  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            client.create_bucket(Bucket=BUCKET)
            break
        except Exception:  # noqa: BLE001 - not listening yet
            assert time.monotonic() < deadline and process.poll() is None, "moto did not start"
            time.sleep(0.2)
    yield endpoint, process
    process.kill()
    process.wait()


def environment(endpoint: str, tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_SESSION_TOKEN")}
    return {
        **env, **S3_ENV, "AWS_ENDPOINT_URL": endpoint, "HF_HUB_OFFLINE": "1",
        # botocore's own retries (5 attempts with backoff) cost ~7 s per refused call; the
        # outage reads the same after one attempt
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }  # fmt: skip


def mote(env: dict, *args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mote.stages", *map(str, args)], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def finished(process: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def kill_once(moto: subprocess.Popen, run: subprocess.Popen, written) -> None:
    """Kill the server (SIGKILL) once ``written()`` says the run has written a chunk."""
    deadline = time.monotonic() + 120
    while run.poll() is None and time.monotonic() < deadline and not written():
        time.sleep(0.05)
    assert run.poll() is None, "the run finished before the server could be stopped"
    moto.send_signal(signal.SIGKILL)
    moto.wait()


def check_outage_line(result: subprocess.CompletedProcess, endpoint: str) -> None:
    line = one_line(result)
    assert result.returncode == SYSTEM, result.stderr
    assert line.startswith(f"error: {endpoint}: cannot reach the server"), line
    assert "untouched" in line and "rerun the same command" in line
    assert "--repair" not in result.stderr and "damage" not in result.stderr


def test_a_server_killed_mid_extraction_is_exit_4_naming_it(server, motion_data, tmp_path):
    endpoint, moto = server
    env = environment(endpoint, tmp_path)
    url = f"s3://{BUCKET}/s.zarr"
    run = mote(
        env, "extract", "--dataset", "list", "--root", motion_data.root, "--list",
        motion_data.list_file, "--labels", motion_data.labels_file, "--model", "mote-tiny",
        "--pretrained", "none", "--devices", "cpu", "--chunk-videos", 2, "--decode-workers", 1,
        "--batch-size", 2, "--out", url,
    )  # fmt: skip
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="t", aws_secret_access_key="t")  # fmt: skip

    def written() -> bool:
        return client.list_objects_v2(Bucket=BUCKET, Prefix="s.zarr/status/c/")["KeyCount"] > 0

    kill_once(moto, run, written)
    check_outage_line(finished(run), endpoint)
    # a reader of the same store, the server still down
    check_outage_line(finished(mote(env, "info", url)),
                      endpoint)  # fmt: skip


def test_a_video_server_killed_mid_extraction_is_exit_4_not_failed_videos(
    server, motion_data, tmp_path
):
    import boto3

    endpoint, moto = server
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="t", aws_secret_access_key="t")  # fmt: skip
    for line in motion_data.list_file.read_text().splitlines():
        video = line.rsplit(" ", 1)[0]
        client.upload_file(str(motion_data.root / video), BUCKET, f"videos/{video}")
    out = tmp_path / "s.zarr"
    run = mote(
        environment(endpoint, tmp_path), "extract", "--dataset", "list", "--root",
        f"s3://{BUCKET}/videos", "--list", motion_data.list_file, "--labels",
        motion_data.labels_file, "--model", "mote-tiny", "--pretrained", "none", "--devices",
        "cpu", "--chunk-videos", 2, "--decode-workers", 1, "--batch-size", 2, "--out", out,
    )  # fmt: skip
    kill_once(moto, run, lambda: any((out / "status" / "c").glob("*")))
    check_outage_line(finished(run), endpoint)
    shown = subprocess.run(
        [sys.executable, "-m", "mote.stages", "info", out, "--json"], capture_output=True,
        text=True, env=environment(endpoint, tmp_path),
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert '"n_failed": 0' in shown.stdout  # no video was recorded failed for the outage


def test_a_video_root_that_cannot_be_reached_is_exit_4(server, motion_data, tmp_path):
    endpoint, moto = server
    moto.kill()
    moto.wait()
    env = environment(endpoint, tmp_path)
    result = finished(mote(
        env, "extract", "--dataset", "list", "--root", f"s3://{BUCKET}/videos", "--list",
        motion_data.list_file, "--labels", motion_data.labels_file, "--model", "mote-tiny",
        "--pretrained", "none", "--devices", "cpu", "--out", tmp_path / "s.zarr",
    ))  # fmt: skip
    check_outage_line(result, endpoint)
    assert not (tmp_path / "s.zarr").exists()
