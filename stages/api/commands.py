"""Every ``mote`` command as a function: ``mote.extract(out=..., ...)`` is ``mote extract --out``.

Each function takes the command's options as keyword-only parameters and returns the dict its
stage returns, what ``--json`` prints; errors are raised, not printed, and an unknown keyword
is an error listing the valid ones (``settings.config_for``). ``progress=True`` (on the commands
that report progress) shows it: a rich bar on a terminal, whole lines in a log, as the CLI does.

A function's signature and docstring (each option with its ``--help`` text) are made from the
command's config dataclass when the function is first looked up (``mote.extract``, ``from
mote.commands import extract``), which imports its stage (torch) too, since whether the function
takes ``progress`` is read off the stage's ``run``: ``import mote`` stays light and the stage is
imported once, by the command used.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mote.settings import config_for, documented

PROGRESS = "progress"  # the keyword that shows progress, on commands whose run reports it
PROGRESS_HELP = (
    "Show progress while it runs: a bar redrawn on a terminal, whole lines otherwise "
    "(a log, a notebook's captured output)."
)


@dataclass(frozen=True)
class Stage:
    """What a command function needs of its stage: the config dataclass and ``run``."""

    config: type
    run: Callable[..., dict]


def _extract() -> Stage:
    """Stage one, ``mote extract``: decode videos, encode them with CLIP, write a feature
    store. Returns the store's summary."""
    from mote.stages import extract as stage

    return Stage(stage.ExtractConfig, stage.run)


def _info() -> Stage:
    """``mote info``: a store's schema, model, sampling, shapes and counts (``verify=True``
    checks every chunk)."""
    from mote.stages import info as stage

    return Stage(stage.InfoConfig, stage.run)


def _train_temporal() -> Stage:
    """Stage two, ``mote train-temporal``: train MoTE on a store. Returns the final metrics."""
    from mote.stages import train_temporal as stage

    return Stage(stage.TrainConfig, stage.run)


def _finetune_e2e() -> Stage:
    """``mote finetune-e2e``: tune CLIP's visual tower and MoTE together on decoded videos."""
    from mote.stages import finetune_e2e as stage

    return Stage(stage.FinetuneConfig, stage.run)


def _evaluate() -> Stage:
    """``mote evaluate``: close-set top-1/top-5 of a run on a store."""
    from mote.stages import evaluate as stage

    return Stage(stage.EvaluateConfig, stage.run)


def _zeroshot() -> Stage:
    """``mote zeroshot``: the zero-shot protocol of a run on a dataset's stores."""
    from mote.stages import zeroshot as stage

    return Stage(stage.ZeroShotConfig, stage.run)


def _fewshot() -> Stage:
    """``mote fewshot``: the K-shot protocol (takes every train_temporal setting too)."""
    from mote.stages import fewshot as stage

    return Stage(stage.FewShotConfig, stage.run)


def _predict() -> Stage:
    """``mote predict``: a run's top-k classes for video files (``mote.load_run(...).predict``
    is the short form)."""
    from mote.stages import predict as stage

    return Stage(stage.PredictConfig, stage.run)


def _embed() -> Stage:
    """``mote embed``: one unit vector per done video of a store, from a run, written to an
    embeddings file (``mote.load_run(...).embed`` returns them as arrays)."""
    from mote.stages import embed as stage

    return Stage(stage.EmbedConfig, stage.run)


def _search() -> Stage:
    """``mote search``: the videos of an embeddings file (or a store) that best match text
    queries, a video or a video of the collection (``mote.load_run(...).search`` returns the
    hits as records)."""
    from mote.stages import search as stage

    return Stage(stage.SearchConfig, stage.run)


def _serve() -> Stage:
    """``mote serve``: hold an embeddings file in memory and answer searches over HTTP (a page
    at ``/``) until Ctrl-C or SIGTERM; returns what was served."""
    from mote.stages import serve as stage

    return Stage(stage.ServeConfig, stage.run)


def _import_reference() -> Stage:
    """``mote import-reference``: a reference checkpoint as a run folder."""
    from mote.stages import import_reference as stage

    return Stage(stage.ImportReferenceConfig, stage.run)


def _report() -> Stage:
    """``mote report``: a Markdown report and plots for runs."""
    from mote.stages import report as stage

    return Stage(stage.ReportConfig, stage.run)


def _demo() -> Stage:
    """``mote demo``: the whole pipeline on generated videos with a tiny CLIP."""
    from mote.stages import demo as stage

    return Stage(stage.DemoConfig, stage.run)


# The function name -> its stage's loader, whose docstring is the function's first paragraph.
STAGES: dict[str, Callable[[], Stage]] = {
    "extract": _extract,
    "info": _info,
    "train_temporal": _train_temporal,
    "finetune_e2e": _finetune_e2e,
    "evaluate": _evaluate,
    "zeroshot": _zeroshot,
    "fewshot": _fewshot,
    "predict": _predict,
    "embed": _embed,
    "search": _search,
    "serve": _serve,
    "import_reference": _import_reference,
    "report": _report,
    "demo": _demo,
}


def reports_progress(run: Callable[..., dict]) -> bool:
    """Whether a stage's ``run`` takes a Progress (extract, train_temporal, ...)."""
    return PROGRESS in inspect.signature(run).parameters


def shown_progress(show: bool) -> Any:
    """The CLI's progress (stages/plain.py) when ``show``, else None (the stage's silence)."""
    if not show:
        return None
    from mote.stages.plain import command_progress  # rich: only when progress is shown

    return command_progress()


@functools.cache
def command(name: str) -> Callable[..., dict]:
    """The function ``mote.<name>``: the stage's options as keywords, checked, then its run."""
    loader = STAGES[name]
    stage = loader()
    caller = f"mote.{name}()"
    with_progress = reports_progress(stage.run)
    own = (PROGRESS,) if with_progress else ()

    def call(**settings: Any) -> dict:
        show = bool(settings.pop(PROGRESS, False)) if with_progress else False
        cfg = config_for(stage.config, caller, settings, also=own)
        if with_progress:
            return stage.run(cfg, shown_progress(show))
        return stage.run(cfg)

    call.__name__ = call.__qualname__ = name
    call.__module__ = "mote"
    keyword = inspect.Parameter.KEYWORD_ONLY
    extra = [
        (
            inspect.Parameter(PROGRESS, keyword, default=False, annotation=bool),
            f"{PROGRESS}: {PROGRESS_HELP} [default: False]",
        )
    ]
    return documented(call, loader.__doc__ or "", stage.config, extra=extra if own else ())


def __getattr__(name: str) -> Callable[..., dict]:
    """``mote.commands.extract``: the command function, made on first use."""
    if name in STAGES:
        return command(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
