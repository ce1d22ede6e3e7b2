"""bench/search.py at its tiny --smoke sizes, so the benchmark cannot rot: every section runs
and reports its figures (no timing is asserted: speed is the benchmark's, not the test's)."""

from __future__ import annotations

import pytest
from helpers import smoke_bench


def test_the_search_bench_runs_every_section(tmp_path) -> None:
    pytest.importorskip("faiss")
    figures, printed = smoke_bench("search.py", tmp_path)
    assert [r["videos"] for r in figures["embed"]] == [64] and figures["embed"][0]["seconds"] > 0
    exact = figures["exact"]
    assert {(r["threads"], r["batch"]) for r in exact} == {(1, 1), (1, 32), (2, 1), (2, 32)}
    assert len(figures["dtype"]) == 8
    assert [(r["score"], r["n"], r["bank"]) for r in figures["score"]] == [
        ("statistics", 2000, 400), ("cosine", 2000, 400), ("softmax", 2000, 400)
    ]  # fmt: skip
    kinds = {r["kind"]: r for r in figures["index"] if "kind" in r}
    assert set(kinds) == {"hnsw", "ivfpq"}
    assert all(r["recall_at_10"] >= 0.9 for r in kinds.values())  # 3,000 clustered rows
    assert all(r["queries_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] for r in exact)
    assert "SUMMARY embed N=64 cpu" in printed and "; exact N=2,000 cpu" in printed
