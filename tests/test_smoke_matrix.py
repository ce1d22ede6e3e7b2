"""Every registered command, in each of its main modes, as a real ``mote`` process: the venv's
console script, piped (a log) and under a pseudo-terminal (a user's shell: rich bars on).

The matrix is generated from the command table (``mote --help``'s list,
stages/command_table.py): a command registered without cases here fails. Each case asserts exit
0 and the output's shape (a JSON line's keys, a table's columns or rows, the files written, the
progress drawn). The inputs (a store, a run, embeddings, videos at the paths of the shipped
annotation lists) are built once in this process; only the commands under test start processes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from helpers import tiny_extract_config, write_reference_checkpoint
from mote_process import Ran, run_mote

from mote.pipeline.data.datasets import kinetics_folder, load_dataset
from mote.pipeline.data.synthetic import (
    SyntheticDataset,
    write_motion_dataset,
    write_numbered_video,
)


def registered_commands() -> list[str]:
    """The command table, as ``mote --help`` lists it."""
    from mote.stages.cli import app

    return typer.main.get_command(app).list_commands(None)


# ------------------------------------------------------------------------------ inputs

NAMED = (("ucf101", "test1"), ("hmdb51", "test1"), ("k400", "val"), ("k600", "split1"))
SSV2_NAMES = (
    "Approaching something with your camera",
    "Pulling something from left to right",
    "Pulling something from right to left",
    "Pushing something from left to right",
    "Pushing something from right to left",
    "Turning the camera left while filming something",
    "Turning the camera right while filming something",
)


@dataclass(frozen=True)
class World:
    """What the cases read, built once: never written by a case (each writes under its own
    folder)."""

    videos: SyntheticDataset  # 16 motion videos, a `list` dataset
    named_root: Path  # the first 2 videos of each NAMED split's shipped list
    kinetics_csv: Path  # the official K400 CSV layout, 2 train clips under named_root
    ssv2_labels: Path  # something-something-v2-labels.json, the validation JSON beside it
    ssv2_root: Path
    store: Path  # the motion videos, 3x1 views of 8 frames (the zero-shot protocol's)
    run: Path  # a MoTE run trained on it
    embeddings: Path  # the store embedded by the run
    reference: Path  # a checkpoint in the reference implementation's layout

    def fields(self, out: Path) -> dict[str, object]:
        """What a case's command line names: these paths, and ``out``, the case's folder."""
        first_id = self.videos.list_file.read_text().split()[0]
        return {
            **{name: getattr(self, name) for name in self.__dataclass_fields__},
            "root": self.videos.root,
            "list": self.videos.list_file,
            "labels": self.videos.labels_file,
            "first_id": first_id,
            "first_video": self.videos.root / first_id,
            "out": out,
        }


def _named_videos(root: Path) -> None:
    for name, split in NAMED:
        for item in load_dataset(name, split).items[:2]:
            write_numbered_video(root / item.video_id, 12)


def _kinetics_csv(root: Path, csv: Path) -> None:
    rows = ["label,youtube_id,time_start,time_end,split"]
    for i, label in enumerate(("abseiling", "hurling (sport)")):
        rows.append(f"{label},smoke{i:06d},{i},{i + 10},train")
        clip = f"{kinetics_folder(label)}/smoke{i:06d}_{i:06d}_{i + 10:06d}.mp4"
        write_numbered_video(root / clip, 12)
    csv.write_text("\n".join(rows) + "\n")


def _ssv2(base: Path) -> tuple[Path, Path]:
    labels_dir, root = base / "labels", base / "videos"
    labels_dir.mkdir(parents=True)
    labels = labels_dir / "something-something-v2-labels.json"
    labels.write_text(json.dumps({name: str(i) for i, name in enumerate(SSV2_NAMES)}))
    templates = (
        "Pushing [something] from left to right",
        "Approaching [something] with your camera",
    )
    entries = []
    for i, template in enumerate(templates):
        entries.append({"id": str(100 + i), "label": "a cup", "template": template})
        write_numbered_video(root / f"{100 + i}.webm", 12, codec="libvpx-vp9")
    (labels_dir / "something-something-v2-validation.json").write_text(json.dumps(entries))
    return labels, root


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The inputs, built in this process through the stages' Python entry points (seconds)."""
    from mote.stages import embed, extract, train_temporal

    work = tmp_path_factory.mktemp("smoke")
    videos = write_motion_dataset(work / "videos", videos_per_class=2, seed=1)
    named = work / "named"
    _named_videos(named)
    _kinetics_csv(named, work / "k400_train.csv")
    ssv2_labels, ssv2_root = _ssv2(work / "ssv2")
    store, run, embeddings = work / "motion.zarr", work / "run", work / "motion-e.zarr"
    extract.run(tiny_extract_config(videos, store, views="3x1"))
    train_temporal.run(
        train_temporal.TrainConfig(
            train=store, val=store, out=run, layers=1, epochs=2, warmup_epochs=1, batch_size=8,
            micro_batches=1, lr=1e-3, device="cpu",
        )
    )  # fmt: skip
    embed.run(
        embed.EmbedConfig(run=run, store=store, out=embeddings, root=videos.root, device="cpu")
    )
    reference = work / "MoTE_tiny.pt"
    write_reference_checkpoint(reference)
    return World(
        videos, named, work / "k400_train.csv", ssv2_labels, ssv2_root, store, run, embeddings,
        reference,
    )  # fmt: skip


