"""Reading pickled torch files without running code: ``torch.load(weights_only=True)``, and
when a file needs more than tensors and plain containers, a refusal that says what the file
holds and how to extract its tensors safely (never the unsafe flag torch suggests)."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from mote.pipeline.errors import ConfigError


def load_weights_only(path: Path, what: str) -> Any:
    """The file's object, read with ``weights_only``; ``what`` names the expected content in
    the refusal ("a reference MoTE checkpoint")."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            needed = unsafe_globals(path)
            if not needed:  # not a refusal: the file is damaged or not a torch file
                raise
            raise ConfigError(pickle_refusal(path, what, needed)) from error


def unsafe_globals(path: Path) -> list[str]:
    """The Python types a pickled torch file needs beyond tensors and plain containers, read
    without running anything; empty when it needs none or is not a torch file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - damaged or not a torch file: nothing to name
        return []


def refused_pickle(path: Path, error: BaseException) -> list[str]:
    """What ``path`` needs, when ``error`` (or its cause) is torch's weights-only refusal of a
    pickle that loads Python objects; empty for any other failure."""
    while error is not None:
        if isinstance(error, pickle.UnpicklingError):
            return unsafe_globals(path)
        error = error.__cause__ or error.__context__
    return []


def pickle_refusal(path: Path, what: str, needed: list[str]) -> str:
    """One line: the file is a pickle needing these Python types, refused, and the safe way
    out (allow-list exactly those types in a Python of your own, save the tensors)."""
    shown = ", ".join(needed[:4]) + (f" and {len(needed) - 4} more" if len(needed) > 4 else "")
    return (
        f"{path}: a pickle that needs Python objects beyond tensors to load ({shown}); mote never "
        f"runs code from a file, so it is refused. If you trust its source, extract the tensors "
        f"once in your own Python: load it inside `torch.serialization.safe_globals([...])` "
        f"listing exactly those types, and `torch.save` (or safetensors) only its state dicts; "
        f"then pass that file as {what}"
    )
