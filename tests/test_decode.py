"""Decoding real files: the right frames in the asked order, honest counts, a reason per failure."""

from __future__ import annotations

import struct
from pathlib import Path

import av
import decord
import numpy as np
import pytest

from mote.pipeline.data.synthetic import read_frame_number, write_frames, write_numbered_video
from mote.pipeline.errors import DecodeError
from mote.pipeline.video.decode import DecordSource, PyAVSource, open_video

BACKENDS = ("decord", "pyav")
N = 150


@pytest.fixture(scope="module")
def numbered(tmp_path_factory) -> dict[str, Path]:
    """Numbered videos: libx264 (B-frames) and mpeg4, small GOPs so keyframes vary."""
    root = tmp_path_factory.mktemp("numbered")
    return {
        "libx264": write_numbered_video(root / "x264.mp4", N, codec="libx264", gop=7),
        "mpeg4": write_numbered_video(root / "mpeg4.mp4", N, codec="mpeg4", gop=5),
        "mpeg4-avi": write_numbered_video(root / "mpeg4.avi", N, codec="mpeg4", gop=9),
    }


def _cut(src: Path, dst: Path, size: int) -> Path:
    dst.write_bytes(src.read_bytes()[:size])
    return dst


def _set_mdat_to_file_end(path: Path) -> None:
    """Rewrite the 'mdat' box size so the cut file is structurally whole again."""
    data = bytearray(path.read_bytes())
    pos = 0
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"mdat":
            data[pos : pos + 4] = struct.pack(">I", len(data) - pos)
            path.write_bytes(bytes(data))
            return
        pos += size
    raise AssertionError("no mdat box")


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Each broken input with a phrase its reason must contain."""
    root = tmp_path_factory.mktemp("broken")
    whole = write_numbered_video(root / "whole.mp4", 300, gop=12)
    fast = write_numbered_video(root / "fast.mp4", 300, gop=12, faststart=True)
    (root / "empty.mp4").write_bytes(b"")
    (root / "random.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    (root / "text.mp4").write_text("this is not a video\n" * 50)
    (root / "folder.mp4").mkdir()
    write_numbered_video(root / "zero.mp4", 0)
    write_frames(root / "zero.avi", np.zeros((0, 48, 64, 3), np.uint8), codec="mpeg4")
    half = whole.stat().st_size // 2
    return {
        "missing": (root / "missing.mp4", "file not found"),
        "empty": (root / "empty.mp4", "empty file (0 bytes)"),
        "directory": (root / "folder.mp4", "not a regular file"),
        "random bytes": (root / "random.mp4", "cannot open"),
        "text": (root / "text.mp4", "not a video: a text file"),
        "truncated, index at end": (_cut(whole, root / "cut.mp4", half), "truncated: the 'mdat'"),
        "truncated, faststart": (_cut(fast, root / "cut_fs.mp4", half), "truncated: the 'mdat'"),
        "zero frames mp4": (root / "zero.mp4", "no video stream"),
        "zero frames avi": (root / "zero.avi", "no frames"),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("codec", ["libx264", "mpeg4", "mpeg4-avi"])
def test_frames_come_back_in_the_order_asked(numbered, backend, codec):
    rng = np.random.default_rng(3)
    indices = np.concatenate([rng.integers(0, N, 20), [N - 1, 0, 0, 77, 3, 77]])
    with open_video(numbered[codec], backend) as video:
        assert video.num_frames == N
        frames = video.get(indices)
    assert frames.dtype == np.uint8 and frames.shape == (indices.size, 48, 64, 3)
    assert [read_frame_number(f) for f in frames] == indices.tolist()


def test_backends_return_identical_rgb(numbered):
    indices = np.array([5, 0, 149, 70, 70])
    with (
        open_video(numbered["libx264"], "decord") as a,
        open_video(numbered["libx264"], "pyav") as b,
    ):
        np.testing.assert_array_equal(a.get(indices), b.get(indices))


def test_auto_prefers_decord_and_backends_have_their_types(numbered):
    assert isinstance(open_video(numbered["mpeg4"]), DecordSource)
    assert isinstance(open_video(numbered["mpeg4"], "pyav"), PyAVSource)
    with pytest.raises(ValueError, match="unknown decode backend"):
        open_video(numbered["mpeg4"], "opencv")  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_out_of_range_requests(numbered, backend):
    with open_video(numbered["libx264"], backend) as video:
        assert video.get(np.array([], dtype=np.int64)).shape == (0, 48, 64, 3)
        with pytest.raises(DecodeError, match="frame 150 is out of range: the video has 150"):
            video.get([0, N])
        with pytest.raises(DecodeError, match="out of range"):
            video.get([-1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_broken_input_fails_with_its_own_reason(broken, backend):
    reasons = {}
    for name, (path, phrase) in broken.items():
        with pytest.raises(DecodeError) as caught:
            open_video(path, backend)
        reason = str(caught.value)
        assert phrase in reason, f"{name}: {reason}"
        assert len(reason) < 200 and "\n" not in reason
        reasons[name] = reason
    assert len(set(reasons.values())) == len(reasons), reasons


def test_decord_alone_reads_a_clean_cut_as_a_shorter_valid_video(tmp_path):
    """Why the count check exists: cut on a packet boundary, decord reports no error at all."""
    fast = write_numbered_video(tmp_path / "fast.mp4", 300, gop=12, faststart=True)
    with av.open(str(fast)) as container:
        offsets = sorted(p.pos for p in container.demux(container.streams.video[0]) if p.size)
    cut = _cut(fast, tmp_path / "cut.mp4", offsets[150])
    _set_mdat_to_file_end(cut)  # now every box fits: only the frame count can tell

    reader = decord.VideoReader(str(cut), ctx=decord.cpu(0), num_threads=1)
    assert len(reader) == 150
    assert reader.get_batch(list(range(150))).shape[0] == 150  # no error from decord

    for backend in BACKENDS:
        with pytest.raises(DecodeError, match="declares 300 frames but only 150 are present"):
            open_video(cut, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_damaged_frames_raise_when_asked_for(tmp_path, backend):
    path = write_numbered_video(tmp_path / "v.mp4", 300, gop=12, faststart=True)
    data = bytearray(path.read_bytes())
    start, length = len(data) // 2, len(data) // 10
    data[start : start + length] = bytes(length)
    path.write_bytes(bytes(data))
    with open_video(path, backend) as video:
        assert video.num_frames == 300  # the structure is intact; only frame data is damaged
        assert read_frame_number(video.get([0])[0]) == 0
        with pytest.raises(DecodeError, match=r"frame \d+ of 300 could not be decoded"):
            video.get(np.arange(300))


def test_decord_width_bug_falls_back_to_correct_frames(tmp_path):
    """decord2 3.4.0 cannot return 96-pixel-wide frames; the source must still be right."""
    path = write_numbered_video(tmp_path / "w96.mp4", 40, size=(96, 72), gop=6)
    try:
        decord.VideoReader(str(path), num_threads=1).get_batch([0])
        decord_ok = True
    except decord.DECORDError:
        decord_ok = False
    indices = [39, 2, 2, 17]
    with open_video(path, "decord") as video:
        frames = video.get(indices)
        assert (video.fallback is None) == decord_ok
    assert frames.shape == (4, 72, 96, 3)
    assert [read_frame_number(f) for f in frames] == indices
