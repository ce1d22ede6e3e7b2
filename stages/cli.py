"""The ``mote`` command: the typer app and its command table.

Every command is generated from its stage's config dataclass (stages/options.py): the options, their
help and ``[default: X]``, positional arguments and aliases all come from the fields' metadata, so a
setting is spelled once, in its dataclass. A command here only names that class and says how to run
it and print the result (stages/console.py). Commands are built lazily (``_Commands``): building
one imports its stage (torch, open_clip), which ``mote --help`` need not wait for. ``main`` turns
every fault, click's refusals of the command line included, into one line.

Whether the reader is a terminal is decided here, for help (``TerminalHelp``) and progress
(``_progress``): rich panels and bars on a terminal, whole plain lines (stages/plain.py) off one.
"""

import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import click
import typer
from typer.core import TyperCommand, TyperGroup

from mote.stages.console import stderr
from mote.stages.faults import (
    DAMAGE,
    USAGE,
    ClickError,
    NoArgsIsHelp,
    exit_code,
    fault_message,
    print_error,
    show_mote_warnings,
    videos_exit_code,
)
from mote.stages.options import config_command
from mote.stages.plain import TerminalHelp, command_progress

# name -> builder returning the command function; the builder's docstring is the command's help.
_BUILDERS: dict[str, Callable[[], Callable[..., None]]] = {}


def command(name: str) -> Callable:
    def register(builder: Callable[[], Callable[..., None]]) -> Callable:
        _BUILDERS[name] = builder
        return builder

    return register


class _Command(TerminalHelp, TyperCommand):
    """One mote command."""


def _build(name: str) -> click.Command:
    builder = _BUILDERS[name]
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command(name, cls=_Command, help=builder.__doc__)(builder())
    return typer.main.get_command(single)


class _Commands(TerminalHelp, TyperGroup):
    """A typer group whose commands are built on first use; its own help lists docstrings."""

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_BUILDERS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _BUILDERS:
            return None
        if self._listing:
            return click.Command(name, help=_BUILDERS[name].__doc__)
        built = self.__dict__.setdefault("_built", {})
        if name not in built:
            built[name] = _build(name)
        return built[name]

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="mote",
    cls=_Commands,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _mote() -> None:
    """MoTE video recognition from CLIP: extract CLIP frame features once into a Zarr store,
    then train and evaluate temporal experts from the cache in minutes."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption, ``kill``, torchrun stopping its workers): unwinds like
    Ctrl-C, so claims are released and nothing half-written is left marked done."""


@contextlib.contextmanager
def _resumable(command: str):
    """Ctrl-C or SIGTERM: say how to continue instead of click's bare 'Aborted!'."""
    try:
        yield
    except KeyboardInterrupt as stop:
        what, code = ("terminated", 143) if isinstance(stop, Terminated) else ("interrupted", 130)
        stderr.print(f"{what}: rerun the same {command} command to continue where it stopped")
        raise typer.Exit(code) from None


def _emit(result: dict, as_json: bool, show: Callable[[dict], None]) -> None:
    """``--json``: one JSON object on stdout; else the command's rich tables."""
    if as_json:
        print(json.dumps(result))
    else:
        show(result)


# ------------------------------------------------------------------------------ commands


@command("extract")
def _extract() -> Callable[..., None]:
    """Stage one: decode videos, run the CLIP visual encoder, write a Zarr feature store."""
    from mote.stages import extract as stage
    from mote.stages.console import print_extract

    def run(cfg: Any, as_json: bool) -> None:
        with _resumable("mote extract"):
            summary = stage.run(cfg, command_progress())
        _emit(summary, as_json, print_extract)
        code = videos_exit_code(summary["n_done"], summary["n_failed"], cfg.strict)
        if code:
            raise typer.Exit(code)

    return config_command("extract", stage.ExtractConfig, run, "Print the summary as JSON.")


