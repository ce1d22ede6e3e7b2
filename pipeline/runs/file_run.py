"""The run (or the CLIP) behind an embeddings file: what a search of it loads (``mote search``,
``mote serve``). A run's file is searched with that run's weights and no other; a file made
without a run (CLIP mean pooling) with the CLIP its store records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mote.cache_schema.embeddings import EmbeddingsFile
from mote.pipeline.errors import ConfigError
from mote.pipeline.runs.run_clip import clip_for_run, recorded_clip
from mote.pipeline.runs.run_folder import BEST_FILE, Run, load_run


def run_for_file(file: EmbeddingsFile, run: Path | None, device: torch.device) -> Run | None:
    """The run with the weights the file was made with, refused when it is another run; None
    for a file made without a run (CLIP mean pooling), searched without one."""
    made = file.attrs["run"]
    if made is None or run is None:
        _check_runless(file, run)
        return None
    loaded = load_run(run, device, best=made.get("weights_file") == BEST_FILE)
    have = loaded.identity()
    # The folder may have moved: the weights' hash, their file and the run's source decide.
    differ = [
        f"{key} is {made.get(key)} not {have[key]}"
        for key in ("weights_sha256", "weights_file", "source")
        if made.get(key) != have[key]
    ]
    if differ:
        raise ConfigError(
            f"{file.path}: embeddings of another run than {run} ({'; '.join(differ)}; made "
            f"from {made.get('path')}); embed with this run: mote embed --run {run} --store "
            f"STORE --out {file.path} --overwrite"
        )
    return loaded


def _check_runless(file: EmbeddingsFile, run: Path | None) -> None:
    """A file made without a run is searched without one, and a run's file with its run."""
    if file.attrs["run"] is not None:
        raise ConfigError(
            f"{file.path}: embeddings of the run {file.attrs['run'].get('path')}; search them "
            "with --run RUN (that run), or embed the store without --run for CLIP mean pooling"
        )
    if run is not None:
        raise ConfigError(
            f"{file.path}: embeddings made without a run (CLIP mean pooling); search without "
            f"--run, or embed with it: mote embed --run {run} --store STORE --out E"
        )


def query_clip(file: EmbeddingsFile, run: Path | None, device: torch.device) -> Any:
    """The CLIP whose text tower embeds the queries: the run's, or without a run the one that
    made the file's store (its model and weights as the file records them)."""
    if run is not None:
        return clip_for_run(run, str(device))
    return recorded_clip(file.attrs["clip"], str(device))
