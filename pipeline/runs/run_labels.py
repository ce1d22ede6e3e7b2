"""Short labels for runs in a report: unique names from their folders, and the MoTE switches a
run changed from the defaults (``mote N=4 -wmr -mse``), so an ablation table reads at a glance."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from mote.pipeline.temporal.arch_names import DEFAULT_ARCH
from mote.pipeline.temporal.architectures import Architecture, get_architecture
from mote.pipeline.temporal.temporal_config import MoTEConfig, default_config

_WMR_ONLY = ("wmr_beta", "wmr_temperatures", "wmr_loss")
_NOT_SWITCHES = ("dim", "arch")


def unique_labels(paths: list[Path]) -> list[str]:
    """Folder names, made safe for file names and unique with -2, -3, ... suffixes."""
    labels: list[str] = []
    for path in paths:
        base = re.sub(r"[^\w.+-]", "_", Path(path).resolve().name) or "run"
        label, n = base, 1
        while label in labels:
            n += 1
            label = f"{base}-{n}"
        labels.append(label)
    return labels


def describe_switches(model_config: dict, tfm: bool = True) -> str:
    """The arch and every switch that differs from MoTEConfig's defaults, e.g. "mote N=4 -wmr".

    Switches the arch ignores are left out (a transformer baseline is just "transformer");
    sizes are compared with the default for the config's width. ``tfm=False`` adds "-tfm" for
    archs that TFM applies to.
    """
    name = model_config.get("arch", DEFAULT_ARCH)
    arch = get_architecture(name)
    reference = _defaults(model_config)
    experts = model_config.get("experts", reference["experts"])
    parts = [f"{name} N={experts}" if arch.routes_experts else name]
    for key, value in model_config.items():
        if key not in reference or key in _NOT_SWITCHES or key == "experts":
            continue
        if not _applies(key, arch, model_config):
            continue
        default = reference[key]
        if _same(value, default):
            continue
        parts.append(_token(key, value))
    if not tfm and arch.uses_tfm:
        parts.append("-tfm")
    return " ".join(parts)


def _defaults(model_config: dict) -> dict[str, Any]:
    """MoTEConfig defaults, with the width's default sizes (spec 2.1) when the width is known."""
    dim = model_config.get("dim")
    if isinstance(dim, int) and dim > 0:
        return dataclasses.asdict(default_config(dim))
    return {
        f.name: f.default
        for f in dataclasses.fields(MoTEConfig)
        if f.default is not dataclasses.MISSING
    }


def _applies(name: str, arch: Architecture, model_config: dict) -> bool:
    """Whether the architecture reads switch ``name`` (the WMR ones only with WMR on)."""
    if name not in arch.settings:
        return False
    if name in _WMR_ONLY and not model_config.get("wmr", True):
        return False
    return True


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, tuple | list):
        return [float(v) for v in value] == [float(v) for v in default]
    if isinstance(default, float):
        return abs(float(value) - default) < 1e-9
    return value == default


def _token(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"+{name}" if value else f"-{name}"
    if name == "layers":
        return f"L={value}"
    if isinstance(value, tuple | list):
        return f"{name}={','.join(f'{float(v):g}' for v in value)}"
    if isinstance(value, float):
        return f"{name}={value:g}"
    return f"{name}={value}"