@command("info")
def _info() -> Callable[..., None]:
    """Schema, model, sampling, shapes and done/failed/pending counts of a feature store."""
    from mote.stages import info as stage
    from mote.stages.console import print_info

    def run(cfg: Any, as_json: bool) -> None:
        summary = stage.run(cfg)
        _emit(summary, as_json, lambda summary: print_info(summary, str(cfg.store)))
        if not summary.get("verify", {}).get("ok", True):
            raise typer.Exit(DAMAGE)

    return config_command("info", stage.InfoConfig, run)


def _training(name: str, stage: Any, cls: str) -> Callable[..., None]:
    """train-temporal and finetune-e2e: resumable; under torchrun rank 0 alone reports."""
    from mote.stages.console import print_metrics

    def run(cfg: Any, as_json: bool) -> None:
        with _resumable(f"mote {name} (add --resume)"):
            metrics = stage.run(cfg, command_progress())
        if not metrics.get("rank", 0):
            _emit(metrics, as_json, lambda m: print_metrics(m, f"run {cfg.out}"))

    return config_command(name, getattr(stage, cls), run)


@command("train-temporal")
def _train_temporal() -> Callable[..., None]:
    """Stage two: train MoTE (or a baseline) on cached features, then evaluate close-set.

    Many GPUs (one process each, DDP; gloo on CPU):
    torchrun --nproc-per-node N -m mote.stages train-temporal --train S --out RUN
    """
    from mote.stages import train_temporal

    return _training("train-temporal", train_temporal, "TrainConfig")


@command("finetune-e2e")
def _finetune_e2e() -> Callable[..., None]:
    """Stage three (optional): tune CLIP's visual tower and MoTE together on decoded videos.

    Warm-start from a train-temporal run with --init-run RUN and --text-from STORE; re-extract
    with the tuned encoder afterwards: mote extract ... --run RUN.
    Many GPUs (one process each, DDP; gloo on CPU):
    torchrun --nproc-per-node N -m mote.stages finetune-e2e --dataset D --root DIR --out RUN
    """
    from mote.stages import finetune_e2e

    return _training("finetune-e2e", finetune_e2e, "FinetuneConfig")


@command("evaluate")
def _evaluate() -> Callable[..., None]:
    """Close-set top-1/top-5 of a run on a store, fusing every view the store holds."""
    from mote.stages import evaluate as stage
    from mote.stages.console import print_evaluate

    def run(cfg: Any, as_json: bool) -> None:
        title = f"evaluate {cfg.run} on {cfg.store}"
        _emit(stage.run(cfg), as_json, lambda result: print_evaluate(result, title))

    return config_command("evaluate", stage.EvaluateConfig, run)


@command("zeroshot")
def _zeroshot() -> Callable[..., None]:
    """Zero-shot protocol: per split top-1/top-5, mean +- std, harmonic mean and trade-off."""
    from mote.stages import zeroshot as stage
    from mote.stages.console import print_zeroshot

    def run(cfg: Any, as_json: bool) -> None:
        _emit(stage.run(cfg), as_json, lambda r: print_zeroshot(r, cfg.dataset, cfg.tfm))

    return config_command("zeroshot", stage.ZeroShotConfig, run)


@command("predict")
def _predict() -> Callable[..., None]:
    """What is in these videos: a run's top-k classes per video, close-set or open-vocabulary."""
    from mote.stages import predict as stage
    from mote.stages.console import print_predictions

    def run(cfg: Any, as_json: bool) -> None:
        result = stage.run(cfg, None if as_json else command_progress())
        if as_json:
            for video in result["videos"]:
                print(json.dumps(video), flush=True)
        else:
            print_predictions(result)
        done = result["n_videos"] - result["n_failed"]
        code = videos_exit_code(done, result["n_failed"], cfg.strict)
        if code:
            raise typer.Exit(code)

    json_lines = "Print one JSON object per video, one per line."
    return config_command("predict", stage.PredictConfig, run, json_lines)


@command("embed")
def _embed() -> Callable[..., None]:
    """One unit vector per done video of a store, from a run: the file text search reads."""
    from mote.stages import embed as stage
    from mote.stages.console import print_metrics

    def run(cfg: Any, as_json: bool) -> None:
        with _resumable("mote embed"):
            result = stage.run(cfg, command_progress())
        _emit(result, as_json, lambda r: print_metrics(r, f"embed {cfg.store} -> {cfg.out}"))

    return config_command("embed", stage.EmbedConfig, run)


