"""A collection held in memory for ``mote serve``: the rows resident on the device, the text and
image towers loaded, the bank statistics made; each request is then a matmul and a top-k.

``SearchService`` knows nothing of HTTP: it takes a request's JSON (a dict), checks it, and
returns the hits (``RequestError`` names what is wrong, ``NotFound`` a video id not in the
collection). Files are reached only through the collection's own table: a request names a
video id, never a path, so nothing outside the collection can be read.
"""

from __future__ import annotations

import base64
import binascii
import functools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mote.cache_schema.embeddings import EmbeddingsFile
from mote.cache_schema.feature_store import FeatureStore
from mote.pipeline.errors import ConfigError, DecodeError
from mote.pipeline.search.engine import (
    Query,
    ResidentRows,
    embedding_query,
    hits_of,
    like_query,
    scan_dtype,
    search,
    text_queries,
)
from mote.pipeline.search.examples import image_query
from mote.pipeline.search.index import SearchIndex
from mote.pipeline.search.moments import add_moments
from mote.pipeline.search.page import frame_indices, jpeg_bytes
from mote.pipeline.search.score_names import SCORES
from mote.pipeline.search.scoring import Scorer
from mote.pipeline.video.decode import open_video
from mote.pipeline.video.timing import frame_rate, frame_seconds

THUMB_HEIGHT = 160  # pixels of a served thumbnail
TEXT_CACHE = 4096  # texts whose vectors are kept (least recently asked dropped first)
KINDS = ("query", "video_id", "embedding", "image")  # what a search request asks by


class RequestError(ValueError):
    """A request the service cannot answer as asked (HTTP 400): one line saying why."""


class NotFound(LookupError):
    """A video id that is not in the collection, or its file is gone (HTTP 404)."""


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_k: int = 1000
    max_queries: int = 256  # texts in one request ({"query": [...]})
    max_query_chars: int = 1000


@dataclass
class Loaded:
    """What the stage loads once: the file, the models and the scorers."""

    file: EmbeddingsFile
    clip: Any  # the CLIP whose text and image towers embed queries
    run: Any  # the run that made the rows, or None (CLIP mean pooling)
    scorers: dict[str, Scorer]
    default_score: str
    store: FeatureStore | None  # for each hit's moment; None when the store is gone
    root: Path | None
    device: torch.device
    decoder: str = "auto"
    storage_options: dict[str, Any] | None = None
    index: SearchIndex | None = None  # --index: candidates from faiss, re-scored from the rows


