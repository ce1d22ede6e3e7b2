"""Benchmark (not a test): what a search costs through `mote serve` (rows resident, towers loaded
once) against the one-shot `mote search` command (everything loaded per call), on synthetic
embeddings files of --sizes rows x --dim.

The rows are bench/search.py's synthetic law (unit vectors around random centres, a 32-dim
spread), written as a real embeddings file (fp16 Zarr and its Parquet table) made "without a
run" by a CLIP with random weights whose towers are mote-tiny's but whose embeddings are --dim
wide (a JSON config): the server's text encoding is then cheap, and its scoring is that of
--dim. The file names no store, so text queries are weighed against the shipped vocabulary
(747 action names), as on a collection without class names. What a real text tower costs a
query is measured apart, in this process (--tower, default ViT-B-16 with random weights: its
time is its architecture's): the 28-template ensemble every text query goes through.

For each size, one `mote serve --port 0` process on this machine's CPU:

  text      --singles text queries one request at a time: the server's own time (`took_ms`),
            split into the text tower (`encode_ms`) and the top-k over every row (`search_ms`),
            and the client's round trip;
  scoring   --singles raw-vector queries one at a time: the top-k alone (no tower), the figure
            behind "scoring 1M rows exact";
  batch     --batches requests of --batch texts (and of --batch vectors): per-query throughput
            against the same queries sent one by one (`batch_gain`);
  one-shot  --one-shot runs of `mote search --embeddings F TEXT --json`: the wall time of the
            command a user would otherwise run per query.

With --index hnsw|ivfpq, the server at --index-size rows is started again with that index (built
beside the file first, its build time reported) and the scoring figures repeated.

    python bench/serve.py --json serve.json          # 100k and 1M rows: about 15 minutes here
    python bench/serve.py --smoke                    # seconds (tests/test_bench_serve.py)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from benchlib import doc_parser
from search import Embeddings

from mote.cache_schema.embeddings import EmbeddingsFile
from mote.pipeline.search.vocabulary import vocabulary

MOTE = Path(sys.executable).parent / "mote"
READY = re.compile(r"serving \d+ videos at (http://[\d.]+:\d+/)")


def model_config(folder: Path, dim: int) -> Path:
    """A JSON config: mote-tiny's towers with ``dim``-wide embeddings."""
    from mote.pipeline.clip.factory import TINY_CONFIG

    path = folder / f"bench-tiny-{dim}.json"
    path.write_text(json.dumps({**TINY_CONFIG, "embed_dim": dim}))
    return path


def tower_cost(model: str, times: int) -> dict:
    """One text query through ``model``'s text tower with the 28 templates, on the CPU."""
    from mote.pipeline.clip.build import build_clip

    clip = build_clip(model, "none", "cpu")
    clip.class_text_embeddings(["warm up"])
    seconds = []
    for i in range(times):
        started = time.perf_counter()
        clip.class_text_embeddings([f"a person doing thing {i}"])
        seconds.append((time.perf_counter() - started) * 1000)
    return {"model": model, "templates": 28, **percentiles(seconds)}


def write_file(path: Path, rows: int, dim: int, model: str, clusters: int) -> None:
    """An embeddings file of ``rows`` synthetic unit vectors, made "without a run" by ``model``."""
    variant = {"name": "clip-meanpool", "test_bank": None, "tfm_gamma": None, "tfm_k": None,
               "inference": "bench", "views": "bench"}  # fmt: skip
    identity = {
        "run": None,
        "store": {"path": str(path.parent / "no-store.zarr"), "frames": 8, "views": "1x1"},
        "clip": {"model": model, "pretrained": "none", "weights_id": "random:seed=0"},
        "variant": variant,
        "dim": dim,
        "n_rows": rows,
    }
    file = EmbeddingsFile.create(path, identity, chunk_rows=65536)
    law = Embeddings(dim, clusters)
    for chunk in range(file.n_chunks):
        start, stop = file.chunk_range(chunk)
        file.write_chunk(chunk, law.rows(stop - start, seed=chunk + 1))
    ids = [f"v{i:07d}.mp4" for i in range(rows)]
    labels = np.full(rows, -1, np.int32)
    file.write_table({"store_row": np.arange(rows), "video_id": ids, "path": ids,
                      "label": labels, "label_name": [None] * rows})  # fmt: skip


class Served:
    """A `mote serve` process and its address."""

    def __init__(self, file: Path, *args: str) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        started = time.perf_counter()
        command = [str(MOTE), "serve", "--embeddings", str(file), "--port", "0", "--device",
                   "cpu", *args]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True, env=env)  # fmt: skip
        seen = []
        for line in self.process.stderr:
            seen.append(line)
            found = READY.search(line)
            if found:
                self.url, self.ready_s = found.group(1), time.perf_counter() - started
                return
        raise SystemExit("mote serve did not start:\n" + "".join(seen))

    def post(self, body: dict) -> tuple[dict, float]:
        data = json.dumps(body).encode()
        request = urllib.request.Request(self.url + "api/search", data=data, method="POST")
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=600) as answer:
            return json.loads(answer.read()), time.perf_counter() - started

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=120)


def percentiles(values: list[float]) -> dict:
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2)}


