"""`mote search`: a trained run finds each class's videos by its name (as well as its classifier
names them, on its training videos and on a fresh collection), --like and --video query by
example, --json lines, --eval into metrics.json and the report, a faiss index built once and
reused, a self-contained HTML page, and one error line per bad input.

A real MoTE run trained on mote-tiny features of generated motion videos (real MP4s decoded by
PyAV), its store embedded by `mote embed`. The class names are meaningful queries even with
mote-tiny's random text tower: the temporal module was trained to match exactly those texts.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import motion_split_stores, random_store, tiny_extract_config, train_tiny_run
from PIL import Image

import mote
from mote.cache_schema.embeddings import EmbeddingsFile
from mote.cache_schema.feature_store import FeatureStore
from mote.pipeline.data.synthetic import write_motion_dataset
from mote.pipeline.runs.run_clip import clip_for_run
from mote.pipeline.runs.run_files import write_json
from mote.pipeline.runs.run_folder import save_model
from mote.pipeline.search.vocabulary import vocabulary as shipped_vocabulary
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.temporal.temporal_config import default_config
from mote.stages import cli, embed, extract, report, search


@dataclass(frozen=True)
class Trained:
    run: Path
    store: Path
    embeddings: Path
    root: Path
    classes: tuple[str, ...]
    data: object  # the generated dataset: root, list_file, labels_file


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    """A run trained on 9 videos of each of 8 motion classes, and those videos embedded."""
    work = tmp_path_factory.mktemp("search")
    data, store, _, _ = motion_split_stores(work, 12, val_views=None)
    run = train_tiny_run(store, work / "run")
    out = work / "e.zarr"
    embed.run(embed.EmbedConfig(run=run, store=store, out=out, root=data.root, device="cpu"))
    return Trained(run, store, out, data.root, tuple(data.class_names), data)


@pytest.fixture(scope="module")
def fresh(trained, tmp_path_factory) -> Path:
    """Embeddings of a fresh collection of the 8 classes (seed 11, 10 videos each) the run never
    saw, extracted with evaluation sampling."""
    work = tmp_path_factory.mktemp("fresh")
    data = write_motion_dataset(work / "videos", videos_per_class=10, seed=11)
    store, out = work / "fresh.zarr", work / "fresh.emb.zarr"
    extract.run(tiny_extract_config(data, store, decode_workers=2))
    embed.run(embed.EmbedConfig(run=trained.run, store=store, out=out, device="cpu"))
    return out


def find(trained: Trained, *queries: str, **settings) -> dict:
    settings.setdefault("embeddings", trained.embeddings)
    cfg = search.SearchConfig(run=trained.run, queries=queries, device="cpu", **settings)
    return search.run(cfg)


def mote_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """The real `mote` entry point in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["mote", *map(str, args)])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    out = capsys.readouterr()
    return int(exited.value.code or 0), out.out, out.err


def test_each_class_name_finds_its_videos_as_well_as_the_classifier_names_them(trained):
    result = find(trained, *trained.classes, top_k=10)
    chance = 100 / len(trained.classes)  # 9 videos of each of 8 classes
    precisions = []
    for name, entry in zip(trained.classes, result["results"], strict=True):
        hits = entry["hits"]
        assert entry["query"] == name and [h["rank"] for h in hits] == list(range(1, 11))
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        assert name in {h["label"] for h in hits}, f"{name!r}: no video of its class in the top 10"
        assert {h["scoring"] for h in hits} == {"softmax"}
        precisions.append(100 * np.mean([h["label"] == name for h in hits]))
    assert np.mean(precisions) >= 2 * chance, precisions
    # measured: P@10 softmax 65.0, cosine 42.5 (mAP 80.9, 53.8); zero-shot top-1 68.1
    evaluated = find(trained, evaluate=True)["retrieval"]  # the same ranking, its own numbers
    assert evaluated["p@10"] == pytest.approx(np.mean(precisions), abs=1e-3)
    assert_ranks_as_the_classifier(evaluated)


