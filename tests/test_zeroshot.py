"""`mote zeroshot`: split selection on real stores, protocol checks, TFM, summary arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import random_store

from mote.cache_schema.feature_store import FeatureStore
from mote.cache_schema.store_errors import StoreMismatch
from mote.pipeline.data.datasets import load_dataset
from mote.pipeline.errors import ConfigError
from mote.pipeline.runs.run_files import write_json
from mote.pipeline.runs.run_folder import save_model
from mote.pipeline.temporal.evaluation import score
from mote.pipeline.temporal.metrics import harmonic_mean, mean_std, tradeoff
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.temporal.temporal_config import default_config
from mote.pipeline.temporal.zeroshot_splits import StoreIndex
from mote.stages import zeroshot

D = 64


def make_store(path, dataset, items, views=(3, 1), model="mote-tiny", seed=0) -> FeatureStore:
    """A real store of random features for these annotation items, every video done."""
    ids, labels = [i.video_id for i in items], [i.label for i in items]
    return random_store(
        path, ids, labels, dataset.class_names, dim=D, views=views, model=model,
        dataset=dataset.name, split=dataset.split, seed=seed,
    )  # fmt: skip


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    run = tmp_path_factory.mktemp("zs") / "run"
    run.mkdir()
    torch.manual_seed(0)
    model = MoTE(default_config(D, layers=2))
    model.set_finetune_text(torch.randn(400, D))
    save_model(run / "model.safetensors", model)
    write_json(
        run / "config.json",
        {"arch": "mote", "clip": {"model": "mote-tiny", "weights_id": "random:seed=0", "dim": D}},
    )
    write_json(run / "metrics.json", {"top1": 80.0, "top5": 95.0})
    return run


def subset(dataset, per_split: int):
    """The first ``per_split`` videos of each protocol split, as items of the union."""
    wanted = set()
    for name in (
        ("test1", "test2", "test3") if dataset.name != "k600" else ("split1", "split2", "split3")
    ):
        wanted |= {i.video_id for i in load_dataset(dataset.name, name).items[:per_split]}
    return [item for item in dataset.items if item.video_id in wanted]


def test_union_store_selects_each_ucf_split_in_list_order(tmp_path):
    union = load_dataset("ucf101", "all")
    items = subset(union, 20)
    index = StoreIndex([make_store(tmp_path / "ucf.zarr", union, items)])
    held = {i.video_id for i in items}
    for split in ("test1", "test2", "test3"):
        spec = load_dataset("ucf101", split)
        data = index.select(spec)
        expected = [i for i in spec.items if i.video_id in held]
        assert data.video_ids == [i.video_id for i in expected]
        assert data.labels.tolist() == [i.label for i in expected]
        assert len(data.missing) == len(spec.items) - len(expected)
        assert data.text.shape == (101, D)


def test_k600_splits_take_their_own_160_classes_from_a_union_store(tmp_path):
    union = load_dataset("k600", "all")
    assert len(union.class_names) == 217
    store = make_store(tmp_path / "k600.zarr", union, subset(union, 10))
    index = StoreIndex([store])
    bank = np.asarray(store.text_embeddings)
    for split in ("split1", "split2", "split3"):
        spec = load_dataset("k600", split)
        data = index.select(spec)
        assert len(data.class_names) == 160
        rows = [union.class_names.index(name) for name in spec.class_names]
        np.testing.assert_array_equal(data.text.numpy(), bank[rows])
        names = [spec.class_names[label] for label in data.labels]
        union_names = {i.video_id: union.class_names[i.label] for i in union.items}
        assert names == [union_names[v] for v in data.video_ids]


def test_summary_arithmetic_matches_the_paper():
    """Spec 8.4's worked rows (ViT-L/14, ViT-B/16 1x1 and 4x3, Text4Vis, ViFi-CLIP)."""
    rows = [  # close-set top-1, (UCF, HMDB, K600), HM ZS, trade-off as the paper prints it
        (86.8, (88.7, 61.4, 78.4), 74.41, 80.1),
        (81.8, (83.4, 55.8, 70.2), 67.94, 74.2),
        (83.0, (83.4, 55.8, 70.2), 67.94, 74.7),
        (86.7, (82.6, 52.4, 72.1), 66.58, 75.3),
        (83.9, (76.8, 51.3, 71.2), 64.43, 72.9),
    ]
    for k400, zero_shot, hm, trade in rows:
        assert round(harmonic_mean(zero_shot), 2) == hm
        assert round(tradeoff(k400, harmonic_mean(zero_shot)), 1) == trade
    mean, std = mean_std([88.0, 89.0, 89.1])
    assert mean == pytest.approx(88.7) and std == pytest.approx(0.4967, abs=1e-4)


