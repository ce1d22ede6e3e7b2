"""Output for a reader that is not a terminal (a log, a pipe, ``less``, a file): whole plain lines.

A rich bar redrawn in place becomes wrapped fragments in a log, and rich help panels are cut to
80 columns there. Off a terminal, progress is a line at each tenth of the work (and at least once a
minute) and ``--help`` is click's plain text with every option's help on one line. stages/cli.py
decides which reader it has (``stdout.is_terminal``, ``stderr.is_terminal``).
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable
from typing import Any

from mote.pipeline.progress import Progress
from mote.stages.console import UNWRAPPED, RichProgress, stderr, stdout


def plain_help(command: Any, ctx: Any) -> str:
    """``command``'s help as plain text: usage, the description's lines, then each rich panel
    (Options, Training, ...) as a section, one line per option with its whole help.

    ``command`` and ``ctx`` are click's or (newer typer) those of typer's copy of click, whose
    classes are not click's: only their methods are used, and ``ctx``'s formatter class."""
    out = ctx.formatter_class(width=UNWRAPPED)
    command.format_usage(ctx, out)
    description = inspect.cleandoc(command.help or "")
    if description:  # the docstring's own lines, as rich keeps them (a torchrun line whole)
        out.write_paragraph()
        out.write("".join(f"  {line}".rstrip() + "\n" for line in description.splitlines()))
    sections: dict[str, list[tuple[str, str]]] = {"Arguments": [], "Options": []}
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None:
            panel = getattr(param, "rich_help_panel", None) or "Options"
            title = "Arguments" if param.param_type_name == "argument" else panel
            sections.setdefault(title, []).append(record)
    for title, rows in sections.items():
        if rows:
            with out.section(title):
                out.write_dl(rows, col_max=UNWRAPPED)  # a long flag keeps its help beside it
    format_commands = getattr(command, "format_commands", None)
    if format_commands is not None:  # the group: its command list
        format_commands(ctx, out)
    command.format_epilog(ctx, out)
    return out.getvalue().replace("\\[", "[")  # the escapes rich markup needs, not shown here


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class LineProgress:
    """The ``Progress`` protocol as whole lines on stderr: one at the start, one per tenth of the
    work (``gap_s`` apart at least, so a quick stage is not a screenful) or after ``every_s``
    seconds without one, and the last at ``finish``. An update outside ``start``...``finish``
    is dropped: a caller that forgets ``start`` loses its lines, not its run."""

    def __init__(
        self,
        every_s: float = 60.0,
        gap_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[str], None] | None = None,
    ) -> None:
        self._every_s, self._gap_s = every_s, gap_s
        self._write = write or _to_stderr
        self._clock = clock
        self._total = 0
        self._label = ""
        self._unit = "videos"
        self._active = False

    def start(self, total: int, label: str, unit: str = "videos") -> None:
        self._total, self._label, self._unit = total, label, unit
        self._completed = self._failed = self._frames = 0
        self._started = self._clock()
        self._active = True
        self._emit()

    def update(self, *, done: int = 0, failed: int = 0, frames: int = 0) -> None:
        if not self._active:
            return
        self._completed += done + failed
        self._failed += failed
        self._frames += frames
        quiet_for = self._clock() - self._last_at
        if quiet_for >= self._every_s or (
            quiet_for >= self._gap_s and self._tenth() > self._last_tenth
        ):
            self._emit()

    def message(self, text: str) -> None:
        self._write(text)

    def finish(self) -> None:
        if self._active and self._completed != self._last_completed:
            self._emit()
        self._active = False

    def _tenth(self) -> int:
        return self._completed * 10 // self._total if self._total else 10

    def _emit(self) -> None:
        now = self._clock()
        elapsed = now - self._started
        self._last_at, self._last_tenth, self._last_completed = now, self._tenth(), self._completed
        percent = self._completed * 100 // self._total if self._total else 100
        parts = [f"{self._label}: {self._completed}/{self._total} {self._unit} ({percent}%)"]
        running = elapsed > 0 and self._completed
        if running:
            parts.append(f"{self._completed / elapsed:.1f} {self._unit}/s")
            if self._unit == "videos":
                parts.append(f"{self._frames / elapsed:.0f} frames/s")
        if self._unit == "videos":
            parts.append(f"{self._failed} failed")
        parts.append(f"{_clock(elapsed)} elapsed")
        if running and self._completed < self._total:
            parts.append(
                f"{_clock((self._total - self._completed) * elapsed / self._completed)} left"
            )
        self._write(", ".join(parts))


class TerminalHelp:
    """``--help``: typer's rich panels on a terminal; off one (a pipe, a file, ``less``) plain
    text with every option's whole help on one line, which rich would box and cut to 80 columns.
    A mixin for the click command and group classes of stages/cli.py."""

    def get_help_option(self, ctx: Any) -> Any:
        """typer's ``--help``, defaulting to False instead of None: a bool value skips typer's
        pydantic coercion, whose import would double what ``mote X --help`` costs."""
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None and option.default is None:
            option.default = False
        return option

    def format_help(self, ctx: Any, formatter: Any) -> None:
        if stdout.is_terminal:
            super().format_help(ctx, formatter)  # type: ignore[misc]
        else:
            formatter.write(plain_help(self, ctx))  # type: ignore[arg-type]


def command_progress() -> Progress:
    """A bar redrawn in place on a terminal; whole lines in a log."""
    return RichProgress() if stderr.is_terminal else LineProgress()
