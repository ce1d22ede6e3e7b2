"""Every `--decoder` backend returns the frames the sampler asks for, on real files including a
variable frame rate one; nvdec (FFmpeg's CUDA hwaccel) is checked where a GPU is, and refused
up front where none is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mote_process import run_piped

from mote.pipeline.config import check_decoder
from mote.pipeline.data.synthetic import (
    read_frame_number,
    write_numbered_vfr_video,
    write_numbered_video,
)
from mote.pipeline.errors import ConfigError
from mote.pipeline.video.decode import open_video
from mote.pipeline.video.nvdec import check_nvdec, nvdec_unavailable
from mote.pipeline.video.sampling import sample_indices

N = 120
REPO = Path(__file__).resolve().parents[1]
NO_GPU = nvdec_unavailable()
needs_gpu = pytest.mark.skipif(NO_GPU is not None, reason=f"nvdec needs a GPU: {NO_GPU}")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("backends")
    return {
        "cfr": write_numbered_video(root / "cfr.mp4", N, size=(96, 64), gop=9),
        "vfr": write_numbered_vfr_video(root / "vfr.mp4", N, size=(96, 64), seed=4),
    }


def _indices(num_frames: int) -> np.ndarray:
    """What stage one asks for (eval, 8 frames x 3 clips), then a random order with repeats."""
    clips = sample_indices(num_frames, 8, 3, "eval").reshape(-1)
    rng = np.random.default_rng(1)
    return np.concatenate([clips, rng.integers(0, num_frames, 12), [num_frames - 1, 0, 0]])


def _check_backend(path: Path, backend: str) -> np.ndarray:
    with open_video(path, backend) as video:
        assert video.num_frames == N
        indices = _indices(video.num_frames)
        frames = video.get(indices)
    assert [read_frame_number(f) for f in frames] == indices.tolist()
    return frames


@pytest.mark.parametrize("kind", ["cfr", "vfr"])
def test_cpu_backends_agree_frame_for_frame(videos, kind):
    decord_frames = _check_backend(videos[kind], "decord")
    pyav_frames = _check_backend(videos[kind], "pyav")
    np.testing.assert_array_equal(decord_frames, pyav_frames)


@needs_gpu
@pytest.mark.parametrize("kind", ["cfr", "vfr"])
def test_nvdec_returns_the_asked_frames_close_to_decord(videos, kind):
    nvdec_frames = _check_backend(videos[kind], "nvdec")
    decord_frames = _check_backend(videos[kind], "decord")
    diff = np.abs(nvdec_frames.astype(np.int16) - decord_frames.astype(np.int16))
    assert diff.max() <= 8, "NVDEC output differs from the CPU decode beyond rounding"


def test_nvdec_is_a_decoder_choice():
    check_decoder("nvdec")
    with pytest.raises(ConfigError, match="auto, decord, pyav or nvdec"):
        check_decoder("torchcodec")


@pytest.mark.skipif(NO_GPU is None, reason="a GPU is here: nvdec is not refused")
def test_nvdec_without_a_gpu_stops_before_the_first_video(videos):
    check_nvdec("auto")  # other decoders never ask for a GPU
    with pytest.raises(ConfigError, match="--decoder nvdec: FFmpeg cannot open a CUDA device"):
        check_nvdec("nvdec")
    with pytest.raises(RuntimeError, match="CUDA device"):
        open_video(videos["cfr"], "nvdec")


@pytest.mark.skipif(NO_GPU is None, reason="a GPU is here: nvdec is not refused")
def test_extract_with_nvdec_and_no_gpu_exits_as_a_config_error(videos, tmp_path):
    out = tmp_path / "store.zarr"
    root = videos["cfr"].parent
    ran = run_piped(
        ["extract", "--dataset", "folder", "--root", root, "--out", out, "--decoder", "nvdec"]
    )
    assert ran.code == 2, ran.err
    assert "--decoder nvdec: FFmpeg cannot open a CUDA device" in ran.err
    assert not out.exists()


@pytest.mark.skipif(NO_GPU is None, reason="a GPU is here: nvdec is not refused")
@pytest.mark.parametrize("command", ["search", "serve"])
def test_search_and_serve_refuse_nvdec_before_opening_the_collection(command, tmp_path):
    """Both decode (a --video query, the page's thumbnails): nvdec without a GPU is refused
    first, before the collection is read or a port is taken."""
    missing = tmp_path / "nothing.mote"
    query = ["x"] if command == "search" else ["--check"]
    ran = run_piped([command, "--embeddings", missing, "--decoder", "nvdec", *query])
    assert ran.code == 2, ran.err
    assert "--decoder nvdec: FFmpeg cannot open a CUDA device" in ran.err, ran.err
    assert "nothing.mote" not in ran.err, ran.err


def test_decode_bench_reports_every_frame_right():
    """bench/decode_backends.py at a tiny size, so the benchmark cannot rot."""
    cmd = [sys.executable, "bench/decode_backends.py", "--frames-per-video", "24", "--repeats", "1"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    lines = out.stdout.strip().splitlines()[1:]
    assert len(lines) == 6, out.stdout
    assert all(line.split()[3] == "ok" for line in lines), out.stdout
