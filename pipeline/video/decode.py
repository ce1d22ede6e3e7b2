"""Open one video and fetch frames by index, as RGB uint8, with an honest frame count.

Two backends share one interface (``VideoSource``): ``decord`` (one decode thread, the default
when importable) and ``pyav`` (a sequential decode from the first frame, never a seek per index);
``nvdec`` (``nvdec.py``) is ``pyav`` with the decode on a GPU.
Every failure raises ``DecodeError`` whose message is a short reason fit to store as the video's
failure reason ("file not found", "truncated: ...", "frame 143 of 144 could not be decoded ...").

What decord (decord2 3.4.0) does with broken inputs, measured on MP4s written by PyAV:

* missing file, empty file, directory, random bytes, a text file named .mp4: the constructor
  raises a plain ``RuntimeError("Error reading <path>...")`` and prints the real cause
  ("No such file or directory", "Invalid data found when processing input", "Is a directory")
  only to stderr. We therefore diagnose these ourselves, before decord runs.
* an MP4 cut at half its bytes with the index (``moov``) at the end (the default layout): the
  same ``RuntimeError``; the file cannot be opened at all.
* the same cut with ``movflags=faststart`` (index first): decord opens it *silently* and reports
  ``len()`` = the packets that survived (66 of 300), not what the index declares; frames before
  the cut decode fine and only the partial last packet raises ``DECORDError`` ("Error sending
  packet"). A batch of indices that misses the last packet returns normal-looking frames.
* the same file cut exactly on a packet boundary: ``len()`` = 150, every index decodes without
  error, and index 149 even returns frame 151 (B-frame reordering with the tail gone). Nothing
  in decord's output reveals the cut.
* an AVI (mpeg4) cut at half: opens silently with ``len()`` 144 of 300; only the last packet
  raises.
* a zero-frame MP4: FFmpeg's MP4 muxer drops a track without samples, so the file has no video
  stream (decord: ``DECORDError`` "cannot find video stream"). A zero-frame AVI keeps its stream;
  decord then fails to build its filter graph (``DECORDError`` "Cannot create buffer source").
* bytes overwritten in the middle: ``DECORDError`` for the damaged frames, other frames decode.

So a cut file is only caught by comparing what decord can read with what the container
declares. We do two checks before any frame is returned: (1) a structural check of MP4/MOV
boxes and AVI RIFF chunks (a box or chunk that runs past the end of the file, or an MP4 without
its ``moov`` index, is a truncated file), and (2) the frame count the backend can read must not be
smaller than the count the container declares (PyAV's ``stream.frames``). A decode error on a
requested frame is also a ``DecodeError``. Containers that declare no frame count (Matroska/WebM)
and have no size fields we check can still hide a clean cut: their count is what can be read.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import av
import numpy as np

from mote.pipeline.errors import DecodeError
from mote.pipeline.locations import Url, locate
from mote.pipeline.video.remote_videos import SpilledVideo, open_remote

Backend = Literal["auto", "decord", "pyav", "nvdec"]

_ISO_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp"}


# ---------------------------------------------------------------------------------------------
# Checks shared by both backends
# ---------------------------------------------------------------------------------------------


def _check_file(path: Path) -> int:
    """Return the file size, or raise for a missing, non-regular or empty file."""
    if not path.exists():
        raise DecodeError("file not found")
    if path.is_dir():
        raise DecodeError("not a regular file (a directory)")
    if not path.is_file():
        raise DecodeError("not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise DecodeError("empty file (0 bytes)")
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as err:
        raise DecodeError(f"cannot read the file ({err.strerror or err})") from err
    return size


def _iso_truncation(fh, size: int) -> str | None:
    """Walk the top-level MP4/MOV boxes; say why the file is cut short, or None if it is whole."""
    pos, seen = 0, set()
    while pos < size:
        fh.seek(pos)
        header = fh.read(16)
        if len(header) < 8:
            return f"truncated: {size - pos} stray bytes after the last whole MP4 box"
        box_size, box_type = struct.unpack(">I4s", header[:8])
        if not _is_fourcc(box_type):
            break  # trailing junk after the last box; FFmpeg ignores it too
        if box_size == 1:
            if len(header) < 16:
                return f"truncated: the '{box_type.decode()}' box header is cut off"
            box_size = struct.unpack(">Q", header[8:16])[0]
        elif box_size == 0:
            box_size = size - pos  # "extends to the end of the file"
        if box_size < 8:
            return f"corrupt MP4: the '{box_type.decode()}' box at byte {pos} has size {box_size}"
        if pos + box_size > size:
            return (
                f"truncated: the '{box_type.decode()}' box needs {box_size} bytes from byte {pos} "
                f"but the file ends {size - pos} bytes later"
            )
        seen.add(box_type)
        pos += box_size
    if b"moov" not in seen:
        return "truncated: no 'moov' box (the MP4 index was never written or was cut off)"
    return None


def _riff_truncation(fh, size: int) -> str | None:
    """Check each top-level RIFF chunk (AVI and its AVIX extensions) fits in the file."""
    pos = 0
    while pos + 8 <= size:
        fh.seek(pos)
        chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
        if chunk_id != b"RIFF":
            break  # trailing data after the RIFF chunks
        need = 8 + chunk_size + (chunk_size & 1)
        if pos + need > size:
            return (
                f"truncated: the RIFF chunk needs {need} bytes from byte {pos} "
                f"but the file ends {size - pos} bytes later"
            )
        pos += need
    return None


def _is_fourcc(tag: bytes) -> bool:
    """True for a printable four-character code such as b'mdat' (junk bytes rarely are)."""
    return all(32 <= b < 127 for b in tag)


def _check_structure(path: Path, size: int) -> None:
    """Raise ``DecodeError("truncated: ...")`` when MP4/MOV boxes or AVI chunks are cut short."""
    with path.open("rb") as fh:
        head = fh.read(12)
        reason = None
        if head[:4] == b"RIFF":
            reason = _riff_truncation(fh, size)
        elif len(head) >= 8 and head[4:8] in _ISO_FIRST_BOXES:
            reason = _iso_truncation(fh, size)
    if reason:
        raise DecodeError(reason)


def _is_text(path: Path) -> bool:
    """Whether the file starts as plain text (its first 512 bytes)."""
    with path.open("rb") as fh:
        head = fh.read(512)
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return sum(ch.isprintable() or ch in "\r\n\t" for ch in text) >= 0.95 * len(text)


def _unopenable_reason(path: Path, error: Exception) -> str:
    """Turn an FFmpeg open error into a short reason, recognising text files. A reason never
    quotes a file's contents: it is stored, listed and printed, and the file may be a secret."""
    if _is_text(path):
        return "not a video: a text file"
    detail = getattr(error, "strerror", None) or str(error)
    return f"cannot open: not a readable video container ({detail})"


