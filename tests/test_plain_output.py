"""Off a terminal (a pipe, a log, a file) mote writes whole plain lines: help at full width with
no boxes, progress as lines without escape codes, and click's refusals as one ``error:`` line."""

from __future__ import annotations

import dataclasses
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from mote_process import plain_env, run_in_terminal

from mote.pipeline.config import build_config, option_fields
from mote.pipeline.errors import ConfigError
from mote.stages.plain import LineProgress

COMMANDS = (
    "extract",
    "info",
    "train-temporal",
    "finetune-e2e",
    "evaluate",
    "zeroshot",
    "predict",
    "embed",
    "search",
    "serve",
    "fewshot",
    "import-reference",
    "report",
    "demo",
)
BOXES = ("╭", "│", "╰", "…")


def mote(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mote.stages", *args]
    return subprocess.run(command, capture_output=True, text=True, env=plain_env(), timeout=600)


# Prints every command's --help through the real entry point, into the process's piped stdout,
# between marker lines: one process imports torch once instead of once per command.
_ALL_HELPS = """
import sys
from mote.stages.cli import main
for name in sys.argv[1:]:
    print("@@help " + name, flush=True)
    sys.argv = ["mote", name, "--help"]
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    print("@@exit " + str(code), flush=True)
"""


@pytest.fixture(scope="module")
def helps() -> dict[str, subprocess.CompletedProcess]:
    """Every command's --help, piped, from one process (the entry point called per command)."""
    names = list(dict.fromkeys(COMMANDS))
    shown = subprocess.run(
        [sys.executable, "-c", _ALL_HELPS, *names],
        capture_output=True,
        text=True,
        env=plain_env(),
        timeout=600,
    )
    assert shown.returncode == 0, shown.stderr
    done = {}
    for part in shown.stdout.split("@@help ")[1:]:
        name, _, rest = part.partition("\n")
        text, _, code = rest.rpartition("@@exit ")
        done[name] = subprocess.CompletedProcess([name, "--help"], int(code), text, shown.stderr)
    assert list(done) == names, shown.stdout[-2000:]
    return done


def test_every_command_is_checked() -> None:
    from mote.stages.cli import app

    assert set(typer.main.get_command(app).list_commands(None)) == set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_piped_help_shows_every_option_whole(helps, name: str) -> None:
    """Each option's name and its whole help (with its [default: X]) on one line, no boxes."""
    from mote.stages.cli import app

    shown = helps[name]
    assert shown.returncode == 0, shown.stderr
    assert not any(mark in shown.stdout for mark in BOXES), shown.stdout
    assert "\x1b" not in shown.stdout and "\\[" not in shown.stdout
    lines = shown.stdout.splitlines()
    command = typer.main.get_command(app).get_command(None, name)
    for param in command.params:
        if not param.help:
            continue
        text = " ".join(param.help.replace("\\[", "[").split())
        flag = param.opts[0] if param.param_type_name == "option" else ""  # an argument: metavar
        assert any(line.lstrip().startswith(flag) and text in line for line in lines), (name, text)


def test_piped_top_level_help_lists_each_command_on_its_line() -> None:
    shown = mote("--help")
    assert shown.returncode == 0 and not any(mark in shown.stdout for mark in BOXES)
    for name in COMMANDS:
        assert re.search(rf"^  {name}\s+\S", shown.stdout, re.MULTILINE), name


def test_help_on_a_terminal_keeps_rich_panels() -> None:
    """The same help on a pseudo-terminal: typer's rich boxes."""
    shown = run_in_terminal(["--help"], timeout=120)
    assert shown.code == 0, shown
    assert "╭" in shown.out and "extract" in shown.out


def test_piped_extract_progress_is_whole_plain_lines(motion_data, tmp_path: Path) -> None:
    result = mote(
        "extract",
        *("--dataset", "list", "--root", str(motion_data.root)),
        *("--list", str(motion_data.list_file), "--labels", str(motion_data.labels_file)),
        *("--out", str(tmp_path / "s.zarr"), "--model", "mote-tiny", "--pretrained", "none"),
        *("--devices", "cpu", "--decode-workers", "0", "--frames", "4"),
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stderr + result.stdout and "\r" not in result.stderr
    total = len(motion_data.list_file.read_text().splitlines())
    progress = [line for line in result.stderr.splitlines() if line.startswith("extract ")]
    whole = re.compile(
        r"extract list/custom: \d+/\d+ videos \(\d+%\)(, [\d.]+ videos/s, \d+ frames/s)?, "
        r"\d+ failed, \d+:\d\d:\d\d elapsed(, \d+:\d\d:\d\d left)?"
    )
    assert len(progress) >= 2, result.stderr
    assert all(whole.fullmatch(line) for line in progress), progress
    assert progress[0].startswith(f"extract list/custom: 0/{total} ")
    assert progress[-1].startswith(f"extract list/custom: {total}/{total} videos (100%)")
    # the result table: plain columns, no box, the store's whole path on its row
    assert not any(box in result.stdout for box in BOXES), result.stdout
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line}
    assert rows["store"] == [str(tmp_path / "s.zarr")], result.stdout
    assert rows["n_done"] == [str(total)], result.stdout


def test_piped_result_lines_are_never_wrapped() -> None:
    """A long result line (a path, a closing sentence) stays one line in a log or a pipe."""
    line = "finetune-e2e " + "word " * 60 + "/a/long/path/" + "x" * 120
    code = f"from mote.stages.console import stdout; stdout.print({line!r})"
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=plain_env(), check=True
    )
    assert shown.stdout.splitlines() == [line.rstrip()]


