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
from helpers import S3_BUCKET, random_store
from test_claim_anywhere import Holder

import mote
from mote.cache_schema.claim import CLAIM_FILE
from mote.cache_schema.embeddings import TABLE_FILE, EmbeddingsFile
from mote.pipeline.progress import NullProgress
from mote.pipeline.runs.run_files import write_json
from mote.pipeline.runs.run_folder import save_model
from mote.pipeline.temporal.e2e import ClipFacts, text_from_store
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.temporal.temporal_config import default_config
from mote.stages import embed

D = 64
CLASSES = ("circle left", "circle right", "square up", "square down")
IDS = [f"c{i % 4}/v{i:02d}.mp4" for i in range(24)]
QUERY = ("--like", IDS[3], "-k", "5")  # a query that needs no CLIP text tower
CHUNK_ROWS = 8  # every embeddings file here: 3 chunks, batched alike, so vectors compare exactly


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> dict[str, Path]:
    """A run folder (random MoTE, TFM bank), a store of 24 videos (3x1 views, 8 frames), the
    `list` files naming them, and the store's embeddings: what every S3 copy must equal."""
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
    classes = "".join(f"{i},{c}\n" for i, c in enumerate(CLASSES))
    (work / "labels.csv").write_text(f"id,name\n{classes}")
    embeddings = work / "e.zarr"
    made = dict(run=run, store=store, out=embeddings, chunk_rows=CHUNK_ROWS, device="cpu")
    embed.run(embed.EmbedConfig(**made))
    return {
        "run": run, "store": store, "list": work / "list.txt", "labels": work / "labels.csv",
        "embeddings": embeddings,
    }  # fmt: skip


@pytest.fixture
def remote(s3, local) -> str:
    """The store uploaded to the bucket (once: the bucket lives for the session)."""
    key = f"{S3_BUCKET}/urls/s.zarr"
    if not s3.isfile(f"{key}/zarr.json"):
        s3.put(str(local["store"]), key, recursive=True)
    return f"s3://{key}"


def as_json(mote_cli, *args: object) -> dict:
    code, out, err = mote_cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def embed_args(local: dict, store: object) -> tuple:
    """`mote embed` of ``store`` with the run and chunking every file here has (add --out)."""
    return (
        "embed", "--run", local["run"], "--store", store, "--chunk-rows", CHUNK_ROWS,
        "--device", "cpu",
    )  # fmt: skip


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
    made = as_json(mote_cli, *embed_args(local, remote), "--out", tmp_path / "e.zarr")
    assert made["n_embedded"] == len(IDS)
    there, here = EmbeddingsFile.open(tmp_path / "e.zarr"), EmbeddingsFile.open(local["embeddings"])
    assert there.attrs["store"]["path"] == remote
    assert here.attrs["store"]["path"] == str(local["store"])
    assert np.array_equal(there.read_vectors(), here.read_vectors())


def test_embed_out_to_s3_then_search_it_gives_the_local_hits(s3, local, remote, mote_cli):
    url = f"s3://{S3_BUCKET}/urls/e.zarr"
    written = as_json(mote_cli, *embed_args(local, remote), "--out", url)
    assert written["out"] == url and written["n_embedded"] == len(IDS)
    assert written["table"] == f"{url}/{TABLE_FILE}" and written["bytes_on_disk"] > 0
    assert s3.isfile(f"{S3_BUCKET}/urls/e.zarr/{TABLE_FILE}")
    assert not s3.exists(f"{S3_BUCKET}/urls/e.zarr/{CLAIM_FILE}")  # released
    again = as_json(mote_cli, *embed_args(local, remote), "--out", url)  # every row is done
    assert again["n_embedded"] == 0 and again["resumed"]
    opened = mote.open_embeddings(url)
    assert opened.path == url and opened.video_ids == IDS
    assert np.array_equal(opened.vectors, mote.open_embeddings(local["embeddings"]).vectors)
    hits = {
        where: hit_lines(mote_cli, *QUERY, "--run", local["run"], "--embeddings", e)
        for where, e in {"local": local["embeddings"], "s3": url}.items()
    }
    assert hits["s3"] == hits["local"] and len(hits["s3"]) == 5
    assert IDS[3] not in [hit["video_id"] for hit in hits["s3"]]
    code, _, err = mote_cli(
        "search", *QUERY, "--run", local["run"], "--embeddings", url, "--index", "hnsw"
    )
    assert code == 2 and err.startswith(f"error: --index with --embeddings {url}: "), err


class StopInSecondChunk(NullProgress):
    """Progress that stops the run once its first chunk is written."""

    def __init__(self) -> None:
        self.done = 0

    def update(self, *, done: int = 0, failed: int = 0, frames: int = 0) -> None:
        self.done += done
        if self.done > CHUNK_ROWS:
            raise KeyboardInterrupt


def test_an_interrupted_embed_to_s3_resumes_to_the_local_vectors(local, remote, mote_cli):
    url = f"s3://{S3_BUCKET}/urls/resumed.zarr"
    made = dict(run=local["run"], store=remote, out=url, chunk_rows=CHUNK_ROWS, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        embed.run(embed.EmbedConfig(**made), StopInSecondChunk())
    assert EmbeddingsFile.open(url).done_mask().sum() == CHUNK_ROWS  # one chunk, no table yet
    finished = as_json(mote_cli, *embed_args(local, remote), "--out", url)
    assert finished["resumed"] and finished["n_embedded"] == len(IDS) - CHUNK_ROWS
    here, there = EmbeddingsFile.open(local["embeddings"]), EmbeddingsFile.open(url)
    assert np.array_equal(there.read_vectors(), here.read_vectors())
    assert there.read_table().equals(here.read_table())


def test_a_second_embed_writer_on_the_same_url_is_refused_naming_the_owner(
    s3, local, remote, mote_cli
):
    url = f"s3://{S3_BUCKET}/urls/held.zarr"
    holder = Holder(url)
    try:
        code, _, err = mote_cli(*embed_args(local, remote), "--out", url)
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
