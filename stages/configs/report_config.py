"""Settings of ``mote report``: the runs to compare and the output folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mote.pipeline.config import Settings, setting


@dataclass(frozen=True)
class ReportConfig(Settings):
    """Settings of ``mote report``: the run folders to compare and where the report goes."""

    runs: tuple[Path, ...] = setting(
        help="Run folders to compare (one or more).", argument=True, metavar="RUN"
    )
    out: Path = setting(Path("mote-report"), "Folder for report.md and PNGs.")
