"""Pickled files are read without running code: a checkpoint that would run code on load is
refused in one line that names what it holds and the safe way out, never torch's advice to
turn ``weights_only`` off, and nothing in it runs (issue 16)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mote.pipeline.clip.build import build_clip
from mote.pipeline.errors import WeightsUnavailable


class Payload:
    """Unpickling this runs ``touch MARKER``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    """A file shaped like a reference checkpoint whose epoch field runs a command when read."""
    torch.save(
        {
            "epoch": Payload(marker),
            "model_state_dict": {"logit_scale": torch.tensor(4.6)},
            "fusion_model_state_dict": {},
        },
        path,
    )
    return path


def test_import_reference_refuses_a_pickle_that_runs_code(tmp_path):
    marker = tmp_path / "ran"
    ckpt = hostile_checkpoint(tmp_path / "MoTE_evil.pt", marker)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("MOTE_DEBUG", None)
    done = subprocess.run(
        [sys.executable, "-m", "mote.stages", "import-reference", str(ckpt)]
        + ["--out", str(tmp_path / "run"), "--model", "mote-tiny", "--pretrained", "none"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0 and len(lines) == 1, done.stderr  # no torch warnings either
    message = lines[0]
    assert str(ckpt) in message and "refused" in message and "posix.system" in message
    assert "safe_globals" in message and "weights_only=False" not in message
    assert not marker.exists()  # nothing in the file ran


def test_clip_weights_that_run_code_are_refused(tmp_path):
    marker = tmp_path / "ran"
    weights = tmp_path / "weights.pt"
    torch.save({"state_dict": {}, "hook": Payload(marker)}, weights)
    with pytest.raises(WeightsUnavailable) as caught:
        build_clip("mote-tiny", str(weights), device="cpu")
    message = str(caught.value)
    assert str(weights) in message and "refused" in message and "\n" not in message
    assert "weights_only=False" not in message and not marker.exists()
