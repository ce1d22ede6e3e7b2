"""bench/gpu_check.sh, the one script a lent GPU runs, on the CPU with tiny sizes: the same steps
and the same deadline logic, so the script cannot rot between GPU loans. Every planned step must
have a row with a status, also when the deadline cuts a step or leaves none for the rest, and the
output folder (copied back from the GPU machine, with limits) must hold only the small files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = (
    "environment",
    "extract_devices",
    "extract_dask",
    "staging",
    "decode",
    "extract_cpu_decode",
    "extract_gpu_decode",
    "train_b16",
    "train_l14",
    "sync",
    "scaling",
    "finetune_e2e",
    "predict",
    "search",
    "profile",
    "graphed",
    "graphed_ddp",
)
OUT_FILES = {"summary.md", "summary.json", "logs.txt"}


def gpu_check(tmp_path: Path, *options: str) -> tuple[subprocess.CompletedProcess, dict, float]:
    """Run the CPU twin; its return, its table's rows by step name and its wall seconds."""
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("OUT", None)
    out = tmp_path / "out"
    command = ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--device", "cpu", "--tiny"]
    start = time.monotonic()
    done = subprocess.run(
        [*command, "--out", str(out), *options],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=ROOT,
    )
    seconds = time.monotonic() - start
    table = (out / "summary.md").read_text()
    assert table in done.stdout  # the table is printed too
    rows = {}
    for line in table.splitlines()[2:]:
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = {"status": cells[1], "s": int(cells[2]), "figures": cells[4]}
    assert tuple(rows) == STEPS, table  # every planned step has a row, in order
    assert all(r["status"] for r in rows.values()), table
    names = {f.name for f in out.iterdir()}
    assert names <= OUT_FILES and all(f.stat().st_size < 1_000_000 for f in out.iterdir())
    return done, rows, seconds


def test_the_deadline_cuts_a_step_and_the_summary_still_comes(tmp_path):
    """A budget that leaves the first selected step a few seconds: it is cut (or, on a slow
    start, skipped), the selected steps after it are skipped for time, the others as not
    selected, and the whole table still comes back within the budget."""
    budget, selected = 24, ("environment", "extract_devices", "sync", "profile")
    done, rows, seconds = gpu_check(tmp_path, "--budget", str(budget), "--only", ",".join(selected))
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert rows["environment"]["status"] == "ok", rows["environment"]
    assert "python 3." in rows["environment"]["figures"], rows["environment"]
    left = budget - rows["environment"]["s"] - 15  # the script starts a step with >= 5 s left
    # tiny extract (videos written, two encoder processes booted) takes ~12 s on 2 quiet cores
    expected = "cut at deadline" if left >= 5 else "skipped: no time"
    assert rows["extract_devices"]["status"] == expected, rows
    assert {rows[name]["status"] for name in selected[2:]} == {"skipped: no time"}, rows
    others = {r["status"] for name, r in rows.items() if name not in selected}
    assert others == {"skipped: not selected"}, rows
    assert seconds < budget + 5  # the kill grace (timeout -k 10) is inside the reserve


@pytest.mark.slow
def test_gpu_check_runs_every_step_on_the_cpu(tmp_path):
    done, rows, _ = gpu_check(tmp_path, "--budget", "800")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert all(row["status"] == "ok" for row in rows.values()), rows
    assert "0 waits in steps" in rows["sync"]["figures"]
    assert "0 breaks" in rows["graphed"]["figures"]
    assert "cpu,cpu" in rows["extract_devices"]["figures"]
    assert "video(s)" in rows["predict"]["figures"]
    assert "mote" in rows["environment"]["figures"]
    assert "20 steps" in rows["profile"]["figures"] and "GPU n/a" in rows["profile"]["figures"]
    assert "W=2" in rows["graphed_ddp"]["figures"]  # the compiled step under torchrun, gloo
    assert "identical True" in rows["staging"]["figures"]
    assert "h264 vfr pyav: ok" in rows["decode"]["figures"]
    for name in ("extract_cpu_decode", "extract_gpu_decode"):  # the same videos both ways
        assert rows[name]["figures"].startswith(rows["extract_dask"]["figures"].split(",")[0])
