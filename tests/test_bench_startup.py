"""bench/startup.py at its --smoke size, so the benchmark cannot rot: every command's help and
the extract start-up are measured as real processes (no timing is asserted: speed is the
benchmark's)."""

from __future__ import annotations

from helpers import smoke_bench

from mote.stages.cli import BUILDERS


def test_the_startup_bench_times_every_commands_help_and_extract(tmp_path) -> None:
    figures, printed = smoke_bench("startup.py", tmp_path)
    helps = figures["help_ratio"]
    assert set(helps) == {"mote --help"} | {f"mote {name} --help" for name in BUILDERS}
    assert helps["mote --help"] == 1.0 and figures["worst_help_ratio"] == max(helps.values())
    extract = figures["extract"]
    assert extract["wall_s"] > extract["inside_s"] > 0 and extract["fixed_over_imports"] > 0
    assert "fixed start-up" in printed and "mote extract --help" in printed
