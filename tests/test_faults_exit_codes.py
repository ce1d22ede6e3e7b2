"""Every command exits by one rule (stages/faults.py EXIT_CODES, the README's table): each code
is reached by a real process on real files, and each fault is one line on stderr."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import random_store

from mote.cache_schema.feature_store import FeatureStore
from mote.stages.faults import (
    BUG,
    DAMAGE,
    DIVERGED,
    EXIT_CODES,
    NO_RESULT,
    SYSTEM,
    USAGE,
    exit_code,
)

README = Path(__file__).resolve().parents[1] / "README.md"
CLASSES = ("a", "b", "c", "d")


def mote(
    *args: object, limit_bytes: int | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """The real ``mote`` entry point in a child process, optionally under a file-size limit
    and with ``env`` added to the environment."""

    def limit() -> None:
        if limit_bytes is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    command = [sys.executable, "-m", "mote.stages", *map(str, args)]
    return subprocess.run(
        command, capture_output=True, text=True, preexec_fn=limit, timeout=300,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def one_line(result: subprocess.CompletedProcess) -> str:
    """The one error line, the last on stderr (progress notes may come before it)."""
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("codes") / "s.zarr"
    random_store(path, [f"v{i}" for i in range(32)], [i % 4 for i in range(32)], CLASSES)
    return path


def train(
    store: Path, out: Path, *extra: object, limit_bytes: int | None = None
) -> subprocess.CompletedProcess:
    return mote(
        "train-temporal", "--train", store, "--out", out, "--device", "cpu", "--epochs", 2,
        "--batch-size", 8, "--warmup-epochs", 0, "--layers", 1, *extra, limit_bytes=limit_bytes,
    )  # fmt: skip


def test_the_readme_table_is_the_rule():
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", README.read_text(), flags=re.MULTILINE)
    assert {int(code): text for code, text in rows} == EXIT_CODES


def test_usage_errors_exit_2(store, tmp_path):
    missing = mote("evaluate", "--run", tmp_path / "no-run", "--store", store)
    assert missing.returncode == USAGE and str(tmp_path / "no-run") in one_line(missing)
    nan = train(store, tmp_path / "run", "--lr", "nan")
    assert nan.returncode == USAGE and "--lr" in one_line(nan)
    taken = tmp_path / "a-file"
    taken.write_text("not a folder")
    as_out = train(store, taken)
    assert as_out.returncode == USAGE and str(taken) in one_line(as_out)


def test_damage_exits_3(store, tmp_path):
    import shutil

    damaged = tmp_path / "s.zarr"
    shutil.copytree(store, damaged)
    FeatureStore.open(damaged).chunk_file("embeddings", 1).unlink()
    verify = mote("info", damaged, "--verify")
    assert verify.returncode == DAMAGE and "chunk 1" in verify.stderr
    reader = train(damaged, tmp_path / "run")
    assert reader.returncode == DAMAGE and "array 'embeddings' chunk 1" in one_line(reader)


def test_a_failed_write_exits_4_and_names_the_file(store, tmp_path):
    """A real kernel refusal: files of at most 64 kB (RLIMIT_FSIZE), so the model (hundreds of
    kB) fails with EFBIG when the first epoch is saved."""
    result = train(store, tmp_path / "run", limit_bytes=64 * 1024)
    line = one_line(result)
    assert result.returncode == SYSTEM, result.stderr
    assert str(tmp_path / "run") in line and "ulimit -f" in line


def test_a_diverging_run_exits_5_and_keeps_no_bad_weights(store, tmp_path):
    result = train(store, tmp_path / "run", "--lr", "1e30")
    line = one_line(result)
    assert result.returncode == DIVERGED, result.stderr
    assert "NaN or infinite" in line and "--lr" in line
    assert not (tmp_path / "run" / "model.safetensors").exists()  # no epoch was good


def test_anything_else_is_a_bug_with_the_way_to_report_it():
    assert exit_code(RuntimeError("boom")) == BUG
    assert exit_code(OSError(28, "No space left on device", "/x")) == SYSTEM
    assert exit_code(FileNotFoundError(2, "No such file or directory", "/x")) == USAGE


def test_dask_logs_stay_out_of_the_output(motion_data, tmp_path):
    """``--dask local:2`` prints mote's lines only: no ``INFO:distributed...`` from the
    scheduler, nannies or workers."""
    result = mote(
        "extract", "--dataset", "list", "--root", motion_data.root, "--list",
        motion_data.list_file, "--labels", motion_data.labels_file, "--model", "mote-tiny",
        "--pretrained", "none", "--devices", "cpu", "--out", tmp_path / "s.zarr",
        "--chunk-videos", 8, "--dask", "local:2", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "distributed" not in result.stderr and "INFO" not in result.stderr, result.stderr
    assert "distributed" not in result.stdout


def test_failed_videos_exit_0_unless_every_one_failed_or_strict(mixed_folder, tmp_path):
    """One rule for extract (and predict): broken videos are recorded and listed; the exit
    code is 1 only when no video gave a result, or with --strict when any failed."""
    args = (
        "extract", "--dataset", "list", "--root", mixed_folder.root, "--list",
        mixed_folder.list_file, "--labels", mixed_folder.labels_file, "--model", "mote-tiny",
        "--pretrained", "none", "--devices", "cpu", "--decode-workers", 0, "--json",
    )  # fmt: skip
    lenient = mote(*args, "--out", tmp_path / "a.zarr")
    assert lenient.returncode == 0, lenient.stderr
    strict = mote(*args, "--out", tmp_path / "b.zarr", "--strict")
    assert strict.returncode == NO_RESULT, strict.stderr
    assert json.loads(strict.stdout)["n_failed"] == len(mixed_folder.broken)
