"""`mote train-temporal` and `mote evaluate` on stores written by a real `mote extract`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import comparable_weights, motion_split_stores
from safetensors.torch import load_file

from mote.cache_schema.feature_store import FeatureStore
from mote.pipeline.data.synthetic import write_motion_dataset
from mote.pipeline.errors import ConfigError
from mote.pipeline.runs.run_folder import RunFolder, load_run
from mote.pipeline.temporal.features import InMemoryFeatures, StreamingFeatures
from mote.stages import evaluate, extract, train_temporal


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_extract):
    """Train (2 random clips per video) and val (3 clips) stores of the motion videos."""
    data, train, val, _ = motion_split_stores(tmp_path_factory.mktemp("stage2"), 24)
    return train, val, len(data.class_names)


def config(stores, out, **overrides) -> train_temporal.TrainConfig:
    train, val, _ = stores
    settings = dict(
        train=train,
        val=val,
        out=out,
        layers=2,
        epochs=4,
        warmup_epochs=1,
        batch_size=32,
        micro_batches=2,
        lr=1e-3,
        clip_lr_ratio=1.0,
        device="cpu",
    )
    settings.update(overrides)
    return train_temporal.TrainConfig(**settings)


def test_mote_learns_direction_and_beats_mean_pooling(stores, tmp_path):
    _, _, classes = stores
    top1 = {}
    for arch in ("mote", "meanpool"):
        metrics = train_temporal.run(
            config(
                stores,
                tmp_path / arch,
                arch=arch,
                epochs=100,
                warmup_epochs=5,
                batch_size=8,
                micro_batches=1,
            )
        )
        top1[arch] = metrics["top1"]
    chance = 100 / classes
    print(f"top-1: mote {top1['mote']:.1f}, meanpool {top1['meanpool']:.1f}, chance {chance:.1f}")
    # measured: mote ~50, meanpool 12.5 (= chance: random text tower, nothing to learn but
    # the logit scale); the left/right and up/down pairs need temporal order
    assert top1["mote"] >= top1["meanpool"] + 20
    assert top1["mote"] >= chance + 25


def test_run_folder_has_every_contract_file(stores, tmp_path):
    out = tmp_path / "run"
    metrics = train_temporal.run(config(stores, out))
    for name in ("model.safetensors", "config.json", "history.jsonl", "metrics.json", "curves.png"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["params_merged"] < cfg["params_train"]
    assert cfg["train"]["epochs"] == 4 and cfg["clip"]["model"] == "mote-tiny"
    # --precision auto as given, and what it resolved to on the CPU
    assert cfg["train"]["precision"] == "auto" and (cfg["precision"], cfg["amp"]) == ("fp32", False)
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert all(
        {"lr", "loss", "loss_ce", "loss_wmr", "loss_mse", "val_top1", "seconds"} <= set(h)
        for h in history
    )
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["top1"] == metrics["top1"] and saved["views"] == "3x1"
    # top-1/top-5 recomputed by hand from the per-video scores of the saved model
    evaluate.run(
        evaluate.EvaluateConfig(
            run=out, store=stores[1], device="cpu", save_predictions=tmp_path / "p.npz"
        )
    )
    predictions = np.load(tmp_path / "p.npz")
    ranked = np.argsort(-predictions["fused_scores"], axis=1, kind="stable")
    hits = ranked == predictions["labels"][:, None]
    assert saved["n_videos"] == len(FeatureStore.open(stores[1]).video_ids) == len(hits)
    assert saved["top1"] == pytest.approx(100 * hits[:, :1].any(axis=1).mean(), abs=1e-4)
    assert saved["top5"] == pytest.approx(100 * hits[:, :5].any(axis=1).mean(), abs=1e-4)


def test_config_json_records_the_precision_trained_in(stores, tmp_path):
    """The precision a run used, not only the one asked for: bf16 (CPU autocast) here."""
    train_temporal.run(config(stores, tmp_path / "bf16", epochs=1, precision="bf16"))
    cfg = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert (cfg["train"]["precision"], cfg["precision"], cfg["amp"]) == ("bf16", "bf16", True)


def test_two_cpu_runs_with_one_seed_are_identical(stores, tmp_path):
    train_temporal.run(config(stores, tmp_path / "a", epochs=2))
    train_temporal.run(config(stores, tmp_path / "b", epochs=2))
    a = load_file(tmp_path / "a" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_ends_with_the_same_weights(stores, tmp_path):
    whole = tmp_path / "whole"
    train_temporal.run(config(stores, whole))
    part = tmp_path / "part"
    stopped = train_temporal.run(config(stores, part, stop_after_epochs=2))
    assert stopped["stopped_after_epoch"] == 2
    with pytest.raises(ConfigError, match="--resume"):
        train_temporal.run(config(stores, part))
    train_temporal.run(config(stores, part, resume=True))
    a = load_file(whole / "model.safetensors")
    b = load_file(part / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (part / "history.jsonl").read_text().count("\n") == 4


def test_evaluate_reloads_the_run_and_matches_training(stores, tmp_path):
    out = tmp_path / "run"
    metrics = train_temporal.run(config(stores, out))
    predictions = tmp_path / "pred.safetensors"
    result = evaluate.run(
        evaluate.EvaluateConfig(
            run=out, store=stores[1], device="cpu", save_predictions=predictions
        )
    )
    assert result["top1"] == pytest.approx(metrics["top1"])
    assert result["views"] == "3x1" and result["same_classes_as_training"]
    saved = load_file(predictions)
    assert saved["view_logits"].shape[1] == 3
    assert saved["fused_scores"].shape == (result["n_videos"], stores[2])
    # reloading gives the same scores as the model that was trained
    again = evaluate.run(
        evaluate.EvaluateConfig(
            run=out, store=stores[1], device="cpu", save_predictions=tmp_path / "again.npz"
        )
    )
    np.testing.assert_array_equal(
        np.load(tmp_path / "again.npz")["fused_scores"], saved["fused_scores"].numpy()
    )
    assert again["top1"] == result["top1"]


def test_val_store_with_other_classes_is_refused(stores, tmp_path, tiny_extract):
    train, val, _ = stores
    other = tmp_path / "other"
    data = write_motion_dataset(
        other, classes=("circle moving left", "square moving up"), videos_per_class=2, seed=5
    )
    store = tmp_path / "other.zarr"
    extract.run(tiny_extract(data, store))
    with pytest.raises(ConfigError, match="classes differ"):
        train_temporal.run(config(stores, tmp_path / "run", val=store))


def test_streaming_yields_every_done_video_once_per_epoch(stores):
    store = FeatureStore.open(stores[0])
    memory = InMemoryFeatures(store)
    stream = StreamingFeatures(store, block_chunks=1)
    rng = np.random.default_rng(0)
    batches = list(stream.batches(7, rng))
    labels = np.concatenate([b[1] for b in batches])
    assert len(labels) == len(memory)
    assert sorted(labels.tolist()) == sorted(memory.labels.tolist())
    assert all(len(b[1]) == 7 for b in batches[:-1])
    # every streamed feature is one of the stored views of the video its label belongs to
    feats = np.concatenate([b[0] for b in batches]).astype(np.float32)
    stored = memory.embeddings.astype(np.float32)  # (N, V, T, D)
    seen = []
    for feat, label in zip(feats, labels, strict=True):
        owners = [
            i for i, views in enumerate(stored) if any(np.array_equal(feat, v) for v in views)
        ]
        assert len(owners) == 1 and memory.labels[owners[0]] == label
        seen.append(owners[0])
    assert sorted(seen) == list(range(len(memory)))


def test_meanpool_has_no_temporal_parameters(stores, tmp_path):
    out = tmp_path / "mp"
    train_temporal.run(config(stores, out, arch="meanpool", epochs=1))
    run = load_run(out)
    trainable = [n for n, p in run.model.named_parameters() if p.requires_grad]
    assert trainable == ["logit_scale"]
    assert [n for n, _ in run.model.named_parameters()] == ["logit_scale"]
    assert run.model.cfg.arch == "meanpool"
    e = torch.randn(2, 8, run.model.cfg.dim)
    assert torch.equal(run.model.forward_features(e), e)  # the frames pass through untouched


def test_empty_stores_and_bad_settings_are_refused_before_writing(stores, tmp_path):
    empty = tmp_path / "empty.zarr"
    base = FeatureStore.open(stores[1])
    FeatureStore.create(
        empty,
        base.spec,
        list(base.video_ids[:2]),
        list(base.labels[:2]),
        np.asarray(base.text_embeddings),
    )
    with pytest.raises(ConfigError, match="no video is done"):
        train_temporal.run(config(stores, tmp_path / "run", val=empty))
    assert not (tmp_path / "run").exists()
    train_temporal.run(config(stores, tmp_path / "ok", epochs=1))
    with pytest.raises(ConfigError, match="no video is done"):
        evaluate.run(evaluate.EvaluateConfig(run=tmp_path / "ok", store=empty, device="cpu"))
    with pytest.raises(ConfigError, match="--batch-size"):
        train_temporal.run(config(stores, tmp_path / "run", batch_size=-4))
    with pytest.raises(ConfigError, match="--epochs"):
        train_temporal.run(config(stores, tmp_path / "run", epochs=0))


def test_best_without_a_val_store_is_an_error(stores, tmp_path):
    out = tmp_path / "noval"
    train_temporal.run(config(stores, out, val=None, epochs=1))
    with pytest.raises(ConfigError, match="--best"):
        evaluate.run(evaluate.EvaluateConfig(run=out, store=stores[1], best=True, device="cpu"))


@pytest.mark.parametrize(
    "overrides",
    [{}, {"wmr": False}, {"arch": "transformer"}],
    ids=["mote-wmr", "mote-no-wmr", "transformer"],
)
def test_fused_step_trains_like_the_micro_batch_loop(stores, tmp_path, overrides):
    """The default (fused) step and --no-fused give the same run: losses per epoch and every
    weight after 2 epochs of 32-video steps in 2 micro-batches (fp32, CPU)."""
    runs = {}
    for fused in (True, False):
        out = tmp_path / f"fused-{fused}"
        runs[fused] = train_temporal.run(config(stores, out, epochs=2, fused=fused, **overrides))
        runs[fused]["weights"] = load_file(out / "model.safetensors")
        runs[fused]["history"] = RunFolder(out).read_history()
    fused, plain = runs[True], runs[False]
    for a, b in zip(fused["history"], plain["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["train_top1"] == pytest.approx(b["train_top1"], abs=1e-6)
    assert fused["weights"].keys() == plain["weights"].keys()
    a, b = comparable_weights(fused["weights"]), comparable_weights(plain["weights"])
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5, msg=key)