@command("search")
def _search() -> Callable[..., None]:
    """Find the videos that match text (or a video) in a run's embeddings, best first."""
    from mote.stages import search as stage
    from mote.stages.console import print_search

    def run(cfg: Any, as_json: bool) -> None:
        result = stage.run(cfg, command_progress())
        if as_json:
            for record in stage.records(result):
                print(json.dumps(record), flush=True)
            for key in ("check_index", "retrieval"):  # one line each, after the hits
                if key in result:
                    print(json.dumps({key: result[key]}), flush=True)
        else:
            print_search(result)

    json_lines = "Print one JSON object per hit, one per line."
    return config_command("search", stage.SearchConfig, run, json_lines)


@command("fewshot")
def _fewshot() -> Callable[..., None]:
    """K-shot protocol: train from CLIP features on K videos per class, mean +- std over seeds.

    Every train-temporal option (architecture, MoTE switches, lr, ...) applies to each run.
    """
    from mote.stages import fewshot as stage
    from mote.stages.console import print_fewshot

    def run(cfg: Any, as_json: bool) -> None:
        _emit(stage.run(cfg, command_progress()), as_json, print_fewshot)

    return config_command("fewshot", stage.FewShotConfig, run)


@command("import-reference")
def _import_reference() -> Callable[..., None]:
    """Convert a checkpoint of the reference implementation into a run folder."""
    from mote.stages import import_reference as stage
    from mote.stages.console import print_imported

    def run(cfg: Any, as_json: bool) -> None:
        _emit(stage.run(cfg), as_json, lambda result: print_imported(result, cfg.ckpt, cfg.out))

    return config_command("import-reference", stage.ImportReferenceConfig, run)


@command("report")
def _report() -> Callable[..., None]:
    """Markdown report and plots (curves, zero-shot bars, trade-off scatter) for runs."""
    from mote.stages import report as stage
    from mote.stages.console import print_report

    def run(cfg: Any, as_json: bool) -> None:
        _emit(stage.run(cfg), as_json, lambda result: print_report(result, len(cfg.runs)))

    return config_command("report", stage.ReportConfig, run)


@command("demo")
def _demo() -> Callable[..., None]:
    """Run the whole pipeline on a built-in dataset of generated videos with a tiny CLIP."""
    from mote.stages import demo as stage
    from mote.stages.console import print_demo

    def run(cfg: Any, as_json: bool) -> None:
        print_demo(stage.run(cfg, command_progress()))

    return config_command("demo", stage.DemoConfig, run, json_help=None)


# ------------------------------------------------------------------------------ entry point


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


def main() -> None:
    """Entry point: every fault is one line on stderr and an exit code by
    ``faults.EXIT_CODES``; ``MOTE_DEBUG=1`` re-raises, showing the traceback."""
    signal.signal(signal.SIGTERM, _terminate)
    show_mote_warnings()
    # fsspec's event loop logs an outage's orphaned requests as tracebacks; the fault itself
    # reaches the command and is its one line
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        code = app(prog_name="mote", standalone_mode=False)  # click's errors come to us
    except NoArgsIsHelp as bare:  # `mote` alone: its help (rich: shown)
        if str(bare).strip():
            print(bare)
        sys.exit(USAGE)
    except ClickError as refused:  # no such option, a missing argument, a bad value
        print_error(fault_message(refused))
        sys.exit(exit_code(refused))
    except Terminated:
        print_error("terminated: rerun the same command to resume where it stopped")
        sys.exit(143)
    except (KeyboardInterrupt, typer.Abort):
        print_error("interrupted: rerun the same command to resume where it stopped")
        sys.exit(130)
    except Exception as error:  # the last resort: never a traceback unless asked for
        if os.environ.get("MOTE_DEBUG", "") not in ("", "0"):
            raise
        print_error(fault_message(error))
        sys.exit(exit_code(error))
    sys.exit(code if isinstance(code, int) else 0)  # typer.Exit(code), --help's 0, or done


if __name__ == "__main__":
    main()
