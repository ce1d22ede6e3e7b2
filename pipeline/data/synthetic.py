"""Real synthetic videos written with PyAV, for tests and the offline demo.

Two kinds:

* numbered videos, whose frames carry their own index as big black/white blocks, so a test can
  decode any frame after lossy compression and check it is the frame it asked for;
* a motion data set of moving shapes whose classes differ only in the direction of motion, so a
  model that mean-pools per-frame features cannot separate a left/right (or up/down) pair while a
  model that sees temporal order can. A horizontal flip (spec 7.2) turns "moving left" into
  "moving right", so the data set declares those pairs as its ``FlipRule`` (spec 8.3's rule).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from mote.pipeline.video.flips import FlipRule

NUMBER_BITS = 16
_GRID_ROWS, _GRID_COLS = 4, 4  # 16 blocks, one bit each, most significant bit first
_MIN_SIDE = 16


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Return (W, H) if both sides are even and big enough for yuv420p and the bit blocks."""
    width, height = (int(v) for v in size)
    if width < _MIN_SIDE or height < _MIN_SIDE or width % 2 or height % 2:
        raise ValueError(
            f"video size {size} is not usable: give even sides of at least {_MIN_SIDE} pixels "
            "(yuv420p needs even sides), e.g. size=(64, 48)."
        )
    return width, height


def _block_slices(height: int, width: int) -> list[tuple[slice, slice]]:
    """The pixel rectangle of each bit block, row-major, most significant bit first."""
    rows = np.linspace(0, height, _GRID_ROWS + 1).round().astype(int)
    cols = np.linspace(0, width, _GRID_COLS + 1).round().astype(int)
    return [
        (slice(rows[r], rows[r + 1]), slice(cols[c], cols[c + 1]))
        for r in range(_GRID_ROWS)
        for c in range(_GRID_COLS)
    ]


def numbered_frame(number: int, size: tuple[int, int]) -> np.ndarray:
    """An RGB uint8 (H, W, 3) frame whose blocks spell ``number`` in binary (white = 1)."""
    width, height = _check_size(size)
    if not 0 <= number < 2**NUMBER_BITS:
        raise ValueError(f"frame number {number} does not fit in {NUMBER_BITS} bits.")
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    for bit, (rows, cols) in enumerate(_block_slices(height, width)):
        if (number >> (NUMBER_BITS - 1 - bit)) & 1:
            frame[rows, cols] = 255
    return frame


def read_frame_number(frame: np.ndarray) -> int:
    """Read back the number a ``numbered_frame`` carries, after lossy compression.

    Each block is judged by the mean of its inner half (edges blur under compression). A block
    that is neither clearly dark nor clearly bright means the frame is not a numbered frame (for
    example a grey frame from a broken decode), which raises ``ValueError``.
    """
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) frame, got shape {frame.shape}.")
    height, width = frame.shape[:2]
    number = 0
    for rows, cols in _block_slices(height, width):
        inner = frame[_inner(rows), _inner(cols)]
        level = float(inner.mean())
        if 64.0 < level < 192.0:
            raise ValueError(f"block level {level:.0f} is ambiguous: not a numbered frame.")
        number = (number << 1) | int(level >= 128.0)
    return number


def _inner(span: slice) -> slice:
    """The middle half of a block's span."""
    quarter = (span.stop - span.start) // 4
    return slice(span.start + quarter, span.stop - quarter)


def _open_writer(
    path: Path,
    codec: str,
    size: tuple[int, int],
    fps: int,
    gop: int | None,
    options: dict,
    preset: str,
) -> tuple[av.container.OutputContainer, av.video.stream.VideoStream]:
    """Open a writer (format from the suffix) with one single-threaded yuv420p video stream."""
    container = av.open(str(path), mode="w", options=options)
    stream = container.add_stream(codec, rate=Fraction(fps))
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.codec_context.thread_count = 1  # tiny frames: thread start-up costs more than it saves
    if gop is not None:
        stream.codec_context.gop_size = int(gop)
    if codec == "libx264":
        stream.options = {"preset": preset, "crf": "20"}
    elif codec == "mpeg4":
        stream.codec_context.bit_rate = 2_000_000
    return container, stream


