"""User text (file names, class names, failure reasons) is printed as it is: no rich markup,
no emoji codes, on a terminal or off one (issue 26)."""

from __future__ import annotations

import re
import shutil

import pytest
from test_faults_exit_codes import mote

MARKUP, EMOJI = "[bold]x[/bold]", ":x:"
GONE = f"{EMOJI}[red]gone[/red].mp4"
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")
TERMINAL = {"FORCE_COLOR": "1", "COLUMNS": "400"}  # rich draws as on a terminal


@pytest.fixture(scope="module")
def odd_names(tmp_path_factory, motion_data):
    """The motion videos under names holding markup and an emoji code, a missing one too, with
    class names that do the same: a store made by a real `mote extract`, and a run on it."""
    work = tmp_path_factory.mktemp("odd")
    root = work / "videos"
    root.mkdir()
    rows = motion_data.labels_file.read_text().splitlines()[1:]
    names = [row.split(",", 1)[1] for row in rows]
    names[0], names[1] = f"{MARKUP} left", f"{EMOJI} right"
    labels = work / "labels.csv"
    labels.write_text("id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(names)))
    lines = []
    for number, line in enumerate(motion_data.list_file.read_text().splitlines()):
        path, label = line.rsplit(" ", 1)
        odd = root / f"{MARKUP} {EMOJI} {number}.mp4"  # its '/' makes a folder '[bold]x['
        odd.parent.mkdir(exist_ok=True)
        shutil.copy(motion_data.root / path, odd)
        lines.append(f"{MARKUP} {EMOJI} {number}.mp4 {label}")
    (work / "list.txt").write_text("\n".join([*lines, f"{GONE} 0"]) + "\n")
    store, run = work / "s.zarr", work / "run"
    extracted = mote(
        "extract", "--dataset", "list", "--root", root, "--list", work / "list.txt", "--labels",
        labels, "--model", "mote-tiny", "--pretrained", "none", "--devices", "cpu",
        "--decode-workers", 0, "--out", store, env=TERMINAL,
    )  # fmt: skip
    assert extracted.returncode == 0, extracted.stderr
    trained = mote("train-temporal", "--train", store, "--out", run, "--device", "cpu",
                   "--epochs", 1, "--layers", 1)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    return root, store, run, ANSI.sub("", extracted.stdout + extracted.stderr)


def literal(text: str) -> str:
    assert "❌" not in text and "[/bold]" not in text.replace(MARKUP, ""), text
    return text


@pytest.mark.parametrize("env", [{}, TERMINAL], ids=["plain", "terminal"])
def test_store_tables_show_names_and_reasons_as_they_are(odd_names, env):
    _, store, _, extracted = odd_names
    shown = mote("info", store, env=env)
    assert shown.returncode == 0, shown.stderr
    for text in (ANSI.sub("", shown.stdout), extracted):
        assert GONE in literal(text) and "file not found" in text


@pytest.mark.parametrize("env", [{}, TERMINAL], ids=["plain", "terminal"])
def test_predict_and_evaluate_show_paths_and_classes_as_they_are(odd_names, env):
    root, store, run, _ = odd_names
    video = root / f"{MARKUP} {EMOJI} 0.mp4"
    predicted = mote("predict", "--run", run, video, "--device", "cpu", "--top-k", 8, env=env)
    assert predicted.returncode == 0, predicted.stderr
    text = literal(ANSI.sub("", predicted.stdout))
    assert str(video) in text and f"{MARKUP} left" in text and f"{EMOJI} right" in text
    scored = mote("evaluate", "--run", run, "--store", store, "--per-class", "--device", "cpu",
                  env=env)  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    text = literal(ANSI.sub("", scored.stdout))
    assert f"{MARKUP} left" in text and f"{EMOJI} right" in text
