"""``mote.load_run``: a trained run folder, to label videos and score stores with."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import tempfile
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mote.commands import STAGES
from mote.pipeline.errors import ConfigError
from mote.settings import config_for, documented
from mote.store import Embeddings, open_embeddings

if TYPE_CHECKING:
    from mote.pipeline.runs.run_config import RunConfig

Paths = str | PathLike | Iterable[str | PathLike]
T = TypeVar("T")


class with_options:  # noqa: N801 (a decorator, named as one)
    """A ``TrainedRun`` method taking its command's other options as ``**settings``, whose
    signature and docstring list those options (less the ones it ``fills``) once looked up:
    made from the command's config dataclass, which lives beside its stage (torch), so not at
    ``import mote``."""

    def __init__(self, command: str, fills: tuple[str, ...]) -> None:
        self.command, self.fills = command, frozenset(fills)

    def __call__(self, method: Callable[..., Any]) -> with_options:
        self.method = method
        return self

    @functools.cached_property
    def function(self) -> Callable[..., Any]:
        own = inspect.signature(self.method).parameters.values()
        head = [p for p in own if p.kind is not inspect.Parameter.VAR_KEYWORD]
        config = STAGES[self.command]().config
        summary = self.method.__doc__ or ""
        return documented(self.method, summary, config, head=head, skip=self.fills)

    def __get__(self, run: TrainedRun | None, owner: type | None = None) -> Callable[..., Any]:
        return self.function if run is None else types.MethodType(self.function, run)


@dataclass(frozen=True)
class TrainedRun:
    """A run folder (train-temporal, finetune-e2e or import-reference) and the device it
    scores on. Each call loads the run's weights, as the commands do, so a run being
    trained is read at its last finished epoch."""

    path: Path
    device: str
    config: RunConfig = field(repr=False)  # what the run records: classes, model, ...

    @with_options("predict", fills=("run", "videos", "classes", "device"))
    def predict(
        self, videos: Paths, classes: Iterable[str] | str | None = None, **settings: Any
    ) -> list[dict]:
        """Label video files (or folders of them): one dict per video, in order, with ``top``
        (the top-k ``{label, class, prob, score}``) and ``error`` (why a video has none).

        ``classes``: names to score against instead of the run's own (open vocabulary).
        ``settings``: the other ``mote predict`` options (``top_k``, ``views``, ...).
        """
        from mote.stages import predict as stage

        settings["videos"] = _paths(videos)
        if classes is not None:
            settings["classes"] = _class_text(classes)
        return stage.run(self._config(stage.PredictConfig, "predict", settings))["videos"]

    @with_options("evaluate", fills=("run", "store", "device"))
    def evaluate(self, store: str | PathLike, **settings: Any) -> dict:
        """Close-set top-1/top-5 on a store (``mote evaluate``; ``settings``: its options)."""
        from mote.stages import evaluate as stage

        settings["store"] = store
        return stage.run(self._config(stage.EvaluateConfig, "evaluate", settings))

    @with_options("embed", fills=("run", "store", "out", "device"))
    def embed(
        self, store: str | PathLike, out: str | PathLike | None = None, **settings: Any
    ) -> Embeddings:
        """One unit vector per done video of ``store`` (``mote embed``): ``.vectors`` float32
        (N, D), ``.video_ids``, ``.labels``, ``.label_names``, ``.paths``. ``out``: the
        embeddings file to write or continue (default: a temporary one, deleted once read).
        ``settings``: the other ``mote embed`` options (``tfm``, ``root``, ...)."""
        from mote.stages import embed as stage

        settings["store"] = store
        if out is not None:
            cfg = self._config(stage.EmbedConfig, "embed", {**settings, "out": out})
            stage.run(cfg)
            return open_embeddings(cfg.out, cfg.storage_options)
        with tempfile.TemporaryDirectory(prefix="mote-embed-") as folder:
            temporary = Path(folder) / "embeddings.zarr"
            stage.run(self._config(stage.EmbedConfig, "embed", {**settings, "out": temporary}))
            return dataclasses.replace(open_embeddings(temporary), path=None)

    @with_options("search", fills=("run", "queries", "embeddings", "top_k", "device"))
    def search(
        self,
        queries: Iterable[str] | str,
        embeddings: str | PathLike,
        k: int = 10,
        **settings: Any,
    ) -> list[dict]:
        """The ``k`` best videos of an embeddings file (``mote embed``) for each text query,
        as records: ``{query, rank, score, video_id, path, label, row, scoring}``, best first
        per query (``pandas.DataFrame(records)`` makes a table). ``settings``: the other ``mote
        search`` options (``like``, ``video``, ``index``, ``root``, ``score``, ...)."""
        from mote.stages import search as stage

        settings.update(
            queries=(queries,) if isinstance(queries, str) else tuple(queries),
            embeddings=embeddings,
            top_k=k,
        )
        return stage.records(stage.run(self._config(stage.SearchConfig, "search", settings)))

    def _config(self, cls: type[T], method: str, settings: dict[str, Any]) -> T:
        """The command's config for this run and device (a ``device`` setting overrides it)."""
        caller = f"TrainedRun.{method}()"
        if "run" in settings:
            raise ConfigError(f"{caller}: the run is {self.path}; drop run=")
        return config_for(cls, caller, {"device": self.device, **settings, "run": self.path})


def load_run(path: str | PathLike, device: str = "auto") -> TrainedRun:
    """A trained run folder to ``predict``, ``evaluate``, ``embed`` and ``search`` with on
    ``device`` (auto, cpu, cuda, cuda:1); a folder that is not a run fails here, naming it."""
    from mote.pipeline.runs.run_folder import RunFolder  # torch: only when a run is loaded

    folder = RunFolder(Path(path))
    return TrainedRun(folder.path, device, folder.read_config())


def _paths(videos: Paths) -> tuple[Path, ...]:
    if isinstance(videos, str | PathLike):
        return (Path(videos),)
    return tuple(Path(v) for v in videos)


def _class_text(classes: Iterable[str] | str) -> str:
    """Class names as ``--classes`` comma text; a name holding a comma cannot be one."""
    if isinstance(classes, str):
        return classes
    names = list(classes)
    with_comma = [name for name in names if "," in name]
    if with_comma:
        raise ConfigError(f"class names cannot hold a comma: {', '.join(map(repr, with_comma))}")
    return ",".join(names)
