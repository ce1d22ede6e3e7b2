"""`mote embed`: one unit vector per done video, equal to the run's evaluation path, resumable,
refusing a store of another encoder and a file of another run; its Parquet table read by pyarrow.

Real runs (random MoTE weights saved as a run folder) and real stores of random features.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from helpers import random_run, random_store

import mote
from mote.cache_schema.embeddings import EmbeddingsFile
from mote.cache_schema.feature_store import FeatureStore
from mote.cache_schema.spec import VideoResult
from mote.cache_schema.store_errors import StoreError, StoreMismatch
from mote.pipeline.runs.run_folder import load_run
from mote.pipeline.temporal.evaluation import score_views
from mote.stages import embed

D = 64
CLASSES = ("circle left", "circle right", "square up", "square down", "star spin")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    return random_run(tmp_path_factory.mktemp("embed") / "run", seed=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """40 videos of 3x1 views, video 5 failed: 39 done."""
    ids = [f"class{i % 5}/v{i:02d}.mp4" for i in range(40)]
    path = tmp_path_factory.mktemp("embed") / "s.zarr"
    random_store(path, ids, [i % 5 for i in range(40)], CLASSES, dim=D, views=(3, 1))
    writable = FeatureStore.open(path, writable=True)
    writable.write_chunk(0, [VideoResult.failure(5, "cannot open: test")])
    return FeatureStore.open(path)


def embed_cfg(run, store, out, **settings):
    return embed.EmbedConfig(run=run, store=store, out=out, device="cpu", **settings)


def eval_path_vectors(run, store) -> np.ndarray:
    """Each done video's vector straight from the model: spec 5 TFM rho against the store's
    classes, the merged pass, frames mean-pooled, views' unit vectors averaged."""
    model = load_run(run).model
    _, features, _ = store.read_done()
    e = torch.from_numpy(features.astype(np.float32))
    n, v = e.shape[:2]
    flat = e.reshape(n * v, *e.shape[2:])
    text = F.normalize(torch.from_numpy(np.array(store.text_embeddings)), dim=-1)
    with torch.no_grad():
        rho = model.tfm_rho(flat, text)
        pooled = model.pool(model.forward_features(flat, mode="merged", rho=rho))
    views = F.normalize(pooled, dim=-1).reshape(n, v, -1)
    return F.normalize(views.mean(dim=1), dim=-1).numpy()


def test_one_unit_vector_per_done_video_equal_to_the_evaluation_path(run_folder, store, tmp_path):
    out = tmp_path / "e.zarr"
    result = embed.run(embed_cfg(run_folder, store.path, out, chunk_rows=16))
    assert result["n_rows"] == result["n_embedded"] == 39 and result["n_not_done_skipped"] == 1
    assert result["variant"]["name"] == "tfm" and result["dim"] == D
    file = EmbeddingsFile.open(out)
    vectors = file.read_vectors().astype(np.float32)
    assert vectors.shape == (39, D) and file.chunk_rows == 16
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)
    np.testing.assert_allclose(vectors, eval_path_vectors(run_folder, store), atol=2e-3)
    # Against `mote evaluate`'s per-view cosines: a class text's cosine with the video vector is
    # the mean over views of the evaluation's cosines, times one positive number per video.
    model = load_run(run_folder).model
    _, features, _ = store.read_done()
    text = torch.from_numpy(np.array(store.text_embeddings))
    logits, _ = score_views(model, features, text, tfm=True)
    unit_text = F.normalize(text, dim=-1).numpy()
    mine = F.normalize(torch.from_numpy(vectors @ unit_text.T), dim=-1)
    evaluation = F.normalize(logits.mean(dim=1), dim=-1)
    np.testing.assert_allclose(mine.numpy(), evaluation.numpy(), atol=5e-3)
    with pytest.raises(StoreMismatch, match="an embeddings file .*mote search --embeddings"):
        FeatureStore.open(out)  # `mote info E.zarr`: not told to re-extract over it


def test_the_parquet_table_opens_with_pyarrow_and_names_the_store_videos(
    run_folder, store, tmp_path
):
    out = tmp_path / "e.zarr"
    embed.run(embed_cfg(run_folder, store.path, out, root=tmp_path / "videos"))
    table = pq.read_table(out / "videos.parquet")
    assert table.column_names == ["row", "store_row", "video_id", "path", "label", "label_name"]
    done = np.flatnonzero(store.done_mask())
    assert table.column("row").to_pylist() == list(range(39))
    assert table.column("store_row").to_pylist() == done.tolist()
    assert table.column("video_id").to_pylist() == [store.video_ids[i] for i in done]
    assert table.column("path").to_pylist() == [
        str(tmp_path / "videos" / store.video_ids[i]) for i in done
    ]
    assert table.column("label").to_pylist() == store.labels[done].tolist()
    assert table.column("label_name").to_pylist() == [CLASSES[k] for k in store.labels[done]]
    assert table.schema.metadata[b"mote.schema"] == b"mote.embeddings"


