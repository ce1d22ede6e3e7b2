"""Benchmark (not a test): decode-only frames/s and frame accuracy of each `--decoder` backend on
the same generated videos, CPU backends here and NVDEC with `--device cuda` (gpu_check).

Videos (numbered: frame i shows the number i, read back with read_frame_number): libx264 with
B-frames and a 12-frame GOP, mpeg4 in AVI, and a variable frame rate libx264 file (frame
durations 10-90 ms). For each backend and video:

  accuracy   the frames the sampler asks for (eval sampling, --frames x --clips) decode to those
             frame numbers: "ok" or the first wrong index
  max abs diff the largest pixel difference against decord on the same indices (0: identical)
  frames/s   every frame of the video decoded in order (get(all indices)), best of --repeats
  videos/s   one sampled clip set per open (open, sample, get), as stage one decodes a video

    python bench/decode_backends.py                        # decord and pyav on the CPU
    python bench/decode_backends.py --device cuda          # adds nvdec (FFmpeg's CUDA hwaccel)
    python bench/decode_backends.py --size 640x360 --frames-per-video 300 --markdown
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import doc_parser

from mote.pipeline.data.synthetic import (
    read_frame_number,
    write_numbered_vfr_video,
    write_numbered_video,
)
from mote.pipeline.video.decode import open_video
from mote.pipeline.video.sampling import sample_indices


def write_videos(root: Path, n: int, size: tuple[int, int]) -> dict[str, Path]:
    """The three test videos: constant frame rate H.264 and MPEG-4, variable frame rate H.264."""
    return {
        "h264 cfr": write_numbered_video(root / "h264.mp4", n, size=size, gop=12),
        "mpeg4 avi": write_numbered_video(root / "mpeg4.avi", n, size=size, codec="mpeg4", gop=12),
        "h264 vfr": write_numbered_vfr_video(root / "vfr.mp4", n, size=size),
    }


def sampled(path: Path, backend: str, frames: int, clips: int) -> tuple[np.ndarray, np.ndarray]:
    """The eval sampler's indices for this video and the frames ``backend`` returns for them."""
    with open_video(path, backend) as video:
        indices = sample_indices(video.num_frames, frames, clips, "eval").reshape(-1)
        return indices, video.get(indices)


def accuracy(indices: np.ndarray, frames: np.ndarray) -> str:
    """'ok' when every frame shows its index, else the first index that came back wrong."""
    for index, frame in zip(indices.tolist(), frames, strict=True):
        try:
            got = read_frame_number(frame)
        except ValueError:
            got = -1
        if got != index:
            return f"index {index} -> {got}"
    return "ok"


def frames_per_s(path: Path, backend: str, repeats: int) -> float:
    """Every frame decoded in order, best of ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        with open_video(path, backend) as video:
            video.get(np.arange(video.num_frames))
            n = video.num_frames
        best = min(best, time.perf_counter() - start)
    return n / best


def videos_per_s(path: Path, backend: str, frames: int, clips: int, repeats: int) -> float:
    """Open, sample and decode one clip set, best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        sampled(path, backend, frames, clips)
        best = min(best, time.perf_counter() - start)
    return 1.0 / best


def rows(videos: dict[str, Path], backends: list[str], args) -> list[list[str]]:
    """One table row per (video, backend)."""
    out = []
    for name, path in videos.items():
        _, reference = sampled(path, "decord", args.frames, args.clips)
        for backend in backends:
            indices, got = sampled(path, backend, args.frames, args.clips)
            diff = int(np.abs(got.astype(np.int16) - reference.astype(np.int16)).max())
            fps = frames_per_s(path, backend, args.repeats)
            vps = videos_per_s(path, backend, args.frames, args.clips, args.repeats)
            out.append(
                [name, backend, accuracy(indices, got), str(diff), f"{fps:,.0f}", f"{vps:.1f}"]
            )
    return out


def show(table: list[list[str]], markdown: bool) -> None:
    """Print the table, plain or as Markdown for docs/performance.md."""
    head = ["video", "decoder", "accuracy", "max abs diff vs decord", "frames/s", "videos/s"]
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join(" --- " for _ in head) + "|")
        for row in table:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(r[i]) for r in [head, *table]) for i in range(len(head))]
    for row in [head, *table]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def main() -> None:
    parser = doc_parser(__doc__)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT of the videos")
    parser.add_argument("--frames-per-video", type=int, default=300)
    parser.add_argument("--frames", type=int, default=8, help="frames per sampled clip")
    parser.add_argument("--clips", type=int, default=1, help="clips per video")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    backends = ["decord", "pyav"] + (["nvdec"] if args.device == "cuda" else [])
    with tempfile.TemporaryDirectory(prefix="mote-decode-") as tmp:
        videos = write_videos(Path(tmp), args.frames_per_video, (width, height))
        show(rows(videos, backends, args), args.markdown)


if __name__ == "__main__":
    main()
