"""Damaged run folders read as damage, never as fine (issue 16, item 6): real runs, real files
cut short or overwritten, the real ``mote`` entry point in a child process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import held_by_another_process, random_store

from mote.cache_schema.claim import StoreBusy
from mote.pipeline.runs.run_folder import BEST_FILE, MODEL_FILE, RunFolder
from mote.stages import train_temporal
from mote.stages.faults import DAMAGE

CLASSES = ("a", "b", "c", "d")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished two-epoch train-temporal run with best weights (it had a --val store)."""
    work = tmp_path_factory.mktemp("runs")
    ids, labels = [f"v{i}" for i in range(32)], [i % 4 for i in range(32)]
    random_store(work / "s.zarr", ids, labels, CLASSES)
    train_temporal.run(
        train_temporal.TrainConfig(
            train=work / "s.zarr",
            val=work / "s.zarr",
            out=work / "run",
            layers=1,
            epochs=2,
            warmup_epochs=0,
            batch_size=8,
            micro_batches=1,
            device="cpu",
        )  # fmt: skip
    )
    return work / "run"


def copy_run(trained: Path, tmp_path: Path) -> RunFolder:
    return RunFolder(shutil.copytree(trained, tmp_path / "run"))


def report(run: Path, out: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mote.stages", "report", str(run), "--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_an_undamaged_run_reports(trained, tmp_path):
    result = report(trained, tmp_path / "report")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report" / "report.md").is_file()


@pytest.mark.parametrize("name", [MODEL_FILE, BEST_FILE])
def test_report_refuses_weights_cut_short(trained, tmp_path, name):
    folder = copy_run(trained, tmp_path)
    weights = folder.path / name
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = report(folder.path, tmp_path / "report")
    line = error_line(result)
    assert result.returncode == DAMAGE and f"{weights}: damaged or cut short" in line
    assert not (tmp_path / "report" / "report.md").exists()


def test_report_refuses_a_garbage_history_line(trained, tmp_path):
    folder = copy_run(trained, tmp_path)
    lines = folder.history_file.read_text().splitlines(keepends=True)
    folder.history_file.write_text(lines[0] + "#!garbage{\n" + "".join(lines[1:]))
    result = report(folder.path, tmp_path / "report")
    line = error_line(result)
    assert result.returncode == DAMAGE
    assert f"{folder.history_file}: line 2 is not an epoch's record" in line


def test_a_last_history_line_cut_short_is_a_write_in_progress(trained, tmp_path):
    """A job killed while appending leaves a last line without its newline: the epochs before
    it read, and so does the report."""
    folder = copy_run(trained, tmp_path)
    with folder.history_file.open("a") as handle:
        handle.write('{"epoch": 3, "lo')
    assert [row["epoch"] for row in folder.read_history()] == [1, 2]
    assert report(folder.path, tmp_path / "report").returncode == 0


def test_import_reference_refuses_a_folder_another_process_writes(imported_run, tmp_path):
    from mote.stages import import_reference

    run, _, _ = imported_run
    settings = dict(ckpt=run.parent / "MoTE_tiny.pt", model="mote-tiny", pretrained="none")
    out = tmp_path / "run"
    with held_by_another_process(out) as pid:
        with pytest.raises(StoreBusy, match=rf"pid {pid}.* is writing this run"):
            import_reference.run(import_reference.ImportReferenceConfig(out=out, **settings))
        assert sorted(p.name for p in out.iterdir()) == [".mote-claim.json"]  # nothing written
    import_reference.run(import_reference.ImportReferenceConfig(out=out, **settings))
    assert RunFolder(out).is_run() and not (out / ".mote-claim.json").exists()


def test_fewshot_refuses_a_folder_another_process_writes(trained, tmp_path):
    """fewshot deletes the unfinished runs in its folder before redoing them: a second call on
    the same folder is refused before it touches them."""
    from mote.stages import fewshot

    store = trained.parent / "s.zarr"
    out = tmp_path / "fewshot"
    cfg = fewshot.FewShotConfig(
        train=store, test=store, out=out, shots=(1,), seeds=(0,), epochs=1, device="cpu"
    )
    with held_by_another_process(out) as pid:
        with pytest.raises(StoreBusy, match=rf"pid {pid}"):
            fewshot.run(cfg)
    assert not (out / "k1_seed0").exists()  # refused before any run


def test_hints_never_suggest_overwriting_a_store_or_writing_into_a_run(trained, tmp_path):
    """A store of another encoder: the fix is a new store, not --overwrite of this one (other
    runs may use it); `mote info RUN` says it is a run, not 'extract a store here'."""
    other = random_store(
        tmp_path / "other.zarr", ["v0", "v1"], [0, 1], CLASSES, model="ViT-B-16"
    ).path
    command = [sys.executable, "-m", "mote.stages", "evaluate", "--run", str(trained),
               "--store", str(other), "--device", "cpu"]  # fmt: skip
    evaluate = subprocess.run(command, capture_output=True, text=True, timeout=300)
    line = error_line(evaluate)
    assert evaluate.returncode == 2 and "--overwrite" not in line and "NEW.zarr" in line
    info = subprocess.run(
        [sys.executable, "-m", "mote.stages", "info", str(trained)], capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    line = error_line(info)
    assert info.returncode == 2 and "a run folder, not a feature store" in line
    assert f"mote report {trained}" in line and "--out" not in line.split("; ")[0]
