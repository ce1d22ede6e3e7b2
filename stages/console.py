"""Terminal output for the CLI: a rich progress bar on stderr and result tables."""

from __future__ import annotations

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
from rich.text import Text

stderr = Console(stderr=True)
stdout = Console()


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
    """The ``Progress`` protocol drawn with rich on stderr."""

    def __init__(self, console: Console = stderr) -> None:
        self._console = console
        self._progress: Progress | None = None
        self._task = None

    def start(self, total: int, label: str, unit: str = "videos") -> None:
        """A fresh bar per stage, so one RichProgress can serve several stages in a row."""
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
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