def test_line_progress_reports_tenths_and_stalls() -> None:
    """A line per tenth (at most one per gap_s), one after every_s of silence, and the end."""
    now = [0.0]
    lines = []
    progress = LineProgress(every_s=60.0, gap_s=2.0, clock=lambda: now[0], write=lines.append)
    progress.start(20, "train", "epochs")
    for _ in range(20):
        now[0] += 1.0
        progress.update(done=1)
    now[0] += 100.0  # a long last step: finish still prints the end once
    progress.finish()
    progress.finish()
    assert [line.split(" epochs")[0] for line in lines] == [
        "train: 0/20",
        *(f"train: {n}/20" for n in range(2, 21, 2)),
    ]
    lines.clear()
    progress.start(1000, "extract", "videos")
    now[0] += 61.0
    progress.update(done=1)  # under a tenth, but a minute without a line
    assert len(lines) == 2 and "1/1000 videos (0%)" in lines[1] and "0 failed" in lines[1]


def test_progress_outside_start_and_finish_is_dropped() -> None:
    """An update before ``start`` (``mote search --video`` once crashed on it, exit 70) or after
    ``finish`` neither fails nor counts, on a terminal or off one."""
    from rich.console import Console

    from mote.stages.console import RichProgress

    lines: list[str] = []
    screen = io.StringIO()
    line = LineProgress(write=lines.append)
    bar = RichProgress(Console(file=screen, force_terminal=True, width=100))
    for progress in (line, bar):
        progress.update(done=1, frames=8)
        progress.finish()
        progress.start(2, "encode", "videos")
        progress.update(done=2, frames=16)
        progress.finish()
        progress.update(failed=1)
        progress.finish()
    assert lines[0].startswith("encode: 0/2 videos (0%)"), lines
    assert lines[-1].startswith("encode: 2/2 videos (100%)") and "0 failed" in lines[-1], lines
    assert len(lines) == 2, lines
    drawn = screen.getvalue()
    assert "encode" in drawn and "2/2" in drawn and "1 failed" not in drawn, drawn


@pytest.mark.parametrize(
    "what",
    [
        ("extract", "--nope"),  # an unknown option
        ("info",),  # a missing required argument (click's)
        ("extract",),  # missing required options (mote's)
        ("extract", "--dataset", "list", "--frames", "eight"),  # a bad value
        ("frob",),  # no such command
    ],
    ids=lambda what: " ".join(what),
)
def test_refused_command_line_is_one_error_line(what: tuple[str, ...]) -> None:
    result = mote(*what)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not any(mark in result.stderr for mark in BOXES) and "Usage" not in result.stderr
    if what[0] != "extract" or len(what) > 1:
        where = "mote" if what[0] == "frob" else f"mote {what[0]}"
        assert lines[0].endswith(f"; see {where} --help"), lines[0]


def test_mote_alone_prints_its_help() -> None:
    result = mote()
    assert result.returncode == 2 and "Usage: mote [OPTIONS] COMMAND" in result.stdout
    assert "extract" in result.stdout and result.stderr == ""


