"""The run folder (``RUN/``) that training writes and evaluation reads; the only module that
knows its formats (its file names are in ``layout.py``, which needs no torch).

| file | content |
|---|---|
| ``model.safetensors`` | MoTE state dict, incl. ``logit_scale`` and ``finetune_text`` (the |
|   | frozen text bank TFM needs); + ``clip.*`` CLIP weights for runs that tuned CLIP |
| ``model_best.safetensors`` | the same, from the epoch with the best validation top-1 |
| ``config.json`` | every setting, resolved defaults, the stores read, parameter counts |
| ``history.jsonl`` | one JSON line per epoch |
| ``metrics.json`` | final metrics (contract key names); ``retrieval``: ``mote search --eval`` |
|   | per store |
| ``curves.png`` | loss and accuracy curves |
| ``confusion.json`` | the final evaluation's confusion matrix: class names, counts (row = true |
|   | class, column = predicted), the store and views it was scored on |
| ``checkpoint.safetensors`` | optimiser and random state for ``--resume`` |
| ``failures.jsonl`` | videos that could not be decoded (``finetune-e2e``): one JSON line each |
| ``zeroshot_<dataset>.json`` | ``mote zeroshot`` results of one dataset |
| ``zeroshot_summary.json`` | zero-shot harmonic mean and trade-off over the datasets |
| ``fewshot.json`` | ``mote fewshot`` summary (in the folder that holds its runs) |
| ``tensorboard/`` | ``--log tensorboard``: the history's numbers as TensorBoard scalars |

Predictions (``--save-predictions``) are written as ``.safetensors`` or ``.npz`` files.
Everything loads with safetensors: loading a run never executes code. Every read of a damaged
file and every failed write raises a one-line error naming the file and the way out.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mote.cache_schema.claim import CLAIM_FILE, StoreClaim, live_owner
from mote.pipeline.clip.weights_id import file_weights_id
from mote.pipeline.errors import ConfigError, RunBeingWritten, RunFileError
from mote.pipeline.runs.layout import (  # noqa: F401 (the names, read from here too)
    BEST_FILE,
    CHECKPOINT_FILE,
    CLIP_PREFIX,
    CONFIG_FILE,
    CONFUSION_FILE,
    CURVES_FILE,
    FAILURES_FILE,
    FEWSHOT_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    TENSORBOARD_DIR,
    ZEROSHOT_PREFIX,
    ZEROSHOT_SUMMARY_FILE,
    is_run_folder,
)
from mote.pipeline.runs.run_config import RunConfig
from mote.pipeline.runs.run_files import (
    REMAKE,
    RUN_FORMAT,
    check_tensors,
    make_folder,
    read_json,
    read_metadata,
    read_optional,
    read_tensors,
    save_tensors,
    write_atomic,
    write_json,
    writing,
)
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.temporal.temporal_config import MoTEConfig

NOT_A_RUN = (
    "train one with `mote train-temporal` or convert a released checkpoint with "
    "`mote import-reference`"
)


def save_model(path: Path, model: MoTE, extra: dict[str, torch.Tensor] | None = None) -> None:
    """The model's state dict (+ extra tensors such as CLIP weights) with its config."""
    tensors = dict(model.state_dict())
    tensors.update(extra or {})
    save_tensors(path, tensors, {"model_config": json.dumps(dataclasses.asdict(model.cfg))})


