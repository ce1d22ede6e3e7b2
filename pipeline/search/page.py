"""One self-contained HTML page of search results (``mote search --html``): per query, per hit,
a few frames decoded from the hit's video, its rank, score, id, label and path.

Nothing outside the file: the CSS is inline and every frame is a base64 JPEG ``data:`` URI, so
the page can be mailed or copied off a cluster and opened anywhere. A hit whose video cannot be
decoded shows the decoder's reason instead of frames.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from mote.pipeline.errors import DecodeError
from mote.pipeline.video.decode import open_video

FRAMES = 4  # frames shown per hit, evenly spaced over the video
HEIGHT = 96  # thumbnail height in pixels
QUALITY = 80  # JPEG quality: legible at a tenth of the bytes of a PNG


@dataclass(frozen=True)
class Thumbnails:
    """A video's frames as JPEG data URIs, or why there are none."""

    images: tuple[str, ...] = ()
    reason: str | None = None


def frame_indices(count: int, frames: int = FRAMES) -> np.ndarray:
    """The middle frame of each of ``frames`` equal segments of a video of ``count`` frames."""
    shown = min(frames, count)
    return np.floor((np.arange(shown) + 0.5) * count / shown).astype(np.int64)


def jpeg_bytes(frame: np.ndarray, height: int = HEIGHT) -> bytes:
    """A JPEG of an RGB uint8 frame scaled to ``height`` pixels."""
    image = Image.fromarray(np.ascontiguousarray(frame))
    width = max(1, round(image.width * height / max(1, image.height)))
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=QUALITY)
    return buffer.getvalue()


def jpeg_uri(frame: np.ndarray, height: int = HEIGHT) -> str:
    """A ``data:image/jpeg;base64`` URI of ``jpeg_bytes``."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes(frame, height)).decode("ascii")


def thumbnails(path: str | Path, decoder: str = "auto", frames: int = FRAMES) -> Thumbnails:
    """Evenly spaced frames of the video at ``path`` with the project's decoder."""
    try:
        with open_video(path, decoder) as video:  # type: ignore[arg-type]
            if video.num_frames < 1:
                return Thumbnails(reason="the video has no frames")
            decoded = video.get(frame_indices(video.num_frames, frames))
    except DecodeError as error:
        return Thumbnails(reason=str(error))
    except OSError as error:
        return Thumbnails(reason=f"cannot read: {error.strerror or error}")
    return Thumbnails(tuple(jpeg_uri(frame) for frame in decoded))


@dataclass(frozen=True)
class PageHit:
    rank: int
    score: float
    video_id: str
    label: str | None
    path: str
    thumbnails: Thumbnails = field(default_factory=Thumbnails)
    frame: int | None = None  # the best-matching sampled frame (text and image queries)
    time_s: float | None = None


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 4px; }
.meta { color: #666; margin: 0 0 20px; }
section.query { margin: 0 0 28px; }
h2 { font-size: 16px; margin: 0 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.hit { display: flex; gap: 12px; align-items: center; background: #fff; border: 1px solid #e3e3e3;
  border-radius: 6px; padding: 8px; margin: 0 0 8px; }
.facts { width: 300px; flex: none; }
.rank { font-weight: 600; font-size: 15px; }
.score { font-variant-numeric: tabular-nums; color: #0a5; margin-left: 6px; }
.label { display: inline-block; background: #eef; border-radius: 3px; padding: 0 5px; }
.id, .path { font: 12px ui-monospace, monospace; word-break: break-all; color: #444; }
.frames { display: flex; gap: 4px; flex-wrap: wrap; }
.frames img { height: 96px; border-radius: 3px; }
.reason { color: #b00; }
.moment { color: #555; font-size: 12px; }
"""


def render_page(title: str, meta: str, queries: Sequence[tuple[str, Sequence[PageHit]]]) -> str:
    """The page: a title, one line of facts, then a section of hits per (query, hits)."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">{esc(meta)}</p>',
    ]
    for query, hits in queries:
        parts.append(f'<section class="query" data-query="{esc(query)}">')
        parts.append(f"<h2>{esc(query)}</h2>")
        if not hits:
            parts.append('<p class="reason">no result</p>')
        for hit in hits:
            parts.append(_hit(hit))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _hit(hit: PageHit) -> str:
    esc = html.escape
    label = f' <span class="label">{esc(hit.label)}</span>' if hit.label else ""
    if hit.thumbnails.images:
        shown = "".join(
            f'<img src="{uri}" alt="frame {i + 1} of {esc(hit.video_id)}">'
            for i, uri in enumerate(hit.thumbnails.images)
        )
    else:
        shown = f'<p class="reason">{esc(hit.thumbnails.reason or "no frames")}</p>'
    return (
        f'<div class="hit" data-rank="{hit.rank}" data-score="{hit.score:.6f}" '
        f'data-video-id="{esc(hit.video_id)}">'
        f'<div class="facts"><span class="rank">#{hit.rank}</span>'
        f'<span class="score">{hit.score:.4f}</span>{label}'
        f'<div class="id">{esc(hit.video_id)}</div><div class="path">{esc(hit.path)}</div>'
        f"{_moment(hit)}</div>"
        f'<div class="frames">{shown}</div></div>'
    )


def _moment(hit: PageHit) -> str:
    """Where in the video the query matches best, when known."""
    if hit.frame is None:
        return ""
    when = f"{hit.time_s:.2f} s, " if hit.time_s is not None else ""
    text = f"best match at {when}frame {hit.frame}"
    return f'<div class="moment" data-frame="{hit.frame}">{text}</div>'
