"""Terminal output for the CLI: a rich progress bar on stderr and each command's result tables."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text


def literal_console(**options: Any) -> Console:
    """A console that prints every string as it is: no rich markup (``[bold]`` in a file name
    stays), no emoji codes (``:x:`` in a failure reason stays). Everything mote prints holds
    user text (paths, class names, reasons, queries); styles go through ``Text`` instead."""
    return Console(markup=False, emoji=False, **options)


stderr = literal_console(stderr=True)
stdout = literal_console()
stdout.soft_wrap = not stdout.is_terminal  # a log or a pipe gets whole lines, never cut at 80

# Wide enough that nothing wraps a line: a pipe has no width, and grep wants whole lines.
UNWRAPPED = 1_000_000


def show(table: Table) -> None:
    """A result table on stdout: boxed on a terminal; off one (a log, a pipe, a file) plain
    columns at full width, with no box characters and no cell cut to 80 columns."""
    if stdout.is_terminal:
        stdout.print(table)
        return
    table.box = None
    table.show_edge = False
    table.pad_edge = False
    title, table.title = table.title, None  # its own line: rich wraps it to the table's width
    buffer = io.StringIO()
    literal_console(file=buffer, width=UNWRAPPED, color_system=None).print(table)
    lines = [str(title)] if title else []
    text = "\n".join(lines + [line.rstrip() for line in buffer.getvalue().splitlines()])
    stdout.file.write(text + "\n")
    stdout.file.flush()


class _RateColumn(ProgressColumn):
    """Videos/s and frames/s since the bar started."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        unit = task.fields.get("unit", "videos")
        if elapsed <= 0:
            return Text(f"-- {unit}/s", style="progress.data.speed")
        if unit != "videos":
            return Text(f"{task.completed / elapsed:.1f} {unit}/s", style="progress.data.speed")
        videos = task.completed / elapsed
        frames = task.fields.get("frames", 0) / elapsed
        return Text(f"{videos:.1f} videos/s {frames:.0f} frames/s", style="progress.data.speed")


class _FailedColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        if task.fields.get("unit", "videos") != "videos":
            return Text("")
        failed = task.fields.get("failed", 0)
        return Text(f"{failed} failed", style="red" if failed else "dim")


class RichProgress:
    """The ``Progress`` protocol drawn with rich on stderr. An update outside ``start``...
    ``finish`` is dropped: a caller that forgets ``start`` loses its bar, not its run."""

    def __init__(self, console: Console = stderr) -> None:
        self._console = console
        self._progress: Progress | None = None
        self._task = None

    def start(self, total: int, label: str, unit: str = "videos") -> None:
        """A fresh bar per stage, so one RichProgress can serve several stages in a row."""
        self._progress = Progress(
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            _FailedColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self._console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(label, total=total, failed=0, frames=0, unit=unit)

    def update(self, *, done: int = 0, failed: int = 0, frames: int = 0) -> None:
        if self._progress is None:
            return
        task = self._progress.tasks[self._task]
        self._progress.update(
            self._task,
            advance=done + failed,
            failed=task.fields["failed"] + failed,
            frames=task.fields["frames"] + frames,
        )

    def message(self, text: str) -> None:
        (self._progress.console if self._progress else self._console).print(text)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def print_summary_table(summary: dict, title: str) -> None:
    table = Table(title=title, show_header=False)
    for key in (
        "store",
        "schema_version",
        "dataset",
        "split",
        "model",
        "pretrained",
        "weights_id",
        "dim",
        "frames",
        "views",
        "sampling",
        "classes",
        "n_videos",
        "n_done",
        "n_failed",
        "n_pending",
        "seconds",
        "videos_per_s",
        "bytes_on_disk",
    ):
        if key in summary:
            unlabelled = key == "classes" and summary.get("labelled") is False
            table.add_row(key, "none (an unlabelled store)" if unlabelled else str(summary[key]))
    devices = summary.get("devices") or []
    if len(devices) > 1:  # several encoders (or dask workers): what each did
        for row in devices:
            where = row["device"] + (f" ({row['worker']})" if row.get("worker") else "")
            done = f"{row['videos']} videos, {row['images']} frames, {row['videos_per_s']} videos/s"
            table.add_row(where, done)
    show(table)
    failures = summary.get("failures") or []
    if failures:
        failed = Table(title=f"{len(failures)} failed video(s)")
        failed.add_column("video")
        failed.add_column("reason")
        for item in failures[:50]:
            failed.add_row(item["video"], item["reason"])
        if len(failures) > 50:
            failed.add_row("...", f"{len(failures) - 50} more: see `mote info --json`")
        show(failed)


def _metric_name(key: str, metrics: dict) -> str:
    """A row name that says which views an accuracy is on."""
    views = metrics.get("views")
    if key in ("top1", "top5") and views:
        return f"{key} ({views} views fused)" if views != "1x1" else f"{key} (1 view)"
    if key == "best_val_top1":
        return "best val top-1 (1 view)"
    return key


def _metric_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list | tuple):
        return "\n".join(_metric_text(v) for v in value)
    if isinstance(value, dict):  # a record (an embeddings variant): one "key: value" per line
        return "\n".join(f"{k}: {_metric_text(v)}" for k, v in value.items() if v is not None)
    return str(value)


