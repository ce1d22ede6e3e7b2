"""What each ``mote`` command runs and prints: the command table.

A builder per command, registered by name with ``command``; its docstring is the command's help.
A builder imports only its settings dataclass (stages/configs/) and console's printer; the stage
module (torch, open_clip) is imported inside ``run``, when the command runs, so building a
command for ``--help`` stays light. stages/cli.py turns the table into the typer app.
"""

import contextlib
import json
from collections.abc import Callable
from typing import Any

import typer

from mote.pipeline.exit_codes import DAMAGE, INTERRUPTED, TERMINATED
from mote.stages.console import stderr
from mote.stages.faults import videos_exit_code
from mote.stages.options import config_command
from mote.stages.plain import command_progress

# name -> builder returning the command function; the builder's docstring is the command's help.
BUILDERS: dict[str, Callable[[], Callable[..., None]]] = {}


def command(name: str) -> Callable:
    def register(builder: Callable[[], Callable[..., None]]) -> Callable:
        BUILDERS[name] = builder
        return builder

    return register


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption, ``kill``, torchrun stopping its workers): unwinds like
    Ctrl-C, so claims are released and nothing half-written is left marked done."""


@contextlib.contextmanager
def _resumable(command: str):
    """Ctrl-C or SIGTERM: say how to continue instead of click's bare 'Aborted!'."""
    try:
        yield
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        what, code = ("terminated", TERMINATED) if terminated else ("interrupted", INTERRUPTED)
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
    from mote.stages.configs.extract_config import ExtractConfig
    from mote.stages.console import print_extract

    def run(cfg: Any, as_json: bool) -> None:
        from mote.stages import extract as stage

        with _resumable("mote extract"):
            summary = stage.run(cfg, command_progress())
        _emit(summary, as_json, print_extract)
        code = videos_exit_code(summary["n_done"], summary["n_failed"], cfg.strict)
        if code:
            raise typer.Exit(code)

    return config_command("extract", ExtractConfig, run, "Print the summary as JSON.")


@command("info")
def _info() -> Callable[..., None]:
    """Schema, model, sampling, shapes and done/failed/pending counts of a feature store."""
    from mote.stages.configs.info_config import InfoConfig
    from mote.stages.console import print_info

    def run(cfg: Any, as_json: bool) -> None:
        from mote.stages import info as stage

        summary = stage.run(cfg)
        _emit(summary, as_json, lambda summary: print_info(summary, str(cfg.store)))
        if not summary.get("verify", {}).get("ok", True):
            raise typer.Exit(DAMAGE)

    return config_command("info", InfoConfig, run)


def _training(name: str, settings: type, load_stage: Callable[[], Any]) -> Callable[..., None]:
    """train-temporal and finetune-e2e: resumable; under torchrun rank 0 alone reports."""
    from mote.stages.console import print_metrics

    def run(cfg: Any, as_json: bool) -> None:
        stage = load_stage()
        with _resumable(f"mote {name} (add --resume)"):
            metrics = stage.run(cfg, command_progress())
        if not metrics.get("rank", 0):
            _emit(metrics, as_json, lambda m: print_metrics(m, f"run {cfg.out}"))

    return config_command(name, settings, run)


@command("train-temporal")
def _train_temporal() -> Callable[..., None]:
    """Stage two: train MoTE (or a baseline) on cached features, then evaluate close-set.

    Many GPUs (one process each, DDP; gloo on CPU):
    torchrun --nproc-per-node N -m mote.stages train-temporal --train S --out RUN
    """
    from mote.stages.configs.train_config import TrainConfig

    def stage() -> Any:
        from mote.stages import train_temporal

        return train_temporal

    return _training("train-temporal", TrainConfig, stage)


@command("finetune-e2e")
def _finetune_e2e() -> Callable[..., None]:
    """Stage three (optional): tune CLIP's visual tower and MoTE together on decoded videos.

    Warm-start from a train-temporal run with --init-run RUN and --text-from STORE; re-extract
    with the tuned encoder afterwards: mote extract ... --run RUN.
    Many GPUs (one process each, DDP; gloo on CPU):
    torchrun --nproc-per-node N -m mote.stages finetune-e2e --dataset D --root DIR --out RUN
    """
    from mote.stages.configs.finetune_config import FinetuneConfig

    def stage() -> Any:
        from mote.stages import finetune_e2e

        return finetune_e2e

    return _training("finetune-e2e", FinetuneConfig, stage)


@command("evaluate")
def _evaluate() -> Callable[..., None]:
    """Close-set top-1/top-5 of a run on a store, fusing every view the store holds."""
    from mote.stages.configs.evaluate_config import EvaluateConfig
    from mote.stages.console import print_evaluate

    def run(cfg: Any, as_json: bool) -> None:
        from mote.stages import evaluate as stage

        title = f"evaluate {cfg.run} on {cfg.store}"
        _emit(stage.run(cfg), as_json, lambda result: print_evaluate(result, title))

    return config_command("evaluate", EvaluateConfig, run)