def assert_ranks_as_the_classifier(evaluated: dict) -> None:
    """The default score's P@10 within 5 points of zero-shot top-1, well above the cosine's."""
    cosine = evaluated["rankings"]["cosine"]
    assert evaluated["score"] == "softmax" and set(evaluated["rankings"]) == {"softmax", "cosine"}
    assert evaluated["p@10"] >= evaluated["zeroshot_top1"] - 5, evaluated
    assert evaluated["p@10"] >= cosine["p@10"] + 10 and evaluated["map"] >= cosine["map"] + 10


def test_class_names_rank_a_fresh_collection_as_well_as_the_classifier(trained, fresh):
    # measured: P@10 softmax 56.2, cosine 37.5 (mAP 59.9, 43.4); zero-shot top-1 57.5
    evaluated = find(trained, embeddings=fresh, evaluate=True)["retrieval"]
    assert evaluated["n_videos"] == 80 and evaluated["bank"] == "the store's 8 class names"
    assert_ranks_as_the_classifier(evaluated)
    cosine = find(trained, embeddings=fresh, evaluate=True, score="cosine")["retrieval"]
    assert cosine["score"] == "cosine" and cosine["p@10"] == evaluated["rankings"]["cosine"]["p@10"]


def test_queries_by_example_rank_by_cosine_whatever_the_score(trained):
    """Normalising a video query against the text bank lowered its precision (bench/
    search_scores.py): --like and --video rank by cosine under every --score."""
    ids = mote.open_embeddings(trained.embeddings).video_ids
    for video_id in ids[::9]:
        default = find(trained, like=video_id)["results"][0]["hits"]
        cosine = find(trained, like=video_id, score="cosine")["results"][0]["hits"]
        assert default == cosine and {h["scoring"] for h in default} == {"cosine"}


def test_the_bank_statistics_are_kept_beside_the_file_and_read_back(trained, tmp_path):
    emb = tmp_path / "e.zarr"
    shutil.copytree(trained.embeddings, emb)
    for kept in emb.glob("bank-stats-*.npy"):
        kept.unlink()
    first = find(trained, trained.classes[2], embeddings=emb)
    (kept,) = emb.glob("bank-stats-*.npy")
    assert np.load(kept).shape == (2, 72)
    stamp = kept.stat().st_mtime_ns
    assert find(trained, trained.classes[2], embeddings=emb)["results"] == first["results"]
    assert kept.stat().st_mtime_ns == stamp  # read, not made again
    find(trained, trained.classes[2], embeddings=emb, score="cosine")
    assert list(emb.glob("bank-stats-*.npy")) == [kept]  # the cosine needs none


def test_the_bank_is_the_stores_class_text_else_the_shipped_vocabulary(trained, tmp_path):
    store = FeatureStore.open(trained.store)
    queries_space = clip_for_run(trained.run, "cpu").class_text_embeddings(store.class_names)
    assert np.allclose(np.array(store.text_embeddings), queries_space.numpy(), atol=1e-5)
    gone = tmp_path / "gone.zarr"
    shutil.copytree(trained.store, gone)
    emb = tmp_path / "e.zarr"
    embed.run(embed.EmbedConfig(run=trained.run, store=gone, out=emb, device="cpu"))
    shutil.rmtree(gone)
    found = find(trained, trained.classes[3], embeddings=emb, top_k=5)
    assert found["bank"].startswith("a vocabulary of 7") and found["score"] == "softmax"
    assert len(found["results"][0]["hits"]) == 5
    # the vocabulary through the text tower is kept beside the file (minutes of a ViT-B/16 on a
    # CPU) and read back: a planted copy of other numbers changes the next search's scores
    (kept,) = emb.glob("bank-text-*.npy")
    vocabulary = np.load(kept)
    first = clip_for_run(trained.run, "cpu").class_text_embeddings(shipped_vocabulary()[:1])
    assert len(vocabulary) == len(shipped_vocabulary())
    assert np.allclose(vocabulary[0], first[0].numpy(), atol=1e-5)
    for stats in emb.glob("bank-stats-*.npy"):
        stats.unlink()
    np.save(kept, np.roll(vocabulary, 1, axis=0)[:, ::-1].copy())
    again = find(trained, trained.classes[3], embeddings=emb, top_k=5)["results"][0]["hits"]
    assert [h["score"] for h in again] != [h["score"] for h in found["results"][0]["hits"]]
    assert find(trained, trained.classes[3])["bank"] == "the store's 8 class names"
    free = find(trained, "a dog surfing a wave", top_k=5)["results"][0]["hits"]  # in no bank
    scores = [h["score"] for h in free]
    assert len(free) == 5 and scores == sorted(scores, reverse=True) and max(scores) < 0


