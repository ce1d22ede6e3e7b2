"""Config files, CLI help and the README/CI test command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mote.pipeline.config import build_config
from mote.pipeline.errors import ConfigError
from mote.pipeline.video.sampling import parse_views
from mote.stages.extract import ExtractConfig

REPO = Path(__file__).resolve().parents[1]


def test_config_file_then_flags(tmp_path):
    file = tmp_path / "extract.yaml"
    file.write_text("dataset: ucf101\nout: /tmp/x.zarr\nframes: 16\ndecode-workers: 3\n")
    cfg = build_config(ExtractConfig, file, frames=4, root=None)
    assert (cfg.dataset, cfg.frames, cfg.decode_workers) == ("ucf101", 4, 3)
    assert cfg.out == Path("/tmp/x.zarr")
    assert cfg.resolved_views == "3x1" and cfg.resolved_split == "test1"


def test_toml_config_and_unknown_key(tmp_path):
    good = tmp_path / "c.toml"
    good.write_text('dataset = "k400"\nout = "s.zarr"\nviews = "4x3"\n')
    assert build_config(ExtractConfig, good).resolved_views == "4x3"
    bad = tmp_path / "bad.toml"
    bad.write_text('dataset = "k400"\nout = "s.zarr"\nfrmaes = 8\n')
    with pytest.raises(ConfigError, match="unknown option 'frmaes'.*frames"):
        build_config(ExtractConfig, bad)


def test_wrong_type_and_missing_required(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("dataset: k400\nout: s.zarr\nframes: eight\n")
    with pytest.raises(ConfigError, match="frames"):
        build_config(ExtractConfig, bad)
    with pytest.raises(ConfigError, match="--out"):
        build_config(ExtractConfig, None, dataset="k400")


@pytest.mark.parametrize("bad", ["4", "4x2", "0x1", "ax3"])
def test_bad_views(bad):
    with pytest.raises(ConfigError, match="views"):
        parse_views(bad)


def test_help_lists_commands():
    result = subprocess.run(
        [sys.executable, "-m", "mote.stages.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for command in ("extract", "info", "demo"):  # piped: plain lines (tests/test_plain_output.py)
        assert re.search(rf"^  {command}\s+\S", result.stdout, re.MULTILINE), command


def test_missing_root_is_a_one_line_error(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mote.stages.cli",
            "extract",
            "--dataset",
            "k400",
            "--out",
            str(tmp_path / "s.zarr"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--root" in result.stderr and "Traceback" not in result.stderr


def test_readme_test_command_is_what_ci_runs():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    command = next(line for line in ci if "pytest" in line and not line.startswith("#"))
    assert command in (REPO / "README.md").read_text()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--decoder", "ffmpeg"], "--decoder"),
        (["--batch-size", "0"], "--batch-size"),
        (["--decode-workers", "-1"], "--decode-workers"),
        (["--dask", "local:abc"], "local:N"),
    ],
)
def test_bad_extract_settings_fail_before_any_video(tmp_path, flags, message):
    """Refused when the settings are made (ranges) or when the run starts (choices, the dask
    address), before anything is written."""
    from mote.stages import extract

    (tmp_path / "v").mkdir()
    values = dict(
        zip(
            [f.lstrip("-").replace("-", "_") for f in flags[::2]],
            [int(v) if v.lstrip("-").isdigit() else v for v in flags[1::2]],
            strict=True,
        )
    )
    with pytest.raises(ConfigError, match=message):
        cfg = build_config(
            ExtractConfig, None, dataset="ucf101", out=tmp_path / "s.zarr", root=tmp_path / "v",
            **values,
        )  # fmt: skip
        extract.run(cfg)
    assert not (tmp_path / "s.zarr").exists()


def test_missing_root_folder_is_refused(tmp_path):
    from mote.stages import extract

    cfg = build_config(
        ExtractConfig, None, dataset="ucf101", out=tmp_path / "s.zarr", root=tmp_path / "nowhere"
    )
    with pytest.raises(ConfigError, match="no such folder"):
        extract.run(cfg)


def test_config_file_accepts_the_flag_spellings_of_list_and_labels(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("dataset: list\nout: s.zarr\nlist: a.txt\nlabels: b.csv\n")
    cfg = build_config(ExtractConfig, file)
    assert (cfg.list_file, cfg.labels_file) == (Path("a.txt"), Path("b.csv"))
