"""A video list names paths inside --root: an entry that leaves it ('..', an absolute path) is
refused up front, naming the list file and line, unless --allow-outside-root; and no failure
reason quotes a file's contents (issue 26)."""

from __future__ import annotations

import json

import pytest
from test_faults_exit_codes import USAGE, mote, one_line

SECRET = "root:x:0:0:secret-first-line"


@pytest.fixture
def lists(motion_data, tmp_path):
    """Lists of the motion videos plus, as their line 13, an entry outside --root: a text file
    next to the root ('..') and the same file by its absolute path."""
    outside = motion_data.root.parent / f"outside-{tmp_path.name}.mp4"
    outside.write_text(SECRET + "\n")
    lines = motion_data.list_file.read_text().splitlines()[:12]
    made = {}
    for name, entry in (("escape", f"../{outside.name}"), ("absolute", str(outside))):
        made[name] = tmp_path / f"{name}.txt"
        made[name].write_text("\n".join([*lines, f"{entry} 0"]) + "\n")
    return made, outside


def extract(data, list_file, out, *extra):
    return mote(
        "extract", "--dataset", "list", "--root", data.root, "--list", list_file, "--labels",
        data.labels_file, "--model", "mote-tiny", "--pretrained", "none", "--devices", "cpu",
        "--decode-workers", 0, "--out", out, *extra,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["escape", "absolute"])
def test_extract_refuses_an_entry_outside_root_naming_the_line(motion_data, lists, tmp_path, kind):
    made, _ = lists
    result = extract(motion_data, made[kind], tmp_path / "s.zarr")
    assert result.returncode == USAGE, result.stderr
    line = one_line(result)
    assert line.startswith(f"error: {made[kind]}:13: ") and "--allow-outside-root" in line
    assert not (tmp_path / "s.zarr").exists()


def test_finetune_e2e_refuses_it_too(motion_data, lists, tmp_path):
    made, _ = lists
    for flag in ("--list", "--val-list"):
        files = {
            "--list": motion_data.list_file,
            "--val-list": motion_data.list_file,
            flag: made["escape"],
        }
        result = mote(
            "finetune-e2e", "--dataset", "list", "--root", motion_data.root, "--labels",
            motion_data.labels_file, *(x for pair in files.items() for x in pair),
            "--model", "mote-tiny", "--pretrained", "none", "--device", "cpu",
            "--out", tmp_path / "run",
        )  # fmt: skip
        assert result.returncode == USAGE, result.stderr
        assert one_line(result).startswith(f"error: {made['escape']}:13: ")
    assert not (tmp_path / "run").exists()


def test_allowed_outside_a_text_file_fails_without_its_contents(motion_data, lists, tmp_path):
    made, outside = lists
    out = tmp_path / "s.zarr"
    result = extract(motion_data, made["absolute"], out, "--allow-outside-root", "--json")
    assert result.returncode == 0, result.stderr
    failures = json.loads(result.stdout)["failures"]
    assert failures == [{"video": str(outside), "reason": "not a video: a text file"}]
    shown = mote("info", out)
    assert shown.returncode == 0 and "a text file" in shown.stdout
    for text in (result.stdout, result.stderr, shown.stdout, shown.stderr):
        assert "root:x" not in text and "secret" not in text