def test_like_leaves_the_video_out_and_json_lines_parse(trained, monkeypatch, capsys):
    ids = mote.open_embeddings(trained.embeddings).video_ids
    code, out, err = mote_cli(
        monkeypatch, capsys, "search", "--run", trained.run, "--embeddings", trained.embeddings,
        trained.classes[0], "--like", ids[3], "-k", "5", "--device", "cpu", "--json",
    )  # fmt: skip
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 10
    for line in lines:
        assert set(line) == {
            "query", "rank", "score", "video_id", "path", "label", "row", "scoring", "frame",
            "time_s",
        }  # fmt: skip
        if line["query"].startswith("like "):  # a row: no CLIP-space query, no moment
            assert line["frame"] is None and line["time_s"] is None
        else:  # a text: the best of the video's sampled frames, and its time in the file
            assert isinstance(line["frame"], int) and line["time_s"] >= 0
        assert (
            line["path"] == str(trained.root / line["video_id"])
            and ids[line["row"]] == line["video_id"]
        )
    like = [line for line in lines if line["query"] == f"like {ids[3]}"]
    assert [line["rank"] for line in like] == [1, 2, 3, 4, 5]
    assert ids[3] not in {line["video_id"] for line in like}


def test_a_video_file_is_a_query_equal_to_its_embedded_row(trained, tiny_extract, tmp_path):
    """--video decodes and encodes the file as predict does (evaluation sampling, the store's
    frames and views) and embeds it with the file's variant: against a store of that very video
    extracted with evaluation sampling, its own row scores a cosine of 1."""
    line = trained.data.list_file.read_text().splitlines()[5]
    one = tmp_path / "one.txt"
    one.write_text(line + "\n")
    store, out = tmp_path / "one.zarr", tmp_path / "one.emb.zarr"
    trained_views = EmbeddingsFile.open(trained.embeddings).attrs["store"]["views"]
    extract.run(tiny_extract(trained.data, store, list_file=one, views=trained_views))
    embed.run(embed.EmbedConfig(run=trained.run, store=store, out=out, device="cpu"))
    video = trained.root / line.rsplit(" ", 1)[0]
    hit = find(trained, video=video, embeddings=out)["results"][0]["hits"][0]
    assert hit["score"] == pytest.approx(1.0, abs=2e-3)
    found = find(trained, video=video, top_k=3)["results"][0]  # and among the training clips
    assert {h["scoring"] for h in found["hits"]} == {"cosine"}  # by example: by cosine
    assert found["kind"] == "video" and found["hits"][0]["label"] == line.split("/")[0].replace(
        "_", " "
    )


