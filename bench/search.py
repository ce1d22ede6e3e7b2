"""Benchmark (not a test): exact top-k search (pipeline/search/exact.py) and the faiss index
(pipeline/search/index.py) over synthetic video embeddings.

The embeddings: D=512 unit rows around --clusters random unit centres, each row
normalise(centre + 0.6 B z / sqrt(32) + 0.2 g / sqrt(D)) with B a fixed random orthonormal
[D, 32] basis, z ~ N(0, I_32) and g ~ N(0, I_D): about 0.85 cosine to its centre, spread over a
32-dim subspace (a low intrinsic dimension, as real embeddings have) plus a little isotropic
noise. Queries are fresh draws of the same distribution. Rows are made --chunk at a time into one
array and searched as --chunk-row views (the store already embedded, in memory).

Sections (--sections, comma-separated; default "embed,exact,score,dtype,index"):

  embed  `mote embed` itself (stages/embed.py, each device): a store of --embed-videos random
         fp16 clips (1 view, 8 frames, D=--dim) scored by a one-epoch run of the spec's MoTE for
         that width, written to an embeddings file; videos/s over the command's wall time
         (the run loaded, every chunk written, the Parquet table last).

  exact  for each --sizes N and each device (cpu, and cuda when present): --singles single
         queries and --batches batches of --batch queries, one after another; queries/s and the
         latency p50/p99 of one call (p99 of 20 calls is about the slowest). fp32 rows on the
         CPU, once per --threads count; on CUDA fp16 rows already on the GPU.
  score  what `mote search --score softmax` (the default) costs: at each --sizes N on the CPU (the
         first --threads count), --singles single queries ranked by cosine and by the softmax
         score against a bank of --bank texts (random unit rows; K400's store has 400) with the
         per-video statistics kept (every search after the first), and the one pass that makes
         those statistics (a [bank, N] matmul, the first search's extra).
  dtype  on the CPU at --dtype-size rows: fp32 rows (the default), fp16 rows upcast to fp32 per
         chunk, and the matmul in fp16 or bf16 itself: is fp16/bf16 storage worth it?
  index  at --index-size rows, for hnsw and ivfpq with their default settings: build seconds,
         recall@10 of --recall-queries queries against exact search, and queries/s of single
         queries and of batches against exact search's on the CPU (the speed-up), both on the
         first --threads count (faiss builds on every core).

    python bench/search.py --json search.json      # 1M rows: about 15 minutes on 2 busy cores
    python bench/search.py --smoke                 # seconds (tests/test_bench_search.py)
    python bench/search.py --sections exact --device cuda --sizes 1000000
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from benchlib import doc_parser, machine, sync, write_store

from mote.pipeline.search.exact import exact_top_k
from mote.pipeline.search.index import build_index, recall_at_k, require_faiss
from mote.pipeline.search.scoring import Scorer, collection_stats

RANK, SPREAD, NOISE = 32, 0.6, 0.2


class Embeddings:
    """The synthetic distribution: fixed centres and subspace, rows drawn by seed."""

    def __init__(self, dim: int, clusters: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.centers = _unit(rng.standard_normal((clusters, dim), dtype=np.float32))
        self.basis = np.linalg.qr(rng.standard_normal((dim, RANK)))[0].astype(np.float32)

    def rows(self, n: int, seed: int, chunk: int = 65536) -> np.ndarray:
        """[n, dim] float32 unit rows, made ``chunk`` at a time (no n-sized temporaries)."""
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.dim), np.float32)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            x = self.centers[rng.integers(len(self.centers), size=m)]
            x += (
                (SPREAD / RANK**0.5)
                * rng.standard_normal((m, RANK), dtype=np.float32)
                @ (self.basis.T)
            )
            x += (NOISE / self.dim**0.5) * rng.standard_normal((m, self.dim), dtype=np.float32)
            out[start : start + m] = _unit(x)
        return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def views(rows, size: int) -> Callable[[], Iterator]:
    return lambda: (rows[i : i + size] for i in range(0, len(rows), size))


def timed(call: Callable[[], object], device: torch.device, times: int) -> list[float]:
    """Seconds of each of ``times`` calls, after one untimed warm-up call."""
    call()
    seconds = []
    for _ in range(times):
        sync(device)
        start = time.perf_counter()
        call()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def latency_row(label: str, seconds: list[float], batch: int, **extra) -> dict:
    qs = sorted(seconds)
    p99 = qs[min(len(qs) - 1, round(0.99 * (len(qs) - 1)))]
    row = dict(case=label, batch=batch, calls=len(qs), queries_per_s=batch / statistics.mean(qs))
    row.update(p50_ms=1000 * statistics.median(qs), p99_ms=1000 * p99, **extra)
    print(
        f"{label:<34} batch {batch:>3}: {row['queries_per_s']:10.1f} q/s  p50 "
        f"{row['p50_ms']:9.2f} ms  p99 {row['p99_ms']:9.2f} ms"
    )
    return row


_ROWS: dict[int, np.ndarray] = {}


def collection(dist: Embeddings, n: int) -> np.ndarray:
    """The N-row collection (seed 1), made once and shared by the sections."""
    if n not in _ROWS:
        _ROWS[n] = dist.rows(n, seed=1)
    return _ROWS[n]


def exact_section(args, dist: Embeddings, queries: np.ndarray) -> list[dict]:
    rows_out = []
    devices = [torch.device(args.device)] if args.device != "all" else _devices()
    for n in args.sizes:
        data = collection(dist, n)
        for device in devices:
            rows = (
                torch.from_numpy(data).to(device, torch.float16) if device.type == "cuda" else data
            )
            for threads in args.threads if device.type == "cpu" else [torch.get_num_threads()]:
                torch.set_num_threads(threads)
                for batch, calls in ((1, args.singles), (args.batch, args.batches)):
                    picks = iter(range(10**9))

                    def call(batch=batch, rows=rows, device=device, picks=picks):
                        start = next(picks) * batch % (len(queries) - batch + 1)
                        q = queries[start : start + batch]
                        return exact_top_k(q, views(rows, args.chunk_rows)(), args.k, device)

                    seconds = timed(call, device, calls)
                    label = f"exact N={n:,} {device.type} {threads} thr"
                    rows_out.append(latency_row(label, seconds, batch, n=n, threads=threads))
    torch.set_num_threads(args.threads[0])
    return rows_out


def score_section(args, dist: Embeddings, queries: np.ndarray) -> list[dict]:
    cpu = torch.device("cpu")
    torch.set_num_threads(args.threads[0])
    bank = torch.from_numpy(dist.rows(args.bank, seed=3))
    out = []
    for n in args.sizes:
        data = collection(dist, n)

        def stats(data=data):
            return collection_stats(bank, views(data, args.chunk_rows)(), 100.0, cpu)

        seconds = timed(stats, cpu, max(1, args.singles // 5))
        label = f"score statistics N={n:,} bank {args.bank}"
        out.append(latency_row(label, seconds, 1, n=n, score="statistics", bank=args.bank))
        for name in ("cosine", "softmax"):
            scorer = None if name == "cosine" else Scorer(name, bank, 100.0, stats())

            def call(scorer=scorer, data=data):
                chunks = views(data, args.chunk_rows)()
                return exact_top_k(queries[:1], chunks, args.k, cpu, rescore=scorer)

            seconds = timed(call, cpu, args.singles)
            label = f"score {name} N={n:,} bank {args.bank}"
            out.append(latency_row(label, seconds, 1, n=n, score=name, bank=args.bank))
    return out


def _devices() -> list[torch.device]:
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def dtype_section(args, dist: Embeddings, queries: np.ndarray) -> list[dict]:
    torch.set_num_threads(args.threads[0])
    data = collection(dist, args.dtype_size)
    half = data.astype(np.float16)
    cases = {
        "fp32 rows, fp32 matmul": (data, torch.float32),
        "fp16 rows upcast per chunk": (half, torch.float32),
        "fp16 rows, fp16 matmul": (half, torch.float16),
        "bf16 rows, bf16 matmul": (torch.from_numpy(data).to(torch.bfloat16), torch.bfloat16),
    }
    out, cpu = [], torch.device("cpu")
    for label, (rows, dtype) in cases.items():
        for batch, calls in ((1, args.singles), (args.batch, args.batches)):
            q = queries[:batch]

            def call(rows=rows, dtype=dtype, q=q):
                return exact_top_k(q, views(rows, args.chunk_rows)(), args.k, cpu, dtype=dtype)

            seconds = timed(call, cpu, calls)
            out.append(latency_row(f"N={args.dtype_size:,} {label}", seconds, batch))
    return out


def index_section(args, dist: Embeddings, queries: np.ndarray) -> list[dict]:
    faiss = require_faiss()
    n = args.index_size
    data = collection(dist, n)
    chunks = views(data, args.chunk_rows)
    probe = queries[: args.recall_queries]
    _, exact = exact_top_k(probe, chunks(), 10, "cpu")
    cpu = torch.device("cpu")
    torch.set_num_threads(args.threads[0])
    build_threads = faiss.omp_get_max_threads()
    single = queries[:1]
    batch = queries[: args.batch]
    base = {
        1: timed(lambda: exact_top_k(single, chunks(), 10, cpu), cpu, args.singles),
        args.batch: timed(lambda: exact_top_k(batch, chunks(), 10, cpu), cpu, args.batches),
    }
    rows = []
    for size, seconds in base.items():
        rows.append(latency_row(f"exact N={n:,} cpu (baseline)", seconds, size, n=n))
    for kind in ("hnsw", "ivfpq"):
        faiss.omp_set_num_threads(build_threads)
        start = time.perf_counter()
        index = build_index(chunks, n, dist.dim, kind, "bench")
        build = time.perf_counter() - start
        faiss.omp_set_num_threads(args.threads[0])  # search on the baseline's threads
        recall = recall_at_k(index.search(probe, 10)[1], exact, 10)
        print(f"{kind} N={n:,}: build {build:.1f} s, recall@10 {recall:.4f}")
        for size, qs in ((1, args.singles * 10), (args.batch, args.batches * 3)):
            picks = iter(range(10**9))

            def call(size=size, picks=picks, index=index):
                start = next(picks) * size % (len(queries) - size + 1)
                return index.search(queries[start : start + size], 10)

            seconds = timed(call, cpu, qs)
            speedup = statistics.mean(base[size]) / statistics.mean(seconds)
            rows.append(
                latency_row(
                    f"{kind} N={n:,} ({speedup:,.0f}x exact)",
                    seconds,
                    size,
                    n=n,
                    kind=kind,
                    build_s=build,
                    recall_at_10=recall,
                    speedup=speedup,
                    settings=index.search_settings,
                )
            )
        del index
    return rows


def embed_section(args, dist: Embeddings, queries: np.ndarray) -> list[dict]:
    """videos/s of `mote embed` on each device, from a random store and a one-epoch run."""
    from mote.stages import embed, train_temporal

    work = Path(tempfile.mkdtemp(prefix="mote-bench-embed-"))
    n = args.embed_videos
    try:
        store = work / "store.zarr"
        write_store(store, n, args.dim, classes=args.embed_classes)
        run = work / "run"
        settings = dict(epochs=1, batch_size=min(64, n), device="cpu")
        train_temporal.run(train_temporal.TrainConfig(train=store, out=run, **settings))
        rows = []
        for device in _devices():
            started = time.perf_counter()
            out = work / f"embeddings-{device.type}.zarr"
            embed.run(embed.EmbedConfig(run=run, store=store, out=out, device=device.type))
            seconds = time.perf_counter() - started
            row = {"case": f"embed N={n:,} {device.type}", "device": device.type, "videos": n}
            rows.append(row | {"seconds": seconds, "videos_per_s": n / seconds})
            print(f"{row['case']}: {n / seconds:.1f} videos/s ({seconds:.1f} s)")
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = doc_parser(__doc__)
    parser.add_argument("--sections", default="embed,exact,score,dtype,index")
    parser.add_argument("--embed-videos", type=int, default=4096, help="embed: store size")
    parser.add_argument("--embed-classes", type=int, default=400, help="embed: store classes")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--device", default="all", help="cpu, cuda or all (cpu, cuda if present)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--bank", type=int, default=400, help="score: texts in the bank")
    parser.add_argument(
        "--threads",
        default="1,2",
        help="CPU thread counts of the exact rows; the first for "
        "the other sections (faiss builds on all cores)",
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--singles", type=int, default=20, help="single queries timed")
    parser.add_argument("--batches", type=int, default=5, help="batches timed")
    parser.add_argument("--chunk-rows", type=int, default=65536)
    parser.add_argument("--dtype-size", type=int, default=100000)
    parser.add_argument("--index-size", type=int, default=1000000)
    parser.add_argument("--recall-queries", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: runs in seconds")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.dtype_size, args.index_size, args.clusters = "2000", 2000, 3000, 30
        args.singles, args.batches, args.recall_queries, args.chunk_rows = 3, 2, 20, 700
        args.embed_videos, args.embed_classes = 64, 8
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.threads = [int(t) for t in args.threads.split(",")]
    dist = Embeddings(args.dim, args.clusters)
    queries = dist.rows(max(256, args.recall_queries, args.batch), seed=2)
    sections = {
        "embed": embed_section,
        "exact": exact_section,
        "score": score_section,
        "dtype": dtype_section,
        "index": index_section,
    }
    result = {"machine": machine(torch.device("cuda" if torch.cuda.is_available() else "cpu"))}
    print(result["machine"])
    for name in args.sections.split(","):
        result[name] = sections[name](args, dist, queries)
    cases = [r for rows in result.values() if isinstance(rows, list) for r in rows]
    best = max((r for r in cases if r.get("kind")), key=lambda r: r["speedup"], default=None)
    exact = [r for r in result.get("exact", []) if r["batch"] == 1]
    top = max((r["n"] for r in exact), default=0)
    summary = [f"{r['case']} {r['videos_per_s']:.1f} videos/s" for r in result.get("embed", [])]
    summary += [f"{r['case']} {r['p50_ms']:.1f} ms/query" for r in exact if r["n"] == top]
    scored = [r for r in result.get("score", []) if r["n"] == top]
    summary += [f"{r['case']} {r['p50_ms']:.1f} ms/query" for r in scored]
    if best:
        summary.append(f"{best['kind']} {best['speedup']:.0f}x at recall@10 {best['recall_at_10']}")
    print("SUMMARY " + "; ".join(summary))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=1)


if __name__ == "__main__":
    main()
