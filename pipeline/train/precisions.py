"""The training precisions a command accepts, by name: what ``--precision`` offers and checks,
apart from ``step.py`` (torch), so settings and ``--help`` need no torch."""

from __future__ import annotations

from mote.pipeline.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
