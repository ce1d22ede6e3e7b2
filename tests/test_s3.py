"""Feature stores read from object storage: a real S3 server (moto) on loopback, configured
through the AWS_* environment as a user would, and stores uploaded with s3fs.

A store read from s3:// must give what its local copy gives: the same summary, the same
training run and the same metrics. `mote extract --out s3://...` writes one (test_s3_extract.py),
`mote embed --out s3://...` an embeddings file (test_s3_embeddings.py); other files written to a
URL are refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import S3_BUCKET, comparable_weights, random_store
from safetensors.torch import load_file

from mote.pipeline.runs.run_folder import MODEL_FILE

CLASSES = ("a", "b", "c", "d")
TRAIN = ("train-temporal", "--device", "cpu", "--epochs", "2", "--batch-size", "8")
TINY = ("--warmup-epochs", "0", "--layers", "1")


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[Path, Path]:
    """A train and a val store of random features (32 and 16 videos), on local disk."""
    work = tmp_path_factory.mktemp("s3-stores")
    train = random_store(
        work / "train.zarr", [f"t{i}" for i in range(32)], [i % 4 for i in range(32)], CLASSES
    ).path
    val = random_store(
        work / "val.zarr", [f"v{i}" for i in range(16)], [i % 4 for i in range(16)], CLASSES
    ).path
    return train, val


def upload(s3, local: Path, key: str) -> str:
    """Copy a store folder to the bucket; its URL."""
    s3.put(str(local), f"{S3_BUCKET}/{key}", recursive=True)
    assert s3.isfile(f"{S3_BUCKET}/{key}/zarr.json")
    return f"s3://{S3_BUCKET}/{key}"


@pytest.fixture
def mote(mote_cli):
    """``mote(*args)``: the real `mote` entry point in this process (conftest ``mote_cli``)."""
    return mote_cli


def as_json(mote, *args: object) -> dict:
    code, out, err = mote(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_info_of_a_store_on_s3_matches_its_local_copy(s3, stores, mote):
    url = upload(s3, stores[0], "info/train.zarr")
    local, remote = as_json(mote, "info", stores[0]), as_json(mote, "info", url)
    assert remote.pop("path") == url and local.pop("path") == str(stores[0])
    assert remote == local
    verified = as_json(mote, "info", url, "--verify")["verify"]
    assert verified["problems"] == [] and verified["chunks_read"] > 0


def test_train_and_evaluate_from_s3_match_local(s3, stores, tmp_path, mote):
    train_url = upload(s3, stores[0], "run/train.zarr")
    val_url = upload(s3, stores[1], "run/val.zarr")
    runs = {}
    for name, (train, val) in {"local": stores, "s3": (train_url, val_url)}.items():
        runs[name] = tmp_path / name
        code, _, err = mote(*TRAIN, *TINY, "--train", train, "--val", val, "--out", runs[name])
        assert code == 0, err
    local = comparable_weights(load_file(runs["local"] / MODEL_FILE))
    remote = comparable_weights(load_file(runs["s3"] / MODEL_FILE))
    assert local.keys() == remote.keys()
    for key, value in local.items():
        assert (value == remote[key]).all(), key
    recorded = json.loads((runs["s3"] / "config.json").read_text())["train"]
    assert recorded["train"] == train_url and recorded["val"] == val_url
    scores = {
        where: as_json(mote, "evaluate", "--run", runs["s3"], "--store", store, "--device", "cpu")
        for where, store in {"local": stores[1], "s3": val_url}.items()
    }
    assert scores["s3"].pop("store") == val_url and scores["local"].pop("store") == str(stores[1])
    assert scores["s3"] == scores["local"]


def test_storage_options_reach_s3fs(s3, s3_server, stores, monkeypatch, mote):
    """--storage-options gives s3fs what the environment does not: here the endpoint."""
    url = upload(s3, stores[1], "options/val.zarr")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    options = json.dumps({"endpoint_url": s3_server})
    assert as_json(mote, "info", url, "--storage-options", options)["n_videos"] == 16
    code, _, err = mote("info", url, "--storage-options", "{endpoint}")
    assert code == 2 and err.startswith("error: --storage-options '{endpoint}': not JSON"), err


def test_a_missing_bucket_or_key_is_one_line_naming_the_url(s3, mote):
    for url in (f"s3://{S3_BUCKET}/no/such.zarr", "s3://no-such-bucket-mote/s.zarr"):
        code, _, err = mote("info", url)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {url}: "), err


def test_files_that_cannot_be_written_to_a_url_are_refused(s3, tmp_path, monkeypatch, mote):
    monkeypatch.chdir(tmp_path)
    code, _, err = mote("embed", "--run", "r", "--store", "s.zarr", "--out", "gs://b/e.zarr")
    assert code == 2
    assert err.startswith("error: --out gs://b/e.zarr: writing a store to gs:// is not supported")
    url = "s3://b/p.npz"
    code, _, err = mote("evaluate", "--run", "r", "--store", "s.zarr", "--save-predictions", url)
    assert code == 2
    assert err.startswith(f"error: --save-predictions {url}: takes a local path, not a URL")
    assert list(tmp_path.iterdir()) == []  # no folder named "s3:" or "gs:"