def test_stage_writes_splits_then_hm_and_tradeoff(tmp_path, run_folder):
    stores = {}
    for name in ("ucf101", "hmdb51"):
        union = load_dataset(name, "all")
        stores[name] = make_store(tmp_path / f"{name}.zarr", union, subset(union, 8))
    first = zeroshot.run(
        zeroshot.ZeroShotConfig(
            run=run_folder, dataset="ucf101", stores=(tmp_path / "ucf101.zarr",), device="cpu"
        )
    )
    assert [s["split"] for s in first["splits"]] == ["test1", "test2", "test3"]
    assert all({"split", "top1", "top5", "n_videos"} <= set(s) for s in first["splits"])
    assert first["top1_mean"] == pytest.approx(np.mean([s["top1"] for s in first["splits"]]))
    assert first.get("zs_hm") is None
    second = zeroshot.run(
        zeroshot.ZeroShotConfig(
            run=run_folder, dataset="hmdb51", stores=(tmp_path / "hmdb51.zarr",), device="cpu"
        )
    )
    hm = harmonic_mean([first["top1_mean"], second["top1_mean"]])
    assert second["zs_hm"] == pytest.approx(hm)
    assert second["tradeoff"] == pytest.approx(tradeoff(80.0, hm))
    saved = json.loads((run_folder / "zeroshot_summary.json").read_text())
    assert saved["datasets"].keys() == {"ucf101", "hmdb51"} and not saved["complete"]


def test_cli_prints_the_table(tmp_path, run_folder):
    union = load_dataset("hmdb51", "all")
    make_store(tmp_path / "h.zarr", union, subset(union, 4))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mote.stages.cli",
            "zeroshot",
            "--run",
            str(run_folder),
            "--dataset",
            "hmdb51",
            "--store",
            str(tmp_path / "h.zarr"),
            "--device",
            "cpu",
            "--split",
            "test2",
            "--no-tfm",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "test2" in result.stdout and "mean +- std" in result.stdout


def test_protocol_and_model_mismatches_are_refused(tmp_path, run_folder):
    union = load_dataset("ucf101", "all")
    make_store(tmp_path / "one_view.zarr", union, subset(union, 4), views=(1, 1))
    cfg = zeroshot.ZeroShotConfig(
        run=run_folder,
        dataset="ucf101",
        stores=(tmp_path / "one_view.zarr",),
        device="cpu",
        save=False,
    )
    with pytest.raises(ConfigError, match="3x1"):
        zeroshot.run(cfg)
    allowed = zeroshot.run(
        zeroshot.ZeroShotConfig(**{**cfg.__dict__, "allow_protocol_mismatch": True})
    )
    assert allowed["views"] == "1x1"
    make_store(tmp_path / "other.zarr", union, subset(union, 4), model="ViT-B-16")
    with pytest.raises(StoreMismatch, match="ViT-B-16"):
        zeroshot.run(
            zeroshot.ZeroShotConfig(
                run=run_folder, dataset="ucf101", stores=(tmp_path / "other.zarr",), device="cpu"
            )
        )


def test_tfm_only_scales_the_temporal_stream():
    torch.manual_seed(0)
    model = MoTE(default_config(D, layers=2)).eval()
    bank = torch.nn.functional.normalize(torch.randn(10, D), dim=-1)
    model.set_finetune_text(bank)
    features = np.random.default_rng(0).standard_normal((6, 3, 8, D)).astype(np.float16)
    labels, ids = np.zeros(6, np.int64), [f"v{i}" for i in range(6)]
    same = score(model, features, labels, ids, bank, tfm=True)
    off = score(model, features, labels, ids, bank, tfm=False)
    assert torch.allclose(same.rho, torch.ones_like(same.rho), atol=1e-5)  # Y_test = Y_ft
    assert torch.allclose(same.fused, off.fused, atol=1e-5)
    unrelated = torch.nn.functional.normalize(torch.randn(7, D), dim=-1)
    on = score(model, features, labels, ids, unrelated, tfm=True)
    assert (on.rho < 1).all() and torch.equal(off.rho, torch.ones_like(off.rho))
    e = torch.from_numpy(features[:, 0]).float()
    s = model.forward_features(e, mode="merged", rho=0.0)  # rho -> 0: CLIP mean pooling
    assert torch.allclose(s, e, atol=1e-6)


def test_view_fusion_is_softmax_mean_softmax_of_raw_cosines():
    from mote.pipeline.temporal.metrics import fuse_views, topk_accuracy

    g = torch.Generator().manual_seed(0)
    cos = torch.rand(5, 3, 7, generator=g) * 2 - 1  # (videos, views, classes), raw cosines
    expected = torch.stack(
        [
            torch.softmax(torch.stack([torch.softmax(cos[n, v], 0) for v in range(3)]).mean(0), 0)
            for n in range(5)
        ]
    )
    torch.testing.assert_close(fuse_views(cos), expected)
    # not the same as averaging logits scaled by 100: the reference fuses nearly flat softmaxes
    scaled = torch.softmax(100 * cos, dim=-1).mean(dim=1)
    assert not torch.allclose(fuse_views(cos), scaled)
    labels = fuse_views(cos).argmax(dim=1)
    assert topk_accuracy(fuse_views(cos), labels)["top1"] == 100.0
    wrong = (labels + 1) % 7
    assert topk_accuracy(fuse_views(cos), wrong, ks=(1, 7)) == {"top1": 0.0, "top7": 100.0}
