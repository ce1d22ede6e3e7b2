"""bench/gpu_check.sh, the one script a lent GPU runs, on the CPU with tiny sizes: every step
(both extract paths, epochs, the sync probe, launches per rank, finetune-e2e, predict, exact
search, the compiled step) must run and report, so the script cannot rot between GPU loans."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = (
    "environment",
    "extract_devices",
    "extract_dask",
    "train_b16",
    "train_l14",
    "sync",
    "scaling",
    "finetune_e2e",
    "predict",
    "search",
    "graphed",
)


@pytest.mark.slow
def test_gpu_check_runs_every_step_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--device", "cpu", "--tiny"]
        + ["--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=ROOT,
    )
    table = (tmp_path / "summary.txt").read_text()
    assert done.returncode == 0, table + done.stderr[-3000:]
    rows = {line.split()[0]: line for line in table.splitlines()[1:-1]}
    assert tuple(rows) == STEPS  # in order: the compiled step last
    assert all(row.split()[1] == "ok" for row in rows.values()), table
    assert "0 waits in steps" in rows["sync"] and "0 breaks" in rows["graphed"]
    assert "cpu,cpu" in rows["extract_devices"] and "video(s)" in rows["predict"]
    assert f"{len(STEPS)} of {len(STEPS)} steps ok" in table