class _Probe:
    """What the container header says: declared frame count and frame size."""

    def __init__(self, path: Path) -> None:
        try:
            container = av.open(str(path))
        except av.FFmpegError as err:
            raise DecodeError(_unopenable_reason(path, err)) from err
        try:
            if not container.streams.video:
                raise DecodeError("no video stream (the file holds no frames)")
            stream = container.streams.video[0]
            self.declared_frames = max(int(stream.frames or 0), 0)
            self.width = int(stream.codec_context.width)
            self.height = int(stream.codec_context.height)
        finally:
            container.close()


def _count_packets(path: Path) -> int:
    """Frames present in the file: video packets with data that the demuxer does not discard.

    Demuxing reads the bytes but decodes nothing, so this is cheap next to decoding.
    """
    count = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.size and not packet.is_discard:
                    count += 1
    except av.FFmpegError:
        pass  # the demuxer stopped at damaged data; what was read before it is the count
    return count


def _check_count(readable: int, declared: int) -> None:
    """Raise when fewer frames can be read than the container declares, or none at all."""
    if readable == 0:
        raise DecodeError("no frames")
    if declared > readable:
        raise DecodeError(
            f"truncated: the container declares {declared} frames but only {readable} are present"
        )


def _as_indices(indices: np.ndarray | list[int], num_frames: int) -> np.ndarray:
    """Validate a 1-D integer index array against the frame count."""
    arr = np.asarray(indices)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"frame indices must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.int64)
    bad = arr[(arr < 0) | (arr >= num_frames)]
    if bad.size:
        raise DecodeError(f"frame {int(bad[0])} is out of range: the video has {num_frames} frames")
    return arr


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------


