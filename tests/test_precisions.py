"""``--precision auto``: one rule for both trainers, given what the device supports, so the
CUDA choices are tested on the CPU."""

from __future__ import annotations

import pytest
import torch

from mote.pipeline.errors import ConfigError
from mote.pipeline.train.precisions import PRECISIONS, auto_precision, resolved_precision
from mote.pipeline.train.step import make_scaler, resolve_precision


@pytest.mark.parametrize(
    "device_type, bf16_supported, expected",
    [
        ("cuda", True, "bf16"),  # Ampere and later: no loss scaler
        ("cuda", False, "fp16"),  # older GPUs: fp16 + GradScaler (spec 7)
        ("cpu", False, "fp32"),
        ("cpu", True, "fp32"),  # a CPU with bf16 instructions still trains in fp32
        ("mps", True, "fp32"),
    ],
)
def test_auto_is_bf16_where_the_gpu_has_it_else_fp16_on_cuda_else_fp32(
    device_type: str, bf16_supported: bool, expected: str
) -> None:
    assert auto_precision(device_type, bf16_supported) == expected
    assert resolved_precision("auto", device_type, bf16_supported) == expected


@pytest.mark.parametrize("precision", [p for p in PRECISIONS if p != "auto"])
def test_an_explicit_precision_is_kept_on_every_device(precision: str) -> None:
    for device_type in ("cuda", "cpu"):
        for bf16 in (True, False):
            assert resolved_precision(precision, device_type, bf16) == precision


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ConfigError, match="--precision must be one of"):
        resolved_precision("fp8", "cuda", True)


def test_the_cpu_trains_in_fp32_without_a_scaler() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert make_scaler("fp32", cpu) is None and make_scaler("bf16", cpu) is None
    assert isinstance(make_scaler("fp16", cpu), torch.amp.GradScaler)