# ------------------------------------------------------------------------------ checks

Check = Callable[[Ran, Path], None]
_BOX = r"[\s│┃|]"  # what separates cells: spaces off a terminal, box lines on one


def json_object(*keys: str, **values: object) -> Check:
    """Exactly one JSON object printed, holding these keys, and these values."""

    def check(ran: Ran, out: Path) -> None:
        objects = [json.loads(line) for line in ran.out.splitlines() if line.startswith("{")]
        assert len(objects) == 1, ran
        assert set(keys) | set(values) <= set(objects[0]), (sorted(objects[0]), ran)
        assert {k: objects[0][k] for k in values} == values, ran

    return check


def json_lines(*keys: str) -> Check:
    """One JSON object per line (at least one), each holding these keys."""

    def check(ran: Ran, out: Path) -> None:
        lines = [line for line in ran.out.splitlines() if line.strip()]
        assert lines, ran
        for line in lines:
            record = json.loads(line)
            assert set(keys) <= set(record), (line, ran)

    return check


def columns(*names: str) -> Check:
    """A table whose header holds these columns, in this order."""
    pattern = re.compile(f"{_BOX}+".join(re.escape(name) for name in names))

    def check(ran: Ran, out: Path) -> None:
        assert any(pattern.search(line) for line in ran.out.splitlines()), (names, ran)

    return check


def rows(*keys: str) -> Check:
    """A key-value table with a row for each key."""

    def check(ran: Ran, out: Path) -> None:
        for key in keys:
            row = re.compile(rf"^{_BOX}*{re.escape(key)}{_BOX}+\S", re.MULTILINE)
            assert row.search(ran.out), (key, ran)

    return check


def labelled_among(*names: str) -> Check:
    """``predict --json``: every video's top classes come from ``names``, all of them."""

    def check(ran: Ran, out: Path) -> None:
        for line in ran.out.splitlines():
            top = [row["label"] for row in json.loads(line)["top"]]
            assert sorted(top) == sorted(names), (line, ran)

    return check


def says(text: str) -> Check:
    def check(ran: Ran, out: Path) -> None:
        assert text in ran.out, (text, ran)

    return check


def made(*paths: str) -> Check:
    """These files, under the case's own folder."""

    def check(ran: Ran, out: Path) -> None:
        for path in paths:
            assert (out / path).exists(), (path, sorted(p.name for p in out.iterdir()), ran)

    return check


def progress(label: str) -> Check:
    """Progress whose label starts with ``label``: whole lines on stderr off a terminal, the
    last at 100%; a bar on one."""

    def check(ran: Ran, out: Path) -> None:
        if ran.terminal:
            assert label in ran.out and "━" in ran.out, (label, ran)
        else:
            lines = [line for line in ran.err.splitlines() if line.startswith(label)]
            assert lines and "(100%)" in lines[-1], (label, ran)

    return check


# ------------------------------------------------------------------------------ cases

PIPE, TERMINAL, BOTH = (False,), (True,), (False, True)


@dataclass(frozen=True)
class Case:
    """One mode of a command: its command line (each word formatted with ``World.fields``, so
    a path is one argument), the readers it runs for (piped, terminal) and what its output must
    show."""

    name: str
    line: str
    checks: tuple[Check, ...]
    readers: tuple[bool, ...] = PIPE
    slow: bool = False

    def args(self, world: World, out: Path) -> list[str]:
        fields = world.fields(out)
        return [word.format(**fields) for word in self.line.split()]


TINY = "--model mote-tiny --pretrained none"
EXTRACT = f"--out {{out}}/s.zarr {TINY} --devices cpu --decode-workers 0 --frames 4"
LIST = "--root {root} --list {list} --labels {labels}"
TRAINING = "--layers 1 --batch-size 8 --micro-batches 1 --warmup-epochs 1 --device cpu"
SPLIT = "--dataset list --store {store} --split {list}:{labels} --device cpu"
FINETUNE = f"finetune-e2e --dataset list {LIST} --out {{out}}/run {TINY} --frames 4 --epochs 1"
FINETUNE += f" {TRAINING} --workers 0 --val-list {{list}} --val-limit 4"
TRAIN = f"train-temporal --train {{store}} --val {{store}} --out {{out}}/run --epochs 2 {TRAINING}"
FEWSHOT = "fewshot --train {store} --test {store} --out {out}/fs --shots 1 --seeds 0 --epochs 1"
FEWSHOT += f" {TRAINING}"
EMBED = "embed --run {run} --store {store} --out {out}/e.zarr --device cpu"
PREDICT = "predict --run {run} {first_video} --device cpu"
SEARCH = "search --run {run} --embeddings {embeddings} --device cpu -k 3"

