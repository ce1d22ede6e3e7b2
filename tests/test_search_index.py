"""The faiss index (the mote[faiss] extra, installed by .ci/run): recall against exact search on
clustered rows with the default settings, the file round trip, and a stale or foreign file
refused with one line."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from mote.pipeline.errors import ConfigError, IndexMismatch
from mote.pipeline.search.exact import exact_top_k
from mote.pipeline.search.index import (
    SearchIndex,
    build_index,
    plan_index,
    recall_at_k,
    require_faiss,
)

pytest.importorskip("faiss")
N, D = 4000, 64


def clustered(n: int, seed: int, centers: np.ndarray) -> np.ndarray:
    """Unit rows around ``centers`` (cosine about 0.8 to their centre)."""
    rng = np.random.default_rng(seed)
    rows = centers[rng.integers(len(centers), size=n)]
    rows = rows + 0.75 * rng.standard_normal((n, D)).astype(np.float32) / np.sqrt(D)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    centers = np.random.default_rng(0).standard_normal((40, D)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    return clustered(N, 1, centers), clustered(50, 2, centers)


def chunks_of(rows: np.ndarray, size: int = 500):
    return lambda: (rows[i : i + size] for i in range(0, len(rows), size))


@pytest.fixture(scope="module", params=["hnsw", "ivfpq"])
def built(request, data) -> SearchIndex:
    rows, _ = data
    return build_index(chunks_of(rows), N, D, request.param, "emb:v1")


def test_the_default_index_finds_the_exact_top_10(built: SearchIndex, data) -> None:
    rows, queries = data
    _, exact = exact_top_k(queries, chunks_of(rows)(), 10)
    scores, found = built.search(queries, 10)
    assert found.shape == (50, 10) and found.dtype == np.int64 and scores.dtype == np.float32
    assert recall_at_k(found, exact, 10) >= 0.9
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first


def test_a_saved_index_loads_and_answers_the_same(built: SearchIndex, data, tmp_path) -> None:
    _, queries = data
    path = tmp_path / "embeddings.index"
    built.save(path)
    loaded = SearchIndex.load(path, "emb:v1")
    assert (loaded.kind, loaded.count, loaded.search_settings) == (
        built.kind,
        N,
        built.search_settings,
    )
    for a, b in zip(loaded.search(queries, 10), built.search(queries, 10), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not (tmp_path / "embeddings.index.partial").exists()


def test_an_index_of_other_embeddings_is_refused(built: SearchIndex, tmp_path) -> None:
    path = tmp_path / "embeddings.index"
    built.save(path)
    with pytest.raises(IndexMismatch, match="built from embeddings emb:v1, these are emb:v2; it "):
        SearchIndex.load(path, "emb:v2")


def test_a_foreign_or_cut_file_is_refused(built: SearchIndex, tmp_path) -> None:
    foreign = tmp_path / "notes.index"
    foreign.write_text("hello\n")
    with pytest.raises(IndexMismatch, match="not a mote search index; delete it"):
        SearchIndex.load(foreign, "emb:v1")
    path = tmp_path / "cut.index"
    built.save(path)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(IndexMismatch, match="damaged"):
        SearchIndex.load(path, "emb:v1")


def test_a_missing_file_is_one_line(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        SearchIndex.load(tmp_path / "none.index", "emb:v1")


def test_the_row_count_is_checked(data) -> None:
    rows, _ = data
    with pytest.raises(ConfigError, match="have 4000 rows, not the 4001 given"):
        build_index(chunks_of(rows), N + 1, D, "hnsw", "emb:v1")
    with pytest.raises(ConfigError, match="expected D=32"):
        build_index(chunks_of(rows), N, 32, "hnsw", "emb:v1")


def test_defaults_follow_the_collection_size() -> None:
    small, large = plan_index("ivfpq", 4000, 64), plan_index("ivfpq", 1_000_000, 512)
    assert small.factory == "IVF64,PQ8x6np,Refine(SQfp16)" and small.train_rows == 39 * 64
    assert large.factory == "IVF2048,PQ64x8np,Refine(SQfp16)" and large.train_rows == 39 * 2048
    assert large.search == {"nprobe": 128, "k_factor": 8}
    with pytest.raises(ConfigError, match="'flat' is not one of hnsw, ivfpq"):
        plan_index("flat", 10, 8)


def test_recall_counts_the_shared_rows() -> None:
    exact = np.array([[0, 1, 2], [3, 4, 5]])
    assert recall_at_k(np.array([[2, 1, 0], [3, 9, -1]]), exact, 3) == pytest.approx(4 / 6)
    assert recall_at_k(np.array([[0, 7, 8], [9, 9, 3]]), exact, 1) == 0.5


def test_without_faiss_the_error_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # what `import faiss` meets when absent
    with pytest.raises(ConfigError, match=r"pip install 'mote\[faiss\]'"):
        require_faiss()
