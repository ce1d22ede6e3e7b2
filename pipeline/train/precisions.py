"""The training precisions a command accepts, by name, and what ``auto`` resolves to: the one
rule both trainers use, apart from ``step.py`` (torch), so settings and ``--help`` need no
torch (the caller asks the device what it supports)."""

from __future__ import annotations

from mote.pipeline.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")

# What ``--precision auto`` means, for --help and the docs: said once, beside the rule.
AUTO_RULE = (
    "bf16 on GPUs that have it (no loss scaler); else fp16 with a loss scaler on CUDA; "
    "fp32 on the CPU"
)


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def auto_precision(device_type: str, bf16_supported: bool) -> str:
    """``auto`` on a device: bf16 where the GPU computes it natively (fp32's range, so no loss
    scaler and no skipped steps); fp16 with a loss scaler on older GPUs (spec 7, as the
    reference); fp32 on the CPU, where autocast is slow and only a test's twin of CUDA."""
    if device_type != "cuda":
        return "fp32"
    return "bf16" if bf16_supported else "fp16"


def resolved_precision(precision: str, device_type: str, bf16_supported: bool) -> str:
    """The precision a run trains in: ``precision`` itself unless it is ``auto``."""
    check_precision(precision)
    return precision if precision != "auto" else auto_precision(device_type, bf16_supported)