STORE_ROWS = rows("schema_version", "dataset", "split", "n_done", "n_failed")
EXTRACTED = (  # each named form: 2 videos, both encoded
    json_object("store", "dataset", "split", "n_videos", n_done=2, n_failed=0),
    made("s.zarr/zarr.json"),
)
SEARCHED = (columns("#", "score", "video", "label", "path"), says("exact search over 16 videos"))
PREDICTED = columns("#", "class", "prob", "id")
TRAINED = rows("top1 (3x1 views fused)", "top5 (3x1 views fused)", "best val top-1 (1 view)")
FINETUNED = rows("top1 (1 view)", "best val top-1 (1 view)", "epochs")

CASES: dict[str, tuple[Case, ...]] = {
    "extract": (
        Case(
            "list",
            f"extract --dataset list {LIST} {EXTRACT}",
            (STORE_ROWS, made("s.zarr/zarr.json"), progress("extract list/custom")),
            BOTH,
        ),
        Case(
            "kinetics-csv",
            "extract --dataset k400 --split train --kinetics-csv {kinetics_csv} "
            f"--root {{named_root}} {EXTRACT} --json",
            EXTRACTED,
            slow=True,  # K400's 400 class names through the text tower: ~10 s of CPU
        ),
        *(
            Case(
                f"{name}-{split}",
                f"extract --dataset {name} --split {split} --root {{named_root}} --limit 2 "
                f"{EXTRACT} --json",
                EXTRACTED,
                slow=name == "k400",
            )
            for name, split in NAMED
        ),
        Case(
            "ssv2-validation",
            "extract --dataset ssv2 --split validation --labels {ssv2_labels} "
            f"--root {{ssv2_root}} {EXTRACT} --json",
            EXTRACTED,
        ),
    ),
    "info": (
        Case("table", "info {store}", (STORE_ROWS,), BOTH),
        Case("json", "info {store} --json", (json_object("n_done", "n_failed", "n_pending"),)),
        Case("verify", "info {store} --verify", (STORE_ROWS, says("verified: "))),
        Case(
            "verify-sample",
            "info {store} --verify --sample 2 --root {root} --device cpu",
            (says("2 video(s) re-encoded, no damage found"),),
            TERMINAL,
        ),
    ),
    "train-temporal": (
        Case(
            "table",
            TRAIN,
            (TRAINED, made("run/model.safetensors"), progress("train mote on 16 videos")),
            TERMINAL,
        ),
        Case(
            "json",
            f"{TRAIN} --json",
            (json_object("top1", "top5", "views"), progress("train mote on 16 videos")),
        ),
    ),
    "evaluate": (
        Case(
            "table",
            "evaluate --run {run} --store {store} --device cpu",
            (rows("top1 (3x1 views fused)", "top5 (3x1 views fused)"),),
            TERMINAL,
        ),
        Case(
            "json",
            "evaluate --run {run} --store {store} --device cpu --json",
            (json_object("top1", "top5", "views", "n_videos", "tfm"),),
        ),
    ),
    "zeroshot": (
        Case(
            "table",
            f"zeroshot --run {{run}} {SPLIT}",
            (columns("split", "classes", "top-1", "top-5", "videos"), says("mean +- std")),
            TERMINAL,
        ),
        Case(
            "json",
            f"zeroshot --run {{run}} {SPLIT} --json",
            (json_object("splits", "top1_mean", "top1_std"),),
        ),
    ),
    "fewshot": (
        Case(
            "table",
            FEWSHOT,
            (columns("K", "top-1 mean +- std", "per seed"), made("fs/fewshot.json")),
            TERMINAL,
        ),
        Case("json", f"{FEWSHOT} --json", (json_object("shots"), progress("train mote on "))),
    ),
    "finetune-e2e": (
        Case(
            "table",
            FINETUNE,
            (FINETUNED, made("run/model.safetensors"), progress("fine-tune mote-tiny + mote")),
            TERMINAL,
            slow=True,
        ),
        Case(
            "json",
            f"{FINETUNE} --json",
            (json_object("top1", "top5", "best_epoch"), progress("fine-tune mote-tiny + mote")),
            slow=True,
        ),
    ),
    "import-reference": (
        Case(
            "table",
            f"import-reference {{reference}} --out {{out}}/run {TINY}",
            (rows("arch", "layers"), says("next: mote extract"), made("run/model.safetensors")),
            TERMINAL,
        ),
        Case(
            "json",
            f"import-reference {{reference}} --out {{out}}/run {TINY} --json",
            (json_object("out", "arch", "layers", "experts"), made("run/config.json")),
        ),
    ),
    "predict": (
        Case(
            "table",
            PREDICT,
            (PREDICTED, says("1 of 1 video(s) labelled"), progress("predict 1 video(s)")),
            BOTH,
        ),
        Case(
            "classes-json",
            f"{PREDICT} --classes circle,square --top-k 2 --json",
            (json_lines("video", "top", "error"), labelled_among("circle", "square")),
        ),
    ),
    "embed": (
        Case("table", EMBED, (rows("n_rows"), progress("embed motion.zarr")), TERMINAL),
        Case(
            "json",
            f"{EMBED} --json",
            (json_object("n_rows"), made("e.zarr"), progress("embed motion.zarr")),
        ),
    ),
    "search": (
        Case("text", f"{SEARCH} circle moving left", SEARCHED, BOTH),
        Case(
            "video",
            f"{SEARCH} --video {{first_video}}",
            (*SEARCHED, progress("query video ")),
            BOTH,
        ),
        Case(
            "like-json",
            f"{SEARCH} --like {{first_id}} --json",
            (json_lines("query", "rank", "score", "video_id", "path", "label"), says('"like ')),
        ),
        Case(
            "html",
            f"{SEARCH} square --html {{out}}/hits.html",
            (*SEARCHED, says("page: "), made("hits.html")),
        ),
    ),
    "serve": (
        Case(
            "check",
            "serve --run {run} --embeddings {embeddings} --port 0 --device cpu --check",
            (rows("videos", "url", "check_hits"), says("checked ")),
            BOTH,
        ),
    ),
    "report": (
        Case(
            "run",
            "report {run} --out {out}/report",
            (columns("run", "model", "close-set top-1"), made("report/report.md")),
        ),
    ),
    "demo": (
        Case(
            "small",
            "demo --workdir {out}/demo --videos-per-class 4 --epochs 2",
            (says("demo finished in"), made("demo/report/report.md"), progress("train mote")),
            TERMINAL,
            slow=True,
        ),
    ),
}


