"""Settings of ``mote serve``: the collection to hold, where to listen, and what one request may
ask; light, as every command's settings (stages/configs/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mote.pipeline.config import (
    PATH_COLUMN_DEFAULT,
    Settings,
    decoder_setting,
    device_setting,
    scored_run_setting,
    setting,
    storage_options_setting,
)
from mote.pipeline.locations import Url
from mote.pipeline.search.score_names import DEFAULT_SCORE, SCORES

LOOPBACK = "127.0.0.1"
EMBEDDINGS_HELP = (
    "Embeddings file to serve (mote embed --out E): its rows are read once and kept on the "
    "device. A path or a URL (s3://bucket/E.zarr)."
)


@dataclass(frozen=True)
class ServeConfig(Settings):
    run: Path | None = scored_run_setting(
        "text queries go through the CLIP text tower of the embeddings' store (embeddings "
        "made without a run)."
    )
    embeddings: Path | Url = setting(help=EMBEDDINGS_HELP, url="read")
    host: str = setting(
        LOOPBACK,
        "Address to listen on. The default answers this machine only; 0.0.0.0 opens the "
        "server to the network (it is read-only, without authentication).",
    )
    port: int = setting(8080, "Port to listen on; 0 picks a free one (printed).", min=0,
                        max=65535)  # fmt: skip
    root: Path | None = setting(
        None,
        "Folder the video ids are relative to: the files the page plays and its thumbnails "
        "are ROOT/ID.",
        default_text=PATH_COLUMN_DEFAULT,
    )
    score: str = setting(
        DEFAULT_SCORE,
        f"How text queries rank videos unless a request says (its 'score'): {', '.join(SCORES)}.",
    )
    index: str | None = setting(
        None,
        "faiss index (hnsw or ivfpq; pip install 'mote[faiss]'), built beside the embeddings "
        "file on first use (as mote search --index) and searched instead of every row.",
        default_text="exact search",
    )
    max_k: int = setting(1000, "The most hits one request may ask for (its 'k').", min=1)
    max_body_mb: float = setting(
        8.0, "The largest request body in MiB (a base64 image is most of one).", above=0
    )
    check: bool = setting(
        False,
        "Load the collection, listen, answer one text query, print what would be served and "
        "exit (a deploy script's check that the server can start).",
    )
    device: str = device_setting()
    decoder: str = decoder_setting()
    storage_options: dict[str, Any] | None = storage_options_setting()