def _valid_keys(cls: type, tmp_path: Path, **flags) -> tuple[str, set[str]]:
    config = tmp_path / "bad.yaml"
    config.write_text("not_a_setting: 1\n")
    with pytest.raises(ConfigError, match="unknown option 'not_a_setting'") as refused:
        build_config(cls, config, **flags)
    return str(refused.value), set(str(refused.value).split("Valid options: ")[1].split(", "))


def _config_classes() -> list[type]:
    from mote.stages import demo, finetune_e2e, info, train_temporal, zeroshot

    return [
        train_temporal.TrainConfig,
        finetune_e2e.FinetuneConfig,
        zeroshot.ZeroShotConfig,
        demo.DemoConfig,
        info.InfoConfig,
    ]


def test_unknown_config_key_lists_only_option_keys(tmp_path: Path) -> None:
    """Each has fields that are no option (epoch_size, videos, fused...): never listed, and
    refused in a file like an unknown key."""
    for cls in _config_classes():
        _, valid = _valid_keys(cls, tmp_path)
        options = option_fields(cls)
        hidden = {f.name for f in dataclasses.fields(cls)} - {f.name for f in options}
        assert hidden, cls.__name__
        assert not {name.replace("_", "-") for name in hidden} & valid, cls.__name__
        for f in options:
            key = f.metadata.get("flag", "").removeprefix("--") or f.name.replace("_", "-")
            assert key in valid, (cls.__name__, key)
            assert {a.replace("_", "-") for a in f.metadata.get("aliases", ())} <= valid
        config = tmp_path / "hidden.yaml"
        config.write_text(f"{sorted(hidden)[0]}: 1\n")
        with pytest.raises(ConfigError, match="unknown option"):
            build_config(cls, config)


def test_nested_config_keys_are_listed(tmp_path: Path) -> None:
    from mote.stages.extract import ExtractConfig
    from mote.stages.fewshot import FewShotConfig
    from mote.stages.options import make_config

    config = tmp_path / "bad.yaml"
    config.write_text("not_a_setting: 1\n")
    given = {"train": Path("t"), "test": Path("s"), "out": Path("o")}
    with pytest.raises(ConfigError) as refused:
        make_config(FewShotConfig, config, given)
    valid = set(str(refused.value).split("Valid options: ")[1].split(", "))
    assert {"shots", "experts", "lr", "wmr"} <= valid and "training" not in valid
    assert "seed" not in valid and "videos" not in valid and "epoch-size" not in valid
    _, valid = _valid_keys(ExtractConfig, tmp_path)
    assert {"list", "labels", "device", "devices"} <= valid and "list-file" not in valid


def test_a_piped_table_title_longer_than_its_columns_stays_one_line() -> None:
    """rich wraps a title to its table's width; off a terminal it is a line of its own."""
    title = "mote demo: zero-shot top-1 on held-out classes (TFM on)"
    code = (
        "from rich.table import Table; from mote.stages.console import show\n"
        f"table = Table(title={title!r}); table.add_column('arch'); table.add_row('mote')\n"
        "show(table)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=plain_env(), check=True
    )
    assert shown.stdout.splitlines() == [title, "arch", "mote"]


def test_piped_per_class_evaluation_is_one_plain_line_per_class(tmp_path: Path) -> None:
    """``mote evaluate --per-class`` into a pipe: the metrics, then a title line, a header and
    one whole line per class (its name, videos, top-1), with no box drawn around them."""
    from helpers import random_store

    from mote.stages import train_temporal

    classes = ("class a moving left", "class b", "class c")
    store = tmp_path / "s.zarr"
    random_store(store, [f"v{i}.mp4" for i in range(12)], [i % 3 for i in range(12)], classes)
    run = tmp_path / "run"
    train_temporal.run(
        train_temporal.TrainConfig(
            train=store, out=run, epochs=1, batch_size=12, layers=1, micro_batches=1,
            device="cpu",
        )
    )  # fmt: skip
    result = mote("evaluate", "--run", str(run), "--store", str(store), "--per-class")
    assert result.returncode == 0, result.stderr
    assert not any(box in result.stdout for box in BOXES), result.stdout
    lines = result.stdout.splitlines()
    start = lines.index("per-class top-1 (fused views)")
    assert lines[start + 1].split() == ["class", "videos", "top-1", "(%)"]
    rows = lines[start + 2 :]
    assert len(rows) == 3, result.stdout
    for name, row in zip(classes, rows, strict=True):
        assert re.fullmatch(rf"{name}\s+4\s+\d+\.\d\d", row), row
