"""Run files on disk, one fault one line: atomic writes (a reader or a crash never sees half a
file), checked reads of JSON and safetensors, and prediction files (``--save-predictions``).
Every failed write names the file and the way out (the errno table); every damaged file read
says how to make it again."""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mote.pipeline.errors import ConfigError, OutputError, RunFileError, os_fault_reason

RUN_FORMAT = "mote.run"
RUN_VERSION = "1"
PREDICTION_SUFFIXES = (".safetensors", ".npz")
REMAKE = "retrain the run (`mote train-temporal`) or re-import it (`mote import-reference`)"


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError while writing ``path`` into one line naming it and the way out."""
    try:
        yield
    except OSError as error:
        if isinstance(error, OutputError):
            raise
        raise OutputError(f"{path}: cannot write: {os_fault_reason(error)}") from error


def make_folder(path: Path) -> None:
    """``mkdir -p`` with a one-line error."""
    with writing(path):
        Path(path).mkdir(parents=True, exist_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that a reader (or a crash) never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        tmp.write_bytes(data)
        os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def read_json(path: Path, remake: str = REMAKE) -> Any:
    """A JSON file; a damaged one raises one line that says how to write it again."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFileError(f"{path}: not valid JSON ({error}); {remake}") from error
    except OSError as error:
        raise RunFileError(f"{path}: cannot be read ({error.strerror or error})") from error


def read_optional(path: Path, remake: str) -> Any:
    return read_json(path, remake) if path.is_file() else None


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """safetensors file written atomically; tensors are copied to contiguous CPU memory. A
    failed write (disk full, permissions) is one line naming the file, and leaves the previous
    file as it was."""
    plain = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        try:
            save_file(
                plain, str(tmp), metadata={"format": RUN_FORMAT, "version": RUN_VERSION, **metadata}
            )
            sort_metadata(tmp)
        except Exception as error:  # safetensors reports I/O as its own error type
            tmp.unlink(missing_ok=True)
            raise _as_os_error(error) from error
        os.replace(tmp, path)


def _as_os_error(error: Exception) -> OSError:
    """safetensors' ``I/O error: No space left on device (os error 28)`` as the OSError it
    wraps (EIO when it names none)."""
    if isinstance(error, OSError):
        return error
    found = re.search(r"os error (\d+)|code: (\d+)", str(error))
    code = int(found.group(1) or found.group(2)) if found else errno.EIO
    return OSError(code, os.strerror(code))


def sort_metadata(path: Path) -> None:
    """Rewrite a safetensors header in place with its metadata keys sorted: safetensors writes
    them in hash-map order, which differs between processes, so two identical runs would not
    write byte-identical files. The header keeps its length (the same keys and values)."""
    with open(path, "r+b") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
        if "__metadata__" not in header:
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > size:  # another JSON spelling than safetensors': leave the file as is
            return
        handle.seek(8)
        handle.write(text.ljust(size))


@contextmanager
def _readable(path: Path, remake: str) -> Iterator[None]:
    """A missing, truncated, empty or otherwise damaged tensor file as one line (safetensors'
    own error is dozens of lines of Rust context)."""
    try:
        yield
    except FileNotFoundError as error:
        raise RunFileError(f"{path}: no such file; {remake}") from error
    except Exception as error:  # SafetensorError and friends: the file is damaged
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RunFileError(
            f"{path}: damaged or cut short, cannot be read ({reason[:120]}); {remake}"
        ) from error


def read_tensors(
    path: Path, prefix: str = "", remake: str = REMAKE
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors whose names start with ``prefix``, and the file's metadata."""
    with _readable(path, remake), safe_open(str(path), framework="pt", device="cpu") as handle:
        metadata = handle.metadata() or {}
        names = [name for name in handle.keys() if name.startswith(prefix)]
        return {name: handle.get_tensor(name) for name in names}, metadata


def read_metadata(path: Path, remake: str = REMAKE) -> dict[str, str]:
    """A tensor file's metadata alone (its header), without loading a tensor."""
    with _readable(path, remake), safe_open(str(path), framework="pt", device="cpu") as handle:
        return handle.metadata() or {}


def check_tensors(path: Path, remake: str = REMAKE) -> None:
    """Read a tensor file's header: a cut-short or damaged file fails in one line, without
    loading its tensors (safetensors checks that the data cover every tensor)."""
    with _readable(path, remake), safe_open(str(path), framework="pt", device="cpu") as handle:
        handle.keys()


def check_predictions_path(path: Path | None) -> None:
    """Fail before any work if predictions could not be written there; make its folder."""
    if path is None:
        return
    path = Path(path)
    if path.suffix not in PREDICTION_SUFFIXES:
        raise ConfigError(f"--save-predictions {path}: use a .safetensors or .npz file name")
    make_folder(path.parent)
    probe = path.with_name(f".{path.name}.probe")
    with writing(path):  # a read-only folder fails now, not after the scoring
        probe.write_bytes(b"")
        probe.unlink()


def split_predictions_path(path: Path, split: str) -> Path:
    """``FILE_<split>.<suffix>``: the predictions of one split of a multi-split command."""
    path = Path(path)
    return path.with_name(f"{path.stem}_{split}{path.suffix}")


def save_predictions(
    path: Path, scores: Any, class_names: list[str], confusion: torch.Tensor | None = None
) -> None:
    """Per-video fused scores, per-view logits and rho, ids and labels (safetensors or npz);
    with ``confusion`` also the (C, C) counts (row: true class) and per-class videos and hits.

    ``scores`` is a ``mote.pipeline.temporal.evaluation.Scores``."""
    arrays = {
        "fused_scores": scores.fused.numpy().astype(np.float32),
        "view_logits": scores.view_logits.numpy().astype(np.float32),
        "rho": scores.rho.numpy().astype(np.float32),
        "labels": scores.labels.numpy().astype(np.int64),
    }
    if confusion is not None:
        counts = confusion.cpu().numpy().astype(np.int64)
        arrays.update(
            confusion=counts,
            class_videos=counts.sum(axis=1),
            class_correct=np.ascontiguousarray(counts.diagonal()),
        )
    path = Path(path)
    if path.suffix not in PREDICTION_SUFFIXES:
        raise ConfigError(f"--save-predictions {path}: use a .safetensors or .npz file name")
    with writing(path):
        if path.suffix == ".npz":
            np.savez(
                path,
                video_ids=np.array(scores.video_ids),
                class_names=np.array(class_names),
                **arrays,
            )
        else:
            from safetensors.numpy import save_file as save_numpy

            meta = {"video_ids": "\n".join(scores.video_ids), "class_names": "\n".join(class_names)}
            save_numpy(arrays, str(path), metadata=meta)
            sort_metadata(path)


# ------------------------------------------------------------------------------ the folder
