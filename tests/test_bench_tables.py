"""The tables in docs/performance.md that a bench writes (``--markdown``) must be the ones the
current code prints: a change that moves the counts must move the docs too. Each such table sits
between ``<!-- bench: COMMAND -->`` and ``<!-- /bench -->``; only machine-independent figures
(op counts) are written this way."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- bench: (.+?) -->\n(.*?)<!-- /bench -->", re.DOTALL)


def committed_tables() -> list[tuple[str, str]]:
    """(command, table) for every bench-written table in docs/performance.md."""
    text = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    return [(m.group(1), m.group(2).strip()) for m in BLOCK.finditer(text)]


def test_the_op_count_table_comes_from_the_current_code():
    tables = committed_tables()
    assert tables, "docs/performance.md has no bench-written table"
    for command, table in tables:
        argv = shlex.split(command)
        assert argv[0] == "python" and "--markdown" in argv, command
        done = subprocess.run(
            [sys.executable, *argv[1:]], capture_output=True, text=True, cwd=ROOT, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        header = table.splitlines()[0]
        printed = done.stdout[done.stdout.index(header) :].strip()
        assert printed == table, f"run `python bench/doc_tables.py` and commit:\n{printed}"