def _case_id(command: str, case: Case, terminal: bool) -> str:
    return f"{command}-{case.name}-{'terminal' if terminal else 'piped'}"


def _matrix() -> list:
    """One test per (command, case, reader), in the command table's order; a command without
    cases is one failing test."""
    params = []
    for command in registered_commands():
        cases = CASES.get(command, ())
        if not cases:
            params.append(pytest.param(command, None, False, id=f"{command}-has-no-case"))
        for case in cases:
            for terminal in case.readers:
                marks = [pytest.mark.slow] if case.slow else []
                case_id = _case_id(command, case, terminal)
                params.append(pytest.param(command, case, terminal, id=case_id, marks=marks))
    return params


# Cases running at once: most of a case is a fresh interpreter importing torch and open_clip,
# which overlaps with another case's work even on 2 cores (the matrix: ~5.5 min one at a time).
AT_ONCE = 3


def _run_case(case: Case, command: str, world: World, out: Path, terminal: bool) -> Ran:
    args = case.args(world, out)
    assert args[0] == command, f"case {case.name} of {command} runs `mote {args[0]}`"
    return run_mote(args, terminal, cwd=out)


@pytest.fixture(scope="module")
def launched(request: pytest.FixtureRequest, world: World, tmp_path_factory):
    """Every selected case's process, started up front in test order, AT_ONCE at a time: case
    id -> (the future of its finished process, its own folder)."""
    started: dict[str, tuple[Future[Ran], Path]] = {}
    with ThreadPoolExecutor(AT_ONCE) as pool:
        for item in request.session.items:
            params = getattr(item, "callspec", None)
            if item.module is not request.module or params is None:
                continue
            command, case, terminal = (params.params[k] for k in ("command", "case", "terminal"))
            if case is None:
                continue
            case_id = _case_id(command, case, terminal)
            out = tmp_path_factory.mktemp(case_id)
            started[case_id] = (pool.submit(_run_case, case, command, world, out, terminal), out)
        yield started
        for future, _ in started.values():
            future.cancel()


def test_every_case_is_of_a_registered_command() -> None:
    assert set(CASES) <= set(registered_commands()), set(CASES) - set(registered_commands())


@pytest.mark.parametrize(("command", "case", "terminal"), _matrix())
def test_command(launched, command: str, case: Case | None, terminal: bool) -> None:
    assert case is not None, f"`mote {command}` is registered (stages/cli.py) but has no case"
    future, out = launched[_case_id(command, case, terminal)]
    ran = future.result()
    assert ran.code == 0, ran
    for check in case.checks:
        check(ran, out)
