"""Benchmark (not a test): mote's thread policy (pipeline/threads.py) against torch's default
thread count, on an idle machine and beside a CPU hog, on the CPU.

Sections (--sections, comma-separated; default "train,extract"):

  train    For each --dims width D, a store of random features (benchlib.write_store), then
           `train_temporal.run` itself (no val store) once per row; the figure is the median of
           its --epochs epoch seconds from the run's history.jsonl. D=64 uses the tests'
           mote-tiny settings (2 layers, batch 32, 2 micro-batches, 53 videos), other widths the
           spec's MoTE (default_config(D): 4 layers, batch 192, 192 videos).
  extract  `mote extract` of --extract-videos generated videos with --extract-model (random
           weights) and --workers decode workers, in a fresh process per row; the figure is
           the videos/s its summary reports.

Rows (--counts):
  default  torch's thread count at start (one per core), what commands kept before the policy;
           the command runs with OMP_NUM_THREADS set to it, so the policy leaves it alone
  policy   OMP_NUM_THREADS unset: the count the policy picks
  N        N threads (OMP_NUM_THREADS=N)
Conditions (--conditions): idle (whatever else runs on the machine), busy (--hogs busy-loop
processes, default one per core, beside the command). Each table line ends with the first
row's time over each other row's: > 1 means that row is faster.

    python bench/threads.py                                   # ~10 minutes on 2 busy cores
    python bench/threads.py --sections train --dims 64,128,256,512 --counts 1,2
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
from benchlib import doc_parser, machine, write_store
from extract import cli_extract, make_dataset

from mote.pipeline.clip.build import build_clip
from mote.pipeline.threads import policy_threads, usable_cores
from mote.stages import train_temporal

DEFAULT_THREADS = torch.get_num_threads()  # before anything in this process changes it
TINY = {"layers": 2, "batch_size": 32, "micro_batches": 2}  # tests/test_train_temporal.py


def _spin() -> None:
    while True:
        pass


@contextmanager
def cpu_hog(processes: int) -> Iterator[None]:
    """``processes`` busy-loop processes for the length of the block."""
    hogs = [mp.get_context("fork").Process(target=_spin, daemon=True) for _ in range(processes)]
    for hog in hogs:
        hog.start()
    try:
        yield
    finally:
        for hog in hogs:
            hog.terminate()
            hog.join()


def row_count(name: str) -> int | None:
    """The thread count a --counts entry names (None: the policy's, OMP_NUM_THREADS unset)."""
    if name == "policy":
        return None
    return DEFAULT_THREADS if name == "default" else int(name)


def omp_env(count: int | None) -> dict[str, str]:
    """This environment with OMP_NUM_THREADS=count, or without it (None)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return env if count is None else {**env, "OMP_NUM_THREADS": str(count)}


@contextmanager
def omp_threads(count: int | None) -> Iterator[None]:
    """This process with OMP_NUM_THREADS=count and that many torch threads (None: unset, the
    policy decides); both restored afterwards."""
    saved, threads = dict(os.environ), torch.get_num_threads()
    os.environ.clear()
    os.environ.update(omp_env(count))
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        torch.set_num_threads(threads)


def epoch_seconds(store: Path, out: Path, dim: int, count: int | None, epochs: int) -> float:
    """Median epoch seconds of one train-temporal run with ``count`` threads (None: policy)."""
    settings = TINY if dim == 64 else {}
    cfg = train_temporal.TrainConfig(
        train=store, out=out, epochs=epochs, warmup_epochs=1, device="cpu", tfm=False, **settings
    )
    with omp_threads(count):
        train_temporal.run(cfg)
    lines = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return statistics.median(line["seconds"] for line in lines)


def measure(args, label: str, figure: Callable[[str, str, int | None], tuple]) -> list:
    """``figure(condition, row name, count) -> (value, threads)`` per condition and row of
    ``args``; prints each as it comes."""
    rows = []
    for condition in args.conditions.split(","):
        with cpu_hog(args.hogs if condition == "busy" else 0):
            for name in args.counts.split(","):
                value, threads = figure(condition, name, row_count(name))
                rows.append(dict(case=label, condition=condition, row=name, threads=threads))
                rows[-1]["value"] = round(value, 3)
                print(f"{label:<28} {condition:<5} {name:>8} ({threads} thr): {value:9.3f}")
    return rows


def train_figure(args, work: Path, dim: int, condition: str, name: str, count: int | None):
    """Median epoch seconds of train-temporal on the D-wide store, and its thread count."""
    out = work / f"run-d{dim}-{condition}-{name}"
    seconds = epoch_seconds(work / f"d{dim}.zarr", out, dim, count, args.epochs)
    return seconds, count or policy_threads("cpu", width=dim)


def train_section(args, work: Path) -> list:
    rows = []
    for dim in (int(d) for d in args.dims.split(",")):
        videos = 53 if dim == 64 else 192
        write_store(work / f"d{dim}.zarr", videos, dim, classes=8 if dim == 64 else 400)
        figure = partial(train_figure, args, work, dim)
        rows += measure(args, f"train-temporal D={dim}, s/epoch", figure)
    return rows


def extract_section(args, work: Path) -> list:
    data = make_dataset(work / "videos", args.extract_videos, 64, (320, 240))
    width = build_clip(args.extract_model, "none", "cpu").dim
    policy = policy_threads("cpu", width=width, workers=args.workers)
    settings = dict(
        dataset="list", root=data.root, list_file=data.list_file, labels_file=data.labels_file,
        model=args.extract_model, pretrained="none", devices="cpu", frames=8,
        decode_workers=args.workers, batch_size=32,
    )  # fmt: skip

    def figure(condition: str, name: str, count: int | None) -> tuple[float, int]:
        out = work / f"extract-{condition}-{name}.zarr"
        rate, _, _ = cli_extract(settings, out, args.extract_videos, env=omp_env(count))
        return 1 / rate, count or policy

    return measure(args, f"extract {args.extract_model} W={args.workers}, s/video", figure)


def print_table(rows: list, counts: list[str]) -> None:
    """One markdown line per case and condition: each row's figure, then the ratios."""
    print("\n| case | condition | " + " | ".join(counts) + " | first / others |")
    print("|---" * (3 + len(counts)) + "|")
    keys = dict.fromkeys((r["case"], r["condition"]) for r in rows)
    for case, condition in keys:
        cells = [r for r in rows if (r["case"], r["condition"]) == (case, condition)]
        values = [f"{c['value']:.3f} ({c['threads']} thr)" for c in cells]
        ratios = [f"{cells[0]['value'] / c['value']:.2f}x" for c in cells[1:]]
        print(f"| {case} | {condition} | " + " | ".join(values) + f" | {', '.join(ratios)} |")


SECTIONS: dict[str, Callable[..., list]] = {"train": train_section, "extract": extract_section}


def main() -> None:
    parser = doc_parser(__doc__)
    parser.add_argument("--sections", default="train,extract", help="train, extract")
    parser.add_argument("--dims", default="64,512", help="train: feature widths D")
    parser.add_argument("--epochs", type=int, default=3, help="train: epochs per row (median)")
    parser.add_argument("--extract-model", default="ViT-B-32", help="extract: CLIP (random)")
    parser.add_argument("--extract-videos", type=int, default=24, help="extract: videos")
    parser.add_argument("--workers", type=int, default=2, help="extract: decode workers")
    parser.add_argument("--counts", default="default,policy", help="default, policy or N")
    parser.add_argument("--conditions", default="idle,busy", help="idle, busy")
    parser.add_argument("--hogs", type=int, default=usable_cores(), help="busy-loop processes")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args()
    if "OMP_NUM_THREADS" in os.environ:
        parser.error("unset OMP_NUM_THREADS: the default row is torch's count without it")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mote-bench-threads-"))
    work.mkdir(parents=True, exist_ok=True)
    cpu = torch.device("cpu")
    print(f"{machine(cpu)}; torch {torch.__version__}; affinity {usable_cores()} cores")
    rows = [row for name in args.sections.split(",") for row in SECTIONS[name](args, work)]
    print_table(rows, args.counts.split(","))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(cpu), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
