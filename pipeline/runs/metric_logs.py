"""Metric logs beside ``history.jsonl`` (``--log tensorboard``): each epoch's history line again,
as scalars a dashboard plots while the run trains.

The epoch number is the step, and an epoch is logged only once its checkpoint is on disk, so a
``--resume`` appends after the last logged epoch and never logs one twice. A backend is one
entry of ``BACKENDS`` (name -> the package it needs, its extra, its class with ``write`` and
``close``); its package is checked by ``check_logs`` before any training starts.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from mote.pipeline.errors import ConfigError

if TYPE_CHECKING:
    from mote.pipeline.runs.run_folder import RunFolder

# History keys with a tag of their own; a loss term ``loss_<term>`` is ``loss/<term>``, any
# other number ``train/<key>``.
TAGS = {
    "loss": "loss/total",
    "lr": "train/lr",
    "train_top1": "train/top1",
    "val_top1": "val/top1_1view",  # the per-epoch check: one view, the first clip's centre
    "seconds": "time/epoch_seconds",
    "videos_per_s": "time/videos_per_s",
}


def check_logs(names: Sequence[str]) -> tuple[str, ...]:
    """The backends of ``--log``, each once, after checking each is known and its package is
    installed: one line naming the fix otherwise (before any training)."""
    chosen = tuple(dict.fromkeys(name.strip() for name in names if name.strip()))
    for name in chosen:
        if name not in BACKENDS:
            raise ConfigError(
                f"--log {','.join(names)}: unknown metric log '{name}'; known: "
                f"{', '.join(BACKENDS)}"
            )
        backend = BACKENDS[name]
        if importlib.util.find_spec(backend.module) is None:  # found, not imported: fast
            raise ConfigError(
                f"--log {name} needs the {backend.module} package: "
                f"pip install 'mote[{backend.extra}]'"
            )
    return chosen


def scalars(row: dict) -> dict[str, float]:
    """An epoch's history line as TensorBoard tags and values: every number but the epoch
    (``None``, e.g. no validation store, is left out)."""
    out = {}
    for key, value in row.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if key in TAGS:
            tag = TAGS[key]
        elif key.startswith("loss_"):
            tag = f"loss/{key.removeprefix('loss_')}"
        else:
            tag = f"train/{key}"
        out[tag] = float(value)
    return out


class MetricLog(Protocol):
    def write(self, row: dict) -> None: ...

    def close(self) -> None: ...


class TensorBoardLog:
    """Scalars in ``RUN/tensorboard/``, one event file per (re)start of the run."""

    def __init__(self, folder: RunFolder, first_epoch: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard hides whatever an earlier try logged from this epoch on
        self.writer = SummaryWriter(str(folder.tensorboard_dir), purge_step=first_epoch)

    def write(self, row: dict) -> None:
        for tag, value in scalars(row).items():
            self.writer.add_scalar(tag, value, global_step=row["epoch"])
        self.writer.flush()  # a killed run keeps every epoch it logged

    def close(self) -> None:
        self.writer.close()


class MetricLogs:
    """The run's chosen logs, written together; none chosen is a no-op."""

    def __init__(self, logs: Sequence[MetricLog] = ()) -> None:
        self.logs = list(logs)

    def write(self, row: dict) -> None:
        for log in self.logs:
            log.write(row)

    def close(self) -> None:
        for log in self.logs:
            log.close()


class Backend(NamedTuple):
    module: str  # the package it imports
    extra: str  # the extra of mote that installs it
    open: Callable[[RunFolder, int], MetricLog]  # (run folder, first epoch) -> its log


BACKENDS = {"tensorboard": Backend("tensorboard", "tensorboard", TensorBoardLog)}


def open_logs(names: Sequence[str], folder: RunFolder, first_epoch: int) -> MetricLogs:
    """The logs of ``--log`` for a run that trains from epoch ``first_epoch`` (1 unless it
    resumes)."""
    return MetricLogs([BACKENDS[name].open(folder, first_epoch) for name in check_logs(names)])
