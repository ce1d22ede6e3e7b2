"""Benchmark stage one (not a test): where does extraction time go, and does the pipeline overlap?

In one run, on one generated dataset, with one worker count:
  (a) decode + sample + crop only, in the decode pool            -> videos/s
  (b) CLIP encoding only, on frames decoded beforehand            -> videos/s
  (c) the full `mote extract`                                    -> videos/s
  (d) a naive loop: decode one video, encode it, write it, next  -> videos/s
plus the store's bytes against the raw fp16 bytes, and the extract process's peak RSS for N and
4N videos. Targets: (c) >= 0.9 x the pipeline limit (min(a, b) with GPU encoders,
1/(1/a + 1/b) when decoding and encoding share the CPU cores), (c) >= 2 x (d) on 2 cores,
store <= 1.02 x raw, RSS(4N) <= 1.10 x RSS(N).

With several ``--devices`` (``all``, ``0,1``; ``cpu,cpu`` on a machine without GPUs), (b) runs
one encoder process per device, (c) is ``mote extract --devices ...``, and the figures add its
videos/s per device (``c_devices``); (d) encodes on the first device. ``--staging off`` runs (b)
without the staged copy (``bench/staging.py`` measures the overlap alone).

    python bench/extract.py --videos 200 --workers 2 [--model mote-tiny --devices cpu]
    python bench/extract.py --videos 2000 --workers 16 --model ViT-B-16 --pretrained openai \
        --devices all --no-rss
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import wait
from pathlib import Path

import torch

from mote.cache_schema.claim import StoreClaim
from mote.cache_schema.feature_store import FeatureStore
from mote.cache_schema.spec import VideoResult
from mote.pipeline.clip.build import build_clip
from mote.pipeline.clip.encoder_pool import EncoderPool
from mote.pipeline.clip.encoding import BatchedEncoder, LocalBackend
from mote.pipeline.config import default_encoder_batch
from mote.pipeline.data.datasets import load_dataset
from mote.pipeline.data.synthetic import SyntheticDataset, write_motion_dataset
from mote.pipeline.device import resolve_devices
from mote.pipeline.runs.run_clip import ClipRecipe
from mote.pipeline.threads import use_threads
from mote.pipeline.video.decode_pool import DecodePool, DecodeTask, decode_one
from mote.stages import extract


def make_dataset(root: Path, videos: int, frames: int, size: tuple[int, int]):
    """The generated videos; reused when ``root`` already holds them (``--workdir``)."""
    per_class = -(-videos // 8)
    list_file = root / "list.txt"
    if list_file.is_file() and len(list_file.read_text().splitlines()) >= videos:
        names = [
            line.split(",", 1)[1] for line in (root / "labels.csv").read_text().splitlines()[1:]
        ]
        return SyntheticDataset(root, list_file, root / "labels.csv", tuple(names))
    return write_motion_dataset(root, videos_per_class=per_class, frames=frames, size=size, seed=0)


def tasks_for(data, limit: int, size: int, frames: int) -> list[DecodeTask]:
    spec = load_dataset("list", "custom", data.list_file, data.labels_file)
    return [
        DecodeTask(
            index=i, path=str(data.root / item.video_id), frames=frames, clips=1, crops=1, size=size
        )
        for i, item in enumerate(spec.items[:limit])
    ]


def decode_only(tasks: list[DecodeTask], workers: int) -> tuple[float, list]:
    """(a): the pool's throughput with nothing downstream; also returns the decoded views.

    Every worker first decodes one video untimed, so worker start-up is not counted.
    """
    decoded = []
    with DecodePool(workers) as pool:
        for task in tasks[:workers]:
            pool.submit(task)
        warm = 0
        while warm < min(workers, len(tasks)):
            warm += len(list(pool.results(timeout_s=1.0)))
        start = time.perf_counter()
        pending = list(tasks)
        while pending or pool.inflight:
            while pending and pool.inflight < pool.capacity:
                pool.submit(pending.pop(0))
            decoded.extend(pool.results(timeout_s=1.0))
        seconds = time.perf_counter() - start
    return len(tasks) / seconds, decoded


def encode_only(
    clip, decoded: list, batch_size: int, devices: list, recipe: ClipRecipe, staging: bool = True
) -> float:
    """(b): BatchedEncoder over frames already in memory: with ``clip`` on one device, else one
    encoder process per device (timed once every process has built its CLIP). ``staging``:
    the copy overlapping the encoder (``pipeline/clip/staging.py``), or the plain path."""
    if len(devices) == 1:
        return _encode_all(BatchedEncoder(LocalBackend(clip, batch_size, staging)), decoded)
    threads = torch.get_num_threads()
    size = (clip.preprocess.size, clip.dim)
    with EncoderPool(
        recipe.build, devices, batch_size, *size, cpu_threads=threads, staging=staging
    ) as pool:
        wait_ready(pool)
        return _encode_all(BatchedEncoder(pool), decoded)


def wait_ready(pool: EncoderPool) -> None:
    """Block until every encoder process has built its CLIP, before the first submit (it would
    drop finished batches), so the timing is the steady state's."""
    encoders = pool._encoders
    while not all(encoder.ready for encoder in encoders):
        waiting = [e.conn for e in encoders if not e.ready]
        wait(waiting + [e.process.sentinel for e in encoders])
        pool.collect(block=False)  # reads the ready messages; raises for a dead encoder