@command("zeroshot")
def _zeroshot() -> Callable[..., None]:
    """Zero-shot protocol: per split top-1/top-5, mean +- std, harmonic mean and trade-off."""
    from mote.stages.configs.zeroshot_config import ZeroShotConfig
    from mote.stages.console import print_zeroshot

    def run(cfg: Any, as_json: bool) -> None:
        from mote.stages import zeroshot as stage

        _emit(stage.run(cfg), as_json, lambda r: print_zeroshot(r, cfg.dataset, cfg.tfm))

    return config_command("zeroshot", ZeroShotConfig, run)


@command("predict")
def _predict() -> Callable[..., None]:
    """What is in these videos: a run's top-k classes per video, close-set or open-vocabulary."""
    from mote.stages.configs.predict_config import PredictConfig
    from mote.stages.console import print_predictions

    def run(cfg: Any, as_json: bool) -> None:
        from mote.stages import predict as stage

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
    return config_command("predict", PredictConfig, run, json_lines)


@command("embed")
def _embed() -> Callable[..., None]:
    """One unit vector per done video of a store, from a run: the file text search reads."""
    from mote.stages.configs.embed_config import EmbedConfig
    from mote.stages.console import print_metrics

    def run(cfg: Any, as_json: bool) -> None:
        from mote.stages import embed as stage

        with _resumable("mote embed"):
            result = stage.run(cfg, command_progress())
        _emit(result, as_json, lambda r: print_metrics(r, f"embed {cfg.store} -> {cfg.out}"))

    return config_command("embed", EmbedConfig, run)


@command("search")
def _search() -> Callable[..., None]:
    """Find the videos that match text (or a video) in a run's embeddings, best first."""
    from mote.stages.configs.search_config import SearchConfig
    from mote.stages.console import print_search

    def run(cfg: Any, as_json: bool) -> None:
        from mote.stages import search as stage

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
    return config_command("search", SearchConfig, run, json_lines)


@command("serve")
def _serve() -> Callable[..., None]:
    """Serve an embeddings file over HTTP: a search API and a page to search from a browser."""
    from mote.stages.configs.serve_config import ServeConfig
    from mote.stages.console import print_metrics

    def run(cfg: Any, as_json: bool) -> None:
        from mote.stages import serve as stage

        def ready(line: str) -> None:
            stderr.print(line, soft_wrap=True)

        result = stage.run(cfg, command_progress(), on_ready=ready)
        title = f"{'checked' if cfg.check else 'served'} {cfg.embeddings}"
        _emit(result, as_json, lambda r: print_metrics(r, title))

    return config_command("serve", ServeConfig, run)


@command("fewshot")
def _fewshot() -> Callable[..., None]:
    """K-shot protocol: train from CLIP features on K videos per class, mean +- std over seeds.

    Every train-temporal option (architecture, MoTE switches, lr, ...) applies to each run.
    """
    from mote.stages.configs.fewshot_config import FewShotConfig
    from mote.stages.console import print_fewshot

    def run(cfg: Any, as_json: bool) -> None:
        from mote.stages import fewshot as stage

        _emit(stage.run(cfg, command_progress()), as_json, print_fewshot)

    return config_command("fewshot", FewShotConfig, run)


@command("import-reference")
def _import_reference() -> Callable[..., None]:
    """Convert a checkpoint of the reference implementation into a run folder."""
    from mote.stages.configs.import_reference_config import ImportReferenceConfig
    from mote.stages.console import print_imported

    def run(cfg: Any, as_json: bool) -> None:
        from mote.stages import import_reference as stage

        _emit(stage.run(cfg), as_json, lambda result: print_imported(result, cfg.ckpt, cfg.out))

    return config_command("import-reference", ImportReferenceConfig, run)


@command("report")
def _report() -> Callable[..., None]:
    """Markdown report and plots (curves, zero-shot bars, trade-off scatter) for runs."""
    from mote.stages.configs.report_config import ReportConfig
    from mote.stages.console import print_report

    def run(cfg: Any, as_json: bool) -> None:
        from mote.stages import report as stage

        _emit(stage.run(cfg), as_json, lambda result: print_report(result, len(cfg.runs)))

    return config_command("report", ReportConfig, run)


@command("demo")
def _demo() -> Callable[..., None]:
    """Run the whole pipeline on a built-in dataset of generated videos with a tiny CLIP."""
    from mote.stages.configs.demo_config import DemoConfig
    from mote.stages.console import print_demo

    def run(cfg: Any, as_json: bool) -> None:
        from mote.stages import demo as stage

        print_demo(stage.run(cfg, command_progress()))

    return config_command("demo", DemoConfig, run, json_help=None)
