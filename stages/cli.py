"""The ``mote`` command: thin typer wrappers that build a config and call a stage's ``run``."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mote.cache_schema.errors import StoreError
from mote.pipeline.config import build_config
from mote.pipeline.errors import ConfigError, MoteError
from mote.stages.console import RichProgress, stderr, stdout

app = typer.Typer(
    name="mote",
    help="MoTE video recognition from CLIP: extract CLIP frame features once into a Zarr store, "
    "then train and evaluate temporal experts from the cache in minutes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="YAML/TOML file whose keys mirror the options; flags win."),
]


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


@app.command()
def extract(
    dataset: Annotated[
        str | None, typer.Option(help="k400, k600, ucf101, hmdb51 or list. [required]")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Zarr store to write (resumed if it exists). [required]")
    ] = None,
    root: Annotated[Path | None, typer.Option(help="Folder holding the videos.")] = None,
    split: Annotated[
        str | None,
        typer.Option(help="k400: val|test|train; k600: split1-3; ucf101/hmdb51: test1-3|train1-3."),
    ] = None,
    list_file: Annotated[
        Path | None, typer.Option("--list", help="Video list 'relative/path label' (list).")
    ] = None,
    labels_file: Annotated[
        Path | None, typer.Option("--labels", help="Label CSV 'id,name' (list).")
    ] = None,
    kinetics_csv: Annotated[
        Path | None,
        typer.Option(
            help="k400: the official annotation CSV (label,youtube_id,time_start,"
            "time_end,split); the --split rows whose clips exist under --root."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="open_clip model name, JSON config, local-dir:PATH, or mote-tiny. "
            "[default: ViT-B-16]"
        ),
    ] = None,
    pretrained: Annotated[
        str | None,
        typer.Option(
            help="Weights tag (openai), a local weights file, or none (random, --seed). "
            "[default: openai]"
        ),
    ] = None,
    frames: Annotated[int | None, typer.Option(help="Frames per view T. [default: 8]")] = None,
    views: Annotated[
        str | None,
        typer.Option(
            help="CLIPSxCROPS: 1x1, 3x1, 4x3. [default: 3x1 for ucf101/hmdb51/k600, else 1x1]"
        ),
    ] = None,
    sampling: Annotated[
        str | None,
        typer.Option(
            help="eval (segment starts, spec 7.1) or train (seeded random). [default: eval]"
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for random weights and train sampling. [default: 0]")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto, cpu, cuda, cuda:1. [default: auto]")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per CLIP batch. [default: 256 on GPU, 32 on CPU]")
    ] = None,
    decode_workers: Annotated[
        int | None,
        typer.Option(help="Decode processes; 0 decodes in this process. [default: one per core]"),
    ] = None,
    decoder: Annotated[
        str | None, typer.Option(help="auto, decord or pyav. [default: auto = decord]")
    ] = None,
    decode_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds before a video's decode is abandoned. [default: 120]"),
    ] = None,
    chunk_videos: Annotated[
        int | None, typer.Option(help="Videos per Zarr chunk. [default: 32]")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N videos of the list.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start the store over.")] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Retry videos that failed before.")
    ] = False,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Verify every chunk and re-extract the videos whose stored data are damaged.",
        ),
    ] = False,
    run: Annotated[
        Path | None,
        typer.Option(
            help="Encode with this run's CLIP: its model, and its tuned visual weights blended "
            "0.99/0.01 with the original (spec 7.4), e.g. a run from import-reference."
        ),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            help="Scale out on dask.distributed: a scheduler address (tcp://host:8786; workers "
            "need mote and the same paths) or local:N for a local cluster of N workers. "
            "[default: one local process with --decode-workers]"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Stage one: decode videos, run the CLIP visual encoder, write a Zarr feature store."""
    from mote.stages import extract as stage

    cfg = build_config(
        stage.ExtractConfig,
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
        device=device,
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


@app.command()
def info(
    store: Annotated[Path, typer.Argument(help="A feature store written by mote extract.")],
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Read every chunk: checksums, missing files, NaN/inf or all-zero done rows, "
            "labels, ids. Exits 1 if anything is damaged.",
        ),
    ] = False,
    sample: Annotated[
        int,
        typer.Option(
            help="With --verify: re-encode this many random done videos (needs --root) and "
            "compare them with the stored embeddings."
        ),
    ] = 0,
    root: Annotated[
        Path | None, typer.Option(help="Folder the store's video ids are relative to.")
    ] = None,
    device: Annotated[str, typer.Option(help="Device for --sample: auto, cpu, cuda.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Schema, model, sampling, shapes and done/failed/pending counts of a feature store."""
    from mote.stages import info as stage

    cfg = stage.InfoConfig(store=store, verify=verify, sample=sample, root=root, device=device)
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


def _parse_floats(text: str | None, count: int, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        raise ConfigError(f"{option} '{text}': expected {count} comma-separated numbers")
    return values


@app.command("train-temporal")
def train_temporal(
    train: Annotated[
        Path | None, typer.Option(help="Feature store to train on (mote extract). [required]")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder to create. [required]")] = None,
    val: Annotated[
        Path | None, typer.Option(help="Feature store to validate on each epoch and at the end.")
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            help="mote, transformer (Text4Vis baseline: one FFN per layer, CE only) or "
            "meanpool (CLIP mean pooling). [default: mote]"
        ),
    ] = None,
    experts: Annotated[int | None, typer.Option(help="Experts per layer N. [default: 4]")] = None,
    layers: Annotated[
        int | None, typer.Option(help="Temporal layers. [default: 4 for D=512, 6 for D=768]")
    ] = None,
    heads: Annotated[int | None, typer.Option(help="Attention heads. [default: D // 64]")] = None,
    routing: Annotated[
        str | None,
        typer.Option(
            help="Training routing (Table 2d/2a): multinomial, uniform, fixed, all. "
            "[default: multinomial]"
        ),
    ] = None,
    expert_init: Annotated[
        str | None, typer.Option(help="different or same (Table 2a). [default: different]")
    ] = None,
    inference: Annotated[
        str | None,
        typer.Option(
            help="Test-time experts (Table 2c): merge, ensemble, random. [default: merge]"
        ),
    ] = None,
    wmr: Annotated[
        bool | None, typer.Option("--wmr/--no-wmr", help="Weight Merging Regularization pass.")
    ] = None,
    wmr_beta: Annotated[
        float | None, typer.Option(help="WMR temperature base beta. [default: 0.6]")
    ] = None,
    wmr_temperatures: Annotated[
        str | None,
        typer.Option(
            help="discrete (spec set), point (always +inf), normal, uniform "
            "(Tables 2e, 7f). [default: discrete]"
        ),
    ] = None,
    wmr_loss: Annotated[
        str | None, typer.Option(help="ce, kl or mse (Table 7c). [default: ce]")
    ] = None,
    mse: Annotated[bool | None, typer.Option("--mse/--no-mse", help="The 0.1 x MSE term.")] = None,
    loss_weights: Annotated[
        str | None, typer.Option(help="CE,WMR,MSE weights. [default: 1,0.5,0.1]")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="[default: 30 for D=512, 20 for D=768 (spec 7)]")
    ] = None,
    warmup_epochs: Annotated[float | None, typer.Option(help="[default: 5]")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Videos per step. [default: 192 for D=512, 144 for D=768]")
    ] = None,
    micro_batches: Annotated[
        int | None,
        typer.Option(
            help="Micro-batches per step, each with its own routing draw (emulates "
            "the reference's 3 GPUs). [default: 3]"
        ),
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Temporal module lr. [default: 5e-5]")] = None,
    clip_lr_ratio: Annotated[
        float | None,
        typer.Option(help="logit-scale lr = lr x ratio. [default: 0.07 (D=512), 0.06 (D=768)]"),
    ] = None,
    weight_decay: Annotated[float | None, typer.Option(help="[default: 0.2]")] = None,
    tfm: Annotated[
        bool | None, typer.Option("--tfm/--no-tfm", help="TFM in the final evaluation.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="[default: 0]")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda. [default: auto]")] = None,
    memory_gb: Annotated[
        float | None,
        typer.Option(
            help="Stream the store chunk by chunk when it is larger than this. "
            "[default: half the RAM]"
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last epoch.")
    ] = False,
    stop_after_epochs: Annotated[
        int | None,
        typer.Option(help="Stop after this many epochs (continue later with --resume)."),
    ] = None,
    allow_partial: Annotated[
        bool,
        typer.Option(
            "--allow-partial", help="Train on the done videos of a store still being extracted."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Stage two: train MoTE (or a baseline) on cached features, then evaluate close-set."""
    from mote.stages import train_temporal as stage

    cfg = build_config(
        stage.TrainConfig,
        config,
        train=train,
        out=out,
        val=val,
        arch=arch,
        experts=experts,
        layers=layers,
        heads=heads,
        routing=routing,
        expert_init=expert_init,
        inference=inference,
        wmr=wmr,
        wmr_beta=wmr_beta,
        wmr_temperatures=wmr_temperatures,
        wmr_loss=wmr_loss,
        mse=mse,
        loss_weights=_parse_floats(loss_weights, 3, "--loss-weights"),
        epochs=epochs,
        warmup_epochs=warmup_epochs,
        batch_size=batch_size,
        micro_batches=micro_batches,
        lr=lr,
        clip_lr_ratio=clip_lr_ratio,
        weight_decay=weight_decay,
        tfm=tfm,
        seed=seed,
        device=device,
        memory_gb=memory_gb,
        resume=resume or None,
        stop_after_epochs=stop_after_epochs,
        allow_partial=allow_partial or None,
    )
    with _resumable("mote train-temporal (add --resume)"):
        metrics = stage.run(cfg, RichProgress())
    if as_json:
        print(json.dumps(metrics))
    else:
        _print_metrics(metrics, f"run {cfg.out}")


def _print_metrics(metrics: dict, title: str) -> None:
    table = Table(title=title, show_header=False)
    for key, value in metrics.items():
        if isinstance(value, float):
            value = f"{value:.2f}"
        table.add_row(key, str(value))
    stdout.print(table)


@app.command()
def evaluate(
    run: Annotated[Path, typer.Option(help="Run folder (train-temporal or import-reference).")],
    store: Annotated[Path, typer.Option(help="Feature store to score (any view layout).")],
    tfm: Annotated[
        bool, typer.Option("--tfm/--no-tfm", help="Temporal Feature Modulation.")
    ] = True,
    best: Annotated[
        bool, typer.Option("--best", help="Use the best-validation weights, not the last.")
    ] = False,
    tfm_gamma: Annotated[
        float | None, typer.Option(help="Override the run's TFM gamma (Table 2f). [default: 0.05]")
    ] = None,
    tfm_k: Annotated[
        int | None,
        typer.Option(help="Override the run's TFM neighbours K (Table 7b). [default: 5]"),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    save_predictions: Annotated[
        Path | None,
        typer.Option(help="Write per-video scores, per-view logits and rho (.safetensors/.npz)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Close-set top-1/top-5 of a run on a store, fusing every view the store holds."""
    from mote.stages import evaluate as stage

    result = stage.run(
        stage.EvaluateConfig(run, store, tfm, best, device, save_predictions, tfm_gamma, tfm_k)
    )
    if as_json:
        print(json.dumps(result))
    else:
        _print_metrics(result, f"evaluate {run} on {store}")


@app.command()
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
            help="Standard datasets: evaluate only these splits. list: LIST:LABELS, "
            "repeat once per split."
        ),
    ] = None,
    tfm: Annotated[
        bool,
        typer.Option(
            "--tfm/--no-tfm", help="Temporal Feature Modulation (K400 text bank as proxies)."
        ),
    ] = True,
    tfm_gamma: Annotated[
        float | None, typer.Option(help="Override the run's TFM gamma (Table 2f). [default: 0.05]")
    ] = None,
    tfm_k: Annotated[
        int | None,
        typer.Option(help="Override the run's TFM neighbours K (Table 7b). [default: 5]"),
    ] = None,
    allow_protocol_mismatch: Annotated[
        bool,
        typer.Option(
            "--allow-protocol-mismatch",
            help="Accept stores that are not 3x1 views of 8 frames with the evaluation sampling.",
        ),
    ] = False,
    close_set_top1: Annotated[
        float | None,
        typer.Option(help="Close-set top-1 for the trade-off. [default: the run's metrics.json]"),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    save_predictions: Annotated[
        Path | None,
        typer.Option(
            help="Per split: fused scores, per-view logits and rho (FILE_<split>.safetensors/.npz)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Zero-shot protocol: per split top-1/top-5, mean +- std, harmonic mean and trade-off."""
    from mote.stages import zeroshot as stage

    result = stage.run(
        stage.ZeroShotConfig(
            run=run,
            dataset=dataset,
            stores=tuple(store),
            splits=tuple(split or ()),
            tfm=tfm,
            device=device,
            allow_protocol_mismatch=allow_protocol_mismatch,
            save_predictions=save_predictions,
            close_set_top1=close_set_top1,
            tfm_gamma=tfm_gamma,
            tfm_k=tfm_k,
        )
    )
    if as_json:
        print(json.dumps(result))
        return
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


def _parse_ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} '{text}': expected comma-separated integers") from None


@app.command()
def fewshot(
    train: Annotated[Path, typer.Option(help="Store to draw the K shots per class from.")],
    test: Annotated[Path, typer.Option(help="Store to evaluate on (single view).")],
    out: Annotated[Path, typer.Option(help="Folder for the runs and fewshot.json.")],
    shots: Annotated[str, typer.Option(help="K values, comma-separated.")] = "2,4,8,16",
    seeds: Annotated[str, typer.Option(help="Sampling/training seeds per K.")] = "0,1,2",
    epochs: Annotated[int, typer.Option(help="10 for UCF101/HMDB51, 2 for SSv2 (spec 8.3).")] = 10,
    arch: Annotated[str, typer.Option(help="mote, transformer or meanpool.")] = "mote",
    lr: Annotated[float | None, typer.Option(help="Temporal lr. [default: 5e-5]")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="[default: 192 for D=512, 144 for D=768]")
    ] = None,
    layers: Annotated[int | None, typer.Option(help="[default: by D, spec 2.1]")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """K-shot protocol: train from CLIP features on K videos per class, mean +- std over seeds."""
    from mote.stages import fewshot as stage
    from mote.stages import train_temporal as training

    base = build_config(
        training.TrainConfig,
        None,
        train=train,
        out=out,
        arch=arch,
        lr=lr,
        batch_size=batch_size,
        layers=layers,
    )
    result = stage.run(
        stage.FewShotConfig(
            train=train,
            test=test,
            out=out,
            shots=_parse_ints(shots, "--shots"),
            seeds=_parse_ints(seeds, "--seeds"),
            epochs=epochs,
            device=device,
            training=base,
        ),
        RichProgress(),
    )
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


@app.command("import-reference")
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
        typer.Option(
            "--head-only",
            help="Import only the temporal module and text bank; CLIP "
            "visual weights then come from --model/--pretrained.",
        ),
    ] = False,
    model: Annotated[
        str, typer.Option(help="The original CLIP: ViT-B-16 or ViT-L-14.")
    ] = "ViT-B-16",
    pretrained: Annotated[
        str, typer.Option(help="Its weights (text tower, test-time blend).")
    ] = "openai",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Convert a checkpoint of the reference implementation into a run folder."""
    from mote.stages import import_reference as stage

    result = stage.run(ckpt, out, head_only=head_only, model=model, pretrained=pretrained)
    if as_json:
        print(json.dumps(result))
    else:
        _print_metrics(result, f"imported {ckpt}")
        stdout.print(f"next: mote extract --run {out} ... then mote evaluate --run {out} ...")


@app.command()
def report(
    runs: Annotated[
        list[Path], typer.Argument(metavar="RUN", help="Run folders to compare (one or more).")
    ],
    out: Annotated[Path, typer.Option(help="Folder for report.md and PNGs.")] = Path("mote-report"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Markdown report and plots (curves, zero-shot bars, trade-off scatter) for runs."""
    from mote.stages import report as stage

    result = stage.run(stage.ReportConfig(tuple(runs), out))
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


@app.command()
def demo(
    workdir: Annotated[
        Path | None, typer.Option(help="Where to write videos and stores. [default: ./mote-demo]")
    ] = None,
    videos_per_class: Annotated[int | None, typer.Option(help="[default: 24]")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs. [default: 100]")] = None,
    seed: Annotated[int | None, typer.Option(help="[default: 0]")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the whole pipeline on a built-in dataset of generated videos with a tiny CLIP."""
    from mote.stages import demo as stage

    cfg = build_config(
        stage.DemoConfig,
        config,
        workdir=workdir,
        videos_per_class=videos_per_class,
        epochs=epochs,
        seed=seed,
    )
    stage.run(cfg, RichProgress(), stdout)


def main() -> None:
    """Entry point: run the app, turning mote's own errors into one line and exit code 2."""
    try:
        app()
    except (MoteError, StoreError) as error:
        stderr.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        stderr.print("interrupted: rerun the same command to resume where it stopped")
        sys.exit(130)


if __name__ == "__main__":
    main()
