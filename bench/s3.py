"""Benchmark extraction to object storage (not a test): what an s3:// store or video root costs.

In one run, on one generated dataset, `mote extract` (``mote.stages.extract.run``) in four
configurations: local videos -> local store, local videos -> S3 store, S3 videos -> local store,
S3 videos -> S3 store. The S3 is moto's server on 127.0.0.1 behind a counting reverse proxy
(``s3proxy.py``), so every request of every process (decode workers included) is counted as
the object store sees it. For each configuration: videos/s and its ratio to local -> local;
for the S3 ones the requests by kind (GET, PUT, HEAD, LIST, DELETE), body bytes up and down,
bytes per request, and requests per store chunk, split by what they touch (chunk data,
metadata, the claim, listings, videos), so a reader sees where the overhead is. Also the
loopback server's own time per request, to put the ratios in scale.

    python bench/s3.py --videos 128 --workers 2
    python bench/s3.py --smoke --json s3.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from s3proxy import CountingProxy, Request

BUCKET = "mote-bench"
VIDEOS = "videos"
KINDS = ("GET", "PUT", "HEAD", "LIST", "DELETE")
ROLES = ("chunk data", "metadata", "claim", "listing", "videos")
CONFIGS = (  # name, videos on S3, store on S3
    ("local -> local", False, False),
    ("local -> S3", False, True),
    ("S3 -> local", True, False),
    ("S3 -> S3", True, True),
)


@contextmanager
def loopback_s3() -> Iterator[CountingProxy]:
    """moto's S3 server on 127.0.0.1 with bucket ``BUCKET``, behind a counting proxy that this
    process and every child reach through the AWS_* environment, as a user's run would."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = dict(os.environ)
    try:
        with CountingProxy(f"http://{host}:{port}") as proxy:
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
                os.environ.pop(name, None)
            os.environ.update(
                AWS_ACCESS_KEY_ID="bench",  # the loopback server takes any credentials
                AWS_SECRET_ACCESS_KEY="bench",
                AWS_DEFAULT_REGION="us-east-1",
                AWS_ENDPOINT_URL=proxy.url,
                AWS_CONFIG_FILE=os.devnull,
                AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            )
            s3_fs().mkdir(BUCKET)
            yield proxy
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()


def s3_fs():
    """An s3fs file system on the loopback server (a fresh instance: no cached listings)."""
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


