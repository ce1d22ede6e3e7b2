"""Rewrite the bench-written tables of docs/performance.md from the current code (not a test).

Each table sits between ``<!-- bench: COMMAND -->`` and ``<!-- /bench -->``; this runs every
COMMAND (a bench with ``--markdown``) and puts what it prints in place, so a change that moves
the counts moves the docs in one step. ``tests/test_bench_tables.py`` checks they agree.

    python bench/doc_tables.py
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
BLOCK = re.compile(r"(<!-- bench: (.+?) -->\n)(.*?)(<!-- /bench -->)", re.DOTALL)


def table_of(command: str, header: str) -> str:
    """What ``command`` prints from the table's header line on."""
    argv = shlex.split(command)
    done = subprocess.run(
        [sys.executable, *argv[1:]], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return done.stdout[done.stdout.index(header) :].strip()


def main() -> None:
    text = DOC.read_text(encoding="utf-8")

    def rewritten(match: re.Match[str]) -> str:
        opening, command, table, closing = match.groups()
        fresh = table_of(command, table.strip().splitlines()[0])
        print(f"{command}: {'unchanged' if fresh == table.strip() else 'rewritten'}")
        return f"{opening}{fresh}\n{closing}"

    DOC.write_text(BLOCK.sub(rewritten, text), encoding="utf-8")


if __name__ == "__main__":
    main()
