"""``mote predict``: what is in these videos? Top-k classes of a run, straight from video files.

No list, no labels CSV, no store: each video is decoded in the worker pool with the sampling and
views rules of ``mote extract --run`` (evaluation sampling, default 1x1 views, the run's frames),
encoded by the run's CLIP (its tuned visual tower blended 0.99/0.01 with the original, spec 7.4),
and scored by the run's temporal module with the evaluation code (views fused as spec 8.1).

Close-set (default): the run's own classes and text bank, TFM on as in ``mote evaluate``.
Open vocabulary (``--classes`` or ``--labels``): the names' 28-template text embeddings from the
run CLIP's text tower, TFM relative to the run's fine-tuning text bank, as in ``mote zeroshot``.
A video that cannot be decoded gets its reason and the others are still scored.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mote.pipeline.clip.encoding import BatchedEncoder
from mote.pipeline.config import default_encoder_batch
from mote.pipeline.data.datasets import read_labels, shipped_file
from mote.pipeline.device import resolve_device
from mote.pipeline.errors import ConfigError
from mote.pipeline.locations import Url, locate
from mote.pipeline.progress import NullProgress, Progress
from mote.pipeline.runs.run_clip import clip_for_run
from mote.pipeline.runs.run_folder import Run, load_run
from mote.pipeline.temporal.evaluation import score
from mote.pipeline.threads import command_threads, use_threads
from mote.pipeline.video.decode_pool import DecodePool, DecodeTask, default_workers
from mote.pipeline.video.files import video_files
from mote.pipeline.video.nvdec import check_decoder_usable
from mote.pipeline.video.remote_videos import videos_under
from mote.pipeline.video.sampling import parse_views
from mote.stages.configs.predict_config import DEFAULT_FRAMES, VIDEO_EXTENSIONS, PredictConfig  # noqa: F401

K400_LABELS = "k400/kinetics_400_labels.csv"  # the class order of the reference's text bank


def _check(cfg: PredictConfig) -> None:
    if not cfg.videos:
        raise ConfigError("mote predict needs at least one VIDEO (a file or a folder of videos)")
    if cfg.classes is not None and cfg.labels_file is not None:
        raise ConfigError("--classes and --labels both name the classes: pass one of them")
    check_decoder_usable(cfg.decoder)
    parse_views(cfg.views)


def find_videos(
    paths: tuple[Path | Url, ...], recursive: bool, storage_options: dict[str, Any] | None = None
) -> list[Path | Url]:
    """The videos to label, in argument order: files as given (even with another extension:
    the user named them), folders as their video files (sorted; subfolders with ``recursive``),
    and the same for URLs (an object, or a prefix of objects).
    A path that does not exist is kept, so it is reported as "file not found" like a bad file."""
    found: list[Path | Url] = []
    for path in paths:
        path = locate(path)
        if isinstance(path, Url):
            inside = videos_under(path, recursive, VIDEO_EXTENSIONS, storage_options)
            if inside == []:
                hint = "" if recursive else "; pass --recursive to search deeper prefixes"
                raise ConfigError(
                    f"{path}: no video files ({', '.join(VIDEO_EXTENSIONS)}) under this "
                    f"prefix{hint}"
                )
            found += [Url(url) for url in inside] if inside else [path]
        elif path.is_dir():
            inside = video_files(path, recursive)
            if not inside:
                hint = "" if recursive else "; pass --recursive to search its subfolders"
                raise ConfigError(
                    f"{path}: no video files ({', '.join(VIDEO_EXTENSIONS)}) in this folder{hint}"
                )
            found += sorted(inside)
        else:
            found.append(path)
    unique = dict.fromkeys(found)  # the same video named twice is scored once
    return list(unique)


def open_vocabulary(cfg: PredictConfig) -> list[str] | None:
    """The names of ``--classes`` or ``--labels``; None for the run's own classes."""
    if cfg.labels_file is not None:
        return read_labels(cfg.labels_file)
    if cfg.classes is None:
        return None
    names = [name.strip() for name in cfg.classes.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"--classes {cfg.classes!r}: no class names; separate them with commas")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"--classes: {', '.join(map(repr, repeated))} named more than once")
    return names


def run_classes(loaded: Run) -> list[str]:
    """The class names of a run's fine-tuning text bank, in its row order.

    train-temporal runs record them; imported reference runs carry the K400 bank (the
    reference's class order is the shipped K400 label file's).
    """
    rows = int(loaded.model.finetune_text.shape[0])
    names = loaded.config.classes
    if names is None and rows == 400:
        names = read_labels(shipped_file(K400_LABELS))
    if not names or len(names) != rows:
        held = "no" if rows == 0 else f"a {rows}-row"
        raise ConfigError(
            f"{loaded.path}: the run has {held} class text bank without class names in its "
            "config.json; name the classes with --classes 'a,b,c' or --labels labels.csv"
        )
    return list(names)


def run_frames(loaded: Run, frames: int | None) -> int:
    """``--frames``, else the frames per view the run was trained on; within its position table."""
    if frames is None:
        frames = loaded.config.train_frames or DEFAULT_FRAMES
    context = loaded.model.cfg.context
    if not 1 <= frames <= context:
        raise ConfigError(
            f"--frames {frames}: must be 1 to {context} (the run's positional table has "
            f"{context} rows)"
        )
    return frames


def _video_result(path: Path | Url, reason: str | None = None) -> dict:
    return {"video": str(path), "top": [], "error": reason}