def print_metrics(metrics: dict, title: str) -> None:
    """One row per metric; empty lists left out, lists one item per line."""
    table = Table(title=title, show_header=False)
    for key, value in metrics.items():
        if isinstance(value, list | tuple) and not value:
            continue
        table.add_row(_metric_name(key, metrics), _metric_text(value))
    show(table)


def print_evaluate(result: dict, title: str) -> None:
    """The metrics table, then (``--per-class``) one row per class: videos and top-1."""
    print_metrics({k: v for k, v in result.items() if k not in ("per_class", "confusion")}, title)
    if "per_class" not in result:
        return
    table = Table(title="per-class top-1 (fused views)")
    for column, justify in (("class", "left"), ("videos", "right"), ("top-1 (%)", "right")):
        table.add_column(column, justify=justify)
    for row in result["per_class"]:
        top1 = "n/a" if row["top1"] is None else f"{row['top1']:.2f}"
        table.add_row(row["class"], str(row["n_videos"]), top1)
    show(table)


def print_verify(checked: dict) -> None:
    """One line per problem on stderr, then a verdict."""
    for problem in checked["problems"]:
        stderr.print(Text.assemble(("damaged: ", "bold red"), problem["line"]), soft_wrap=True)
    sampled = len(checked["sampled"])
    extra = f", {sampled} video(s) re-encoded" if sampled else ""
    if not checked["checksums"]:
        stdout.print("note: this store has no chunk checksums (written before they were added)")
    if checked["ok"]:
        stdout.print(f"verified: {checked['chunks_read']} chunks read{extra}, no damage found")
    else:
        fix = (
            "repair with `mote extract ... --repair`"
            if checked["repairable"]
            else "re-create the store with `mote extract ... --overwrite`"
        )
        stdout.print(f"{len(checked['problems'])} problem(s) found{extra}; {fix}")


def print_zeroshot(result: dict, dataset: str, tfm: bool) -> None:
    table = Table(
        title=f"zero-shot {dataset} ({result['views']} views, TFM {'on' if tfm else 'off'})"
    )
    for column in ("split", "classes", "top-1", "top-5", "videos", "missing"):
        table.add_column(column)
    for row in result["splits"]:
        table.add_row(
            row["split"],
            str(row["classes"]),
            f"{row['top1']:.2f}",
            f"{row['top5']:.2f}",
            str(row["n_videos"]),
            str(row["n_missing"]),
        )
    table.add_row(
        "mean +- std",
        "",
        f"{result['top1_mean']:.2f} +- {result['top1_std']:.2f}",
        f"{result['top5_mean']:.2f}",
        "",
        "",
    )
    show(table)
    if result.get("zs_hm") is not None:
        line = f"zero-shot harmonic mean over the run's datasets: {result['zs_hm']:.2f}"
        if result.get("tradeoff") is not None:
            line += (
                f"; trade-off with close-set top-1 {result['close_set_top1']:.2f}: "
                f"{result['tradeoff']:.2f}"
            )
        stdout.print(line)