class VideoSource(ABC):
    """An open video: ``num_frames`` and ``get(indices)``; close it or use it as a context."""

    num_frames: int
    path: Path

    @abstractmethod
    def get(self, indices: np.ndarray | list[int]) -> np.ndarray:
        """RGB uint8 frames (k, H, W, 3) in the order asked; duplicates allowed."""

    @abstractmethod
    def close(self) -> None:
        """Release the decoder."""

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _decode_sequential(
    path: Path, indices: np.ndarray, num_frames: int, shape: tuple, hwaccel: Any = None
) -> np.ndarray:
    """Decode frames 0..max(indices) in order with PyAV and keep the wanted ones.

    Never seeks: a damaged frame ends the pass with a ``DecodeError`` (skipping it would shift
    every later index). ``hwaccel`` (an ``av.codec.hwaccel.HWAccel``) decodes on a GPU instead.
    """
    out = np.empty((indices.size, *shape), dtype=np.uint8)
    if indices.size == 0:
        return out
    wanted: dict[int, list[int]] = {}
    for pos, index in enumerate(indices.tolist()):
        wanted.setdefault(index, []).append(pos)
    last = max(wanted)
    decoded = 0
    try:
        with av.open(str(path), hwaccel=hwaccel) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            for frame in container.decode(stream):
                if decoded in wanted:
                    out[wanted[decoded]] = _rgb(frame, decoded, shape)
                decoded += 1
                if decoded > last:
                    return out
    except av.FFmpegError as err:
        detail = getattr(err, "strerror", None) or str(err)
        raise DecodeError(
            f"frame {decoded} of {num_frames} could not be decoded (damaged data: {detail})"
        ) from err
    missing = min(i for i in wanted if i >= decoded)
    raise DecodeError(
        f"frame {missing} of {num_frames} could not be decoded "
        f"(the stream ended after {decoded} frames; truncated file?)"
    )


def _rgb(frame: av.VideoFrame, index: int, shape: tuple) -> np.ndarray:
    """The frame as RGB uint8, checked against the stream's declared size."""
    rgb = frame.to_ndarray(format="rgb24")
    if rgb.shape != shape:
        raise DecodeError(
            f"frame {index} is {rgb.shape[1]}x{rgb.shape[0]} but the stream declares "
            f"{shape[1]}x{shape[0]}"
        )
    return rgb