def write_frames(
    path: str | Path,
    frames: np.ndarray,
    codec: str = "libx264",
    fps: int = 25,
    gop: int | None = None,
    faststart: bool = False,
    preset: str = "veryfast",
) -> Path:
    """Encode RGB uint8 frames (k, H, W, 3) into a video file.

    ``faststart`` moves the MP4 index to the front; the libx264 ``preset`` "veryfast" keeps
    B-frames (so decoders must reorder, as with real videos), "ultrafast" drops them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    size = _check_size((width, height))
    options = {"movflags": "faststart"} if faststart else {}
    container, stream = _open_writer(path, codec, size, fps, gop, options, preset)
    try:
        container.start_encoding()  # writes the header even when there are no frames
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    finally:
        container.close()
    return path


def write_numbered_video(
    path: str | Path,
    n_frames: int,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    fps: int = 25,
    gop: int | None = None,
    faststart: bool = False,
) -> Path:
    """Write a video (container from the suffix) whose frame i shows the number i.

    Read the number back with ``read_frame_number``. ``n_frames=0`` writes a header-only file
    (an MP4 then has no video stream at all: FFmpeg drops a track without samples).
    """
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}.")
    width, height = _check_size(size)
    frames = np.zeros((n_frames, height, width, 3), dtype=np.uint8)
    for i in range(n_frames):
        frames[i] = numbered_frame(i, size)
    return write_frames(path, frames, codec=codec, fps=fps, gop=gop, faststart=faststart)


def write_numbered_vfr_video(
    path: str | Path, n_frames: int, size: tuple[int, int] = (64, 48), seed: int = 0
) -> Path:
    """A variable frame rate libx264 file whose frame i shows the number i.

    Frame durations are drawn from 10-90 ms (a millisecond time base), as phone videos have: a
    decoder that turns an index into a time and seeks by it lands on the wrong frame here.
    """
    width, height = _check_size(size)
    durations = np.random.default_rng(seed).integers(10, 91, size=n_frames)
    pts = np.concatenate([[0], np.cumsum(durations)[:-1]])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), mode="w")
    try:
        stream = container.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.codec_context.thread_count = 1
        stream.options = {"preset": "veryfast", "crf": "20"}
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(numbered_frame(i, size), format="rgb24")
            frame.pts, frame.time_base = int(pts[i]), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    finally:
        container.close()
    return path


# ---------------------------------------------------------------------------------------------
# Motion data set
# ---------------------------------------------------------------------------------------------

_DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
_ZOOMS = {"approaching": 1, "receding": -1}  # towards / away from the camera: size changes
_SHAPES = ("circle", "square")

# Default classes: two shapes x four motions, in two pairs each (left/right, approaching/
# receding). The members of a pair see the same frames in opposite order.
MOTION_CLASSES: tuple[str, ...] = tuple(
    f"{shape} {motion}"
    for shape in _SHAPES
    for motion in ("moving left", "moving right", "approaching", "receding")
)


@dataclass(frozen=True)
class SyntheticDataset:
    """Where a written motion data set lives, in the ``list`` data set format."""

    root: Path
    list_file: Path
    labels_file: Path
    class_names: tuple[str, ...]
    flip: FlipRule = FlipRule()  # pass ``flip.text`` as ``finetune-e2e --flip``


@dataclass(frozen=True)
class _Motion:
    shape: str
    step: tuple[int, int]  # direction of travel in the image plane, (0, 0) for a zoom
    zoom: int  # +1 approaching (grows), -1 receding (shrinks), 0 none
    speed: float


def _parse_class(name: str) -> _Motion:
    """Read "circle moving left" or "square approaching", optionally ending "fast"/"slowly"."""
    words = name.split()
    speed = 1.0
    if words and words[-1] in ("fast", "slowly"):
        speed = 1.6 if words[-1] == "fast" else 0.6
        words = words[:-1]
    usage = (
        f"class name {name!r} is not '<shape> moving <direction>' or '<shape> approaching|"
        f"receding' (optionally + fast|slowly) with shape in {_SHAPES} and direction in "
        f"{tuple(_DIRECTIONS)}."
    )
    if not words or words[0] not in _SHAPES:
        raise ValueError(usage)
    if len(words) == 2 and words[1] in _ZOOMS:
        return _Motion(words[0], (0, 0), _ZOOMS[words[1]], speed)
    if len(words) != 3 or words[1] != "moving" or words[2] not in _DIRECTIONS:
        raise ValueError(usage)
    return _Motion(words[0], _DIRECTIONS[words[2]], 0, speed)


def _mirrored(motion: _Motion) -> _Motion:
    """The motion seen in a left-right mirror: horizontal travel reverses, the rest stays."""
    return _Motion(motion.shape, (-motion.step[0], motion.step[1]), motion.zoom, motion.speed)


def motion_flip_rule(class_names: tuple[str, ...] | list[str]) -> FlipRule:
    """What a horizontal flip does to these classes: "moving left" and "moving right" of the same
    shape and speed swap labels; when a class's mirror is not a class, flips are off."""
    motions = [_parse_class(name) for name in class_names]
    pairs = []
    for i, motion in enumerate(motions):
        mirror = _mirrored(motion)
        if mirror == motion:
            continue
        if mirror not in motions:
            return FlipRule(enabled=False)
        j = motions.index(mirror)
        if i < j:
            pairs.append((i, j))
    return FlipRule(pairs=tuple(pairs))


