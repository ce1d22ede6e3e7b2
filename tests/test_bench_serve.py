"""bench/serve.py at its tiny --smoke sizes, so the benchmark cannot rot: a real `mote serve`
answers every kind of request it times, the one-shot command runs, an index is built and served,
and every figure is reported (no timing is asserted: speed is the benchmark's, not the test's)."""

from __future__ import annotations

import pytest
from helpers import smoke_bench


def test_the_serve_bench_reports_the_server_the_command_and_the_index(tmp_path):
    pytest.importorskip("faiss")
    figures, printed = smoke_bench("serve.py", tmp_path, "--index", "hnsw")
    (row,) = figures["serve"]
    assert row["n"] == 2000 and row["ready_s"] > 0
    for part in ("text", "scoring"):
        times = row[part]
        assert times["requests"] == 4 and times["queries_per_s"] > 0
        assert times["took"]["p99_ms"] >= times["took"]["p50_ms"] > 0
        assert times["search"]["p50_ms"] > 0
    assert row["text"]["encode"]["p50_ms"] > row["scoring"]["encode"]["p50_ms"]  # a tower ran
    assert row["batch_text"]["batch"] == 8 and row["batch_vectors"]["gain"] > 0
    assert row["one_shot"]["runs"] == 1 and row["one_shot"]["wall"]["p50_ms"] > 0
    assert figures["tower"]["templates"] == 28 and figures["tower"]["p50_ms"] > 0
    (index,) = figures["index"]
    assert index["index"] == "hnsw" and index["scoring"]["requests"] == 4
    assert "SUMMARY serve N=2,000" in printed and "SUMMARY index hnsw N=2,000" in printed
