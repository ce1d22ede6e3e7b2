"""The remaining store options read s3:// (zeroshot, fewshot, embed, search, finetune-e2e
--text-from), and `mote embed --out s3://...` writes an embeddings file there under the store's
claim: a real S3 server (moto) on loopback, configured through the AWS_* environment.

Whatever is read from S3 must give what its local copy gives: the same zero-shot numbers, the
same vectors, the same hits.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import S3_BUCKET, random_store
from test_claim_anywhere import Holder

from mote.cache_schema.claim import CLAIM_FILE
from mote.cache_schema.embeddings import TABLE_FILE, EmbeddingsFile
from mote.pipeline.runs.files import write_json
from mote.pipeline.runs.run_folder import save_model
from mote.pipeline.temporal.config import default_config
from mote.pipeline.temporal.e2e import ClipFacts, text_from_store
from mote.pipeline.temporal.mote_model import MoTE

D = 64
CLASSES = ("circle left", "circle right", "square up", "square down")
IDS = [f"c{i % 4}/v{i:02d}.mp4" for i in range(24)]
QUERY = ("--like", IDS[3], "-k", "5")  # a query that needs no CLIP text tower


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> dict[str, Path]:
    """A run folder (random MoTE, TFM bank), a store of 24 videos (3x1 views, 8 frames), and
    the `list` files naming them."""
    work = tmp_path_factory.mktemp("s3-embeddings")
    run = work / "run"
    run.mkdir()
    torch.manual_seed(0)
    model = MoTE(default_config(D, layers=1))
    model.set_finetune_text(torch.randn(40, D))
    save_model(run / "model.safetensors", model)
    clip = {"model": "mote-tiny", "weights_id": "random:seed=0", "dim": D}
    write_json(run / "config.json", {"arch": "mote", "clip": clip})
    store = work / "s.zarr"
    random_store(store, IDS, [i % 4 for i in range(24)], CLASSES, dim=D, views=(3, 1))
    (work / "list.txt").write_text("".join(f"{v} {i % 4}\n" for i, v in enumerate(IDS)))
    (work / "labels.csv").write_text(
        "id,name\n" + "".join(f"{i},{c}\n" for i, c in enumerate(CLASSES))
    )
    return {"run": run, "store": store, "list": work / "list.txt", "labels": work / "labels.csv"}


@pytest.fixture
def remote(s3, local) -> str:
    """The store uploaded to the bucket (once per test: each test gets a fresh environment)."""
    key = f"{S3_BUCKET}/urls/s.zarr"
    if not s3.isfile(f"{key}/zarr.json"):
        s3.put(str(local["store"]), key, recursive=True)
    return f"s3://{key}"


def as_json(mote_cli, *args: object) -> dict:
    code, out, err = mote_cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def hit_lines(mote_cli, *args: object) -> list[dict]:
    """`mote search --json`: one hit per line."""
    code, out, err = mote_cli("search", *args, "--json")
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_zeroshot_and_embed_read_from_s3_give_the_local_numbers(local, remote, tmp_path, mote_cli):
    split = f"{local['list']}:{local['labels']}"
    scores = {
        where: as_json(
            mote_cli,
            "zeroshot",
            "--run",
            local["run"],
            "--dataset",
            "list",
            "--split",
            split,
            "--store",
            store,
            "--device",
            "cpu",
        )  # fmt: skip
        for where, store in {"local": local["store"], "s3": remote}.items()
    }
    assert scores["s3"].pop("stores") == [remote]
    assert scores["local"].pop("stores") == [str(local["store"])]
    assert scores["s3"] == scores["local"] and scores["s3"]["splits"][0]["n_missing"] == 0
    vectors = {}
    for where, store in {"local": local["store"], "s3": remote}.items():
        out = tmp_path / f"{where}.zarr"
        made = as_json(
            mote_cli, "embed", "--run", local["run"], "--store", store, "--out", out,
            "--device", "cpu",
        )  # fmt: skip
        assert made["n_embedded"] == len(IDS)
        file = EmbeddingsFile.open(out)
        assert file.attrs["store"]["path"] == (remote if where == "s3" else str(local["store"]))
        vectors[where] = file.read_vectors()
    assert np.array_equal(vectors["s3"], vectors["local"])


def test_embed_out_to_s3_then_search_it_gives_the_local_hits(s3, local, remote, tmp_path, mote_cli):
    url = f"s3://{S3_BUCKET}/urls/e.zarr"
    embed = ("embed", "--run", local["run"], "--store", remote, "--device", "cpu", "--out")
    written = as_json(mote_cli, *embed, url)
    assert written["out"] == url and written["n_embedded"] == len(IDS)
    assert written["table"] == f"{url}/{TABLE_FILE}" and written["bytes_on_disk"] > 0
    assert s3.isfile(f"{S3_BUCKET}/urls/e.zarr/{TABLE_FILE}")
    assert not s3.exists(f"{S3_BUCKET}/urls/e.zarr/{CLAIM_FILE}")  # released
    again = as_json(mote_cli, *embed, url)  # a rerun finds every row done
    assert again["n_embedded"] == 0 and again["resumed"]
    as_json(mote_cli, *embed, tmp_path / "e.zarr")
    hits = {
        where: hit_lines(mote_cli, *QUERY, "--run", local["run"], "--embeddings", e)
        for where, e in {"local": tmp_path / "e.zarr", "s3": url}.items()
    }
    assert hits["s3"] == hits["local"] and len(hits["s3"]) == 5
    assert IDS[3] not in [hit["video_id"] for hit in hits["s3"]]
    code, _, err = mote_cli(
        "search", *QUERY, "--run", local["run"], "--embeddings", url, "--index", "hnsw"
    )
    assert code == 2 and err.startswith(f"error: --index with --embeddings {url}: "), err


def test_a_second_embed_writer_on_the_same_url_is_refused_naming_the_owner(
    s3, local, remote, mote_cli
):
    url = f"s3://{S3_BUCKET}/urls/held.zarr"
    holder = Holder(url)
    try:
        code, _, err = mote_cli(
            "embed", "--run", local["run"], "--store", remote, "--out", url, "--device", "cpu"
        )
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"error: {url}: another run (pid {holder.process.pid} on host")
        assert "is writing this embeddings file" in lines[0]
        assert not s3.exists(f"{S3_BUCKET}/urls/held.zarr/zarr.json")  # nothing was written
    finally:
        holder.let_go()


def test_text_from_a_store_on_s3_is_the_local_bank(local, remote):
    facts = ClipFacts("mote-tiny", "none", "random:seed=0", D)
    here = text_from_store(local["store"], facts, CLASSES)
    there = text_from_store(remote, facts, CLASSES)
    assert torch.equal(here, there) and here.shape == (len(CLASSES), D)