class StopAfter:
    """A progress that presses Ctrl-C at its n-th update (one update per batch of videos)."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def start(self, total, label, unit="videos"):
        pass

    def update(self, *, done=0, failed=0, frames=0):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt

    def message(self, text):
        pass

    def finish(self):
        pass


def test_an_interrupted_embed_continues_and_equals_a_one_shot_run(run_folder, store, tmp_path):
    whole = tmp_path / "whole.zarr"
    embed.run(embed_cfg(run_folder, store.path, whole, chunk_rows=8))
    out = tmp_path / "e.zarr"
    with pytest.raises(KeyboardInterrupt):  # chunks 0 and 1 written, then stopped in chunk 2
        embed.run(embed_cfg(run_folder, store.path, out, chunk_rows=8), StopAfter(3))
    partial = EmbeddingsFile.open(out)
    assert partial.done_mask().sum() == 16 and partial.todo_chunks() == [2, 3, 4]
    assert not (out / "videos.parquet").exists() and not (out / ".mote-claim.json").exists()
    with pytest.raises(StoreError, match="unfinished \\(16 of 39 rows done\\)"):
        partial.read_vectors()
    result = embed.run(embed_cfg(run_folder, store.path, out, chunk_rows=8))
    assert result["resumed"] and result["n_embedded"] == 39 - 16
    np.testing.assert_array_equal(
        EmbeddingsFile.open(out).read_vectors(), EmbeddingsFile.open(whole).read_vectors()
    )
    again = embed.run(embed_cfg(run_folder, store.path, out, chunk_rows=8))
    assert again["n_embedded"] == 0 and again["n_done"] == 39


def test_a_file_of_another_run_or_an_older_store_state_is_refused(run_folder, tmp_path):
    ids = [f"v{i}.mp4" for i in range(12)]
    path = tmp_path / "s.zarr"
    random_store(path, ids, [i % 5 for i in range(12)], CLASSES, dim=D)
    out = tmp_path / "e.zarr"
    embed.run(embed_cfg(run_folder, path, out))
    other = random_run(tmp_path / "other", seed=1)
    with pytest.raises(StoreMismatch) as refused:
        embed.run(embed_cfg(other, path, out))
    line = str(refused.value)
    assert line.startswith(f"{out}: embeddings of another run") and "\n" not in line
    assert "run.path" in line and "--overwrite" in line
    assert embed.run(embed_cfg(other, path, out, overwrite=True))["n_embedded"] == 12
    FeatureStore.open(path, writable=True).mark_pending([3])  # the store changed since
    with pytest.raises(StoreMismatch, match="embeddings of another input .*store.done"):
        embed.run(embed_cfg(other, path, out))
    for flags in ({}, {"overwrite": True}):  # never writes into (or deletes) a feature store
        with pytest.raises(StoreError, match="other than a mote embeddings file"):
            embed.run(embed_cfg(other, path, path, **flags))
    assert FeatureStore.open(path).n_videos == 12


def test_a_store_of_another_encoder_is_one_error_line(run_folder, tmp_path):
    path = tmp_path / "b16.zarr"
    random_store(path, ["a.mp4", "b.mp4"], [0, 1], CLASSES, dim=D, model="ViT-B-16")
    out = tmp_path / "e.zarr"
    env = {**os.environ, "MOTE_DEBUG": ""}
    args = ["--run", str(run_folder), "--store", str(path), "--out", str(out), "--device", "cpu"]
    done = subprocess.run(
        [sys.executable, "-m", "mote.stages.cli", "embed", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: model is 'ViT-B-16'"), lines
    assert "'mote-tiny'" in lines[0] and not out.exists()


def test_load_run_embed_returns_arrays_a_notebook_uses(run_folder, store, tmp_path):
    run = mote.load_run(run_folder, device="cpu")
    found = run.embed(store.path)
    assert found.path is None and found.vectors.dtype == np.float32
    assert found.vectors.shape == (39, D) and len(found) == 39
    done = np.flatnonzero(store.done_mask())
    assert found.video_ids == [store.video_ids[i] for i in done]
    assert found.labels.tolist() == store.labels[done].tolist()
    np.testing.assert_allclose(found.vectors, eval_path_vectors(run_folder, store), atol=2e-3)
    assert found.attrs["run"]["weights_file"] == "model.safetensors"
    kept = run.embed(store.path, out=tmp_path / "e.zarr", tfm=False)
    assert kept.attrs["variant"]["name"] == "plain" and kept.path == tmp_path / "e.zarr"
    assert not np.allclose(kept.vectors, found.vectors, atol=1e-3)  # TFM changes the vectors
    assert json.loads(json.dumps(kept.attrs))["store"]["n_videos"] == 40
    np.testing.assert_array_equal(mote.open_embeddings(tmp_path / "e.zarr").vectors, kept.vectors)
