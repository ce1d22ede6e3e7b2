"""`mote fewshot`: K videos per class, runs trained from scratch, single-view evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mote.cache_schema.feature_store import FeatureStore
from mote.pipeline.data.synthetic import write_motion_dataset
from mote.pipeline.errors import ConfigError
from mote.pipeline.runs.run_folder import load_run
from mote.stages import demo, extract, fewshot, train_temporal


def test_sample_shots_draws_k_per_class_from_done_videos():
    labels = np.repeat(np.arange(4), 6)
    done = np.ones(24, bool)
    done[[0, 1, 2]] = False  # three videos of class 0 failed
    rows = fewshot.sample_shots(labels, done, shots=3, seed=0)
    assert np.bincount(labels[rows]).tolist() == [3, 3, 3, 3]
    assert done[rows].all()
    assert rows.tolist() == fewshot.sample_shots(labels, done, 3, 0).tolist()
    assert rows.tolist() != fewshot.sample_shots(labels, done, 3, 1).tolist()
    with pytest.raises(ConfigError, match="fewer than 4 shots"):
        fewshot.sample_shots(labels, done, shots=4, seed=0)


def test_fewshot_runs_every_k_and_seed(tmp_path, tiny_extract):
    data = write_motion_dataset(tmp_path / "v", videos_per_class=6, seed=2)
    train_list, test_list = demo.split_list(data.list_file, every=3)
    extract.run(tiny_extract(data, tmp_path / "train.zarr", list_file=train_list))
    # 2 clips x 3 crops: the single evaluated view, the first clip's centre crop, is view 2
    extract.run(tiny_extract(data, tmp_path / "test.zarr", list_file=test_list, views="2x3"))
    base = train_temporal.TrainConfig(
        train=tmp_path / "train.zarr",
        out=tmp_path,
        layers=1,
        batch_size=16,
        micro_batches=1,
        lr=1e-3,
        warmup_epochs=1,
    )
    result = fewshot.run(
        fewshot.FewShotConfig(
            train=tmp_path / "train.zarr",
            test=tmp_path / "test.zarr",
            out=tmp_path / "fs",
            shots=(1, 2),
            seeds=(0, 1),
            epochs=2,
            device="cpu",
            training=base,
        )
    )
    assert set(result["shots"]) == {"1", "2"}
    assert all(len(row["top1"]) == 2 for row in result["shots"].values())
    config = json.loads((tmp_path / "fs" / "k2_seed1" / "config.json").read_text())
    assert len(config["train"]["videos"]) == 2 * 8  # 2 shots x 8 classes
    assert config["train"]["epoch_size"] == 32  # repeated to the full training set
    history = (tmp_path / "fs" / "k2_seed1" / "history.jsonl").read_text().splitlines()
    assert json.loads(history[0])["videos"] == 32

    # every score recomputed by hand: each run's model on view 2 alone, top-1 of the cosines
    test_store = FeatureStore.open(tmp_path / "test.zarr")
    _, embeddings, labels = test_store.read_done()
    assert result["n_test_videos"] == len(labels) == 16
    text = torch.from_numpy(np.array(test_store.text_embeddings))
    text = torch.nn.functional.normalize(text, dim=-1)
    centre = torch.from_numpy(np.array(embeddings[:, 2])).float()  # (N, T, D)
    for shots, row in result["shots"].items():
        for seed, top1 in zip(row["seeds"], row["top1"], strict=True):
            model = load_run(tmp_path / "fs" / f"k{shots}_seed{seed}").model.eval()
            with torch.no_grad():
                logits, _ = model.predict(centre, text.float(), tfm=False)
            by_hand = 100 * (logits.argmax(dim=1).numpy() == labels).mean()
            assert top1 == pytest.approx(by_hand, abs=1e-4)
        assert row["top1_mean"] == pytest.approx(np.mean(row["top1"]))
    assert (tmp_path / "fs" / "fewshot.json").is_file()


def test_fewshot_cli_passes_training_switches_to_its_runs(tmp_path, tiny_extract):
    """Any train-temporal flag given to `mote fewshot` reaches every run's training config."""
    from typer.testing import CliRunner

    from mote.stages.cli import app

    data = write_motion_dataset(tmp_path / "v", videos_per_class=3, seed=2)
    extract.run(tiny_extract(data, tmp_path / "s.zarr"))
    store = str(tmp_path / "s.zarr")
    args = ["fewshot", "--train", store, "--test", store, "--out", str(tmp_path / "fs")]
    args += ["--shots", "1", "--seeds", "0", "--epochs", "1", "--device", "cpu", "--json"]
    args += ["--layers", "1", "--experts", "2", "--no-wmr", "--batch-size", "8"]
    args += ["--micro-batches", "1", "--warmup-epochs", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.output.splitlines()[-1])["shots"]) == {"1"}
    config = json.loads((tmp_path / "fs" / "k1_seed0" / "config.json").read_text())["train"]
    switches = (config["experts"], config["wmr"], config["layers"], config["epochs"])
    assert switches == (2, False, 1, 1)