def singles(server: Served, bodies: list[dict]) -> dict:
    """Requests one after another: the server's times (split) and the client's round trips."""
    took, encode, search, trip = [], [], [], []
    for body in bodies:
        answer, seconds = server.post(body)
        took.append(answer["took_ms"])
        encode.append(answer["timing"]["encode_ms"])
        search.append(answer["timing"]["search_ms"])
        trip.append(seconds * 1000)
    return {
        "requests": len(bodies),
        "took": percentiles(took),
        "encode": percentiles(encode),
        "search": percentiles(search),
        "round_trip": percentiles(trip),
        "queries_per_s": round(len(bodies) / (sum(trip) / 1000), 2),
    }


def batched(server: Served, key: str, values: list, batch: int, batches: int) -> dict:
    """``batches`` requests of ``batch`` queries: per-query throughput."""
    trips, took = [], []
    for b in range(batches):
        part = [values[(b * batch + i) % len(values)] for i in range(batch)]
        answer, seconds = server.post({key: part, "k": 10})
        assert len(answer["results"]) == batch
        trips.append(seconds)
        took.append(answer["took_ms"])
    return {"batch": batch, "requests": batches, "took": percentiles(took),
            "queries_per_s": round(batch * batches / sum(trips), 2)}  # fmt: skip


def one_shot(file: Path, text: str, times: int) -> dict:
    """`mote search` run as a command per query: wall seconds of the whole process."""
    walls = []
    for _ in range(times):
        started = time.perf_counter()
        done = subprocess.run(
            [str(MOTE), "search", "--embeddings", str(file), text, "--json", "--device", "cpu"],
            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(done.stderr[-2000:])
        walls.append((time.perf_counter() - started) * 1000)
    return {"runs": times, "wall": percentiles(walls)}


def measure(args, file: Path, rows: int, vectors: np.ndarray, texts: list[str]) -> dict:
    server = Served(file)
    try:
        server.post({"query": texts[0]})  # the first request warms the thread pool
        text = singles(server, [{"query": t, "k": 10} for t in texts[: args.singles]])
        embedded = [{"embedding": v.tolist(), "k": 10} for v in vectors[: args.singles]]
        scoring = singles(server, embedded)
        batch_text = batched(server, "query", texts, args.batch, args.batches)
        batch_vectors = batched(server, "embedding", [v.tolist() for v in vectors], args.batch,
                                args.batches)  # fmt: skip
    finally:
        server.close()
    return {
        "n": rows,
        "ready_s": round(server.ready_s, 2),
        "text": text,
        "scoring": scoring,
        "batch_text": {**batch_text, "gain": round(
            batch_text["queries_per_s"] / text["queries_per_s"], 2)},
        "batch_vectors": {**batch_vectors, "gain": round(
            batch_vectors["queries_per_s"] / scoring["queries_per_s"], 2)},
        "one_shot": one_shot(file, texts[0], args.one_shot),
    }  # fmt: skip


def measure_index(args, file: Path, rows: int, vectors: np.ndarray) -> dict:
    started = time.perf_counter()
    server = Served(file, "--index", args.index)
    try:
        ready = time.perf_counter() - started
        server.post({"embedding": vectors[0].tolist()})
        scoring = singles(server, [{"embedding": v.tolist()} for v in vectors[: args.singles]])
    finally:
        server.close()
    return {"n": rows, "index": args.index, "ready_s_with_build": round(ready, 2),
            "scoring": scoring}  # fmt: skip


def main() -> None:
    parser = doc_parser(__doc__)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--tower", default="ViT-B-16", help="a real text tower, timed apart")
    parser.add_argument("--tower-queries", type=int, default=5)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--singles", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--one-shot", type=int, default=3, help="runs of the one-shot command")
    parser.add_argument("--index", default=None, help="hnsw or ivfpq: also served with it")
    parser.add_argument("--index-size", type=int, default=100000)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: runs in seconds")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.dim, args.tower, args.singles = "2000", 64, "mote-tiny", 4
        args.batch, args.batches, args.one_shot, args.index_size = 8, 2, 1, 2000
        args.tower_queries = 2
    texts = [f"a video of {name}" for name in vocabulary()]
    law = Embeddings(args.dim, args.clusters)
    vectors = law.rows(max(args.singles, args.batch * args.batches), seed=10_000)
    figures: dict = {"serve": [], "index": [], "tower": tower_cost(args.tower, args.tower_queries)}
    print(f"SUMMARY text tower {args.tower}: p50 {figures['tower']['p50_ms']} ms a query")
    work = Path(tempfile.mkdtemp(prefix="mote-bench-serve-"))
    model = str(model_config(work, args.dim))
    try:
        for rows in (int(s) for s in args.sizes.split(",")):
            file = work / f"e{rows}.zarr"
            write_file(file, rows, args.dim, model, args.clusters)
            row = measure(args, file, rows, vectors, texts)
            figures["serve"].append(row)
            print(summary(row), flush=True)
            if args.index and rows == args.index_size:
                figures["index"].append(measure_index(args, file, rows, vectors))
                print(f"SUMMARY index {args.index} N={rows:,}: scoring p50 "
                      f"{figures['index'][-1]['scoring']['search']['p50_ms']} ms")  # fmt: skip
            shutil.rmtree(file)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


def summary(row: dict) -> str:
    text, scoring = row["text"], row["scoring"]
    return (
        f"SUMMARY serve N={row['n']:,}: text p50 {text['took']['p50_ms']} ms (encode "
        f"{text['encode']['p50_ms']}, search {text['search']['p50_ms']}), scoring p50 "
        f"{scoring['search']['p50_ms']} ms, batch x{row['batch_text']['gain']} text "
        f"x{row['batch_vectors']['gain']} vectors, one-shot {row['one_shot']['wall']['p50_ms']} ms"
    )


if __name__ == "__main__":
    main()
