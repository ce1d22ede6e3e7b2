"""``mote search --check-index``: how well and how fast a faiss index answers, against exact
search over the same embeddings file."""

from __future__ import annotations

import time

import numpy as np
import torch

from mote.cache_schema.embeddings import EmbeddingsFile
from mote.pipeline.search.exact import exact_top_k
from mote.pipeline.search.index import SearchIndex, recall_at_k

RECALL_K = 10


def check_index(
    queries: list[np.ndarray],
    file: EmbeddingsFile,
    index: SearchIndex,
    device: torch.device,
    sample: int,
) -> dict:
    """recall@10 of the index against exact search, and how many times faster it answered, on
    the query vectors, or on ``sample`` of the collection's own rows when there are none."""
    if queries:
        vectors = np.stack(queries).astype(np.float32)
        source = "the queries"
    else:
        rng = np.random.default_rng(0)
        rows = np.sort(rng.choice(file.n_rows, min(sample, file.n_rows), replace=False))
        vectors = file.read_vectors(rows).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        source = f"{len(rows)} of the collection's own rows"
    started = time.perf_counter()
    chunks = (chunk for _, chunk in file.iter_chunks())
    _, exact_rows = exact_top_k(vectors, chunks, RECALL_K, device)
    exact_s = time.perf_counter() - started
    started = time.perf_counter()
    _, index_rows = index.search(vectors, RECALL_K)
    index_s = time.perf_counter() - started
    return {
        "kind": index.kind,
        "queries": int(len(vectors)),
        "on": source,
        "recall@10": round(recall_at_k(index_rows, exact_rows, RECALL_K), 4),
        "exact_s": round(exact_s, 4),
        "index_s": round(index_s, 4),
        "speedup": round(exact_s / index_s, 1) if index_s > 0 else None,
    }
