"""Queries by example: a video's or an image's frames made one vector of the embeddings file's
own variant, so it is comparable with the file's rows.

A video's frames come as stored features [views, frames, D] (sampled as the store samples);
an image is a still video: its one CLIP feature stands for every frame of every view, then the
same variant (TFM against the store's class bank with a run, else CLIP mean pooling) makes the
vector. The image's own CLIP feature is kept too: it finds the matching moment in each hit.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mote.cache_schema.embeddings import EmbeddingsFile
from mote.pipeline.errors import ConfigError
from mote.pipeline.search.banks import test_bank
from mote.pipeline.search.engine import Query, unit
from mote.pipeline.temporal.embedding import mean_pooled_vectors, video_vectors
from mote.pipeline.video.sampling import parse_views
from mote.pipeline.video.transforms import crop_views

MAX_IMAGE_PIXELS = 50_000_000  # a larger image is refused rather than decoded (decompression bombs)


def example_vector(
    encoded: np.ndarray, file: EmbeddingsFile, loaded: Any, clip: Any, storage_options: Any
) -> np.ndarray:
    """float32 (D,) unit vector of stored-style features [views, frames, D] in the file's
    variant: ``mote embed``'s own code on one video."""
    if loaded is None:  # a file of CLIP mean pooling
        return mean_pooled_vectors(encoded[None], clip.device)[0].astype(np.float32)
    bank = test_bank(file, storage_options)
    text = bank if bank is not None else torch.zeros(1, loaded.model.cfg.dim)
    vectors = video_vectors(loaded.model, encoded[None], text, bank is not None, clip.device)
    return vectors[0].astype(np.float32)


def read_image(source: str | Path | bytes, what: str) -> np.ndarray:
    """uint8 (H, W, 3) RGB of an image file or its bytes; a clear error for anything else."""
    before = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        data = io.BytesIO(source) if isinstance(source, bytes) else source
        with Image.open(data) as image:
            image.load()
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise ConfigError(f"{what}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{what}: a folder, not an image file") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as error:
        reason = "not an image PIL can read (JPEG, PNG, WebP, ...)"
        if isinstance(error, Image.DecompressionBombError):
            reason = f"more than {MAX_IMAGE_PIXELS} pixels"
        raise ConfigError(f"{what}: {reason}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = before


def image_feature(pixels: np.ndarray, clip: Any) -> np.ndarray:
    """float32 (D,) unnormalised CLIP feature of an RGB image, centre-cropped as frames are."""
    spec = clip.preprocess
    crop = crop_views(pixels[None], spec.size, 1, spec.interpolation)[0]  # (1, S, S, 3)
    return clip.encode_frames(crop)[0].float().cpu().numpy()


def image_query(
    source: str | Path | bytes,
    what: str,
    file: EmbeddingsFile,
    loaded: Any,
    clip: Any,
    storage_options: Any = None,
) -> Query:
    """The image as a still video in the file's variant, ranked by cosine; its CLIP feature
    finds each hit's matching moment."""
    feature = image_feature(read_image(source, what), clip)
    clips, crops = parse_views(str(file.attrs["store"]["views"]))
    views = clips * crops
    frames = int(file.attrs["store"]["frames"])
    encoded = np.broadcast_to(feature, (views, frames, len(feature))).copy()
    vector = example_vector(encoded, file, loaded, clip, storage_options)
    return Query(what, "image", unit(vector, what), moment=unit(feature, what))