def test_bad_input_gets_one_error_line_and_exit_2(trained, tmp_path, monkeypatch, capsys):
    base = ["search", "--run", trained.run, "--device", "cpu"]
    emb = ["--embeddings", trained.embeddings]
    other_encoder = tmp_path / "b16.zarr"
    random_store(other_encoder, ["a.mp4", "b.mp4"], [0, 1], ("a", "b"), model="ViT-B-16")
    other_run = tmp_path / "other"
    other_run.mkdir()
    model = MoTE(default_config(64, layers=2))
    model.set_finetune_text(torch.randn(8, 64))
    save_model(other_run / "model.safetensors", model)
    write_json(other_run / "config.json", {"arch": "mote", "clip": {"model": "mote-tiny"}})
    partial = tmp_path / "partial.zarr"
    attrs = EmbeddingsFile.open(trained.embeddings).attrs
    EmbeddingsFile.create(partial, {k: attrs[k] for k in ("run", "store", "clip", "variant")}
                          | {"dim": attrs["dim"], "n_rows": attrs["n_rows"]})  # fmt: skip
    cases = [
        ([*base, *emb, "  "], "mote search: an empty QUERY"),
        ([*base, *emb], "mote search: no query"),
        ([*base, *emb, "--like", "nope.mp4"], "--like 'nope.mp4': no such video id"),
        ([*base, "--store", other_encoder, "x"], f"{other_encoder}: model is 'ViT-B-16'"),
        (["search", "--run", other_run, *emb, "x", "--device", "cpu"],
         f"{trained.embeddings}: embeddings of another run than {other_run}"),
        ([*base, "--embeddings", partial, "x"], f"{partial}: unfinished (0 of"),
    ]  # fmt: skip
    for args, start in cases:
        code, out, err = mote_cli(monkeypatch, capsys, *args)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, (args, err)
        assert lines[0].startswith(f"error: {start}"), lines[0]


def test_eval_writes_metrics_json_and_report_shows_it(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained.run, run)
    (run / "metrics.json").write_text(json.dumps({"top1": 50.0, "epochs": 60}))
    found = search.run(
        search.SearchConfig(run=run, embeddings=trained.embeddings, evaluate=True, device="cpu")
    )
    numbers = found["retrieval"]
    metrics = json.loads((run / "metrics.json").read_text())
    key = str(trained.store.resolve())
    assert numbers["store"] == key
    assert metrics["top1"] == 50.0 and metrics["epochs"] == 60  # training's numbers are kept
    recorded = metrics["retrieval"][key]
    assert recorded["map"] == numbers["map"] and recorded["classes"] == 8
    assert recorded["p@10"] > recorded["chance_precision"] and 0 < recorded["zeroshot_top1"] <= 100
    assert (
        recorded["score"] == "softmax" and recorded["rankings"]["softmax"]["map"] == numbers["map"]
    )
    assert recorded["rankings"]["cosine"]["p@10"] < recorded["p@10"]
    made = report.run(report.ReportConfig(runs=(run,), out=tmp_path / "report"))
    text = Path(made["report"]).read_text()
    assert f"text -> video retrieval on `{key}`" in text
    assert f"mAP {recorded['map']:.2f}, P@10 {recorded['p@10']:.2f}" in text