def decode_and_encode(
    videos: list[Path | Url],
    pool: DecodePool,
    clip,
    frames: int,
    views: tuple[int, int],
    batch_size: int | None,
    decoder: str,
    progress: Progress,
    storage_options: dict[str, Any] | None = None,
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Embeddings float16 (V, T, D) per video index, and the reason of every video without:
    evaluation sampling, the run's CLIP (``mote search --video`` encodes its example so too)."""
    clips, crops = views
    batch_size = batch_size or default_encoder_batch(clip.device)
    encoder = BatchedEncoder(clip, batch_size)
    embeddings: dict[int, np.ndarray] = {}
    failed: dict[int, str] = {}

    def keep(encoded: list[tuple[int, np.ndarray]]) -> None:
        for index, values in encoded:
            if np.isfinite(values).all():
                embeddings[index] = values
                progress.update(done=1, frames=values.shape[0] * values.shape[1])
            else:
                failed[index] = "the encoder returned non-finite embeddings"
                progress.update(failed=1)

    def take(decoded) -> None:
        for video in decoded:
            if not video.ok:
                failed[video.index] = video.failure()
                progress.update(failed=1)
                continue
            keep(encoder.add(video.index, video.views))

    size, interpolation = clip.preprocess.size, clip.preprocess.interpolation
    for index, path in enumerate(videos):
        task = DecodeTask(
            index,
            str(path),
            frames,
            clips,
            crops,
            size,
            "eval",
            0,
            decoder,
            interpolation,
            storage_options,
        )
        pool.submit(task)
        while pool.inflight >= pool.capacity:
            take(pool.results(timeout_s=1.0))
    while pool.inflight:
        take(pool.results(timeout_s=1.0))
    keep(encoder.flush())
    return embeddings, failed


def class_probabilities(logits: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """(N, C) probabilities: softmax of the run's learned scale x cosine, averaged over views.

    The ranking uses the spec's fused score (what ``mote evaluate`` reports: softmax of raw
    cosines, which sit within a few hundredths of uniform). Users read probabilities, so they
    come from the scale CLIP and training use (about 100): the same order for one view."""
    scale = float(logit_scale.detach().exp())
    return torch.softmax(scale * logits.float(), dim=-1).mean(dim=1)


def _rank(
    cfg: PredictConfig,
    loaded: Run,
    text: torch.Tensor,
    names: list[str],
    device: torch.device,
    ids: list[str],
    embeddings: list[np.ndarray],
    results: list[dict],
) -> None:
    """Fill each decoded video's result with its top-k classes, best first."""
    stacked = np.stack(embeddings)  # (N, V, T, D)
    labels = np.zeros(len(ids), dtype=np.int64)  # unknown: only the scores are used
    scores = score(loaded.model, stacked, labels, ids, text, cfg.tfm, device)
    probs = class_probabilities(scores.view_logits, loaded.model.logit_scale)
    k = min(cfg.top_k, len(names))
    fused, ranked = scores.fused.topk(k, dim=1)
    for row, result in enumerate(results):
        result["top"] = [
            {  # named as HF video-classification pipelines name them
                "label": names[int(c)],
                "score": float(probs[row, c]),
                "id": int(c),
                "fused": float(s),
            }
            for s, c in zip(fused[row].tolist(), ranked[row].tolist(), strict=True)
        ]


@command_threads()
def run(cfg: PredictConfig, progress: Progress | None = None) -> dict:
    """Label every video; return the per-video top-k (``videos``) and what was used."""
    progress = progress or NullProgress()
    _check(cfg)
    views = parse_views(cfg.views)
    videos = find_videos(cfg.videos, cfg.recursive, cfg.storage_options)
    names = open_vocabulary(cfg)  # a bad label file fails before anything loads
    device = resolve_device(cfg.device)
    workers = cfg.decode_workers
    if workers is None:
        workers = min(default_workers(), len(videos))
    started = time.perf_counter()
    # The decode workers boot while the weights load (once for all videos).
    with DecodePool(workers, cfg.decode_timeout) as pool:
        loaded = load_run(cfg.run, device)
        frames = run_frames(loaded, cfg.frames)
        clip = clip_for_run(cfg.run, str(device))
        use_threads(device, width=clip.dim, workers=workers)
        if names is None:
            names = run_classes(loaded)
            text = loaded.model.finetune_text.detach().float().cpu()
        else:
            text = clip.class_text_embeddings(names).float()
        progress.start(len(videos), f"predict {len(videos)} video(s)")
        try:
            embeddings, failed = decode_and_encode(
                videos,
                pool,
                clip,
                frames,
                views,
                cfg.batch_size,
                cfg.decoder,
                progress,
                cfg.storage_options,
            )
        finally:
            progress.finish()
    results = [_video_result(path, failed.get(i)) for i, path in enumerate(videos)]
    scored = sorted(embeddings)  # the videos that decoded, in input order
    if scored:
        ids, rows = [str(videos[i]) for i in scored], [embeddings[i] for i in scored]
        _rank(cfg, loaded, text, names, device, ids, rows, [results[i] for i in scored])
    clips, crops = views
    return {
        "run": str(cfg.run),
        "vocabulary": "run" if cfg.classes is None and cfg.labels_file is None else "open",
        "classes": len(names),
        "tfm": cfg.tfm,
        "frames": frames,
        "views": f"{clips}x{crops}",
        "device": str(clip.device),
        "n_videos": len(videos),
        "n_failed": len(videos) - len(scored),
        "seconds": round(time.perf_counter() - started, 3),
        "videos": results,
    }
