"""Damaged stores on real disk: `info --verify` and every reader name the damage in one line,
and `extract --repair` restores a byte-identical store."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import random_run
from test_zeroshot import make_store, subset

from mote.cache_schema.feature_store import FeatureStore
from mote.cache_schema.store_errors import StoreMismatch
from mote.pipeline.data.datasets import load_dataset
from mote.pipeline.data.synthetic import write_motion_dataset
from mote.pipeline.errors import ConfigError
from mote.pipeline.runs.run_files import write_json
from mote.stages import cli, extract, train_temporal

CHUNK = 4


@pytest.fixture(scope="module")
def clean(tmp_path_factory, tiny_extract):
    """A real extracted store (16 motion videos in 4 chunks), a run trained on it, and a
    zero-shot store with its run; tests damage copies, never these."""
    work = tmp_path_factory.mktemp("damage")
    data = write_motion_dataset(work / "videos", videos_per_class=2, seed=5)
    cfg = tiny_extract(data, work / "clean.zarr", chunk_videos=CHUNK)
    extract.run(cfg)
    train_temporal.run(
        train_temporal.TrainConfig(
            train=cfg.out,
            out=work / "run",
            layers=1,
            epochs=1,
            warmup_epochs=0,
            batch_size=8,
            micro_batches=1,
            device="cpu",
        )
    )
    hmdb = load_dataset("hmdb51", "all")
    make_store(work / "zs.zarr", hmdb, subset(hmdb, 8))
    zs_run = random_run(work / "zs_run", layers=1, texts=400)
    write_json(zs_run / "metrics.json", {"top1": 80.0, "top5": 95.0})
    return {
        "data": data,
        "cfg": cfg,
        "store": cfg.out,
        "run": work / "run",
        "zs": work / "zs.zarr",
        "zs_run": zs_run,
    }


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def damage(store: Path, how: str, array: str = "embeddings", chunk: int = 1) -> Path:
    """Delete, truncate or flip 16 bytes of one chunk file; return the file."""
    path = FeatureStore.open(store).chunk_file(array, chunk)
    data = bytearray(path.read_bytes())
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        middle = len(data) // 2
        data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
        path.write_bytes(bytes(data))
    return path


def tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def mote(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the real `mote` entry point in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["mote", *map(str, args)])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    out = capsys.readouterr()
    return int(exited.value.code or 0), out.out, out.err


def reader_args(clean: dict, store: Path, zs_store: Path, reader: str, out: Path) -> list:
    if reader == "train-temporal":
        return [
            "train-temporal",
            "--train",
            store,
            "--out",
            out,
            "--layers",
            "1",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--micro-batches",
            "1",
            "--device",
            "cpu",
        ]
    if reader == "evaluate":
        return ["evaluate", "--run", clean["run"], "--store", store, "--device", "cpu"]
    if reader == "fewshot":
        return [
            "fewshot",
            "--train",
            store,
            "--test",
            store,
            "--out",
            out,
            "--shots",
            "1",
            "--seeds",
            "0",
            "--epochs",
            "1",
            "--layers",
            "1",
            "--device",
            "cpu",
        ]
    return [
        "zeroshot",
        "--run",
        clean["zs_run"],
        "--dataset",
        "hmdb51",
        "--store",
        zs_store,
        "--split",
        "test1",
        "--device",
        "cpu",
        "--no-tfm",
    ]


HOWS = ("delete", "truncate", "flip")
READERS = ("train-temporal", "evaluate", "fewshot", "zeroshot")


@pytest.mark.parametrize("how", HOWS)
def test_info_verify_names_the_damaged_chunk(clean, tmp_path, monkeypatch, capsys, how):
    store = copy(clean["store"], tmp_path / "s.zarr")
    code, out, err = mote(monkeypatch, capsys, "info", store, "--verify")
    assert code == 0 and "no damage found" in out and err == ""
    damage(store, how)
    code, out, err = mote(monkeypatch, capsys, "info", store, "--verify")
    assert code == 3
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "array 'embeddings' chunk 1 (videos 4, 5, 6, 7)" in lines[0]
    assert ("missing" if how == "delete" else "checksum") in lines[0]
    code, out, _ = mote(monkeypatch, capsys, "info", store, "--verify", "--json")
    problems = json.loads(out)["verify"]["problems"]
    assert code == 3 and [(p["array"], p["chunk"], p["videos"]) for p in problems] == [
        ("embeddings", 1, [4, 5, 6, 7])
    ]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("how", HOWS)
def test_every_reader_fails_in_one_line(clean, tmp_path, monkeypatch, capsys, how, reader):
    store = copy(clean["store"], tmp_path / "s.zarr")
    zs_store = copy(clean["zs"], tmp_path / "zs.zarr")
    damaged = zs_store if reader == "zeroshot" else store
    damage(damaged, how, chunk=0)
    args = reader_args(clean, store, zs_store, reader, tmp_path / "out")
    code, _, err = mote(monkeypatch, capsys, *args)
    lines = err.strip().splitlines()
    assert code == 3 and len(lines) == 1, err
    assert f"{damaged}: array 'embeddings' chunk 0" in lines[0] and "Traceback" not in err
    assert "--repair" in lines[0]


def test_nan_in_a_done_row_is_caught(clean, tmp_path, monkeypatch, capsys):
    store = copy(clean["store"], tmp_path / "s.zarr")
    emb = zarr.open_group(str(store), mode="r+")["embeddings"]
    block = emb[4:8]
    block[2, 0, 3, 5] = np.nan  # rewritten through zarr: the checksum is valid
    emb[4:8] = block
    code, _, err = mote(monkeypatch, capsys, "info", store, "--verify")
    assert code == 3 and "chunk 1 (videos 6) holds NaN or inf in done videos" in err
    code, _, err = mote(
        monkeypatch, capsys, "evaluate", "--run", clean["run"], "--store", store, "--device", "cpu"
    )
    assert code == 3 and "NaN or inf in done video 6" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("reader", READERS)
def test_a_deleted_labels_chunk_is_damage_for_every_reader(
    clean, tmp_path, monkeypatch, capsys, reader
):
    """Labels are written when the store is created; a deleted chunk read as the fill value
    would give every video of the chunk class 0 (zero-shot scored it silently, issue 16)."""
    store = copy(clean["store"], tmp_path / "s.zarr")
    zs_store = copy(clean["zs"], tmp_path / "zs.zarr")
    damaged = zs_store if reader == "zeroshot" else store
    damage(damaged, "delete", array="labels", chunk=0)
    args = reader_args(clean, store, zs_store, reader, tmp_path / "out")
    code, _, err = mote(monkeypatch, capsys, *args)
    lines = err.strip().splitlines()
    assert code == 3 and len(lines) == 1, err
    assert f"{damaged}: array 'labels' chunk 0 (videos 0.." in lines[0]
    assert "is missing" in lines[0] and "--repair" in lines[0]


@pytest.mark.parametrize(("array", "chunk"), [("labels", 0), ("video_ids", 2)])
def test_repair_rewrites_labels_and_ids_from_the_video_list(
    clean, tmp_path, tiny_extract, monkeypatch, capsys, array, chunk
):
    store = copy(clean["store"], tmp_path / "s.zarr")
    damage(store, "delete", array=array, chunk=chunk)
    code, out, err = mote(monkeypatch, capsys, "info", store, "--verify")
    assert code == 3 and f"array '{array}' chunk {chunk}" in err and "--repair" in out
    summary = extract.run(tiny_extract(clean["data"], store, chunk_videos=CHUNK, repair=True))
    assert summary["repaired"]["rewritten"] == [
        f"{array} chunk {chunk} (videos {CHUNK * chunk}..{CHUNK * chunk + CHUNK - 1})"
    ]
    assert summary["repaired"]["videos"] == 0  # the features were never damaged
    assert tree(store) == tree(clean["store"])


def test_repair_rewrites_a_damaged_text_bank(clean, tmp_path, tiny_extract):
    store = copy(clean["store"], tmp_path / "s.zarr")
    damage(store, "flip", array="text_embeddings", chunk=0)
    summary = extract.run(tiny_extract(clean["data"], store, chunk_videos=CHUNK, repair=True))
    assert summary["repaired"]["rewritten"] == ["text_embeddings"]
    assert tree(store) == tree(clean["store"])  # the same CLIP text tower on the same device


def test_repair_refuses_a_list_of_another_length(clean, tmp_path, tiny_extract):
    store = copy(clean["store"], tmp_path / "s.zarr")
    damage(store, "delete", array="labels", chunk=0)
    with pytest.raises(StoreMismatch, match="a list of 12 videos: the store holds 16"):
        extract.run(tiny_extract(clean["data"], store, chunk_videos=CHUNK, repair=True, limit=12))


def test_repair_restores_a_byte_identical_store(clean, tmp_path, tiny_extract, monkeypatch, capsys):
    store = copy(clean["store"], tmp_path / "s.zarr")
    damage(store, "delete", "embeddings", 0)
    damage(store, "truncate", "frame_indices", 1)
    damage(store, "flip", "embeddings", 3)
    emb = zarr.open_group(str(store), mode="r+")["embeddings"]
    block = emb[8:12]
    block[1] = np.inf  # a row-level fault in a chunk that decodes
    emb[8:12] = block
    assert tree(store) != tree(clean["store"])
    summary = extract.run(tiny_extract(clean["data"], store, chunk_videos=CHUNK, repair=True))
    assert summary["repaired"]["videos"] == 4 + 4 + 1 + 4
    assert summary["newly_done"] == 13
    assert tree(store) == tree(clean["store"])
    code, out, _ = mote(monkeypatch, capsys, "info", store, "--verify")
    assert code == 0 and "no damage found" in out


def test_verify_sample_reencodes_and_catches_consistent_alterations(
    clean, tmp_path, monkeypatch, capsys
):
    root = clean["data"].root
    code, out, err = mote(
        monkeypatch,
        capsys,
        "info",
        clean["store"],
        "--verify",
        "--sample",
        "3",
        "--root",
        root,
        "--device",
        "cpu",
        "--json",
    )
    checked = json.loads(out)["verify"]
    assert code == 0 and checked["ok"] and len(checked["sampled"]) == 3
    store = copy(clean["store"], tmp_path / "s.zarr")
    emb = zarr.open_group(str(store), mode="r+")["embeddings"]
    emb[0:4] = emb[0:4][::-1]  # videos swapped: valid checksums, finite, non-zero, wrong
    code, out, _ = mote(monkeypatch, capsys, "info", store, "--verify")
    assert code == 0  # well-formed, so only re-encoding can tell
    code, out, err = mote(
        monkeypatch,
        capsys,
        "info",
        store,
        "--verify",
        "--sample",
        "16",
        "--root",
        root,
        "--device",
        "cpu",
    )
    assert code == 3
    lines = err.strip().splitlines()
    assert len(lines) == 4 and all("differs from a fresh encoding" in line for line in lines)
    code, _, err = mote(monkeypatch, capsys, "info", store, "--verify", "--sample", "2")
    assert code == 2 and "needs --root" in err


def test_a_store_with_pending_videos_is_refused_unless_allow_partial(clean, tmp_path):
    store = copy(clean["store"], tmp_path / "s.zarr")
    FeatureStore.open(store, writable=True).mark_pending([0, 1, 2])
    cfg = train_temporal.TrainConfig(
        train=store,
        out=tmp_path / "run",
        layers=1,
        epochs=1,
        warmup_epochs=0,
        batch_size=8,
        micro_batches=1,
        device="cpu",
    )
    with pytest.raises(ConfigError, match="3 of 16 videos are still pending.*--allow-partial"):
        train_temporal.run(cfg)
    assert not (tmp_path / "run").exists()
    metrics = train_temporal.run(replace(cfg, allow_partial=True))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train_videos"]["done"] == 13 and metrics is not None


@pytest.mark.parametrize("reader", READERS)
def test_a_deleted_status_chunk_is_damage_for_every_reader(
    clean, tmp_path, monkeypatch, capsys, reader
):
    """Every status chunk is written at creation and kept, so a missing one is damage: before,
    its done videos read as pending and readers scored the rest silently (issue 16)."""
    store = copy(clean["store"], tmp_path / "s.zarr")
    zs_store = copy(clean["zs"], tmp_path / "zs.zarr")
    damaged = zs_store if reader == "zeroshot" else store
    damage(damaged, "delete", array="status", chunk=0)
    args = reader_args(clean, store, zs_store, reader, tmp_path / "out")
    code, _, err = mote(monkeypatch, capsys, *args)
    lines = err.strip().splitlines()
    assert code == 3 and len(lines) == 1, err
    assert f"{damaged}: array 'status' chunk 0 (videos 0.." in lines[0]
    assert "is missing" in lines[0] and "--repair" in lines[0]


def test_verify_and_repair_restore_a_deleted_status_chunk(
    clean, tmp_path, tiny_extract, monkeypatch, capsys
):
    store = copy(clean["store"], tmp_path / "s.zarr")
    damage(store, "delete", array="status", chunk=2)
    code, _, err = mote(monkeypatch, capsys, "info", store, "--verify")
    assert code == 3 and "array 'status' chunk 2 (videos 8, 9, 10, 11) is missing" in err
    summary = extract.run(tiny_extract(clean["data"], store, chunk_videos=CHUNK, repair=True))
    assert summary["repaired"]["videos"] == 4 and summary["newly_done"] == 4
    assert tree(store) == tree(clean["store"])


def test_repair_without_model_flags_uses_the_store_s_model(clean, tmp_path, tiny_extract):
    """The store records its CLIP: a repair (or a resume) needs no --model / --pretrained
    (the default, ViT-B-16 with OpenAI weights, is not there to load offline)."""
    store = copy(clean["store"], tmp_path / "s.zarr")
    damage(store, "delete", "embeddings", 1)
    cfg = tiny_extract(clean["data"], store, chunk_videos=CHUNK, repair=True)
    summary = extract.run(replace(cfg, model=None, pretrained=None))
    assert summary["repaired"]["videos"] == CHUNK and summary["model"] == "mote-tiny"
    assert tree(store) == tree(clean["store"])


def test_verify_reports_a_deleted_array_metadata_file(
    clean, tmp_path, tiny_extract, monkeypatch, capsys
):
    """Readers use the copy in the root zarr.json, so a deleted per-array zarr.json reads fine;
    info --verify still names it (issue 16), and a repair writes it back."""
    store = copy(clean["store"], tmp_path / "s.zarr")
    (store / "embeddings" / "zarr.json").unlink()
    code, _, err = mote(monkeypatch, capsys, "info", store, "--verify")
    assert code == 3 and "array 'embeddings' has no zarr.json of its own" in err
    summary = extract.run(tiny_extract(clean["data"], store, chunk_videos=CHUNK, repair=True))
    assert summary["repaired"]["videos"] == 0
    assert tree(store) == tree(clean["store"])
