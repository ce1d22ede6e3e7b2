"""Shared fixtures: real video files written with PyAV, and the environment every test needs.

Helpers that are not fixtures live in helpers.py (``from helpers import random_store``)."""

from __future__ import annotations

import os
import sys

import pytest
from helpers import (
    S3_BUCKET,
    S3_ENV,
    MixedFolder,
    tiny_extract_config,
    write_broken_videos,
    write_reference_checkpoint,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub lookup without network costs ~47 s


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread: the tests' models are tiny, and intra-op threads on 2 shared cores
    make them several times slower."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_extract():
    """``tiny_extract(data, out, **overrides)``: see ``tiny_extract_config``."""
    return tiny_extract_config


@pytest.fixture(scope="session")
def motion_data(tmp_path_factory: pytest.TempPathFactory):
    """A small generated motion dataset (real MP4 files), shared by the tests of a session."""
    from mote.pipeline.data.synthetic import write_motion_dataset

    return write_motion_dataset(tmp_path_factory.mktemp("motion"), videos_per_class=3, seed=1)


@pytest.fixture(scope="session")
def mixed_folder(tmp_path_factory: pytest.TempPathFactory, motion_data) -> MixedFolder:
    """The motion videos plus broken files, listed together in one video list."""
    root = motion_data.root
    broken = write_broken_videos(root)
    lines = motion_data.list_file.read_text().splitlines()
    good = tuple(line.rsplit(" ", 1)[0] for line in lines)
    list_file = tmp_path_factory.mktemp("lists") / "mixed.txt"
    mixed = lines[:5] + [f"{path} 0" for path in broken] + lines[5:]
    list_file.write_text("\n".join(mixed) + "\n")
    return MixedFolder(root, list_file, motion_data.labels_file, good, tuple(broken))


@pytest.fixture(scope="session")
def imported_run(tmp_path_factory: pytest.TempPathFactory):
    """A reference-layout checkpoint of mote-tiny whose visual tower was 'fine-tuned',
    imported: (run folder, the tuned visual weights, the untuned CLIP)."""
    from mote.stages import import_reference

    work = tmp_path_factory.mktemp("imported")
    ckpt = work / "MoTE_tiny.pt"
    tuned, original = write_reference_checkpoint(ckpt)
    run = work / "run"
    import_reference.run(
        import_reference.ImportReferenceConfig(ckpt, run, model="mote-tiny", pretrained="none")
    )
    return run, tuned, original


@pytest.fixture
def mote_cli(monkeypatch, capsys):
    """``mote_cli(*args)``: the real `mote` entry point in this process: (exit code, stdout,
    stderr)."""
    from mote.stages import cli

    def run(*args: object) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["mote", *map(str, args)])
        with pytest.raises(SystemExit) as exited:
            cli.main()
        out = capsys.readouterr()
        return int(exited.value.code or 0), out.out, out.err

    return run


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server (moto) on 127.0.0.1 for the session, with bucket ``S3_BUCKET``:
    its endpoint URL. Stopped at the end."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    # werkzeug logs every request at INFO, which pytest's log capture formats and keeps
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys)
    client.create_bucket(Bucket=S3_BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """The loopback S3 server configured as a user would: the AWS_* environment (fake
    credentials, ``AWS_ENDPOINT_URL``), no profile or config file of this machine's. Returns
    an s3fs file system on it, for tests to upload stores with."""
    import s3fs

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name, value in {**S3_ENV, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(name, value)
    return s3fs.S3FileSystem(skip_instance_cache=True)


@pytest.fixture(scope="session")
def reference(motion_data, tmp_path_factory, tiny_extract) -> dict[str, bytes]:
    """Every file of an uninterrupted local store of these settings, by relative path."""
    out = tmp_path_factory.mktemp("s3-reference") / "whole.zarr"
    from mote.stages import extract

    extract.run(tiny_extract(motion_data, out, chunk_videos=2, decode_workers=1, batch_size=8))
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}


# `mote serve` over one collection, shared by tests/test_serve.py and tests/test_serve_page.py.
from serving import served, served_collection  # noqa: E402, F401