def make_videos(root: Path, videos: int, frames: int, size: tuple[int, int]):
    """Real MP4 files of moving shapes (8 classes) with their list and labels files."""
    from mote.pipeline.data.synthetic import write_motion_dataset

    return write_motion_dataset(root, videos_per_class=-(-videos // 8), frames=frames, size=size)


def upload(data, limit: int) -> str:
    """Copy the first ``limit`` listed videos to ``s3://BUCKET/VIDEOS/``; that prefix's URL."""
    fs = s3_fs()
    for line in data.list_file.read_text().splitlines()[:limit]:
        video = line.split()[0]
        fs.put_file(str(data.root / video), f"{BUCKET}/{VIDEOS}/{video}")
    return f"s3://{BUCKET}/{VIDEOS}/"


def round_trip_ms(proxy: CountingProxy, n: int = 30) -> float:
    """Median milliseconds of one HEAD of a small object on the loopback server (via the
    proxy): the floor under every request the runs make."""
    fs = s3_fs()
    fs.pipe_file(f"{BUCKET}/probe", b"x" * 100)
    times = []
    for _ in range(n):
        fs.invalidate_cache()
        start = time.perf_counter()
        fs.info(f"{BUCKET}/probe")
        times.append(time.perf_counter() - start)
    proxy.take()
    return statistics.median(times) * 1e3


def role(request: Request, store_key: str) -> str:
    """What a request touches: the store's chunk data, its metadata or claim, a listing, or
    a video."""
    if request.kind == "LIST":
        return "listing"
    if request.key.startswith(f"{BUCKET}/{VIDEOS}/"):
        return "videos"
    name = request.key[len(store_key) + 1 :] if request.key.startswith(store_key) else ""
    if name.endswith(".mote-claim.json"):
        return "claim"
    return "chunk data" if "/c/" in f"/{name}" else "metadata"


def figures_of(log: list[Request], store_key: str | None, n_chunks: int, videos: int) -> dict:
    """Requests by kind and role, bytes, and per-chunk / per-video rates of one run."""
    up, down = sum(r.up for r in log), sum(r.down for r in log)
    kinds = Counter(r.kind for r in log)
    roles = {name: {"requests": 0, "up": 0, "down": 0, "kinds": Counter()} for name in ROLES}
    for request in log:
        row = roles[role(request, store_key or "\0")]
        row["requests"] += 1
        row["up"] += request.up
        row["down"] += request.down
        row["kinds"][request.kind] += 1
    store_requests = sum(roles[name]["requests"] for name in ("chunk data", "metadata", "claim"))
    store_requests += sum(
        1 for r in log if r.kind == "LIST" and store_key and r.key.startswith(store_key)
    )
    chunk_puts = [r for r in log if r.kind == "PUT" and role(r, store_key or "\0") == "chunk data"]
    return {
        "requests": {kind: kinds[kind] for kind in KINDS} | dict(kinds),
        "total_requests": len(log),
        "bytes_up": up,
        "bytes_down": down,
        "bytes_per_request": round((up + down) / len(log)) if log else None,
        "roles": roles,
        "store_requests_per_chunk": round(store_requests / n_chunks, 1) if store_key else None,
        "chunk_requests_per_chunk": (
            round(roles["chunk data"]["requests"] / n_chunks, 1) if store_key else None
        ),
        "chunk_put_bytes_per_chunk": (
            round(sum(r.up for r in chunk_puts) / n_chunks) if store_key else None
        ),
        "video_requests_per_video": round(roles["videos"]["requests"] / videos, 2),
        "video_bytes_per_video": round(roles["videos"]["down"] / videos),
    }


def run_config(settings: dict, root, out) -> dict:
    """One `mote extract` run; its summary (videos/s as `mote extract --json` reports it)."""
    from mote.stages import extract

    cfg = extract.ExtractConfig(**settings, root=root, out=out)
    start = time.perf_counter()
    summary = extract.run(cfg)
    summary["wall_s"] = time.perf_counter() - start
    return summary


def measure(args: argparse.Namespace, work: Path, proxy: CountingProxy) -> dict:
    """Every configuration ``args.repeats`` times, interleaved; the median run of each."""
    width, height = (int(x) for x in args.video_size.split("x"))
    data = make_videos(work / "videos", args.videos, args.video_frames, (width, height))
    url = upload(data, args.videos)
    ms = round_trip_ms(proxy)
    video_bytes = sum(
        (data.root / line.split()[0]).stat().st_size
        for line in data.list_file.read_text().splitlines()[: args.videos]
    )
    settings = dict(
        dataset="list",
        list_file=data.list_file,
        labels_file=data.labels_file,
        model=args.model,
        pretrained=args.pretrained,
        devices="cpu",
        frames=args.frames,
        decode_workers=args.workers,
        chunk_videos=args.chunk_videos,
        limit=args.videos,
    )
    n_chunks = -(-args.videos // args.chunk_videos)
    runs: dict[str, list[dict]] = {name: [] for name, *_ in CONFIGS}
    if args.repeats > 1:  # first-call costs (imports, lazy inits) outside the timed runs
        run_config(settings, data.root, work / "warm-up.zarr")
    for repeat in range(args.repeats):
        for name, videos_on_s3, store_on_s3 in CONFIGS:
            tag = f"r{repeat}-{name.replace(' -> ', '-to-').lower()}"
            store_key = f"{BUCKET}/{tag}.zarr" if store_on_s3 else None
            out = f"s3://{store_key}" if store_on_s3 else work / f"{tag}.zarr"
            proxy.take()
            summary = run_config(settings, url if videos_on_s3 else data.root, out)
            if summary["n_done"] != args.videos:
                raise SystemExit(f"{name}: {summary['n_done']} of {args.videos} videos done")
            row = figures_of(proxy.take(), store_key, n_chunks, args.videos)
            row.update(videos_per_s=summary["videos_per_s"], wall_s=round(summary["wall_s"], 2))
            runs[name].append(row)
    rows = []
    for name, *_ in CONFIGS:
        ordered = sorted(runs[name], key=lambda r: r["videos_per_s"])
        rows.append({"config": name, **ordered[len(ordered) // 2]})
    base = rows[0]["videos_per_s"]
    for row in rows:
        row["ratio"] = round(row["videos_per_s"] / base, 3)
        row["videos_per_s"] = round(row["videos_per_s"], 2)
    return {
        "videos": args.videos,
        "video": f"{args.video_frames} frames {width}x{height}",
        "video_bytes": video_bytes,
        "video_bytes_mean": round(video_bytes / args.videos),
        "model": args.model,
        "frames_sampled": args.frames,
        "workers": args.workers,
        "chunk_videos": args.chunk_videos,
        "chunks": n_chunks,
        "repeats": args.repeats,
        "round_trip_ms": round(ms, 2),
        "configs": rows,
    }


def print_tables(figures: dict) -> None:
    print(
        f"{figures['videos']} videos ({figures['video']}, {figures['video_bytes_mean']:,} bytes "
        f"each), {figures['model']}, {figures['workers']} decode workers, "
        f"{figures['chunks']} chunks of {figures['chunk_videos']}; median of "
        f"{figures['repeats']}; loopback HEAD round trip {figures['round_trip_ms']} ms"
    )
    head = "| config | videos/s | vs local | " + " | ".join(KINDS)
    print(head + " | bytes up | bytes down | bytes/request | store requests/chunk |")
    print("|---" * (head.count("|") + 4) + "|")
    for row in figures["configs"]:
        kinds = " | ".join(str(row["requests"][kind]) for kind in KINDS)
        per_chunk = row["store_requests_per_chunk"]
        print(
            f"| {row['config']} | {row['videos_per_s']} | {row['ratio']} | {kinds} | "
            f"{row['bytes_up']:,} | {row['bytes_down']:,} | {row['bytes_per_request'] or '-'} | "
            f"{per_chunk if per_chunk is not None else '-'} |"
        )
    print("\nrequests (body bytes up / down) by what they touch:")
    print("| config | " + " | ".join(ROLES) + " | chunk PUT bytes/chunk |")
    print("|---" * (len(ROLES) + 2) + "|")
    for row in figures["configs"][1:]:
        cells = " | ".join(
            f"{r['requests']} ({r['up']:,} / {r['down']:,})"
            for r in (row["roles"][name] for name in ROLES)
        )
        print(f"| {row['config']} | {cells} | {row['chunk_put_bytes_per_chunk'] or '-'} |")
    print("\nper store chunk, by kind (S3 -> S3):")
    for name in ("chunk data", "metadata", "listing", "claim"):
        kinds = figures["configs"][-1]["roles"][name]["kinds"]
        text = ", ".join(f"{k} {v / figures['chunks']:.2f}" for k, v in sorted(kinds.items()))
        print(f"  {name}: {text}")
    tail = figures["configs"][-1]
    print(
        f"\nSUMMARY S3->S3 {tail['ratio']}x local videos/s; "
        f"{tail['store_requests_per_chunk']} store requests per chunk "
        f"({tail['chunk_requests_per_chunk']} on chunk data); "
        f"{tail['video_requests_per_video']} requests per video"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=128)
    parser.add_argument("--chunk-videos", type=int, default=16)
    parser.add_argument(
        "--workers", type=int, default=2, help="Decode worker processes (0: decode in-process)."
    )
    parser.add_argument("--model", default="mote-tiny")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--video-frames", type=int, default=64)
    parser.add_argument("--video-size", default="320x240")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    parser.add_argument(
        "--smoke", action="store_true", help="Tiny sizes, one repeat: checks the bench runs."
    )
    args = parser.parse_args()
    if args.smoke:
        args.videos, args.chunk_videos, args.workers, args.repeats = 4, 2, 0, 1
        args.video_frames, args.video_size = 16, "64x48"
    work = Path(tempfile.mkdtemp(prefix="mote-bench-s3-"))
    try:
        with loopback_s3() as proxy:
            figures = measure(args, work, proxy)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_tables(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
