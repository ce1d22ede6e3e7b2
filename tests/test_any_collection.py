"""Any collection, no training: `extract --dataset folder` (a class per sub-folder), a list of bare
paths (an unlabelled store), `embed` and `search` without a run (CLIP mean pooling and the
store's own text tower), the one refusal of an unlabelled store by the commands that need
classes, and the warning where TFM's vocabulary is a single class.

Real `mote` processes on real MP4 files (PyAV), encoded by mote-tiny with seeded random weights;
a random tiny CLIP makes no query meaningful, so the tests check that the vectors and rankings
are the ones the definitions give, computed here from the store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import random_run, random_store

from mote.cache_schema.embeddings import EmbeddingsFile
from mote.cache_schema.errors import UnlabelledStore
from mote.cache_schema.store import FeatureStore
from mote.cache_schema.verify import verify
from mote.pipeline.clip.build import build_clip
from mote.pipeline.data.datasets import open_dataset
from mote.pipeline.data.synthetic import write_motion_dataset
from mote.pipeline.errors import AnnotationError, ConfigError, MoteWarning
from mote.stages import embed, evaluate, search

MOTE = Path(sys.executable).parent / "mote"
TINY = ("--model", "mote-tiny", "--pretrained", "none", "--devices", "cpu", "--decode-workers", "0")
CLASSES = ("square moving right", "circle moving left", "circle approaching")
NESTED = "circle_moving_left/take 2/circle_moving_left_001.mp4"
SPACED = "my clip.mp4"


def mote(*args: object) -> subprocess.CompletedProcess:
    """The venv's `mote` script in a process of its own."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MOTE_DEBUG": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(MOTE), *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