def test_eval_prints_the_chosen_and_the_raw_ranking_side_by_side(
    trained, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    shutil.copytree(trained.run, run)
    base = ["search", "--run", run, "--embeddings", trained.embeddings, "--eval", "--device", "cpu"]
    code, out, err = mote_cli(monkeypatch, capsys, *base, "--json")
    assert code == 0, err
    numbers = json.loads(out)["retrieval"]
    assert set(numbers["rankings"]) == {"softmax", "cosine"} and numbers["score"] == "softmax"
    code, out, err = mote_cli(monkeypatch, capsys, *base, "--score", "cosine")
    assert code == 0, err
    rows = {line.split()[0]: line.split()[-3:] for line in out.splitlines() if "@" not in line}
    for name, cells in (("cosine", numbers["rankings"]["cosine"]), ("softmax", numbers)):
        assert rows[name] == [f"{cells[key]:.2f}" for key in ("map", "p@10", "p@50")], out
    assert "cosine (--score)" in out and "scores normalised against the store's 8 class" in out


def test_load_run_search_returns_records(trained):
    records = mote.load_run(trained.run, device="cpu").search(
        [trained.classes[2], trained.classes[5]], trained.embeddings, k=4
    )
    assert [r["query"] for r in records] == [trained.classes[2]] * 4 + [trained.classes[5]] * 4
    assert [r["rank"] for r in records] == [1, 2, 3, 4] * 2
    direct = find(trained, trained.classes[2], top_k=4)["results"][0]["hits"]
    # Two queries in one matmul round apart from one alone in the last bits, which the softmax
    # score's logit scale (100) lifts to the sixth decimal.
    assert [{**r, "score": None} for r in records[:4]] == [{**r, "score": None} for r in direct]
    assert [r["score"] for r in records[:4]] == pytest.approx(
        [r["score"] for r in direct], abs=1e-5
    )


def test_an_hnsw_index_is_built_once_reused_and_checked(trained, tmp_path):
    pytest.importorskip("faiss")
    emb = tmp_path / "e.zarr"
    shutil.copytree(trained.embeddings, emb)
    first = find(trained, trained.classes[1], embeddings=emb, index="hnsw", check_index=True)
    assert first["index"]["built"] and (emb / "index-hnsw.faiss").is_file()
    assert first["check_index"]["recall@10"] >= 0.9
    exact = find(trained, trained.classes[1], embeddings=emb)
    assert first["results"][0]["hits"] == exact["results"][0]["hits"]  # candidates rescored
    raw = find(trained, trained.classes[1], embeddings=emb, index="hnsw", score="cosine")
    exact_raw = find(trained, trained.classes[1], embeddings=emb, score="cosine")
    assert [h["video_id"] for h in raw["results"][0]["hits"]] == [
        h["video_id"] for h in exact_raw["results"][0]["hits"]
    ]
    stamp = (emb / "index-hnsw.faiss").stat().st_mtime_ns
    again = find(trained, embeddings=emb, index="hnsw", check_index=True)  # rows as queries
    assert not again["index"]["built"] and (emb / "index-hnsw.faiss").stat().st_mtime_ns == stamp
    assert again["check_index"]["on"].endswith("of the collection's own rows")
    assert again["check_index"]["recall@10"] >= 0.9


class _Page(HTMLParser):
    """The hits, images and reasons of a search page."""

    def __init__(self) -> None:
        super().__init__()
        self.hits: list[dict] = []
        self.links: list[str] = []
        self._reason = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and a.get("class") == "hit":
            self.hits.append(
                {"rank": int(a["data-rank"]), "score": float(a["data-score"]),
                 "video_id": a["data-video-id"], "images": [], "reason": None, "frame": None}
            )  # fmt: skip
        elif tag == "div" and a.get("class") == "moment":
            self.hits[-1]["frame"] = int(a["data-frame"])
        elif tag == "img":
            self.hits[-1]["images"].append(a["src"])
        elif tag in ("link", "script") or (tag == "img" and not a["src"].startswith("data:")):
            self.links.append(tag)
        self._reason = tag == "p" and a.get("class") == "reason"

    def handle_data(self, data):
        if self._reason and self.hits:
            self.hits[-1]["reason"] = data
            self._reason = False


def test_html_page_holds_every_hit_with_frames_or_its_reason(trained, tmp_path):
    plain = find(trained, trained.classes[4], top_k=3)["results"][0]["hits"]
    root = tmp_path / "videos"
    shutil.copytree(trained.root, root)
    broken = plain[1]["video_id"]
    (root / broken).write_bytes(b"not a video" * 100)
    page = tmp_path / "hits.html"
    result = find(trained, trained.classes[4], top_k=3, html=page, root=root)
    assert result["html"] == str(page)
    parsed = _Page()
    parsed.feed(page.read_text())
    assert parsed.links == []  # self-contained: nothing fetched from elsewhere
    assert [(h["rank"], h["video_id"]) for h in parsed.hits] == [
        (h["rank"], h["video_id"]) for h in plain
    ]
    for hit, want in zip(parsed.hits, plain, strict=True):
        assert hit["score"] == pytest.approx(want["score"], abs=1e-5)
        assert hit["frame"] == want["frame"] is not None  # the moment that matched, shown
        if want["video_id"] == broken:
            assert hit["images"] == [] and hit["reason"], hit
            continue
        assert len(hit["images"]) == 4 and hit["reason"] is None
        for uri in hit["images"]:
            prefix = "data:image/jpeg;base64,"
            assert uri.startswith(prefix)
            image = Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :], validate=True)))
            assert image.format == "JPEG" and image.height == 96
