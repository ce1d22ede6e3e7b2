"""Every ``mote`` command as a function: ``mote.extract(out=..., ...)`` is ``mote extract --out``.

Each takes the command's settings as keywords (``settings.config_for``) and returns the dict its
stage returns, what ``--json`` prints. Progress is not shown and errors are raised, not printed.
The stage is imported inside the function, so ``import mote`` loads no torch.
"""

from __future__ import annotations

from typing import Any

from mote.settings import config_for


def extract(**settings: Any) -> dict:
    """Stage one, ``mote extract``: decode videos, encode them with CLIP, write a feature
    store. Returns the store's summary."""
    from mote.stages import extract as stage

    return stage.run(config_for(stage.ExtractConfig, "mote.extract()", settings))


def info(**settings: Any) -> dict:
    """``mote info``: a store's schema, model, sampling, shapes and counts (``verify=True``
    checks every chunk)."""
    from mote.stages import info as stage

    return stage.run(config_for(stage.InfoConfig, "mote.info()", settings))


def train_temporal(**settings: Any) -> dict:
    """Stage two, ``mote train-temporal``: train MoTE on a store. Returns the final metrics."""
    from mote.stages import train_temporal as stage

    return stage.run(config_for(stage.TrainConfig, "mote.train_temporal()", settings))


def finetune_e2e(**settings: Any) -> dict:
    """``mote finetune-e2e``: tune CLIP's visual tower and MoTE together on decoded videos."""
    from mote.stages import finetune_e2e as stage

    return stage.run(config_for(stage.FinetuneConfig, "mote.finetune_e2e()", settings))


def evaluate(**settings: Any) -> dict:
    """``mote evaluate``: close-set top-1/top-5 of a run on a store."""
    from mote.stages import evaluate as stage

    return stage.run(config_for(stage.EvaluateConfig, "mote.evaluate()", settings))


def zeroshot(**settings: Any) -> dict:
    """``mote zeroshot``: the zero-shot protocol of a run on a dataset's stores."""
    from mote.stages import zeroshot as stage

    return stage.run(config_for(stage.ZeroShotConfig, "mote.zeroshot()", settings))


def fewshot(**settings: Any) -> dict:
    """``mote fewshot``: the K-shot protocol (takes every train_temporal setting too)."""
    from mote.stages import fewshot as stage

    return stage.run(config_for(stage.FewShotConfig, "mote.fewshot()", settings))


def predict(**settings: Any) -> dict:
    """``mote predict``: a run's top-k classes for video files (``mote.load_run(...).predict``
    is the short form)."""
    from mote.stages import predict as stage

    return stage.run(config_for(stage.PredictConfig, "mote.predict()", settings))


def embed(**settings: Any) -> dict:
    """``mote embed``: one unit vector per done video of a store, from a run, written to an
    embeddings file (``mote.load_run(...).embed`` returns them as arrays)."""
    from mote.stages import embed as stage

    return stage.run(config_for(stage.EmbedConfig, "mote.embed()", settings))


def search(**settings: Any) -> dict:
    """``mote search``: the videos of an embeddings file (or a store) that best match text
    queries, a video or a video of the collection (``mote.load_run(...).search`` returns the
    hits as records)."""
    from mote.stages import search as stage

    return stage.run(config_for(stage.SearchConfig, "mote.search()", settings))


def import_reference(**settings: Any) -> dict:
    """``mote import-reference``: a reference checkpoint as a run folder."""
    from mote.stages import import_reference as stage

    return stage.run(config_for(stage.ImportReferenceConfig, "mote.import_reference()", settings))


def report(**settings: Any) -> dict:
    """``mote report``: a Markdown report and plots for runs."""
    from mote.stages import report as stage

    return stage.run(config_for(stage.ReportConfig, "mote.report()", settings))


def demo(**settings: Any) -> dict:
    """``mote demo``: the whole pipeline on generated videos with a tiny CLIP."""
    from mote.stages import demo as stage

    return stage.run(config_for(stage.DemoConfig, "mote.demo()", settings))
