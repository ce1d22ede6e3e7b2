"""Exact top-k search over streamed chunks against one full matmul and a sort by (score, row).

The tie tests use rows whose inner products are exact in fp32 and fp16 whatever the summation
order (four entries of +-0.5 a row: every product is a multiple of 0.25), so the expected order is
known exactly and ties are everywhere."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from mote.pipeline.errors import ConfigError
from mote.pipeline.search.exact import exact_top_k


def quarter_rows(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    """[n, dim] unit rows, each four entries of +-0.5: inner products are exact multiples of
    0.25, so many rows tie."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((n, dim), np.float32)
    for row in rows:
        row[rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return rows


def brute_force(queries: np.ndarray, rows: np.ndarray, k: int, exclude=None):
    """Scores and rows of a full float64 matmul, sorted by score descending then row."""
    full = queries.astype(np.float64) @ rows.astype(np.float64).T
    out_scores, out_rows = [], []
    for q, scores in enumerate(full):
        order = np.lexsort((np.arange(len(rows)), -scores))
        if exclude is not None:
            order = order[~np.isin(order, list(exclude[q]))]
        out_rows.append(order[:k])
        out_scores.append(scores[order[:k]])
    return np.array(out_scores), np.array(out_rows)


def chunked(rows, size: int):
    return [rows[i : i + size] for i in range(0, len(rows), size)]


@pytest.mark.parametrize("size", [1, 7, 64, 300, 305])
@pytest.mark.parametrize("k", [1, 5, 300, 303])
def test_streamed_top_k_is_the_full_sort_with_ties_by_row(size: int, k: int) -> None:
    rows = quarter_rows(300)
    queries = np.concatenate([rows[[0, 17, 299]], quarter_rows(2, seed=1)])
    scores, found = exact_top_k(queries, chunked(rows, size), k)
    want_scores, want_rows = brute_force(queries, rows, k)
    assert found.dtype == np.int64 and scores.dtype == np.float32
    assert found.shape == (5, min(k, 300))  # k > N: every row once
    np.testing.assert_array_equal(found, want_rows)
    np.testing.assert_array_equal(scores, want_scores.astype(np.float32))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_torch_chunks_and_half_precision_give_the_same_ranking(dtype: torch.dtype) -> None:
    rows = quarter_rows(200, seed=2)
    queries = rows[[3, 4]]
    chunks = [torch.from_numpy(c).to(dtype) for c in chunked(rows, 33)]
    scores, found = exact_top_k(torch.from_numpy(queries), chunks, 20, dtype=dtype)
    want_scores, want_rows = brute_force(queries, rows, 20)
    np.testing.assert_array_equal(found, want_rows)
    np.testing.assert_array_equal(scores, want_scores.astype(np.float32))


def test_random_rows_return_their_own_scores_in_order() -> None:
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((1000, 48)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    queries = rows[[5, 600]] + 0.01 * rng.standard_normal((2, 48)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    scores, found = exact_top_k(queries, chunked(rows, 128), 10)
    want_scores, want_rows = brute_force(queries, rows, 10)
    np.testing.assert_array_equal(found, want_rows)  # no near-ties among these top 10
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert found[0, 0] == 5 and found[1, 0] == 600
    assert np.all(np.diff(scores, axis=1) <= 0)


@pytest.mark.parametrize("size", [1, 50, 120])
def test_excluded_rows_are_never_returned(size: int) -> None:
    rows = quarter_rows(120, seed=4)
    queries = rows[[10, 11, 12]]
    exclude = [[10], [], [12, 13, 500, -1]]  # out-of-range rows exclude nothing
    scores, found = exact_top_k(queries, chunked(rows, size), 8, exclude=exclude)
    want_scores, want_rows = brute_force(queries, rows, 8, exclude)
    np.testing.assert_array_equal(found, want_rows)
    np.testing.assert_array_equal(scores, want_scores.astype(np.float32))
    assert 10 not in found[0] and 12 not in found[2] and found[0, 0] != found[1, 0]


def test_excluding_rows_of_a_small_collection_shortens_every_answer() -> None:
    rows = quarter_rows(6, seed=5)
    scores, found = exact_top_k(rows[[0, 1]], [rows], 10, exclude=[[0, 1], [1]])
    assert found.shape == (2, 4)  # 6 rows less the two the first query drops
    assert not {0, 1} & set(found[0].tolist()) and 1 not in found[1]


def test_no_rows_give_an_empty_answer() -> None:
    scores, found = exact_top_k(quarter_rows(2), [], 5)
    assert scores.shape == found.shape == (2, 0)


@pytest.mark.parametrize(
    ("queries", "chunks", "k", "exclude", "words"),
    [
        (quarter_rows(1), [quarter_rows(4)], 0, None, "k must be at least 1"),
        (2 * quarter_rows(2), [quarter_rows(4)], 3, None, "query 0 has norm 2"),
        (quarter_rows(1), [quarter_rows(4, dim=8)], 3, None, "the queries have D=16"),
        (quarter_rows(2), [quarter_rows(4)], 3, [[1]], "exclude has 1 entries for 2 queries"),
        (np.ones(16, np.float32) / 4, [quarter_rows(4)], 3, None, "queries must be [Q, D]"),
    ],
)
def test_bad_input_is_one_clear_error(queries, chunks, k, exclude, words) -> None:
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        exact_top_k(queries, chunks, k, exclude=exclude)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_cpu_ranking() -> None:
    rows = quarter_rows(500, seed=6)
    queries = rows[:4]
    on_gpu = exact_top_k(queries, chunked(rows, 64), 30, "cuda", exclude=[[0], [], [], [3]])
    on_cpu = exact_top_k(queries, chunked(rows, 64), 30, "cpu", exclude=[[0], [], [], [3]])
    np.testing.assert_array_equal(on_gpu[1], on_cpu[1])
    np.testing.assert_array_equal(on_gpu[0], on_cpu[0])


def _syncs(chunks: int) -> int:
    """Synchronising CUDA calls (sync debug mode) of one search over ``chunks`` chunks."""
    rows = torch.from_numpy(quarter_rows(640, seed=7)).cuda()
    parts = list(rows.chunk(chunks))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exact_top_k(quarter_rows(3, seed=8), parts, 10, "cuda", exclude=[[1], [], []])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_waits_as_often_for_twenty_chunks_as_for_two() -> None:
    assert _syncs(20) == _syncs(2)  # nothing in the loop waits for the device


@pytest.mark.parametrize("spread", [0.05, 1.0])  # near-ties past the candidates; none
def test_a_half_precision_scan_of_resident_rows_ends_in_the_fp32_order(tmp_path, spread) -> None:
    """`mote serve` scans resident rows in fp16 where the CPU does that faster: its candidates
    are re-scored in fp32 (and a query whose near-ties run past them scanned again in fp32),
    so the hits (rows and scores) are those of an fp32 scan of the same rows, though fp16
    rounds the near-equal scores of the tight cluster (checked below)."""
    from mote.cache_schema.embeddings import EmbeddingsFile
    from mote.pipeline.search.engine import Query, ResidentRows, search
    from mote.pipeline.search.scoring import Scorer

    rng = np.random.default_rng(0)
    centre = rng.standard_normal(64)
    rows = centre + spread * rng.standard_normal((20_000, 64))
    rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float16)
    identity = {"run": None, "store": {"path": "none"}, "clip": {}, "variant": {}, "dim": 64,
                "n_rows": len(rows)}  # fmt: skip
    file = EmbeddingsFile.create(tmp_path / "e.zarr", identity, chunk_rows=4096)
    for chunk in range(file.n_chunks):
        start, stop = file.chunk_range(chunk)
        file.write_chunk(chunk, rows[start:stop])
    ids = [f"v{i}" for i in range(len(rows))]
    labels = np.full(len(rows), -1, np.int32)
    file.write_table({"store_row": np.arange(len(rows)), "video_id": ids, "path": ids,
                      "label": labels, "label_name": [None] * len(ids)})  # fmt: skip
    queries = [Query(f"q{i}", "embedding", (v / np.linalg.norm(v)).astype(np.float32))
               for i, v in enumerate(centre + 0.05 * rng.standard_normal((4, 64)))]  # fmt: skip
    scorers = {"cosine": Scorer("cosine", None, 1.0)}
    cpu = torch.device("cpu")
    full = search(queries, ResidentRows(file, cpu, torch.float32), 10, cpu, None, scorers)
    half = search(queries, ResidentRows(file, cpu, torch.float16), 10, cpu, None, scorers)
    for (want_scores, want_rows), (got_scores, got_rows) in zip(full, half, strict=True):
        assert got_rows.tolist() == want_rows.tolist()
        np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=1e-6)
    if spread < 0.1:
        fp16 = torch.from_numpy(rows[:2000]) @ torch.from_numpy(queries[0].vector).half()
        assert len(torch.unique(fp16)) < 0.5 * len(fp16)  # the rounding that had to be undone
