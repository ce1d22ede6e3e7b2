"""Any collection, no training: `extract --dataset folder` (a class per sub-folder), a list of bare
paths (an unlabelled store), `embed` and `search` without a run (CLIP mean pooling and the
store's own text tower), the one refusal of an unlabelled store by the commands that need
classes, the warning where TFM's vocabulary is a single class, and queries by an image or a raw
vector with each hit's best-matching moment.

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

import av
import numpy as np
import pytest
import zarr
from helpers import random_run, random_store
from PIL import Image

import mote as api
from mote.cache_schema.embeddings import EmbeddingsFile
from mote.cache_schema.feature_store import FeatureStore
from mote.cache_schema.store_errors import UnlabelledStore
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


# More ways to ask `mote search`: an image file through the CLIP image tower, a raw vector from
# the command line and from Python, and where in each video the query matches (the sampled frame
# whose stored CLIP feature is closest, and its time in the file). A frame the store sampled,
# saved as a PNG, is that stored feature again: its video's best frame is that frame, at that
# frame's time (the file's rate), and its video ranks first.

FPS = 25  # write_motion_dataset's frame rate


@pytest.fixture(scope="module")
def pooled(folder_store, work) -> Path:
    """The folder store embedded without a run (CLIP mean pooling), in this process."""
    out = work / "pooled.zarr"
    embed.run(embed.EmbedConfig(store=folder_store, out=out, device="cpu"))
    return out


def sampled_frame(store: Path, video_id: str) -> int:
    """A frame of ``video_id`` that the store sampled (the middle one of its first view)."""
    reader = FeatureStore.open(store)
    row = reader.video_ids.index(video_id)
    frames = np.asarray(reader.read_frame_indices([row]))[0, 0]
    return int(frames[len(frames) // 2])


def frame_png(video: Path, index: int, out: Path) -> Path:
    """Frame ``index`` of ``video``, decoded in order by PyAV, saved losslessly."""
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                Image.fromarray(frame.to_ndarray(format="rgb24")).save(out)
                return out
    raise AssertionError(f"{video} has no frame {index}")


def hits(done) -> list[dict]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_an_image_finds_its_video_and_the_moment_it_shows(pooled, folder_store, work, tmp_path):
    index = sampled_frame(folder_store, NESTED)
    image = frame_png(work / "videos" / NESTED, index, tmp_path / "still.png")
    found = hits(mote("search", "--embeddings", pooled, "--image", image, "-k", "3", "--json",
                      "--device", "cpu", "--root", work / "videos"))  # fmt: skip
    assert [h["query"] for h in found] == [f"image {image}"] * 3
    assert {h["scoring"] for h in found} == {"cosine"}  # by example: always cosine
    first = found[0]
    assert first["video_id"] == NESTED and first["score"] > 0.9
    assert first["frame"] == index and first["time_s"] == pytest.approx(index / FPS, abs=1e-3)
    reader = FeatureStore.open(folder_store)
    for hit in found[1:]:  # every hit's moment is one of its own sampled frames
        row = reader.video_ids.index(hit["video_id"])
        assert hit["frame"] in np.asarray(reader.read_frame_indices([row])).ravel().tolist()


def test_text_hits_carry_the_frame_of_the_best_stored_feature(pooled, folder_store, work):
    found = hits(mote("search", "--embeddings", pooled, "a circle", "-k", "6", "--json",
                      "--device", "cpu", "--root", work / "videos"))  # fmt: skip
    reader = FeatureStore.open(folder_store)
    text = build_clip("mote-tiny", "none", "cpu", seed=0).class_text_embeddings(["a circle"])[0]
    for hit in found:
        row = reader.video_ids.index(hit["video_id"])
        features = np.asarray(reader.read_embeddings([row]), np.float64)[0]  # (V, T, D)
        frames = np.asarray(reader.read_frame_indices([row]))[0].ravel()
        flat = features.reshape(-1, features.shape[-1])
        cosines = flat @ text.double().numpy() / np.linalg.norm(flat, axis=1)
        assert hit["frame"] == frames[int(np.argmax(cosines))]
        assert hit["time_s"] == pytest.approx(hit["frame"] / FPS, abs=1e-3)


def test_a_raw_vector_from_the_command_line_and_from_python(pooled):
    file = EmbeddingsFile.open(pooled)
    ids = list(file.read_table().column("video_id").to_pylist())
    vector = file.read_vectors([ids.index(NESTED)])[0].astype(np.float64)
    text = ",".join(f"{x:.7g}" for x in vector)
    found = hits(mote("search", "--embeddings", pooled, "--embedding", text, "-k", "2", "--json",
                      "--device", "cpu"))  # fmt: skip
    assert found[0]["video_id"] == NESTED and found[0]["score"] == pytest.approx(1.0, abs=2e-3)
    assert found[0]["query"] == "--embedding" and found[0]["frame"] is None
    records = api.search(embeddings=pooled, embedding=vector * 3.0, top_k=2, device="cpu")
    assert [r["video_id"] for r in records["results"][0]["hits"]] == [h["video_id"] for h in found]

    short = mote("search", "--embeddings", pooled, "--embedding", "0.1,0.2", "--device", "cpu")
    assert f"a vector of {file.dim} numbers" in one_error_line(short)
    zero = mote("search", "--embeddings", pooled, "--embedding", ",".join(["0"] * file.dim))
    assert "not a usable vector" in one_error_line(zero)


def test_an_unreadable_image_is_one_error_line(pooled, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not pixels")
    assert "not an image PIL can read" in one_error_line(
        mote("search", "--embeddings", pooled, "--image", text, "--device", "cpu")
    )
    missing = mote("search", "--embeddings", pooled, "--image", tmp_path / "gone.jpg")
    assert "gone.jpg: no such file" in one_error_line(missing)
