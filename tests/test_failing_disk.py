"""A read that the file system fails with EIO is a system fault (exit 4), not damage: no
``--repair`` is suggested and nothing is marked damaged (issue 26).

A real EIO without a failing disk: a chunk file replaced by a link to ``/proc/self/mem``,
which the kernel answers at offset 0 with ``OSError(EIO)``, as a dying disk answers a read."""

from __future__ import annotations

import errno
import os

import pytest
from helpers import random_store
from test_faults_exit_codes import CLASSES, SYSTEM, mote, one_line

from mote.cache_schema.feature_store import FeatureStore


def test_proc_self_mem_really_fails_with_eio():
    with open("/proc/self/mem", "rb") as memory, pytest.raises(OSError) as failed:
        memory.read(16)
    assert failed.value.errno == errno.EIO


def test_an_eio_chunk_is_exit_4_for_readers_and_verify(tmp_path):
    store = tmp_path / "s.zarr"
    random_store(store, [f"v{i}" for i in range(32)], [i % 4 for i in range(32)], CLASSES)
    chunk = FeatureStore.open(store).chunk_file("embeddings", 1)
    chunk.unlink()
    os.symlink("/proc/self/mem", chunk)
    for result in (
        mote("train-temporal", "--train", store, "--out", tmp_path / "run", "--device", "cpu"),
        mote("info", store, "--verify"),
    ):
        line = one_line(result)
        assert result.returncode == SYSTEM, result.stderr
        assert "input/output error" in line and str(store) in line
        assert "--repair" not in result.stderr and "damage" not in result.stderr.replace(
            "nothing was marked damaged", ""
        )
