"""Identical runs write identical files: safetensors writes its metadata in hash-map order,
different in every process, so mote sorts it (issue 26)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from helpers import random_store
from test_faults_exit_codes import CLASSES, train


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_identical_runs_write_byte_identical_weights(tmp_path):
    store = tmp_path / "s.zarr"
    random_store(store, [f"v{i}" for i in range(32)], [i % 4 for i in range(32)], CLASSES)
    first, second = (train(store, tmp_path / name, "--seed", 3) for name in ("a", "b"))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert digest(tmp_path / "a" / "model.safetensors") == digest(
        tmp_path / "b" / "model.safetensors"
    )
