"""The ``mote`` command: thin typer wrappers that build a config and call a stage's ``run``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mote.cache_schema.errors import StoreError
from mote.pipeline.config import build_config
from mote.pipeline.console import RichProgress, stderr, stdout
from mote.pipeline.errors import MoteError

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


def _print_summary_table(summary: dict, title: str) -> None:
    table = Table(title=title, show_header=False)
    for key in (
        "store",
        "model",
        "pretrained",
        "dim",
        "frames",
        "views",
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
    dataset: Annotated[str, typer.Option(help="k400, k600, ucf101, hmdb51 or list.")],
    out: Annotated[Path, typer.Option(help="Zarr store to write (resumed if it exists).")],
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
        dask=dask,
    )
    summary = stage.run(cfg, RichProgress())
    if as_json:
        print(json.dumps(summary))
    else:
        _print_summary_table(summary, f"extracted {summary['store']}")


@app.command()
def info(
    store: Annotated[Path, typer.Argument(help="A feature store written by mote extract.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Schema, model, sampling, shapes and done/failed/pending counts of a feature store."""
    from mote.stages import info as stage

    summary = stage.run(store)
    if as_json:
        print(json.dumps(summary))
    else:
        _print_summary_table(summary, str(store))


@app.command()
def demo(
    workdir: Annotated[
        Path | None, typer.Option(help="Where to write videos and stores. [default: ./mote-demo]")
    ] = None,
    videos_per_class: Annotated[int | None, typer.Option(help="[default: 16]")] = None,
    seed: Annotated[int | None, typer.Option(help="[default: 0]")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the whole pipeline on a built-in dataset of generated videos with a tiny CLIP."""
    from mote.stages import demo as stage

    cfg = build_config(
        stage.DemoConfig, config, workdir=workdir, videos_per_class=videos_per_class, seed=seed
    )
    result = stage.run(cfg, RichProgress(), stdout)
    _print_summary_table(result["info"], f"mote info {result['store']}")


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
