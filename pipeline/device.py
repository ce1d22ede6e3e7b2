"""Which torch device a command runs on; kept apart so training code need not import open_clip.

``resolve_device`` picks the one device of training and evaluation; ``resolve_devices`` the list
of encoder devices of ``mote extract --devices`` (one encoder process per entry beyond the first).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

import torch

from mote.pipeline.config import DEVICES_CHOICES
from mote.pipeline.errors import ConfigError

DEVICES_HELP = f"{DEVICES_CHOICES}, cpu, or cpu,cpu (several CPU encoder processes)"


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; an unavailable CUDA device is a config error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"--device {device!r} is not a torch device ({exc})") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available here; use --device cpu")
    return resolved


def resolve_devices(spec: str, gpu_count: int | None = None) -> list[torch.device]:
    """The encoder devices ``--devices`` names: see ``DEVICES_HELP``; ``auto`` reads as ``all``.

    ``gpu_count`` defaults to the CUDA devices visible here. GPUs are numbered as this process
    sees them (after ``CUDA_VISIBLE_DEVICES``). A GPU may be listed once (one encoder each); the
    CPU any number of times. CPUs and GPUs never mix: they encode in fp32 and fp16, so a store's
    embeddings would depend on which one took each batch.
    """
    count = torch.cuda.device_count() if gpu_count is None else gpu_count
    text = spec.strip().lower()
    if text in ("all", "auto"):
        return [torch.device("cuda", i) for i in range(count)] or [torch.device("cpu")]
    devices = [_one_device(part.strip(), spec, count) for part in text.split(",")]
    if len({d.type for d in devices}) > 1:
        raise ConfigError(
            f"--devices {spec}: mixes the CPU and GPUs, which encode in fp32 and fp16; a store "
            "is made on one kind: list GPUs only or cpu only"
        )
    gpus = [d for d in devices if d.type == "cuda"]
    twice = sorted({str(d) for d in gpus if gpus.count(d) > 1})
    if twice:
        raise ConfigError(f"--devices {spec}: {twice[0]} is listed twice; a GPU runs one encoder")
    return devices


def _one_device(part: str, spec: str, count: int) -> torch.device:
    """One entry of ``--devices``: a GPU index, a torch device name (cpu, cuda, cuda:1)."""
    if not part:
        raise ConfigError(f"--devices {spec}: an empty entry; expected {DEVICES_HELP}")
    try:
        device = torch.device("cuda", int(part)) if part.isdigit() else torch.device(part)
    except RuntimeError:
        raise ConfigError(
            f"--devices {spec}: '{part}' is not a device; expected {DEVICES_HELP}"
        ) from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise ConfigError(f"--devices {spec}: mote encodes on cpu or cuda, not {device.type}")
    if count == 0:
        raise ConfigError(f"--devices {spec}: CUDA is not available here; use --devices cpu")
    index = device.index or 0
    if index >= count:
        present = ", ".join(str(i) for i in range(count))
        noun = "device" if count == 1 else "devices"
        raise ConfigError(f"--devices {spec}: only {count} CUDA {noun} here ({present})")
    return torch.device("cuda", index)


def release_memory(device: torch.device) -> None:
    """Give back what dropped models held: collect them now, and return CUDA's cached blocks so
    encoder processes sharing this GPU can use them."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def tf32_matmuls(enabled: bool) -> Iterator[None]:
    """float32 matmuls and convolutions in TF32 on CUDA (Ampere and later) while inside, the
    previous setting back after. Training turns it on where the step is mixed precision anyway
    (fp16/bf16 autocast: the fp32 matmuls left, such as the expert merge, lose nothing the
    half-precision ones have not); ``--precision fp32`` and evaluation (spec 7: fp32) keep IEEE
    float32. No effect on the CPU."""
    targets = [torch.backends.cuda.matmul, torch.backends.cudnn.conv]
    if not all(hasattr(t, "fp32_precision") for t in targets):  # torch < 2.9: the old flags
        before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
        return
    before = [t.fp32_precision for t in targets]
    for target in targets:
        target.fp32_precision = "tf32" if enabled else "ieee"
    try:
        yield
    finally:
        for target, value in zip(targets, before, strict=True):
            target.fp32_precision = value