def print_predictions(result: dict) -> None:
    """Each video's path, then its top-k table: class and the fused score of spec 8.1 (views'
    softmaxes of raw cosines averaged, then a softmax: close together by construction)."""
    vocabulary = "the run's classes" if result["vocabulary"] == "run" else "the given classes"
    for video in result["videos"]:
        if video["error"]:
            stdout.print(
                Text.assemble(
                    (video["video"], "bold"), ": ", ("failed: ", "bold red"), video["error"]
                ),
                soft_wrap=True,
            )
            continue
        stdout.print(Text(video["video"], style="bold"), soft_wrap=True)
        table = Table()
        for column in ("#", "class", "prob", "id"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for rank, row in enumerate(video["top"], start=1):
            table.add_row(str(rank), row["label"], f"{row['score']:.4f}", str(row["id"]))
        show(table)
    stdout.print(
        f"{result['n_videos'] - result['n_failed']} of {result['n_videos']} video(s) labelled "
        f"against {result['classes']} of {vocabulary} ({result['views']} views of "
        f"{result['frames']} frames, TFM {'on' if result['tfm'] else 'off'}, {result['device']}, "
        f"{result['seconds']:.1f} s)"
    )


def print_search(result: dict) -> None:
    """A table of hits per query (rank, score, video id, label, path), then the index check,
    the evaluation and the page written, when there are."""
    for entry in result["results"]:
        table = Table(title=f"{entry['query']}", title_justify="left")
        for column in ("#", "score", "video", "label", "path"):
            table.add_column(column, justify="right" if column in ("#", "score") else "left")
        for hit in entry["hits"]:
            table.add_row(
                str(hit["rank"]), f"{hit['score']:.4f}", hit["video_id"], hit["label"] or "",
                hit["path"],
            )  # fmt: skip
        show(table)
    check = result.get("check_index")
    if check:
        stdout.print(
            f"index {check['kind']}: recall@10 {check['recall@10']:.3f} against exact search on "
            f"{check['on']}; {check['speedup']}x faster ({check['index_s']:.4f} s vs "
            f"{check['exact_s']:.4f} s)",
            soft_wrap=True,
        )
    retrieval = result.get("retrieval")
    if retrieval:
        table = Table(
            title=f"retrieval on {retrieval['store']} ({retrieval['classes']} class queries, "
            f"{retrieval['n_videos']} videos)",
            title_justify="left",
        )
        for column in ("score", "mAP", "P@10", "P@50"):
            table.add_column(column, justify="left" if column == "score" else "right")
        for name, numbers in retrieval["rankings"].items():
            chosen = " (--score)" if name == retrieval["score"] else ""
            cells = (numbers[key] for key in ("map", "p@10", "p@50"))
            table.add_row(name + chosen, *(f"{value:.2f}" for value in cells))
        show(table)
        stdout.print(
            f"chance {retrieval['chance_precision']:.2f}; zero-shot top-1 "
            f"{retrieval['zeroshot_top1']:.2f}; scores normalised against {retrieval['bank']}; "
            "written to the run's metrics.json",
            soft_wrap=True,
        )
    if result.get("html"):
        stdout.print(f"page: {result['html']}", soft_wrap=True)
    ranked = f", {result['score']} against {result['bank']}" if result.get("bank") else ""
    stdout.print(
        f"{result['search']} search over {result['n_videos']} videos ({result['variant']} "
        f"vectors{ranked}), {result['seconds']:.2f} s",
        soft_wrap=True,
    )


def print_demo(result: dict) -> None:
    """The demo's two result tables and closing lines."""
    views = result["close_set"][0]["views"]
    table = Table(
        title=f"mote demo: close-set top-1 on held-out videos ({_views_text(views)} per video, "
        "scores fused)"
    )
    for column in ("arch", "top-1", "top-5", "videos", "params (M, merged)"):
        table.add_column(column)
    for row in result["close_set"]:
        cells = (f"{row['top1']:.1f}", f"{row['top5']:.1f}", str(row["n_videos"]))
        table.add_row(row["arch"], *cells, row["params_m_merged"])
    show(table)
    stdout.print(f"chance is {result['chance']:.1f}%")
    table = Table(title="mote demo: zero-shot top-1 on held-out classes (TFM on)")
    for column in ("arch", "top-1", "videos"):
        table.add_column(column)
    for row in result["zero_shot"]:
        table.add_row(row["arch"], f"{row['top1']:.1f}", str(row["n_videos"]))
    show(table)
    stdout.print(
        f"    held out: {', '.join(result['held_out'])}; a random tiny CLIP text tower knows "
        f"nothing of these words, so expect about chance ({result['zero_shot_chance']:.0f}%): "
        "this exercises the protocol, not CLIP"
    )
    _print_demo_predictions(result)
    _print_demo_e2e(result, views)
    stdout.print(f"demo finished in {result['seconds']:.1f} s; report: {result['report']}")
    stdout.print(
        "next, your own videos: write a list of 'relative/path label' lines and an 'id,name' "
        "labels CSV, then `mote extract --dataset list --root DIR --list LIST --labels CSV --out "
        "train.zarr` and `mote train-temporal --train train.zarr --out runs/mine` (README.md, "
        "'A short tour')",
        soft_wrap=True,
    )


def _print_demo_predictions(result: dict) -> None:
    """The demo's predict table: two held-out files, the truth and the top classes."""
    predictions = result.get("predict")
    if predictions is None:
        return
    table = Table(title="mote demo: mote predict on two held-out video files")
    for column in ("video", "true class", "predicted", "prob", "runner-up"):
        table.add_column(column)
    for video, truth in zip(predictions["videos"], result["predict_truth"], strict=True):
        top = video["top"]
        if not top:
            table.add_row(Path(video["video"]).name, truth, f"failed: {video['error']}")
            continue
        runner_up = top[1]["label"] if len(top) > 1 else ""
        cells = (top[0]["label"], f"{top[0]['score']:.4f}", runner_up)
        table.add_row(Path(video["video"]).name, truth, *cells)
    show(table)
    stdout.print(
        f"    try it on any video: mote predict --run {result['predict_run']} "
        f"{predictions['videos'][0]['video']}",
        soft_wrap=True,
    )


def _print_demo_e2e(result: dict, views: str) -> None:
    """The demo's finetune-e2e line, against the cache run on the same clip."""
    e2e = result.get("e2e")
    if e2e is None:
        return
    per_epoch = ", ".join("n/a" if v is None else f"{v:.1f}" for v in e2e["val_top1_per_epoch"])
    start = e2e["init_top1_same_clip"]
    verdict = (
        "tuning CLIP too held or beat the cache run"
        if e2e["top1"] >= start
        else "below the cache run this time: a few epochs on a few dozen videos move by "
        "single videos"
    )
    stdout.print(
        f"finetune-e2e, {e2e['epochs']} epochs warm-started from {e2e['init_run']}: "
        f"val top-1 {e2e['top1']:.1f} on {e2e['n_videos']} videos, 1 clip each (per epoch "
        f"{per_epoch}); the cache run scores {start:.1f} on that same clip (the table's "
        f"{result['close_set'][0]['top1']:.1f} fuses {_views_text(views)}). Its training "
        f"mirrors clips and swaps the left/right labels (--flip {e2e['flip']}); {verdict}",
        soft_wrap=True,
    )


def _views_text(layout: str) -> str:
    """A store's view layout for a reader: '3x1' -> '3 clips'; '4x3' -> '4 clips x 3 crops'."""
    clips, _, crops = layout.partition("x")
    text = "1 clip" if clips == "1" else f"{clips} clips"
    return text if crops in ("", "1") else f"{text} x {crops} crops"


def print_extract(summary: dict) -> None:
    """The store's table, then what ``--repair`` re-extracted."""
    print_summary_table(summary, f"extracted {summary['store']}")
    repaired = summary.get("repaired")
    if repaired is not None:
        for line in repaired["problems"]:
            stderr.print(f"repaired: {line}", highlight=False, soft_wrap=True)
        stdout.print(f"repair: {repaired['videos']} damaged video(s) re-extracted")


def print_info(summary: dict, title: str) -> None:
    """The store's table, then what ``--verify`` found."""
    print_summary_table(summary, title)
    if summary.get("verify") is not None:
        print_verify(summary["verify"])


def print_imported(result: dict, ckpt: Path, out: Path) -> None:
    print_metrics(result, f"imported {ckpt}")
    stdout.print(f"next: mote extract --run {out} ... then mote evaluate --run {out} ...")


def print_fewshot(result: dict) -> None:
    table = Table(title=f"{len(result['shots'])} K-shot settings, top-1 over seeds")
    for column in ("K", "top-1 mean +- std", "per seed"):
        table.add_column(column)
    for k, row in result["shots"].items():
        table.add_row(
            k,
            f"{row['top1_mean']:.2f} +- {row['top1_std']:.2f}",
            ", ".join(f"{v:.1f}" for v in row["top1"]),
        )
    show(table)


def print_report(result: dict, runs: int) -> None:
    table = Table(title=f"report of {runs} run(s)")
    for column in ("run", "model", "close-set top-1", "HM ZS", "trade-off"):
        table.add_column(column)
    for row in result["runs"]:
        cells = (row["top1"], row["zs_hm"], row["tradeoff"])
        numbers = ["n/a" if v is None else f"{v:.2f}" for v in cells]
        table.add_row(row["label"], row["switches"], *numbers)
    show(table)
    stdout.print(f"report: {result['report']} ({len(result['plots'])} plot(s) beside it)")
