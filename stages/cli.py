"""The ``mote`` command: thin typer wrappers that build a config and call a stage's ``run``.

Commands are built lazily (``_Commands``): building one imports its stage and config dataclass
(torch, open_clip), which ``mote --help`` need not wait for. Every ``[default: X]`` in ``--help``
comes from the config dataclass (stages/options.py); ``main`` turns every fault into one line.
"""

import contextlib
import inspect
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from mote.cache_schema.errors import StoreError
from mote.pipeline.config import build_config
from mote.pipeline.errors import MoteError, os_fault_reason
from mote.stages.console import RichProgress, stderr, stdout
from mote.stages.options import (
    config_parameters,
    config_values,
    default_help,
    opt,
    parse_tuple,
    with_default,
    with_signature,
)

# name -> builder returning the command function; the builder's docstring is the command's help.
_BUILDERS: dict[str, Callable[[], Callable[..., None]]] = {}


def command(name: str) -> Callable:
    def register(builder: Callable[[], Callable[..., None]]) -> Callable:
        _BUILDERS[name] = builder
        return builder

    return register


def _build(name: str) -> click.Command:
    builder = _BUILDERS[name]
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command(name, help=builder.__doc__)(builder())
    return typer.main.get_command(single)


class _Commands(TyperGroup):
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


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="YAML/TOML file whose keys mirror the options; flags win."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def config_command(name: str, cls: type, run: Callable[[Any, bool], None]) -> Callable[..., None]:
    """A command whose options are the help-carrying fields of ``cls``, plus --json, --config."""

    def callback(config: Path | None = None, as_json: bool = False, **options: Any) -> None:
        run(build_config(cls, config, **config_values(cls, options)), as_json)

    keyword = inspect.Parameter.KEYWORD_ONLY
    extra = [
        inspect.Parameter("as_json", keyword, default=False, annotation=JsonOpt),
        inspect.Parameter("config", keyword, default=None, annotation=ConfigOpt),
    ]
    callback.__name__ = name.replace("-", "_")
    return with_signature(callback, [*config_parameters(cls), *extra])


@contextlib.contextmanager
def _resumable(command: str):
    """Ctrl-C: say how to continue instead of click's bare 'Aborted!'."""
    try:
        yield
    except KeyboardInterrupt:
        stderr.print(f"interrupted: rerun the same {command} command to continue where it stopped")
        raise typer.Exit(130) from None


def _print_summary_table(summary: dict, title: str) -> None:
    table = Table(title=title, show_header=False)
    for key in (
        "store",
        "schema_version",
        "dataset",
        "split",
        "model",
        "pretrained",
        "weights_id",
        "dim",
        "frames",
        "views",
        "sampling",
        "classes",
        "n_videos",
        "n_done",
        "n_failed",
        "n_pending",
        "seconds",
        "videos_per_s",
        "bytes_on_disk",
    ):
        if key in summary:
            table.add_row(key, str(summary[key]))
    devices = summary.get("devices") or []
    if len(devices) > 1:  # several encoders (or dask workers): what each did
        for row in devices:
            where = row["device"] + (f" ({row['worker']})" if row.get("worker") else "")
            done = f"{row['videos']} videos, {row['images']} frames, {row['videos_per_s']} videos/s"
            table.add_row(where, done)
    stdout.print(table)
    failures = summary.get("failures") or []
    if failures:
        failed = Table(title=f"{len(failures)} failed video(s)")
        failed.add_column("video")
        failed.add_column("reason")
        for item in failures[:50]:
            failed.add_row(item["video"], item["reason"])
        if len(failures) > 50:
            failed.add_row("...", f"{len(failures) - 50} more: see `mote info --json`")
        stdout.print(failed)


def _print_metrics(metrics: dict, title: str) -> None:
    table = Table(title=title, show_header=False)
    for key, value in metrics.items():
        if isinstance(value, float):
            value = f"{value:.2f}"
        table.add_row(key, str(value))
    stdout.print(table)


