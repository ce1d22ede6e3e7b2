"""Settings of ``mote search``: the collection, the queries (text, a video, a row) and the
index; light, as every command's settings (stages/configs/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mote.pipeline.config import (
    PATH_COLUMN_DEFAULT,
    Settings,
    decode_timeout_setting,
    decoder_setting,
    device_setting,
    scored_run_setting,
    setting,
    storage_options_setting,
    store_in_setting,
)
from mote.pipeline.locations import Url
from mote.pipeline.search.score_names import DEFAULT_SCORE, RAW_SCORE, SCORES

CHECK_SAMPLE = 100  # rows used as queries by --check-index when no query is given


@dataclass(frozen=True)
class SearchConfig(Settings):
    run: Path | None = scored_run_setting(
        "the query text goes through the CLIP text tower of the embeddings' store (embeddings "
        "made without a run)."
    )
    queries: tuple[str, ...] = setting(
        (),
        "Text queries, e.g. 'a person juggling'.",
        argument=True,
        metavar="QUERY",
        optional=True,
    )
    embeddings: Path | Url | None = setting(
        None,
        "Embeddings file of the run (mote embed --out E). A path or a URL (s3://bucket/E.zarr).",
        default_text="--store",
        url="read",
    )
    store: Path | Url | None = store_in_setting(
        "Feature store to search instead: embedded first into a temporary file (mote embed "
        "once and pass --embeddings to make repeated searches fast).",
        None,
    )
    video: Path | None = setting(None, "Query by example: a video file, embedded like the rows.")
    like: str | None = setting(
        None, "Query by a video of the collection (its id), itself left out."
    )
    image: Path | None = setting(
        None,
        "Query by an image file (JPEG, PNG, ...): through the CLIP image tower, as a still "
        "video in the rows' variant; hits show the frame that best matches it.",
    )
    embedding: tuple[float, ...] = setting(
        (),
        "Query by a raw vector in the collection's space: its D numbers, comma-separated "
        "(from Python: an array).",
        metavar="X1,X2,...",
        default_text="none",
    )
    score: str = setting(
        DEFAULT_SCORE,
        f"How text queries rank videos: {', '.join(SCORES)}. {DEFAULT_SCORE}: the query's share "
        "of a softmax over a text bank (the store's class names, else a shipped action "
        f"vocabulary) and the query, per video, as the classifier reads it; {RAW_SCORE}: the raw "
        "dot product. Queries by example (--video, --like, --image, --embedding) always rank by "
        "cosine.",
    )
    top_k: int = setting(10, "Videos to return per query.", min=1, short="-k")
    root: Path | None = setting(
        None,
        "Folder the video ids are relative to: hits' paths are ROOT/ID (for --html frames).",
        default_text=PATH_COLUMN_DEFAULT,
    )
    html: Path | None = setting(
        None, "Write one self-contained HTML page of the hits with frames of each video."
    )
    index: str | None = setting(
        None,
        "faiss index (hnsw or ivfpq; pip install 'mote[faiss]'): built beside the embeddings "
        "file on first use, reused while its fingerprint matches.",
        default_text="exact search",
    )
    check_index: bool = setting(
        False,
        "Report the index's recall@10 against exact search and its speed-up (on the queries, "
        f"or on {CHECK_SAMPLE} of the collection's own rows when none is given).",
    )
    evaluate: bool = setting(
        False,
        "Each class name as a query (labelled collections): mAP and precision@10/@50 of the "
        f"--score ranking beside the {RAW_SCORE}'s, and zero-shot top-1, written to the run's "
        "metrics.json under 'retrieval'.",
        flag="--eval",
    )
    device: str = device_setting()
    decoder: str = decoder_setting()
    decode_timeout: float = decode_timeout_setting()
    storage_options: dict[str, Any] | None = storage_options_setting()