def _encode_all(encoder: BatchedEncoder, decoded: list) -> float:
    start = time.perf_counter()
    for video in decoded:
        encoder.add(video.index, video.views)
    encoder.flush()
    return len(decoded) / (time.perf_counter() - start)


def list_settings(data) -> dict:
    """The extract settings naming the bench's videos (a ``list`` data set)."""
    return dict(
        dataset="list", root=data.root, list_file=data.list_file, labels_file=data.labels_file
    )


def naive_loop(tasks, clip, data, out: Path, frames: int) -> float:
    """(d): one video at a time, decoded, encoded and written before the next starts."""
    cfg = extract.ExtractConfig(
        out=out,
        **list_settings(data),
        model=clip.model_name,
        pretrained=clip.pretrained,
        frames=frames,
        views="1x1",
        chunk_videos=1,
        limit=len(tasks),
    )
    dataset = load_dataset("list", "custom", data.list_file, data.labels_file)
    with StoreClaim.acquire(out) as claim:
        store = extract.open_store(cfg, clip, dataset, claim)
        start = time.perf_counter()
        for task in tasks:
            video = decode_one(task)
            v, t = video.views.shape[:2]
            images = torch.from_numpy(video.views.reshape(v * t, *video.views.shape[2:]))
            emb = clip.encode_frames(images).to(torch.float16).cpu().numpy().reshape(v, t, -1)
            store.write_chunk(
                store.chunk_of(task.index),
                [VideoResult(task.index, emb, video.frame_indices, video.num_frames)],
            )
        return len(tasks) / (time.perf_counter() - start)


RSS_SCRIPT = """
import json, resource, sys
from pathlib import Path
from mote.stages import extract
settings = json.loads(sys.argv[1])
for key in ("out", "root", "list_file", "labels_file"):
    settings[key] = Path(settings[key])
cfg = extract.ExtractConfig(**settings)
summary = extract.run(cfg)
print(json.dumps({"rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "videos_per_s": summary["videos_per_s"], "n_done": summary["n_done"]}))
"""


def cli_extract(
    settings: dict, out: Path, limit: int, env: dict[str, str] | None = None
) -> tuple[float, float, list[dict]]:
    """(c): the real `mote extract` command (in ``env``, default this one's); its own videos/s
    (CLIP loaded, workers started, until the store is consolidated), videos/s over the whole
    wall time incl. imports, and its per-device rows (device, videos, images, busy_s,
    videos_per_s)."""
    flags = {
        "dataset": "dataset",
        "root": "root",
        "list_file": "list",
        "labels_file": "labels",
        "model": "model",
        "pretrained": "pretrained",
        "devices": "devices",
        "frames": "frames",
        "decode_workers": "decode-workers",
        "batch_size": "batch-size",
    }
    # The mote beside this Python, even from a venv that is not activated.
    args = [sys.executable, "-m", "mote.stages", "extract", "--out", str(out)]
    args += ["--limit", str(limit), "--overwrite", "--json"]
    for key, flag in flags.items():
        args += [f"--{flag}", str(settings[key])]
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, check=True, env=env)
    wall = time.perf_counter() - start
    summary = json.loads(result.stdout)
    return summary["videos_per_s"], limit / wall, summary["devices"]


def extract_in_subprocess(settings: dict) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, json.dumps(settings, default=str)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def verdict(value: float | None, op: str, target: float) -> str:
    """'met', 'NOT met', or 'skipped' for a figure that was not measured (None or NaN)."""
    if value is None or value != value:
        return "skipped"
    met = value >= target if op == ">=" else value <= target
    return "met" if met else "NOT met"