def load_model_file(path: Path, device: str | torch.device = "cpu") -> tuple[MoTE, dict]:
    """A MoTE from a model file, and the file's other tensors (e.g. ``clip.visual.*``)."""
    if not path.is_file():
        raise RunFileError(f"{path}: no model file here (an unfinished run?); {REMAKE}")
    tensors, metadata = read_tensors(path)
    if metadata.get("format") != RUN_FORMAT or "model_config" not in metadata:
        raise ConfigError(
            f"{path}: not a mote model file (format {metadata.get('format')!r}); for a "
            "checkpoint of the reference implementation use `mote import-reference`"
        )
    try:
        model = MoTE(MoTEConfig.from_dict(json.loads(metadata["model_config"])))
        own = set(model.state_dict())
        model.load_state_dict({k: v for k, v in tensors.items() if k in own}, strict=True)
    except (RuntimeError, TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        reason = str(error).strip().splitlines()[0][:120]
        raise RunFileError(
            f"{path}: its weights do not fit its model config ({reason}); {REMAKE}"
        ) from error
    rest = {k: v for k, v in tensors.items() if k not in own}
    return model.to(device), rest


# ------------------------------------------------------------------------------ predictions


class RunFolder:
    """Paths and typed reads and writes of one run folder; nothing else spells its files."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def best_file(self) -> Path:
        return self.path / BEST_FILE

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def history_file(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def curves_file(self) -> Path:
        return self.path / CURVES_FILE

    @property
    def confusion_file(self) -> Path:
        return self.path / CONFUSION_FILE

    @property
    def checkpoint_file(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def failures_file(self) -> Path:
        return self.path / FAILURES_FILE

    @property
    def zeroshot_summary_file(self) -> Path:
        return self.path / ZEROSHOT_SUMMARY_FILE

    @property
    def fewshot_file(self) -> Path:
        return self.path / FEWSHOT_FILE

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD_DIR

    def zeroshot_file(self, dataset: str) -> Path:
        return self.path / f"{ZEROSHOT_PREFIX}{dataset}.json"

    # -------------------------------------------------------------- state

    def is_run(self) -> bool:
        """A mote run (``layout.is_run_folder``)."""
        return is_run_folder(self.path)

    def has_checkpoint(self) -> bool:
        return self.checkpoint_file.is_file()

    def has_best(self) -> bool:
        return self.best_file.is_file()

    def is_finished(self) -> bool:
        """Training ended and wrote its final metrics."""
        return self.metrics_file.is_file()

    def check_new(self, resume: bool) -> None:
        """Refuse to train into a file, a folder of other files, or a run without --resume."""
        path = self.path
        self._refuse_a_file()
        if self.is_run():
            if not resume:
                raise ConfigError(
                    f"{path}: a run folder already exists; pass --resume to continue it or "
                    "choose another --out"
                )
            return
        if path.is_dir() and any(p.name != CLAIM_FILE for p in path.iterdir()):
            raise ConfigError(
                f"--out {path}: the folder holds other files and no mote run (no {CONFIG_FILE}); "
                "choose a new or empty folder"
            )

    def _refuse_a_file(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(
                f"--out {self.path}: is a file, not a folder; choose a folder for the run"
            )

    def create(self) -> None:
        make_folder(self.path)

    @contextmanager
    def writer_claim(self, writes: bool, progress: Any = None) -> Iterator[RunClaim | None]:
        """The run's claim, held while inside, for the process that writes the run (``writes``:
        rank 0 under torchrun); the others hold nothing. A second writer is refused naming the
        owner; a gone owner's claim is taken over with a notice to ``progress``."""
        if not writes:
            yield None
            return
        self._refuse_a_file()
        with RunClaim.acquire(self.path) as claim:
            if claim.taken_over is not None and progress is not None:
                progress.message(
                    f"{self.path}: taking over the claim of a run that is gone "
                    f"({claim.taken_over.describe()})"
                )
            yield claim

    # -------------------------------------------------------------- config, history, metrics

    def read_config(self, reader: bool = True) -> RunConfig:
        """The run's settings. A ``reader`` (not the run's own writer) is warned
        (``RunBeingWritten``) when another process is writing the run: its weights and last
        epoch may change while they are read."""
        if not self.config_file.is_file():
            raise ConfigError(f"{self.path}: not a run folder (no {CONFIG_FILE}); {NOT_A_RUN}")
        config = read_json(self.config_file)
        if not isinstance(config, dict):
            raise RunFileError(f"{self.config_file}: not a JSON object; {REMAKE}")
        writer = live_owner(self.path, others_only=True) if reader else None
        if writer is not None:
            warnings.warn(
                f"{self.path}: another process is training this run ({writer.describe()}); "
                "what is read now is its last finished epoch, which may change",
                RunBeingWritten,
                stacklevel=2,
            )
        return RunConfig.from_json(config, str(self.config_file))

    def write_config(self, config: RunConfig) -> None:
        write_json(self.config_file, config.to_json())

    def read_history(self) -> list[dict]:
        """The epochs so far. A last line cut short (no newline: a job killed while writing
        it) is skipped; any other line that is not an epoch's JSON is damage."""
        if not self.history_file.is_file():
            return []
        text = self.history_file.read_text(errors="replace")
        lines = text.split("\n")
        rows = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict) and isinstance(row.get("epoch"), int):
                rows.append(row)
            elif number < len(lines):  # a whole line, newline written: not a write cut short
                raise RunFileError(
                    f"{self.history_file}: line {number} is not an epoch's record "
                    f"({line[:60]!r}); the file is damaged: {REMAKE}, or delete that line"
                )
        return rows

    def check_weights(self) -> None:
        """The run's weight files that exist are whole (their headers read, their data cover
        every tensor); one line names a damaged one."""
        for path in (self.model_file, self.best_file):
            if path.is_file():
                check_tensors(path)

    def append_history(self, row: dict) -> None:
        """One epoch's line, appended (the file is only ever cut back by ``keep_history``)."""
        with writing(self.history_file), self.history_file.open("a") as handle:
            handle.write(json.dumps(row) + "\n")

    def keep_history(self, epochs: int) -> None:
        """Keep epochs 1..``epochs``, each once: the epochs a checkpoint holds. A run killed
        after an epoch's history line and before its checkpoint redoes that epoch on resume."""
        rows = {row["epoch"]: row for row in self.read_history() if row["epoch"] <= epochs}
        text = "".join(json.dumps(rows[e]) + "\n" for e in sorted(rows))
        if self.history_file.is_file() or text:
            write_atomic(self.history_file, text.encode())

    def read_failures(self) -> list[dict]:
        """The videos listed as undecodable so far ({"split", "video", "reason", "epoch"})."""
        if not self.failures_file.is_file():
            return []
        rows = []
        for line in self.failures_file.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if isinstance(row, dict) and "video" in row:
                rows.append(row)
        return rows

    def append_failures(self, rows: list[dict]) -> None:
        """Videos that failed to decode, one line each; the run goes on without them."""
        if rows:
            with writing(self.failures_file), self.failures_file.open("a") as handle:
                handle.write("".join(json.dumps(row) + "\n" for row in rows))

    def read_metrics(self) -> dict | None:
        return read_optional(self.metrics_file, "rerun the training, or delete the file")

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.metrics_file, metrics)

    def write_retrieval(self, store: str, result: dict) -> None:
        """``mote search --eval``'s numbers on ``store`` into metrics.json under ``retrieval``,
        beside training's metrics (a run without metrics.json gets one holding only these)."""
        metrics = self.read_metrics() or {}
        metrics.setdefault("retrieval", {})[store] = result
        self.write_metrics(metrics)

    def write_curves(self, label: str | None = None, out: Path | None = None) -> Path:
        """Loss and accuracy curves of the history (``curves.png`` unless ``out``), titled
        with the run's label (its folder name unless ``label``), model and stores."""
        from mote.pipeline.runs.plots import plot_curves

        target = out or self.curves_file
        title = f"Training curves of run {label or self.path.name}: {self.describe()}"
        with writing(target):
            return plot_curves(self.read_history(), target, title)

    def describe(self) -> str:
        """What the run trained, on which data, in a few words (for plot titles)."""
        config = self.read_config(reader=False)
        stores = config.details.get("stores") or config.details.get("datasets") or {}
        text = f"{config.arch} ({config.source})"
        for role, word in (("train", " on"), ("val", ", validated on")):
            where = stores.get(role)
            if isinstance(where, dict):  # an end-to-end run's dataset: name and split
                where = " ".join(str(where[k]) for k in ("name", "split") if where.get(k))
            if where:
                text += f"{word} {Path(str(where)).name}"
        return text

    def write_confusion(self, confusion: torch.Tensor, class_names: list[str], **facts) -> None:
        """The final evaluation's confusion matrix (``facts``: store, views, tfm...)."""
        counts = confusion.to("cpu").tolist()
        write_json(self.confusion_file, {"class_names": class_names, "counts": counts, **facts})

    def read_confusion(self) -> dict | None:
        """``confusion.json`` ({class_names, counts, ...}) or None when the run has none."""
        data = read_optional(self.confusion_file, "rerun the training, or delete the file")
        if data is None:
            return None
        names, counts = data.get("class_names"), data.get("counts")
        square = isinstance(counts, list) and all(
            isinstance(row, list) and len(row) == len(counts) for row in counts
        )
        if not isinstance(names, list) or not square or len(names) != len(counts):
            raise RunFileError(
                f"{self.confusion_file}: not a confusion matrix (class_names and a square "
                "counts table of that many classes); rerun the training, or delete the file"
            )
        return data

    # -------------------------------------------------------------- zero- and few-shot

    def read_zeroshot(self, dataset: str) -> dict | None:
        return read_optional(self.zeroshot_file(dataset), _RERUN_ZEROSHOT)

    def write_zeroshot(self, dataset: str, result: dict) -> None:
        write_json(self.zeroshot_file(dataset), result)

    def zeroshot_results(self) -> list[tuple[str, Path, dict]]:
        """(dataset, file, result) of every zero-shot file of the run, by file name."""
        found = []
        for file in sorted(self.path.glob(f"{ZEROSHOT_PREFIX}*.json")):
            if file.name == ZEROSHOT_SUMMARY_FILE:
                continue
            data = read_json(file, _RERUN_ZEROSHOT)
            name = (data.get("dataset") if isinstance(data, dict) else None) or file.stem[
                len(ZEROSHOT_PREFIX) :
            ]
            found.append((name, file, data if isinstance(data, dict) else {}))
        return found

    def read_zeroshot_summary(self) -> dict | None:
        return read_optional(self.zeroshot_summary_file, _RERUN_ZEROSHOT)

    def write_zeroshot_summary(self, summary: dict) -> None:
        write_json(self.zeroshot_summary_file, summary)

    def write_fewshot(self, summary: dict) -> None:
        write_json(self.fewshot_file, summary)

    # -------------------------------------------------------------- weights

    def save_model(
        self, model: MoTE, extra: dict[str, torch.Tensor] | None = None, best: bool = False
    ) -> None:
        save_model(self.best_file if best else self.model_file, model, extra)

    def load_model(
        self, best: bool = False, device: str | torch.device = "cpu"
    ) -> tuple[MoTE, dict]:
        return load_model_file(self.best_file if best else self.model_file, device)

    def model_tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Tensors of the model file whose names start with ``prefix``."""
        if not self.model_file.is_file():
            raise RunFileError(
                f"{self.path}: no {MODEL_FILE} (an unfinished run?); train or import it first"
            )
        return read_tensors(self.model_file, prefix)[0]

    def save_checkpoint(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        save_tensors(self.checkpoint_file, tensors, metadata)

    def read_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        return read_tensors(self.checkpoint_file, remake=_REMAKE_CHECKPOINT)

    def checkpoint_epoch(self) -> int:
        """The epochs the checkpoint holds (where a resume starts); 0 without one."""
        if not self.has_checkpoint():
            return 0
        return int(read_metadata(self.checkpoint_file, _REMAKE_CHECKPOINT).get("epoch", 0))


_REMAKE_CHECKPOINT = "delete it to restart the run from scratch, or retrain into a new --out"
_RERUN_ZEROSHOT = "rerun `mote zeroshot` for this run, or delete the file"


class RunClaim(StoreClaim):
    """One writer per run folder: the store claim's record, lock, takeover of a gone owner and
    messages, on ``RUN/.mote-claim.json``. Held by the process that writes the run (rank 0
    under torchrun) from before the first file to the end."""

    KIND = "run"


@dataclass
class Run:
    """A loaded run folder: its model, its config.json, and any extra tensors."""

    path: Path
    config: RunConfig
    model: MoTE
    extra: dict[str, torch.Tensor]
    weights_file: str = MODEL_FILE  # which model file was loaded

    def identity(self) -> dict[str, Any]:
        """What files derived from this run record to name it: its folder, which weights file
        and that file's ``sha256:<16 hex>``, so a retrained run is told apart."""
        return {
            "path": str(Path(self.path).resolve()),
            "source": self.config.source,
            "weights_file": self.weights_file,
            "weights_sha256": file_weights_id(Path(self.path) / self.weights_file),
        }

    @property
    def clip_state(self) -> dict[str, torch.Tensor]:
        """CLIP weights saved with the run (empty for runs trained on cached features)."""
        n = len(CLIP_PREFIX)
        return {k[n:]: v for k, v in self.extra.items() if k.startswith(CLIP_PREFIX)}


def load_run(path: Path, device: str | torch.device = "cpu", best: bool = False) -> Run:
    """Open ``RUN/`` for evaluation; ``best`` picks the best-validation weights if saved."""
    folder = RunFolder(path)
    config = folder.read_config()
    if best and not folder.has_best():
        raise ConfigError(f"{path}: no {BEST_FILE} (the run had no --val store); drop --best")
    model, extra = folder.load_model(best, device)
    model.eval()
    return Run(folder.path, config, model, extra, BEST_FILE if best else MODEL_FILE)