def _motion_clip(
    motion: _Motion, frames: int, size: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Frames (T, H, W, 3) of one light shape crossing a dark frame along ``step``.

    The path is centred on the frame and the start position is symmetric, so over a whole clip
    the left and right (or up and down) classes cover the same pixels with the same statistics:
    only the order of frames tells them apart. Grey levels, size, path and noise vary per video;
    the contrast stays high so that even a randomly initialised tiny CLIP encodes where the
    shape is (a linear probe on its frame features recovers the x position with R^2 ~ 0.7).
    """
    width, height = size
    radius = rng.uniform(0.15, 0.22) * min(width, height)
    t = np.linspace(-0.5, 0.5, frames)
    if motion.zoom:  # size from 0.4x to 1.6x (times speed) of the radius, or back
        growth = np.clip(1 + motion.zoom * motion.speed * 1.2 * t, 0.2, 2.0)
        radii = radius * growth
        travel, direction = 0.0, np.zeros(2)
    else:
        radii = np.full(frames, radius)
        axis_len = width if motion.step[0] else height
        travel = min(motion.speed * rng.uniform(0.6, 0.8), 1.0) * (axis_len - 2 * radius)
        direction = np.array(motion.step, dtype=float)
    centre = np.array([width / 2, height / 2]) + rng.uniform(-0.08, 0.08, 2) * [width, height]
    centres = centre[None] + t[:, None] * travel * direction[None]

    ys, xs = np.ogrid[:height, :width]
    cx, cy = centres[:, 0, None, None], centres[:, 1, None, None]
    r = radii[:, None, None]
    if motion.shape == "circle":
        mask = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r  # (T, H, W)
    else:
        mask = (np.abs(xs - cx) <= r) & (np.abs(ys - cy) <= r)
    background, colour = rng.uniform(5, 40), rng.uniform(200, 250)
    noise = 4.0 * rng.standard_normal((frames, height, width, 1), dtype=np.float32)
    video = np.where(mask[..., None], np.float32(colour), np.float32(background)) + noise
    return np.clip(video, 0, 255).astype(np.uint8).repeat(3, axis=-1)


def write_motion_dataset(
    root: str | Path,
    classes: tuple[str, ...] | list[str] | None = None,
    videos_per_class: int = 16,
    frames: int = 32,
    size: tuple[int, int] = (128, 96),
    seed: int = 0,
    codec: str = "libx264",
) -> SyntheticDataset:
    """Write ``root/<class_folder>/<name>.mp4`` plus ``list.txt`` and ``labels.csv``.

    Class names are "<circle|square> moving <left|right|up|down>" or "<circle|square>
    approaching|receding", optionally ending in "fast" or "slowly"; plain English, so they
    also work as CLIP prompts. The default ``MOTION_CLASSES`` holds four pairs whose members
    share every per-frame statistic (one is the other played backwards), so mean-pooled frame
    features can reach at most 50% on them. The returned ``flip`` swaps each left/right pair
    (``motion_flip_rule``). The same ``seed``
    gives the same files (single-threaded x264 output is byte-identical).
    """
    class_names = tuple(classes) if classes is not None else MOTION_CLASSES
    if videos_per_class < 1 or frames < 2:
        raise ValueError(
            f"need videos_per_class >= 1 and frames >= 2, got {videos_per_class} and {frames}."
        )
    parsed = [_parse_class(name) for name in class_names]
    size = _check_size(size)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for label, (name, motion) in enumerate(zip(class_names, parsed, strict=True)):
        folder = name.replace(" ", "_")
        for k in range(videos_per_class):
            rel = f"{folder}/{folder}_{k:03d}.mp4"
            clip = _motion_clip(motion, frames, size, rng)
            write_frames(root / rel, clip, codec=codec, preset="ultrafast")
            lines.append(f"{rel} {label}\n")
    list_file = root / "list.txt"
    list_file.write_text("".join(lines))
    labels_file = root / "labels.csv"
    with labels_file.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", "name"])
        writer.writerows(enumerate(class_names))
    return SyntheticDataset(
        root, list_file, labels_file, class_names, motion_flip_rule(class_names)
    )