def machine_description(devices: list) -> str:
    cores = len(os.sched_getaffinity(0))
    text = f"{platform.machine()} {platform.processor() or ''}, {cores} cores".replace("  ", " ")
    gpus = [torch.cuda.get_device_name(d) for d in devices if d.type == "cuda"]
    return text + "".join(f", {name}" for name in gpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="mote-tiny")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument(
        "--devices", "--device", default="cpu", help="all, 0,1, cuda:1, cpu or cpu,cpu"
    )
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--video-frames", type=int, default=64)
    parser.add_argument("--video-size", default="320x240")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    parser.add_argument("--no-rss", action="store_true", help="Skip the N vs 4N memory runs.")
    parser.add_argument(
        "--staging",
        choices=("on", "off"),
        default="on",
        help="(b) with the staged copy overlapping the encoder (on) or the plain path (off).",
    )
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mote-bench-"))
    width, height = (int(x) for x in args.video_size.split("x"))
    n = args.videos
    total = n if args.no_rss else 4 * n
    print(f"writing {total} videos of {args.video_frames} frames at {width}x{height} to {work}")
    data = make_dataset(work / "videos", total, args.video_frames, (width, height))

    devices = resolve_devices(args.devices)
    recipe = ClipRecipe(args.model, args.pretrained)
    clip = build_clip(args.model, args.pretrained, str(devices[0]))
    use_threads(devices[0], width=clip.dim, workers=args.workers)  # as `mote extract` does
    batch = args.batch_size or default_encoder_batch(clip.device)
    tasks = tasks_for(data, n, clip.preprocess.size, args.frames)

    a, decoded = decode_only(tasks, args.workers)
    b = encode_only(clip, decoded, batch, devices, recipe, args.staging == "on")
    settings = dict(
        **{key: str(value) for key, value in list_settings(data).items()},
        model=args.model,
        pretrained=args.pretrained,
        devices=args.devices,
        frames=args.frames,
        decode_workers=args.workers,
        batch_size=batch,
    )
    out_c = work / "full.zarr"
    c, c_wall, c_devices = cli_extract(settings, out_c, n)
    d = naive_loop(tasks, clip, data, work / "naive.zarr", args.frames)

    store = FeatureStore.open(out_c)
    raw = store.summary()["n_videos"] * args.frames * clip.dim * 2
    embeddings_bytes = sum(
        p.stat().st_size for p in (out_c / "embeddings").rglob("*") if p.is_file()
    )
    total_bytes = sum(p.stat().st_size for p in out_c.rglob("*") if p.is_file())

    rss_n = rss_4n = None  # --no-rss: these figures are skipped, not failed
    if not args.no_rss:
        rss_n = extract_in_subprocess({**settings, "out": str(work / "rss_n.zarr"), "limit": n})
        rss_4n = extract_in_subprocess(
            {**settings, "out": str(work / "rss_4n.zarr"), "limit": 4 * n}
        )

    rss_ratio = round(rss_4n["rss_kib"] / rss_n["rss_kib"], 3) if rss_n and rss_4n else None
    gpu = clip.device.type == "cuda"
    limit = min(a, b) if gpu else 1 / (1 / a + 1 / b)
    figures = {
        "machine": machine_description(devices),
        "model": args.model,
        "devices": ",".join(str(d) for d in devices),
        "workers": args.workers,
        "videos": n,
        "video": f"{args.video_frames} frames {width}x{height}",
        "frames_sampled": args.frames,
        "a_decode_vps": round(a, 2),
        "b_encode_vps": round(b, 2),
        "b_staging": args.staging,
        "c_extract_vps": round(c, 2),
        "c_extract_wall_vps": round(c_wall, 2),
        "c_devices": [
            {key: row[key] for key in ("device", "videos", "videos_per_s", "busy_s")}
            for row in c_devices
        ],
        "d_naive_vps": round(d, 2),
        "pipeline_limit_vps": round(limit, 2),
        "c_over_limit": round(c / limit, 3),
        "c_over_d": round(c / d, 3),
        "embeddings_over_raw": round(embeddings_bytes / raw, 4),
        "store_over_raw": round(total_bytes / raw, 4),
        "rss_n_mib": round(rss_n["rss_kib"] / 1024, 1) if rss_n else None,
        "rss_4n_mib": round(rss_4n["rss_kib"] / 1024, 1) if rss_4n else None,
        "rss_4n_over_n": rss_ratio,
    }
    targets = {
        "c_over_limit": (figures["c_over_limit"], ">=", 0.9),
        "c_over_d": (figures["c_over_d"], ">=", 2.0),
        "store_over_raw": (figures["store_over_raw"], "<=", 1.02),
        "rss_4n_over_n": (figures["rss_4n_over_n"], "<=", 1.10),
    }
    for key, value in figures.items():
        print(f"{key:>22}: {value}")
    for key, (value, op, target) in targets.items():
        print(f"target {key} {op} {target}: {value} -> {verdict(value, op, target)}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
