"""Settings that can only be nonsense are refused when they are made, in one line with exit 2,
and no refusal repeats torch's advice to load a file with ``weights_only=False`` (issue 26)."""

from __future__ import annotations

import pickle

import pytest
import torch
from helpers import random_store
from test_faults_exit_codes import CLASSES, USAGE, mote, one_line, train

TORCH_ADVICE = ("weights_only", "Re-running", "will likely succeed")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("refused") / "s.zarr"
    random_store(path, [f"v{i}" for i in range(16)], [i % 4 for i in range(16)], CLASSES)
    return path


def not_torch_files(folder):
    """A plain pickle (torch's legacy format, refused by its safe reader), a text file and a
    zip archive cut short."""
    plain = folder / "plain.pt"
    plain.write_bytes(pickle.dumps({"state": [1, 2, 3]}, protocol=4))
    text = folder / "text.pt"
    text.write_text("hello, not weights\n")
    whole = folder / "whole.pt"
    torch.save({"w": torch.zeros(64)}, whole)
    cut = folder / "cut.pt"
    cut.write_bytes(whole.read_bytes()[:300])
    return [plain, text, cut]


def test_no_weights_refusal_repeats_torchs_unsafe_advice(motion_data, tmp_path):
    """Every kind of file through import-reference; the legacy pickle, the kind torch gives its
    advice for, through --pretrained too (both loaders share the refusal)."""
    files = not_torch_files(tmp_path)
    runs = [(path, ("import-reference", path, "--out", tmp_path / f"run-{path.stem}"))
            for path in files]  # fmt: skip
    runs.append((files[0], (
        "extract", "--dataset", "list", "--root", motion_data.root, "--list",
        motion_data.list_file, "--labels", motion_data.labels_file, "--model", "mote-tiny",
        "--pretrained", files[0], "--devices", "cpu", "--out", tmp_path / "plain.zarr",
    )))  # fmt: skip
    for path, command in runs:
        result = mote(*command)
        line = one_line(result)
        assert result.returncode == USAGE and str(path) in line, result.stderr
        assert result.stderr.strip() == line
        assert not any(words in result.stderr for words in TORCH_ADVICE), result.stderr


def test_a_negative_seed_is_refused_before_any_video_is_read(motion_data, tmp_path):
    out = tmp_path / "s.zarr"
    result = mote(
        "extract", "--dataset", "list", "--root", motion_data.root, "--list",
        motion_data.list_file, "--labels", motion_data.labels_file, "--model", "mote-tiny",
        "--pretrained", "none", "--devices", "cpu", "--out", out, "--seed", -1,
    )  # fmt: skip
    assert result.returncode == USAGE and one_line(result) == "error: --seed must be >= 0, got -1"
    assert not out.exists()


@pytest.mark.parametrize(
    "command",
    [
        ("train-temporal", "--train", "STORE", "--out", "OUT", "--seed", 2**32),
        ("finetune-e2e", "--dataset", "list", "--root", "OUT", "--out", "OUT", "--seed", -1),
        ("fewshot", "--train", "STORE", "--test", "STORE", "--out", "OUT", "--seeds", "0,-1"),
        ("demo", "--workdir", "OUT", "--seed", -1),
    ],
)
def test_every_commands_seed_is_bounded(store, tmp_path, command):
    args = [{"STORE": store, "OUT": tmp_path / "out"}.get(str(a), a) for a in command]
    result = mote(*args)
    assert result.returncode == USAGE, result.stderr
    assert "--seed" in one_line(result) and "got" in one_line(result)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "option,value,bound",
    [("--loss-weights", "1e30,1e30,1e30", "<= 10000"), ("--wmr-beta", "1e30", "<= 10000")],
)
def test_numbers_past_their_documented_bound_are_refused(store, tmp_path, option, value, bound):
    result = train(store, tmp_path / "run", option, value)
    assert result.returncode == USAGE
    assert one_line(result) == f"error: {option} must be {bound}, got 1e+30"
    assert not (tmp_path / "run").exists()
    documented = mote("train-temporal", "--help")
    assert "at most 10000" in documented.stdout or "0 to 10000" in documented.stdout
