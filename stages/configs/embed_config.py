"""Settings of ``mote embed``: the run and store to embed, the file to write, its chunking
and TFM; torch-free so ``mote embed --help`` is quick."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mote.cache_schema.embeddings_v1 import CHUNK_ROWS
from mote.pipeline.config import Settings, best_setting, setting, store_in_setting
from mote.pipeline.locations import Url
from mote.stages.configs.scoring_config import with_scoring_settings


@dataclass(frozen=True)
@with_scoring_settings(run_optional=True)
class EmbedConfig(Settings):
    store: Path | Url = store_in_setting(
        "Feature store whose done videos to embed (any view layout)."
    )
    out: Path | Url = setting(
        help="Embeddings file to write, or to continue (a folder, e.g. E.zarr, or an s3:// "
        "URL, written under the same claim as extract's).",
        url="store",
    )
    tfm: bool = setting(
        True, "Temporal Feature Modulation, the store's class names as the test bank."
    )
    best: bool = best_setting()
    root: Path | None = setting(
        None,
        "Folder the store's video ids are relative to (mote extract --root): the table's path "
        "column is ROOT/ID.",
        default_text="the video id",
    )
    chunk_rows: int = setting(
        CHUNK_ROWS, "Videos per chunk of the file (a resume redoes at most one chunk).", min=1
    )
    overwrite: bool = setting(False, "Start the embeddings file over.")
