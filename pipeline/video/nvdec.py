"""``--decoder nvdec``: PyAV's in-order decode with FFmpeg's CUDA hwaccel (NVDEC) doing the work.

Why this backend (issue 29): stage one is decode-bound, and the PyAV wheel the project already
installs (av 18.1, FFmpeg 8.1) is built with the ``cuda`` hwaccel and the ``*_cuvid`` decoders,
so NVDEC needs no new package. torchcodec 0.17 (and 0.16) on PyPI is a CUDA 13 build that needs
``libtorch_cuda.so``: it cannot load beside torch's CPU build, so its CPU path cannot run in CI.
PyNvVideoCodec has no CPU path at all.

Frames are decoded on the GPU and copied back to host memory (NV12) before the RGB conversion,
so the indices, the checks and the RGB output are those of ``PyAVSource``; only the decode moves.
FFmpeg's software fallback is turned off: a GPU that cannot decode a stream is an error, never a
silent CPU decode that a benchmark would then misreport.
"""

from __future__ import annotations

import functools
from pathlib import Path

import av
import numpy as np
from av.codec.hwaccel import HWAccel

from mote.pipeline.config import check_decoder
from mote.pipeline.errors import ConfigError
from mote.pipeline.video.decode import PyAVSource, _as_indices, _decode_sequential


def _hwaccel() -> HWAccel:
    """CUDA device 0 through FFmpeg, with no software fallback.

    PyAV opens a new FFmpeg device per video; ``primary_ctx`` makes that device share the GPU's
    primary CUDA context (held open by ``_DEVICES``) instead of creating a context per video.
    """
    return HWAccel(device_type="cuda", allow_software_fallback=False, options={"primary_ctx": "1"})


_DEVICES: list[HWAccel] = []  # the probe's device: keeps the primary context alive


@functools.cache
def nvdec_unavailable() -> str | None:
    """Why FFmpeg cannot open a CUDA device here (e.g. no GPU or driver), or None if it can."""
    try:
        _DEVICES.append(_hwaccel().create(av.Codec("h264", "r")))
    except (av.FFmpegError, OSError) as err:
        detail = getattr(err, "strerror", None) or str(err)
        return f"FFmpeg cannot open a CUDA device for NVDEC ({detail})"
    return None


class NvdecSource(PyAVSource):
    """``PyAVSource`` whose frames are decoded by NVDEC; raises ``RuntimeError`` without a GPU."""

    def __init__(self, path: Path) -> None:
        reason = nvdec_unavailable()
        if reason:
            raise RuntimeError(f"--decoder nvdec: {reason}")
        super().__init__(path)

    def get(self, indices: np.ndarray | list[int]) -> np.ndarray:
        arr = _as_indices(indices, self.num_frames)
        return _decode_sequential(self.path, arr, self.num_frames, self._shape, _hwaccel())


def check_decoder_usable(decoder: str) -> None:
    """What every command that decodes checks before it starts: ``--decoder`` names a decoder
    (``check_decoder``) and, for nvdec, a GPU is there to decode on (``check_nvdec``)."""
    check_decoder(decoder)
    check_nvdec(decoder)


def check_nvdec(decoder: str) -> None:
    """Stop a run before its first video when ``--decoder nvdec`` has no GPU to decode on:
    otherwise every video would be stored as failed with the same reason."""
    reason = nvdec_unavailable() if decoder == "nvdec" else None
    if reason:
        raise ConfigError(f"--decoder nvdec: {reason}; use --decoder auto on this machine")
