"""The way out a divergence names works: ``--resume`` with a lower ``--lr`` (or ``--precision
fp32``) continues from the last good epoch, and the run records the change in config.json and
history.jsonl; other setting changes stay refused. fewshot has the same guard (issue 26)."""

from __future__ import annotations

import json

import pytest
from helpers import random_store
from test_faults_exit_codes import CLASSES, DIVERGED, USAGE, mote, one_line, train


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("diverge") / "s.zarr"
    random_store(path, [f"v{i}" for i in range(32)], [i % 4 for i in range(32)], CLASSES)
    return path


def history(run) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def test_a_run_diverged_at_once_resumes_with_a_lower_lr(store, tmp_path):
    run = tmp_path / "run"
    diverged = train(store, run, "--lr", "1e30")
    assert diverged.returncode == DIVERGED and "then --resume" in one_line(diverged)
    resumed = train(store, run, "--lr", "1e-4", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    lines = history(run)
    assert [line["epoch"] for line in lines] == [1, 2]
    assert lines[0]["changed_on_resume"] == {"lr": [1e30, 1e-4]}
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["lr"] == 1e-4
    assert config["changed_on_resume"] == [{"after_epoch": 0, "lr": [1e30, 1e-4]}]


def test_resume_continues_from_the_last_good_epoch_with_new_settings(store, tmp_path):
    run = tmp_path / "run"
    common = ("--epochs", 3, "--warmup-epochs", 0)
    first = train(store, run, *common, "--lr", "1e-4", "--stop-after-epochs", 1)
    assert first.returncode == 0, first.stderr
    diverged = train(store, run, *common, "--lr", "1e30", "--resume")
    assert diverged.returncode == DIVERGED and "epoch 2" in one_line(diverged)
    assert [line["epoch"] for line in history(run)] == [1]  # the last good epoch is kept
    refused = train(store, run, *common, "--lr", "1e-4", "--resume", "--seed", 7)
    assert refused.returncode == USAGE
    assert "seed: 0 in the run, 7 now" in one_line(refused)
    assert "only --lr, --precision may change" in one_line(refused)
    resumed = train(store, run, *common, "--lr", "2e-4", "--precision", "fp32", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    lines = history(run)
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert lines[1]["changed_on_resume"] == {"lr": [1e30, 2e-4], "precision": ["auto", "fp32"]}
    assert lines[1]["lr"] == pytest.approx(2e-4 * 0.75)  # cosine at epoch 1.0 of 3, new base
    assert "changed_on_resume" not in lines[0] and "changed_on_resume" not in lines[2]
    config = json.loads((run / "config.json").read_text())
    assert config["changed_on_resume"] == [
        {"after_epoch": 1, "lr": [1e-4, 1e30]},
        {"after_epoch": 1, "lr": [1e30, 2e-4], "precision": ["auto", "fp32"]},
    ]


def test_fewshot_stops_a_diverged_run_with_exit_5(store, tmp_path):
    args = ("fewshot", "--train", store, "--test", store, "--out", tmp_path / "fs", "--shots", 2)
    common = (*args, "--seeds", 0, "--epochs", 2, "--device", "cpu")
    diverged = mote(*common, "--lr", "1e30")
    line = one_line(diverged)
    assert diverged.returncode == DIVERGED, diverged.stderr
    assert str(tmp_path / "fs" / "k2_seed0") in line and "rerun the same command" in line
    assert not (tmp_path / "fs" / "fewshot.json").exists()
    again = mote(*common, "--lr", "1e-3", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["shots"]["2"]["top1"]