class SearchService:
    """One collection, resident, answering search, video and frame requests."""

    def __init__(self, loaded: Loaded, limits: Limits = Limits()) -> None:
        self.loaded, self.limits = loaded, limits
        file = loaded.file
        self.table = file.read_table().to_pydict()
        self.ids: list[str] = list(self.table["video_id"])
        self.row_of = {video_id: row for row, video_id in enumerate(self.ids)}
        self.rows = ResidentRows(file, loaded.device, scan_dtype(loaded.device, file.dim))
        self.lock = threading.Lock()  # one request at a time on the models and the device
        self.text_cache: OrderedDict[str, np.ndarray] = OrderedDict()  # text -> unit vector
        self.started = time.time()

    # ------------------------------------------------------------------------------ search
    def search(self, request: Any) -> dict:
        """The hits of one request: ``{"query": "a dog"}`` (or a list of texts), ``{"video_id":
        ID}``, ``{"embedding": [...]}`` or ``{"image": BASE64}``, with optional ``k`` and
        ``score``. Returns ``{"hits": [...], "took_ms"}`` (``"results"`` for a list)."""
        started = time.perf_counter()
        if not isinstance(request, dict):
            raise RequestError('the body must be a JSON object, e.g. {"query": "a dog"}')
        unknown = sorted(set(request) - {*KINDS, "k", "score"})
        if unknown:
            raise RequestError(f"unknown field(s) {', '.join(unknown)}; use one of "
                               f"{', '.join(KINDS)}, with k and score")  # fmt: skip
        asked = [kind for kind in KINDS if request.get(kind) is not None]
        if len(asked) != 1:
            raise RequestError(f"give exactly one of {', '.join(KINDS)}")
        k = self._k(request.get("k", 10))
        score = request.get("score", self.loaded.default_score)
        if score not in SCORES:
            raise RequestError(f"score {score!r}: use one of {', '.join(SCORES)}")
        with self.lock:
            encoded = time.perf_counter()
            queries = self._queries(asked[0], request[asked[0]], score)
            searched = time.perf_counter()
            results, found = self._run(queries, k)
        done = time.perf_counter()
        timing = {  # where the time went: the query's tower, the top-k, each hit's moment
            "encode_ms": _ms(searched - encoded),
            "search_ms": _ms(found - searched),
            "moments_ms": _ms(done - found),
        }
        answer: dict[str, Any] = {"took_ms": _ms(done - started), "timing": timing}
        value = request[asked[0]]
        batch = isinstance(value, list) and (asked[0] == "query" or isinstance(value[0], list))
        if batch:  # a list of texts or of vectors: one result per query
            return {"results": results, **answer}
        return {"hits": results[0]["hits"], **answer}

    def _k(self, k: Any) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.limits.max_k:
            raise RequestError(f"k must be a whole number from 1 to {self.limits.max_k}, got {k!r}")
        return k

    def _queries(self, kind: str, value: Any, score: str) -> list[Query]:
        loaded = self.loaded
        try:
            if kind == "query":
                return self._text_queries(self._texts(value), score)
            if kind == "video_id":
                if not isinstance(value, str) or value not in self.row_of:
                    raise NotFound(f"video_id {value!r} is not in the collection")
                return [like_query(value, loaded.file, self.ids, self.rows)]
            if kind == "embedding":
                return [embedding_query(np.array(v, np.float64), loaded.file.dim)
                        for v in self._vectors(value)]  # fmt: skip
            return [image_query(_image_bytes(value), "image", loaded.file, loaded.run,
                                loaded.clip, loaded.storage_options)]  # fmt: skip
        except ConfigError as error:
            raise RequestError(str(error)) from None

    def _text_queries(self, texts: list[str], score: str) -> list[Query]:
        """Text queries, each text through the tower once per process (``TEXT_CACHE`` kept):
        28 templates through a ViT-B/16 text tower are seconds on a CPU, a page asks again."""
        new = [t for t in dict.fromkeys(texts) if t not in self.text_cache]
        for query in text_queries(new, self.loaded.clip, score):
            self.text_cache[query.text] = query.vector
        for text in texts:
            self.text_cache.move_to_end(text)
        while len(self.text_cache) > TEXT_CACHE:
            self.text_cache.popitem(last=False)
        vectors = [self.text_cache[t] for t in texts]
        return [
            Query(t, "text", v, score=score, moment=v) for t, v in zip(texts, vectors, strict=True)
        ]

    def _vectors(self, value: Any) -> list[list]:
        """One vector, or a list of them (a batch)."""
        vectors = (
            value if isinstance(value, list) and value and isinstance(value[0], list) else [value]
        )
        if len(vectors) > self.limits.max_queries:
            raise RequestError(f"embedding: 1 to {self.limits.max_queries} vectors")
        for v in vectors:
            if not isinstance(v, list) or not all(_number(x) for x in v):
                raise RequestError("embedding must be a list of numbers (or a list of such lists)")
        return vectors

    def _texts(self, value: Any) -> list[str]:
        texts = value if isinstance(value, list) else [value]
        if not texts or len(texts) > self.limits.max_queries:
            raise RequestError(f"query: 1 to {self.limits.max_queries} texts")
        if not all(isinstance(t, str) for t in texts):
            raise RequestError("query must be a text or a list of texts")
        texts = [t.strip() for t in texts]
        if any(not t for t in texts):
            raise RequestError("query is empty; give words to search for, e.g. 'a dog'")
        if any(len(t) > self.limits.max_query_chars for t in texts):
            raise RequestError(f"query longer than {self.limits.max_query_chars} characters")
        return texts

    def _run(self, queries: list[Query], k: int) -> tuple[list[dict], float]:
        """The hits of every query, and when the top-k was done (before the moments)."""
        loaded = self.loaded
        found = search(queries, self.rows, k, loaded.device, loaded.index, loaded.scorers)
        searched = time.perf_counter()
        results = []
        for query, (scores, rows) in zip(queries, found, strict=True):
            hits = hits_of(query, scores, rows, self.table, loaded.root)
            store_rows = [self.table["store_row"][hit["row"]] for hit in hits]
            add_moments(hits, query.moment, loaded.store, store_rows)
            for hit in hits:
                del hit["query"]
            results.append({"query": query.text, "kind": query.kind, "hits": hits})
        return results, searched

    # ------------------------------------------------------------------------------ videos
    def video(self, video_id: str) -> dict:
        """A video's row of the table, its file's frame rate, and the frames the store sampled."""
        row = self._row(video_id)
        path = self._path(row)
        sampled: list[int] = []
        if self.loaded.store is not None:
            found = self.loaded.store.read_frame_indices([self.table["store_row"][row]])
            sampled = sorted({int(i) for i in np.asarray(found).ravel() if i >= 0})
        return {
            "video_id": video_id,
            "row": row,
            "path": path,
            "label": self.table["label_name"][row],
            "frame_rate": frame_rate(path),
            "file": Path(path).is_file(),
            "sampled_frames": sampled,
        }

    def frames(self, video_id: str, count: int = 4) -> list[dict]:
        """Evenly spaced frames of the video's file: index, time and the thumbnail's address."""
        path = self.video_file(video_id)
        with open_video(path, self.loaded.decoder) as video:  # type: ignore[arg-type]
            total = video.num_frames
        return [
            {"frame": int(i), "time_s": frame_seconds(str(path), int(i))}
            for i in frame_indices(total, count)
        ]

    def thumbnail(self, video_id: str, frame: int) -> bytes:
        """A JPEG of frame ``frame`` of the video (``THUMB_HEIGHT`` pixels high)."""
        return _thumbnail(str(self.video_file(video_id)), frame, self.loaded.decoder)

    def video_file(self, video_id: str) -> Path:
        """The video's file, as the collection's table names it; NotFound when it is gone."""
        path = Path(self._path(self._row(video_id)))
        if not path.is_file():
            raise NotFound(f"the file of {video_id!r} is not there ({path})")
        return path

    def _row(self, video_id: str) -> int:
        if video_id not in self.row_of:
            raise NotFound(f"video_id {video_id!r} is not in the collection")
        return self.row_of[video_id]

    def _path(self, row: int) -> str:
        root = self.loaded.root
        return str(root / self.ids[row]) if root is not None else self.table["path"][row]

    def health(self) -> dict:
        file = self.loaded.file
        return {
            "status": "ok",
            "videos": file.n_rows,
            "dim": file.dim,
            "variant": file.attrs["variant"]["name"],
            "run": None if self.loaded.run is None else str(self.loaded.run.path),
            "device": str(self.loaded.device),
            "rows_dtype": str(self.rows.dtype).replace("torch.", ""),
            "score": self.loaded.default_score,
            "search": f"index {loaded_index.kind}"
            if (loaded_index := self.loaded.index)
            else "exact",
            "uptime_s": round(time.time() - self.started, 1),
        }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _image_bytes(value: Any) -> bytes:
    """The bytes of a base64 image (plain, or a ``data:image/...;base64,`` URI)."""
    if not isinstance(value, str) or not value:
        raise RequestError("image must be a base64 text of an image file")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("image is not valid base64") from None


@functools.lru_cache(maxsize=1024)
def _thumbnail(path: str, frame: int, decoder: str) -> bytes:
    try:
        with open_video(Path(path), decoder) as video:  # type: ignore[arg-type]
            if not 0 <= frame < video.num_frames:
                raise NotFound(f"frame {frame}: the video has frames 0 to {video.num_frames - 1}")
            pixels = video.get([frame])[0]
    except DecodeError as error:
        raise NotFound(f"{path}: cannot be decoded ({error})") from None
    return jpeg_bytes(pixels, THUMB_HEIGHT)