def one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Two videos of each of three classes in class folders, one moved a folder deeper."""
    work = tmp_path_factory.mktemp("collection")
    data = write_motion_dataset(
        work / "videos", CLASSES, videos_per_class=2, frames=12, size=(64, 48), seed=5
    )
    (data.root / NESTED).parent.mkdir()
    (data.root / NESTED.replace("take 2/", "")).rename(data.root / NESTED)
    return work


@pytest.fixture(scope="module")
def folder_store(work) -> Path:
    out = work / "folder.zarr"
    done = mote("extract", "--dataset", "folder", "--root", work / "videos", "--out", out, *TINY)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def bare(work) -> Path:
    """Three of the videos listed as bare paths (one with a space), extracted unlabelled."""
    root = work / "bare"
    root.mkdir()
    videos = sorted((work / "videos").rglob("*.mp4"))[:3]
    names = [SPACED, "b.mp4", "c.mp4"]
    for video, name in zip(videos, names, strict=True):
        shutil.copy(video, root / name)
    (work / "bare.txt").write_text("\n".join(names) + "\n")
    out = work / "bare.zarr"
    done = mote("extract", "--dataset", "list", "--list", work / "bare.txt", "--root", root,
                "--out", out, *TINY)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def mean_pooled(store: FeatureStore) -> np.ndarray:
    """CLIP mean pooling by its definition: unit frame vectors averaged over time, the view's
    mean made unit, the views averaged, made unit."""
    _, features, _ = store.read_done()
    frames = features.astype(np.float64)
    frames /= np.linalg.norm(frames, axis=-1, keepdims=True)
    views = frames.mean(axis=2)
    views /= np.linalg.norm(views, axis=-1, keepdims=True)
    videos = views.mean(axis=1)
    return videos / np.linalg.norm(videos, axis=-1, keepdims=True)


def test_a_folder_per_class_extracts_with_sorted_class_names_and_nested_videos(work, folder_store):
    store = FeatureStore.open(folder_store)
    names = sorted(name.replace(" ", "_") for name in CLASSES)
    assert store.class_names == tuple(names) and store.labelled
    assert store.spec.dataset == "folder" and len(store.video_ids) == 6
    assert NESTED in store.video_ids and store.done_mask().all()
    for video, label in zip(store.video_ids, store.labels, strict=True):
        assert names[label] == video.split("/")[0], video
    assert "labelled" not in zarr.open_group(folder_store, mode="r").attrs  # as stores were


def test_videos_beside_class_folders_and_labels_with_a_folder_are_refused(work):
    loose = work / "videos" / "loose.mp4"
    shutil.copy(work / "videos" / NESTED, loose)
    try:
        with pytest.raises(AnnotationError, match="loose.mp4.*not inside a class folder"):
            open_dataset("folder", "custom", root=work / "videos")
    finally:
        loose.unlink()
    with pytest.raises(ConfigError, match="drop --list, --labels"):
        open_dataset("folder", "custom", labels_file=work / "x.csv", root=work / "videos")
    flat = work / "flat"  # videos and no class folders: an unlabelled collection
    (flat / ".hidden").mkdir(parents=True)
    shutil.copy(work / "videos" / NESTED, flat / "a.mp4")
    shutil.copy(work / "videos" / NESTED, flat / ".hidden" / "b.mp4")
    dataset, root = open_dataset("folder", "custom", root=flat)
    assert root == flat and not dataset.labelled
    assert [(item.video_id, item.label) for item in dataset.items] == [("a.mp4", -1)]


def test_a_list_of_bare_paths_is_an_unlabelled_store_that_verifies_clean(bare):
    store = FeatureStore.open(bare)
    assert store.class_names == () and not store.labelled
    assert store.video_ids == (SPACED, "b.mp4", "c.mp4") and store.labels.tolist() == [-1] * 3
    assert store.text_embeddings.shape == (0, 64)
    assert zarr.open_group(bare, mode="r").attrs["labelled"] is False
    done = mote("info", bare, "--verify", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["verify"]["ok"] and info["labelled"] is False and info["classes"] == 0


def test_verify_still_reports_a_label_of_minus_one_in_a_labelled_store(tmp_path):
    store = random_store(tmp_path / "s.zarr", ["a.mp4", "b.mp4"], [0, 1], ("x", "y"))
    zarr.open_array(tmp_path / "s.zarr" / "labels", mode="r+")[1] = -1
    problems = verify(FeatureStore.open(store.path)).problems
    assert [(p.array, p.videos) for p in problems] == [("labels", (1,))]
    assert "outside 0..1" in problems[0].reason


def test_a_labelled_list_without_labels_is_refused_naming_its_line(tmp_path):
    (tmp_path / "l.txt").write_text("a.mp4\nb.mp4 3\n")
    with pytest.raises(AnnotationError, match=r"l.txt:2: .*pass --labels"):
        open_dataset("list", "custom", tmp_path / "l.txt")


def test_commands_that_need_classes_refuse_an_unlabelled_store_in_one_line(bare, tmp_path):
    line = one_error_line(mote("train-temporal", "--train", bare, "--out", tmp_path / "run"))
    assert str(bare) in line and "unlabelled" in line and "--dataset folder" in line
    assert not (tmp_path / "run").exists()
    run = random_run(tmp_path / "r")
    with pytest.raises(UnlabelledStore, match="evaluate needs labelled videos"):
        evaluate.run(evaluate.EvaluateConfig(run=run, store=bare, device="cpu"))
    with pytest.raises(ConfigError, match="no test bank.*--no-tfm"):  # TFM has no class text
        embed.run(embed.EmbedConfig(run=run, store=bare, out=tmp_path / "e", device="cpu"))
    with pytest.raises(UnlabelledStore, match="zeroshot needs"):
        FeatureStore.open(bare).require_labels("zeroshot")
    FeatureStore.open(random_store(tmp_path / "l.zarr", ["a"], [0], ("x",)).path).require_labels(
        "zeroshot"
    )
    dataset, _ = open_dataset("list", "custom", bare.parent / "bare.txt")
    with pytest.raises(AnnotationError, match="finetune-e2e needs labelled videos"):
        dataset.require_labels("finetune-e2e")
    with pytest.raises(ConfigError, match="--eval records"):
        search.run(search.SearchConfig(embeddings=tmp_path / "e", evaluate=True))


def test_embed_and_search_without_a_run_use_mean_pooling_and_the_store_clip(folder_store, work):
    out = work / "e.zarr"
    done = mote("embed", "--store", folder_store, "--out", out, "--device", "cpu", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["variant"]["name"] == "clip-meanpool"
    file = EmbeddingsFile.open(out)
    assert file.attrs["run"] is None and file.attrs["clip"]["weights_id"] == "random:seed=0"
    vectors = file.read_vectors().astype(np.float64)
    np.testing.assert_allclose(vectors, mean_pooled(FeatureStore.open(folder_store)), atol=2e-3)

    ids = list(file.read_table().column("video_id").to_pylist())
    example = work / "videos" / NESTED
    done = mote("search", "--embeddings", out, "a circle", "--like", NESTED, "--video", example,
                "-k", "3", "--json", "--device", "cpu", "--score", "cosine")  # fmt: skip
    assert done.returncode == 0, done.stderr
    hits = [json.loads(line) for line in done.stdout.splitlines()]
    by_file = [h for h in hits if h["query"] == f"video {example}"]  # mean-pooled as the rows
    assert by_file[0]["video_id"] == NESTED and by_file[0]["score"] > 0.99
    text = build_clip("mote-tiny", "none", "cpu", seed=0).class_text_embeddings(["a circle"])
    like = vectors[ids.index(NESTED)]
    queries = (("a circle", text[0].double().numpy(), None), (f"like {NESTED}", like, NESTED))
    for query, vector, skip in queries:
        mine = [h for h in hits if h["query"] == query]
        scores = vectors @ vector
        order = [i for i in np.argsort(-scores, kind="stable") if ids[i] != skip][:3]
        assert [h["video_id"] for h in mine] == [ids[i] for i in order]
        np.testing.assert_allclose([h["score"] for h in mine], scores[order], atol=3e-3)
        assert all(h["label"] == h["video_id"].split("/")[0] for h in mine)
    ranked = mote("search", "--embeddings", out, "a circle", "-k", "3", "--json", "--device", "cpu")
    assert ranked.returncode == 0, ranked.stderr  # the default score: the CLIP's own logit scale
    assert {json.loads(line)["scoring"] for line in ranked.stdout.splitlines()} == {"softmax"}
    with pytest.raises(ConfigError, match="made without a run"):
        search.run(
            search.SearchConfig(run=random_run(work / "other"), embeddings=out, queries=("x",))
        )


def test_tfm_against_a_single_class_warns_with_the_way_out(tmp_path):
    one = random_store(tmp_path / "one.zarr", ["dog/a.mp4", "dog/b.mp4"], [0, 0], ("dog",))
    run = random_run(tmp_path / "run")
    done = mote("embed", "--run", run, "--store", one.path, "--out", tmp_path / "e.zarr",
                "--device", "cpu")  # fmt: skip
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "one ('dog')" in warned[0] and "--no-tfm" in warned[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", MoteWarning)
        embed.run(embed.EmbedConfig(run=run, store=one.path, out=tmp_path / "p", tfm=False,
                                    device="cpu"))  # fmt: skip