class DecordSource(VideoSource):
    """decord.VideoReader with one thread; unique sorted indices are fetched, then re-ordered.

    decord2 3.4.0 cannot return frames of width 16, 24, 32, 48, 96 or 144 (measured over even
    widths 16..400 and common larger ones): ``get_batch`` fails with "The size must exactly
    match" and single frames come back with padded rows as 4+ channels. For such a video
    ``get`` decodes with PyAV instead (bit-identical RGB on every width we compared) and
    ``fallback`` says why. Any other decord error also switches to PyAV's in-order decode,
    which either names the first frame that cannot be decoded or returns frames FFmpeg decodes
    without error.
    """

    def __init__(self, path: Path) -> None:
        import decord

        self.path = path
        self.fallback: str | None = None
        size = _check_file(path)
        _check_structure(path, size)
        probe = _Probe(path)
        self._shape = (probe.height, probe.width, 3)
        # decord raises DECORDError (a plain Exception), RuntimeError or AssertionError.
        self._errors = (decord.DECORDError, RuntimeError, AssertionError)
        if probe.declared_frames == 0 and _count_packets(path) == 0:
            raise DecodeError("no frames")  # decord would fail with a filter-graph error
        try:
            self._reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
            readable = len(self._reader)
        except self._errors as err:
            raise DecodeError(f"cannot open: decord failed ({_short(err)})") from err
        _check_count(readable, probe.declared_frames)
        self.num_frames = readable

    def get(self, indices: np.ndarray | list[int]) -> np.ndarray:
        arr = _as_indices(indices, self.num_frames)
        if self.fallback is not None or arr.size == 0:
            return _decode_sequential(self.path, arr, self.num_frames, self._shape)
        unique, inverse = np.unique(arr, return_inverse=True)
        try:
            frames = self._reader.get_batch(unique.tolist()).asnumpy()
        except self._errors as err:
            # After an error decord's decoder thread can fail on later, healthy frames for a
            # while (measured), so it cannot name the bad frame; PyAV's in-order pass can.
            self.fallback = _decord_fallback_reason(err, self._shape)
            return _decode_sequential(self.path, arr, self.num_frames, self._shape)
        if frames.shape[1:] != self._shape:
            self.fallback = f"decord returned frames of shape {frames.shape[1:]}"
            return _decode_sequential(self.path, arr, self.num_frames, self._shape)
        return frames[inverse]

    def close(self) -> None:
        self._reader = None


class PyAVSource(VideoSource):
    """Sequential PyAV decode from frame 0, keeping the wanted frames; never seeks per index.

    ``num_frames`` comes from a demux pass (no decoding), checked against the declared count.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        size = _check_file(path)
        _check_structure(path, size)
        probe = _Probe(path)
        self._shape = (probe.height, probe.width, 3)
        readable = _count_packets(path)
        _check_count(readable, probe.declared_frames)
        self.num_frames = readable

    def get(self, indices: np.ndarray | list[int]) -> np.ndarray:
        arr = _as_indices(indices, self.num_frames)
        return _decode_sequential(self.path, arr, self.num_frames, self._shape)

    def close(self) -> None:
        """Nothing stays open between ``get`` calls."""


def _decord_fallback_reason(err: Exception, shape: tuple) -> str:
    """Why a DecordSource switched to PyAV, for ``DecordSource.fallback``."""
    if "size must exactly match" in str(err):
        return f"decord2 cannot return {shape[1]}-pixel-wide frames"
    return f"decord failed ({_short(err)})"


def _short(err: Exception) -> str:
    """The last line of a (possibly multi-line, C++-prefixed) error message, trimmed."""
    text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return text[-160:]


def decord_available() -> bool:
    """True when ``import decord`` works (decord2 provides the module)."""
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def open_video(
    path: str | Path, backend: Backend = "auto", storage_options: dict[str, Any] | None = None
) -> VideoSource:
    """Open a video for random frame access; ``auto`` picks decord when it can be imported.

    A URL (``s3://bucket/x.mp4``) is spilled to a local temporary file first (``remote.py``),
    read with ``storage_options`` and deleted when the source closes.
    """
    path = locate(path)
    if isinstance(path, Url):
        return open_remote(path, lambda local: open_video(local, backend), storage_options)
    if backend == "auto":
        backend = "decord" if decord_available() else "pyav"
    if backend == "decord":
        return DecordSource(path)
    if backend == "pyav":
        return PyAVSource(path)
    if backend == "nvdec":
        from mote.pipeline.video.nvdec import NvdecSource

        return NvdecSource(path)
    raise ValueError(
        f"unknown decode backend {backend!r}: use 'auto', 'decord', 'pyav' or 'nvdec'."
    )


VideoSource.register(SpilledVideo)
