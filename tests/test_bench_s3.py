"""bench/s3.py at its --smoke size, so the benchmark cannot rot: all four configurations run
against the loopback S3 and every request is counted where it should be (no timing is
asserted: speed is the benchmark's, not the test's)."""

from __future__ import annotations

import pytest
from helpers import smoke_bench


@pytest.mark.slow
def test_the_s3_bench_counts_every_configuration(tmp_path) -> None:
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    figures, printed = smoke_bench("s3.py", tmp_path)
    rows = {row["config"]: row for row in figures["configs"]}
    assert list(rows) == ["local -> local", "local -> S3", "S3 -> local", "S3 -> S3"]
    assert rows["local -> local"]["total_requests"] == 0 and rows["local -> local"]["ratio"] == 1
    assert all(row["videos_per_s"] > 0 for row in rows.values())
    videos, chunks = figures["videos"], figures["chunks"]
    for name in ("S3 -> local", "S3 -> S3"):  # one GET per video, read whole by a worker
        assert rows[name]["roles"]["videos"]["requests"] == videos
        assert rows[name]["roles"]["videos"]["down"] == figures["video_bytes"]
    assert rows["S3 -> local"]["requests"]["PUT"] == 0  # nothing of the store goes to S3
    assert rows["local -> S3"]["roles"]["videos"]["requests"] == 0
    for name in ("local -> S3", "S3 -> S3"):
        row = rows[name]
        assert row["roles"]["claim"]["requests"] >= 2  # taken and released
        # every chunk writes at least embeddings, frame indices, num_frames and its status
        assert row["roles"]["chunk data"]["requests"] >= 4 * chunks
        assert row["requests"]["PUT"] > 0 and row["store_requests_per_chunk"] > 0
        assert sum(row["requests"].values()) == row["total_requests"]
        assert row["bytes_per_request"] == round(
            (row["bytes_up"] + row["bytes_down"]) / row["total_requests"]
        )
    assert "SUMMARY S3->S3" in printed and "| S3 -> S3 |" in printed