@command("extract")
def _extract() -> Callable[..., None]:
    """Stage one: decode videos, run the CLIP visual encoder, write a Zarr feature store."""
    from mote.stages import extract as stage

    C = stage.ExtractConfig

    def extract(
        dataset: Annotated[
            str | None, opt(C, "dataset", "k400, k600, ucf101, hmdb51 or list.")
        ] = None,
        out: Annotated[
            Path | None, opt(C, "out", "Zarr store to write (resumed if it exists).")
        ] = None,
        root: Annotated[Path | None, opt(C, "root", "Folder holding the videos.")] = None,
        split: Annotated[
            str | None,
            opt(
                C, "split", "k400: val|test|train; k600: split1-3; ucf101/hmdb51: test1-3|train1-3."
            ),
        ] = None,
        list_file: Annotated[
            Path | None, opt(C, "list_file", "Video list 'relative/path label' (list).", "--list")
        ] = None,
        labels_file: Annotated[
            Path | None, opt(C, "labels_file", "Label CSV 'id,name' (list).", "--labels")
        ] = None,
        kinetics_csv: Annotated[
            Path | None,
            opt(
                C,
                "kinetics_csv",
                "k400: the official annotation CSV (label,youtube_id,time_start,"
                "time_end,split); the --split rows whose clips exist under --root.",
            ),
        ] = None,
        model: Annotated[
            str | None,
            opt(C, "model", "open_clip model name, JSON config, local-dir:PATH, or mote-tiny."),
        ] = None,
        pretrained: Annotated[
            str | None,
            opt(
                C,
                "pretrained",
                "Weights tag (openai), a local weights file, or none (random, --seed).",
            ),
        ] = None,
        frames: Annotated[
            int | None, opt(C, "frames", f"Frames per view T, 1 to {stage.MAX_FRAMES}.")
        ] = None,
        views: Annotated[
            str | None,
            typer.Option(
                help=with_default(
                    "CLIPSxCROPS: 1x1, 3x1, 4x3.",
                    ", ".join(f"{v} for {d}" for d, v in stage.DEFAULT_VIEWS.items())
                    + ", else 1x1",
                )
            ),
        ] = None,
        sampling: Annotated[
            str | None,
            opt(C, "sampling", "eval (segment starts, spec 7.1) or train (seeded random)."),
        ] = None,
        seed: Annotated[
            int | None, opt(C, "seed", "Seed for random weights and train sampling.")
        ] = None,
        devices: Annotated[
            str | None,
            opt(
                C,
                "devices",
                "Encoder devices: all (every visible GPU, else the CPU), GPU indices (0,1,3), "
                "cuda:1, or cpu. Each device past the first runs its own encoder process, all "
                "fed by one decode pool; cpu,cpu runs two CPU encoder processes (how CI tests "
                "several devices). With --dask local:N, worker i is pinned to GPU i mod G. "
                "--device is the same option.",
                "--devices",
                "--device",
            ),
        ] = None,
        batch_size: Annotated[
            int | None,
            typer.Option(help=with_default("Images per CLIP batch.", "256 on GPU, 32 on CPU")),
        ] = None,
        decode_workers: Annotated[
            int | None,
            typer.Option(
                help=with_default("Decode processes; 0 decodes in this process.", "one per core")
            ),
        ] = None,
        decoder: Annotated[str | None, opt(C, "decoder", "auto, decord or pyav.")] = None,
        decode_timeout: Annotated[
            float | None,
            opt(C, "decode_timeout", "Seconds before a video's decode is abandoned."),
        ] = None,
        chunk_videos: Annotated[
            int | None, opt(C, "chunk_videos", "Videos per Zarr chunk.")
        ] = None,
        limit: Annotated[
            int | None, opt(C, "limit", "Only the first N videos of the list.")
        ] = None,
        overwrite: Annotated[
            bool, opt(C, "overwrite", "Start the store over.", "--overwrite")
        ] = False,
        retry_failed: Annotated[
            bool, opt(C, "retry_failed", "Retry videos that failed before.", "--retry-failed")
        ] = False,
        repair: Annotated[
            bool,
            opt(
                C,
                "repair",
                "Verify every chunk and re-extract the videos whose stored data are damaged.",
                "--repair",
            ),
        ] = False,
        run: Annotated[
            Path | None,
            opt(
                C,
                "run",
                "Encode with this run's CLIP: its model, and its tuned visual weights blended "
                "0.99/0.01 with the original (spec 7.4), e.g. a run from import-reference.",
            ),
        ] = None,
        blend: Annotated[
            bool | None,
            opt(
                C,
                "blend",
                "With --run: blend the tuned visual weights 0.99/0.01 with the original (spec "
                "7.4); --no-blend encodes with the tuned weights as trained.",
                "--blend/--no-blend",
            ),
        ] = None,
        dask: Annotated[
            str | None,
            typer.Option(
                help=with_default(
                    "Scale out on dask.distributed: a scheduler address (tcp://host:8786; "
                    "workers need mote and the same paths, and encode on the GPU they were "
                    "started with) or local:N for a local cluster of N workers, each pinned to "
                    "one GPU of --devices (CUDA_VISIBLE_DEVICES).",
                    "one local process with --decode-workers",
                )
            ),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
        config: ConfigOpt = None,
    ) -> None:
        cfg = build_config(
            C,
            config,
            dataset=dataset,
            out=out,
            root=root,
            split=split,
            list_file=list_file,
            labels_file=labels_file,
            model=model,
            pretrained=pretrained,
            frames=frames,
            views=views,
            sampling=sampling,
            seed=seed,
            devices=devices,
            batch_size=batch_size,
            decode_workers=decode_workers,
            decoder=decoder,
            decode_timeout=decode_timeout,
            chunk_videos=chunk_videos,
            limit=limit,
            overwrite=overwrite or None,
            retry_failed=retry_failed or None,
            repair=repair or None,
            dask=dask,
            run=run,
            blend=blend,
            kinetics_csv=kinetics_csv,
        )
        with _resumable("mote extract"):
            summary = stage.run(cfg, RichProgress())
        if as_json:
            print(json.dumps(summary))
        else:
            _print_summary_table(summary, f"extracted {summary['store']}")
            repaired = summary.get("repaired")
            if repaired is not None:
                for line in repaired["problems"]:
                    stderr.print(f"repaired: {line}", highlight=False, soft_wrap=True)
                stdout.print(f"repair: {repaired['videos']} damaged video(s) re-extracted")

    return extract


@command("info")
def _info() -> Callable[..., None]:
    """Schema, model, sampling, shapes and done/failed/pending counts of a feature store."""
    from mote.stages import info as stage

    C = stage.InfoConfig

    def info(
        store: Annotated[Path, typer.Argument(help="A feature store written by mote extract.")],
        verify: Annotated[
            bool,
            opt(
                C,
                "verify",
                "Read every chunk: checksums, missing files, NaN/inf or all-zero done rows, "
                "labels, ids. Exits 1 if anything is damaged.",
                "--verify",
            ),
        ] = False,
        sample: Annotated[
            int,
            opt(
                C,
                "sample",
                "With --verify: re-encode this many random done videos (needs --root) and "
                "compare them with the stored embeddings.",
            ),
        ] = 0,
        root: Annotated[
            Path | None, opt(C, "root", "Folder the store's video ids are relative to.")
        ] = None,
        device: Annotated[str, opt(C, "device", "Device for --sample: auto, cpu, cuda.")] = "auto",
        as_json: JsonOpt = False,
    ) -> None:
        cfg = C(store=store, verify=verify, sample=sample, root=root, device=device)
        summary = stage.run(cfg)
        checked = summary.get("verify")
        if as_json:
            print(json.dumps(summary))
        else:
            _print_summary_table(summary, str(store))
            if checked is not None:
                _print_verify(checked)
        if checked is not None and not checked["ok"]:
            raise typer.Exit(1)

    return info


def _print_verify(checked: dict) -> None:
    """One line per problem on stderr, then a verdict."""
    for problem in checked["problems"]:
        videos = problem["videos"]
        shown = ", ".join(str(v) for v in videos[:8]) + (" ..." if len(videos) > 8 else "")
        stderr.print(
            f"[bold red]damaged:[/] {problem['store']}: array {problem['array']!r} chunk "
            f"{problem['chunk']} (videos {shown or '-'}) {problem['reason']}",
            highlight=False,
            soft_wrap=True,
        )
    sampled = len(checked["sampled"])
    extra = f", {sampled} video(s) re-encoded" if sampled else ""
    if not checked["checksums"]:
        stdout.print("note: this store has no chunk checksums (written before they were added)")
    if checked["ok"]:
        stdout.print(f"verified: {checked['chunks_read']} chunks read{extra}, no damage found")
    else:
        fix = (
            "repair with `mote extract ... --repair`"
            if checked["repairable"]
            else "re-create the store with `mote extract ... --overwrite`"
        )
        stdout.print(f"{len(checked['problems'])} problem(s) found{extra}; {fix}")


@command("train-temporal")
def _train_temporal() -> Callable[..., None]:
    """Stage two: train MoTE (or a baseline) on cached features, then evaluate close-set.

    Many GPUs (one process each, DDP; gloo on CPU):
    torchrun --nproc-per-node N -m mote.stages train-temporal --train S --out RUN
    """
    from mote.stages import train_temporal as stage

    def run(cfg: Any, as_json: bool) -> None:
        with _resumable("mote train-temporal (add --resume)"):
            metrics = stage.run(cfg, RichProgress())
        if metrics.get("rank", 0):
            return  # under torchrun rank 0 alone reports
        if as_json:
            print(json.dumps(metrics))
        else:
            _print_metrics(metrics, f"run {cfg.out}")

    return config_command("train-temporal", stage.TrainConfig, run)


@command("finetune-e2e")
def _finetune_e2e() -> Callable[..., None]:
    """Stage three (optional): tune CLIP's visual tower and MoTE together on decoded videos.

    Warm-start from a train-temporal run with --init-run RUN and --text-from STORE; re-extract
    with the tuned encoder afterwards: mote extract ... --run RUN.
    Many GPUs (one process each, DDP; gloo on CPU):
    torchrun --nproc-per-node N -m mote.stages finetune-e2e --dataset D --root DIR --out RUN
    """
    from mote.stages import finetune_e2e as stage

    def run(cfg: Any, as_json: bool) -> None:
        with _resumable("mote finetune-e2e (add --resume)"):
            metrics = stage.run(cfg, RichProgress())
        if metrics.get("rank", 0):
            return  # under torchrun rank 0 alone reports
        if as_json:
            print(json.dumps(metrics))
        else:
            _print_metrics(metrics, f"run {cfg.out}")

    return config_command("finetune-e2e", stage.FinetuneConfig, run)


@command("evaluate")
def _evaluate() -> Callable[..., None]:
    """Close-set top-1/top-5 of a run on a store, fusing every view the store holds."""
    from mote.stages import evaluate as stage

    C = stage.EvaluateConfig

    def evaluate(
        run: Annotated[Path, typer.Option(help="Run folder (train-temporal or import-reference).")],
        store: Annotated[Path, typer.Option(help="Feature store to score (any view layout).")],
        tfm: Annotated[
            bool | None, opt(C, "tfm", "Temporal Feature Modulation.", "--tfm/--no-tfm")
        ] = None,
        best: Annotated[
            bool, opt(C, "best", "Use the best-validation weights, not the last.", "--best")
        ] = False,
        tfm_gamma: Annotated[
            float | None,
            typer.Option(
                help=default_help(
                    _mote_config(), "tfm_gamma", "Override the run's TFM gamma (Table 2f)."
                )
            ),
        ] = None,
        tfm_k: Annotated[
            int | None,
            typer.Option(
                help=default_help(
                    _mote_config(), "tfm_k", "Override the run's TFM neighbours K (Table 7b)."
                )
            ),
        ] = None,
        device: Annotated[str | None, opt(C, "device", "auto, cpu, cuda.")] = None,
        save_predictions: Annotated[
            Path | None,
            typer.Option(
                help="Write per-video scores, per-view logits and rho (.safetensors/.npz)."
            ),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        cfg = build_config(
            C,
            None,
            run=run,
            store=store,
            tfm=tfm,
            best=best or None,
            device=device,
            save_predictions=save_predictions,
            tfm_gamma=tfm_gamma,
            tfm_k=tfm_k,
        )
        result = stage.run(cfg)
        if as_json:
            print(json.dumps(result))
        else:
            _print_metrics(result, f"evaluate {run} on {store}")

    return evaluate


def _mote_config() -> type:
    """MoTEConfig: the run's TFM defaults that --tfm-gamma/--tfm-k override."""
    from mote.pipeline.temporal.config import MoTEConfig

    return MoTEConfig


@command("zeroshot")
def _zeroshot() -> Callable[..., None]:
    """Zero-shot protocol: per split top-1/top-5, mean +- std, harmonic mean and trade-off."""
    from mote.stages import zeroshot as stage

    C = stage.ZeroShotConfig

    def zeroshot(
        run: Annotated[Path, typer.Option(help="Run folder (train-temporal or import-reference).")],
        dataset: Annotated[str, typer.Option(help="ucf101, hmdb51, k600 (3 splits each) or list.")],
        store: Annotated[
            list[Path],
            typer.Option(
                help="Feature store(s) holding the videos: one per split, or one made with "
                "--split all; repeat the option for several."
            ),
        ],
        split: Annotated[
            list[str] | None,
            typer.Option(
                help=with_default(
                    "Standard datasets: evaluate only these splits. list: LIST:LABELS, "
                    "repeat once per split.",
                    "every split of the protocol",
                )
            ),
        ] = None,
        tfm: Annotated[
            bool | None,
            opt(
                C,
                "tfm",
                "Temporal Feature Modulation (K400 text bank as proxies).",
                "--tfm/--no-tfm",
            ),
        ] = None,
        tfm_gamma: Annotated[
            float | None,
            typer.Option(
                help=default_help(
                    _mote_config(), "tfm_gamma", "Override the run's TFM gamma (Table 2f)."
                )
            ),
        ] = None,
        tfm_k: Annotated[
            int | None,
            typer.Option(
                help=default_help(
                    _mote_config(), "tfm_k", "Override the run's TFM neighbours K (Table 7b)."
                )
            ),
        ] = None,
        allow_protocol_mismatch: Annotated[
            bool,
            opt(
                C,
                "allow_protocol_mismatch",
                "Accept stores that are not 3x1 views of 8 frames with the evaluation sampling.",
                "--allow-protocol-mismatch",
            ),
        ] = False,
        close_set_top1: Annotated[
            float | None,
            typer.Option(
                help=with_default("Close-set top-1 for the trade-off.", "the run's metrics.json")
            ),
        ] = None,
        device: Annotated[str | None, opt(C, "device", "auto, cpu, cuda.")] = None,
        save_predictions: Annotated[
            Path | None,
            typer.Option(
                help="Per split: fused scores, per-view logits and rho "
                "(FILE_<split>.safetensors/.npz)."
            ),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        cfg = build_config(
            C,
            None,
            run=run,
            dataset=dataset,
            stores=tuple(store),
            splits=tuple(split or ()),
            tfm=tfm,
            device=device,
            allow_protocol_mismatch=allow_protocol_mismatch or None,
            save_predictions=save_predictions,
            close_set_top1=close_set_top1,
            tfm_gamma=tfm_gamma,
            tfm_k=tfm_k,
        )
        result = stage.run(cfg)
        if as_json:
            print(json.dumps(result))
            return
        _print_zeroshot(result, dataset, cfg.tfm)

    return zeroshot


def _print_zeroshot(result: dict, dataset: str, tfm: bool) -> None:
    table = Table(
        title=f"zero-shot {dataset} ({result['views']} views, TFM {'on' if tfm else 'off'})"
    )
    for column in ("split", "classes", "top-1", "top-5", "videos", "missing"):
        table.add_column(column)
    for row in result["splits"]:
        table.add_row(
            row["split"],
            str(row["classes"]),
            f"{row['top1']:.2f}",
            f"{row['top5']:.2f}",
            str(row["n_videos"]),
            str(row["n_missing"]),
        )
    table.add_row(
        "mean +- std",
        "",
        f"{result['top1_mean']:.2f} +- {result['top1_std']:.2f}",
        f"{result['top5_mean']:.2f}",
        "",
        "",
    )
    stdout.print(table)
    if result.get("zs_hm") is not None:
        line = f"zero-shot harmonic mean over the run's datasets: {result['zs_hm']:.2f}"
        if result.get("tradeoff") is not None:
            line += (
                f"; trade-off with close-set top-1 {result['close_set_top1']:.2f}: "
                f"{result['tradeoff']:.2f}"
            )
        stdout.print(line)


@command("predict")
def _predict() -> Callable[..., None]:
    """What is in these videos: a run's top-k classes per video, close-set or open-vocabulary."""
    from mote.stages import predict as stage

    C = stage.PredictConfig
    keyword = inspect.Parameter.KEYWORD_ONLY
    videos_arg = Annotated[
        list[Path],
        typer.Argument(
            metavar="VIDEO",
            help="Video files, or folders of them ("
            + ", ".join(e[1:] for e in stage.VIDEO_EXTENSIONS)
            + ").",
        ),
    ]
    json_lines = Annotated[
        bool, typer.Option("--json", help="Print one JSON object per video, one per line.")
    ]

    def predict(
        videos: list[Path], as_json: bool = False, config: Path | None = None, **options: Any
    ) -> None:
        values = config_values(C, options)
        cfg = build_config(C, config, videos=tuple(videos), **values)
        result = stage.run(cfg, None if as_json else RichProgress())
        if as_json:
            for video in result["videos"]:
                print(json.dumps(video), flush=True)
        else:
            print_predictions(result)
        if result["n_failed"] == result["n_videos"]:
            raise typer.Exit(1)

    return with_signature(
        predict,
        [
            inspect.Parameter("videos", keyword, annotation=videos_arg),
            *config_parameters(C),
            inspect.Parameter("as_json", keyword, default=False, annotation=json_lines),
            inspect.Parameter("config", keyword, default=None, annotation=ConfigOpt),
        ],
    )


def print_predictions(result: dict) -> None:
    """Each video's path, then its top-k table: class and the fused score of spec 8.1 (views'
    softmaxes of raw cosines averaged, then a softmax: close together by construction)."""
    vocabulary = "the run's classes" if result["vocabulary"] == "run" else "the given classes"
    for video in result["videos"]:
        if video["error"]:
            stdout.print(
                Text.assemble(
                    (video["video"], "bold"), ": ", ("failed: ", "bold red"), video["error"]
                ),
                soft_wrap=True,
            )
            continue
        stdout.print(Text(video["video"], style="bold"), soft_wrap=True)
        table = Table()
        for column in ("#", "class", "prob", "id"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for rank, row in enumerate(video["top"], start=1):
            table.add_row(str(rank), row["class"], f"{row['prob']:.4f}", str(row["label"]))
        stdout.print(table)
    stdout.print(
        f"{result['n_videos'] - result['n_failed']} of {result['n_videos']} video(s) labelled "
        f"against {result['classes']} of {vocabulary} ({result['views']} views of "
        f"{result['frames']} frames, TFM {'on' if result['tfm'] else 'off'}, {result['device']}, "
        f"{result['seconds']:.1f} s)"
    )


@command("fewshot")
def _fewshot() -> Callable[..., None]:
    """K-shot protocol: train from CLIP features on K videos per class, mean +- std over seeds."""
    from mote.stages import fewshot as stage
    from mote.stages import train_temporal as training

    C, T = stage.FewShotConfig, training.TrainConfig

    def fewshot(
        train: Annotated[Path, typer.Option(help="Store to draw the K shots per class from.")],
        test: Annotated[Path, typer.Option(help="Store to evaluate on (single view).")],
        out: Annotated[Path, typer.Option(help="Folder for the runs and fewshot.json.")],
        shots: Annotated[str | None, opt(C, "shots", "K values, comma-separated.")] = None,
        seeds: Annotated[str | None, opt(C, "seeds", "Sampling/training seeds per K.")] = None,
        epochs: Annotated[
            int | None, opt(C, "epochs", "10 for UCF101/HMDB51, 2 for SSv2 (spec 8.3).")
        ] = None,
        arch: Annotated[str | None, opt(T, "arch", "mote, transformer or meanpool.")] = None,
        lr: Annotated[float | None, opt(T, "lr", "Temporal lr.")] = None,
        batch_size: Annotated[int | None, opt(T, "batch_size", "Videos per step.")] = None,
        layers: Annotated[int | None, opt(T, "layers", "Temporal layers.")] = None,
        device: Annotated[str | None, opt(C, "device", "auto, cpu, cuda.")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        base = build_config(
            T, None, train=train, out=out, arch=arch, lr=lr, batch_size=batch_size, layers=layers
        )
        hints = {"shots": "--shots", "seeds": "--seeds"}
        parsed = {
            name: parse_tuple(text, tuple[int, ...], hints[name])
            for name, text in (("shots", shots), ("seeds", seeds))
            if text is not None
        }
        cfg = build_config(
            C,
            None,
            train=train,
            test=test,
            out=out,
            epochs=epochs,
            device=device,
            training=base,
            **parsed,
        )
        result = stage.run(cfg, RichProgress())
        if as_json:
            print(json.dumps(result))
            return
        table = Table(title=f"{len(result['shots'])} K-shot settings, top-1 over seeds")
        for column in ("K", "top-1 mean +- std", "per seed"):
            table.add_column(column)
        for k, row in result["shots"].items():
            table.add_row(
                k,
                f"{row['top1_mean']:.2f} +- {row['top1_std']:.2f}",
                ", ".join(f"{v:.1f}" for v in row["top1"]),
            )
        stdout.print(table)

    return fewshot


@command("import-reference")
def _import_reference() -> Callable[..., None]:
    """Convert a checkpoint of the reference implementation into a run folder."""
    from mote.stages import import_reference as stage

    C = stage.ImportReferenceConfig

    def import_reference(
        ckpt: Annotated[
            Path,
            typer.Argument(
                help="MoTE_B16.pt / MoTE_L14.pt or a reference last_model.pt / model_best.pt."
            ),
        ],
        out: Annotated[Path, typer.Option(help="Run folder to create.")],
        head_only: Annotated[
            bool,
            opt(
                C,
                "head_only",
                "Import only the temporal module and text bank; CLIP "
                "visual weights then come from --model/--pretrained.",
                "--head-only",
            ),
        ] = False,
        model: Annotated[
            str | None, opt(C, "model", "The original CLIP: ViT-B-16 or ViT-L-14.")
        ] = None,
        pretrained: Annotated[
            str | None, opt(C, "pretrained", "Its weights (text tower, test-time blend).")
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        cfg = build_config(
            C,
            None,
            ckpt=ckpt,
            out=out,
            head_only=head_only or None,
            model=model,
            pretrained=pretrained,
        )
        result = stage.run(cfg)
        if as_json:
            print(json.dumps(result))
        else:
            _print_metrics(result, f"imported {ckpt}")
            stdout.print(f"next: mote extract --run {out} ... then mote evaluate --run {out} ...")

    return import_reference


@command("report")
def _report() -> Callable[..., None]:
    """Markdown report and plots (curves, zero-shot bars, trade-off scatter) for runs."""
    from mote.stages import report as stage

    C = stage.ReportConfig

    def report(
        runs: Annotated[
            list[Path], typer.Argument(metavar="RUN", help="Run folders to compare (one or more).")
        ],
        out: Annotated[Path | None, opt(C, "out", "Folder for report.md and PNGs.")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        result = stage.run(build_config(C, None, runs=tuple(runs), out=out))
        if as_json:
            print(json.dumps(result))
            return
        table = Table(title=f"report of {len(runs)} run(s)")
        for column in ("run", "model", "close-set top-1", "HM ZS", "trade-off"):
            table.add_column(column)
        for row in result["runs"]:
            cells = (row["top1"], row["zs_hm"], row["tradeoff"])
            numbers = ["n/a" if v is None else f"{v:.2f}" for v in cells]
            table.add_row(row["label"], row["switches"], *numbers)
        stdout.print(table)
        stdout.print(f"report: {result['report']} ({len(result['plots'])} plot(s) beside it)")

    return report


@command("demo")
def _demo() -> Callable[..., None]:
    """Run the whole pipeline on a built-in dataset of generated videos with a tiny CLIP."""
    from mote.stages import demo as stage

    C = stage.DemoConfig

    def demo(
        workdir: Annotated[
            Path | None, opt(C, "workdir", "Where to write videos and stores.")
        ] = None,
        videos_per_class: Annotated[
            int | None, opt(C, "videos_per_class", "Generated videos per class.")
        ] = None,
        epochs: Annotated[int | None, opt(C, "epochs", "Training epochs.")] = None,
        seed: Annotated[int | None, opt(C, "seed", "Seed of the videos and the runs.")] = None,
        config: ConfigOpt = None,
    ) -> None:
        cfg = build_config(
            C,
            config,
            workdir=workdir,
            videos_per_class=videos_per_class,
            epochs=epochs,
            seed=seed,
        )
        result = stage.run(cfg, RichProgress())
        print_demo(result)

    return demo


def print_demo(result: dict) -> None:
    """The demo's two result tables and closing lines."""
    table = Table(title="mote demo: close-set top-1 on held-out videos")
    for column in ("arch", "top-1", "top-5", "videos", "trained params"):
        table.add_column(column)
    for row in result["close_set"]:
        params = row["trained_params"]
        table.add_row(
            row["arch"],
            f"{row['top1']:.1f}",
            f"{row['top5']:.1f}",
            str(row["n_videos"]),
            "logit scale only" if params is None else f"{params:,}",
        )
    stdout.print(table)
    stdout.print(f"chance is {result['chance']:.1f}%")
    table = Table(title="mote demo: zero-shot top-1 on held-out classes (TFM on)")
    for column in ("arch", "top-1", "videos"):
        table.add_column(column)
    for row in result["zero_shot"]:
        table.add_row(row["arch"], f"{row['top1']:.1f}", str(row["n_videos"]))
    stdout.print(table)
    stdout.print(
        f"    held out: {', '.join(result['held_out'])}; a random tiny CLIP text tower knows "
        f"nothing of these words, so expect about chance ({result['zero_shot_chance']:.0f}%): "
        "this exercises the protocol, not CLIP"
    )
    predictions = result.get("predict")
    if predictions is not None:
        table = Table(title="mote demo: mote predict on two held-out video files")
        for column in ("video", "true class", "predicted", "prob", "runner-up"):
            table.add_column(column)
        for video, truth in zip(predictions["videos"], result["predict_truth"], strict=True):
            top = video["top"]
            if not top:
                table.add_row(Path(video["video"]).name, truth, f"failed: {video['error']}")
                continue
            runner_up = top[1]["class"] if len(top) > 1 else ""
            cells = (top[0]["class"], f"{top[0]['prob']:.4f}", runner_up)
            table.add_row(Path(video["video"]).name, truth, *cells)
        stdout.print(table)
        stdout.print(
            f"    try it on any video: mote predict --run {result['predict_run']} "
            f"{predictions['videos'][0]['video']}",
            soft_wrap=True,
        )
    e2e = result.get("e2e")
    if e2e is not None:
        per_epoch = ", ".join("n/a" if v is None else f"{v:.1f}" for v in e2e["val_top1_per_epoch"])
        stdout.print(
            f"finetune-e2e, {e2e['epochs']} epochs warm-started from {e2e['init_run']}: "
            f"val top-1 {e2e['top1']:.1f} on {e2e['n_videos']} videos (1 clip; per epoch "
            f"{per_epoch}). Spec 7.2 flips training clips left-right, so end to end the "
            "moving left/right pairs cannot be told apart; approaching/receding can",
            soft_wrap=True,
        )
    stdout.print(f"demo finished in {result['seconds']:.1f} s; report: {result['report']}")


# ------------------------------------------------------------------------------ faults


def _zarr_source(error: BaseException) -> str | None:
    """The zarr array (store path) a failing read or write was working on, from its traceback."""
    found = None
    tb = error.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if type(value).__module__.startswith("zarr") and hasattr(value, "store_path"):
                found = found or str(value.store_path)
        tb = tb.tb_next
    return found


def _in_codec(error: BaseException) -> bool:
    tb = error.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if "/zarr/" in name or "numcodecs" in name:
            return True
        tb = tb.tb_next
    return False


def fault_message(error: BaseException) -> str:
    """One line for any fault: what failed on which file, and the way out."""
    if isinstance(error, MoteError | StoreError):
        return str(error)
    if isinstance(error, OSError):
        name = error.filename or _zarr_source(error) or "a file"
        if error.filename2:
            name = f"{name} -> {error.filename2}"
        return f"{name}: {os_fault_reason(error)}"
    if _in_codec(error):
        where = _zarr_source(error) or "a feature store"
        return (
            f"{where}: cannot decode stored data ({type(error).__name__}: {error}); the store is "
            "damaged: check it with `mote info STORE --verify` and rebuild the damaged rows with "
            "`mote extract ... --repair`"
        )
    return (
        f"unexpected {type(error).__name__}: {error}; rerun with MOTE_DEBUG=1 for the traceback "
        "and report it"
    )


def _print_error(message: str) -> None:
    """'error: ...' on stderr; plain text when stderr is not a terminal (no escape codes)."""
    line = " ".join(message.split())
    if sys.stderr.isatty():
        stderr.print(Text.assemble(("error: ", "bold red"), line), soft_wrap=True)
    else:
        print(f"error: {line}", file=sys.stderr, flush=True)


def main() -> None:
    """Entry point: every fault is one line on stderr and a non-zero exit (2 for mote's own
    errors, 1 for the rest); ``MOTE_DEBUG=1`` re-raises, showing the traceback."""
    try:
        app()
    except KeyboardInterrupt:
        _print_error("interrupted: rerun the same command to resume where it stopped")
        sys.exit(130)
    except Exception as error:  # the last resort: never a traceback unless asked for
        if os.environ.get("MOTE_DEBUG", "") not in ("", "0"):
            raise
        _print_error(fault_message(error))
        sys.exit(2 if isinstance(error, MoteError | StoreError) else 1)


if __name__ == "__main__":
    main()
