"""Training augmentation (spec section 7.2): one random draw per clip, applied to every frame.

Order: shorter side to ``pre_resize_size(S)`` (bicubic), random-resized crop to S x S (bilinear)
with up to 10 tries and a resize-and-random-crop fallback, horizontal flip (p = 0.5), grayscale
(p = 0.2, luma replicated to 3 channels). Scaling to [0, 1] and the model's mean/std come after,
from ``transforms.normalize`` with the model's ``PreprocessSpec``, so mean/std are never retyped.

S is the model's input size (224 for ViT-B/16, 64 for mote-tiny). The spec's "256" belongs to
S = 224, so the pre-resize scales with S: ``round(256 / 224 * S)`` (exactly 256 at 224, 73 at 64).

All draws come from the ``numpy.random.Generator`` passed in, in a fixed order (per try: area,
aspect ratio, swap; then the crop position; then flip; then grayscale), so a clip's
augmentation is a function of the generator's seed alone. With flips off (``flip=False``, a
dataset whose ``FlipRule`` says so) the flip is still drawn, so the grayscale draw and every
later one are the same as with flips on. Like ``transforms``, this module
imports only numpy and PIL, so it can run in decode worker processes without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from mote.pipeline.video.transforms import resized_shape

REFERENCE_SIZE = 224  # the input size the spec's numbers are written for
REFERENCE_PRE_RESIZE = 256  # its shorter-side resize before the random-resized crop
CROP_TRIES = 10
AREA_RANGE = (0.08, 1.0)  # the crop's share of the frame's area; the lower end is settable
ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)  # drawn uniformly, not log-uniformly (spec 7.2)
FLIP_P = 0.5
GRAY_P = 0.2


def pre_resize_size(size: int) -> int:
    """The shorter side before the crop: 256 for S = 224, scaled as 256/224 x S otherwise."""
    return int(round(REFERENCE_PRE_RESIZE * size / REFERENCE_SIZE))


@dataclass(frozen=True)
class AugmentParams:
    """One clip's draw. ``box`` = (y, x, h, w) in the resized frame of shape ``resized``.

    Normal path: ``resized`` is the frame after the pre-resize and ``box`` the random crop,
    resized to S x S afterwards. Fallback (no try fitted): ``resized`` is the frame after the
    shorter side was resized to S (from the pre-resized frame) and ``box`` an S x S crop.
    """

    pre_resized: tuple[int, int]  # (H, W) after the bicubic pre-resize
    resized: tuple[int, int]  # (H, W) of the frame the box is cut from
    box: tuple[int, int, int, int]
    fallback: bool
    flip: bool
    gray: bool


def draw_params(
    height: int,
    width: int,
    size: int,
    rng: np.random.Generator,
    min_area: float = AREA_RANGE[0],
) -> AugmentParams:
    """Draw the augmentation of one clip whose frames are ``height`` x ``width``; a crop
    covers ``min_area`` to all of the frame (spec 7.2: 0.08)."""
    pre_h, pre_w = resized_shape(height, width, pre_resize_size(size))
    area = pre_h * pre_w
    found: tuple[int, int, int, int] | None = None
    for _ in range(CROP_TRIES):
        target = rng.uniform(min_area, AREA_RANGE[1]) * area
        aspect = rng.uniform(*ASPECT_RANGE)
        w = int(round(math.sqrt(target * aspect)))  # Python round: half to even
        h = int(round(math.sqrt(target / aspect)))
        if rng.random() < 0.5:
            w, h = h, w
        if w <= pre_w and h <= pre_h:
            x = int(rng.integers(0, pre_w - w, endpoint=True))
            y = int(rng.integers(0, pre_h - h, endpoint=True))
            found = (y, x, h, w)
            break
    if found is not None:
        resized, fallback = (pre_h, pre_w), False
    else:
        resized, fallback = resized_shape(pre_h, pre_w, size), True
        x = int(rng.integers(0, resized[1] - size, endpoint=True))
        y = int(rng.integers(0, resized[0] - size, endpoint=True))
        found = (y, x, size, size)
    flip = bool(rng.random() < FLIP_P)
    gray = bool(rng.random() < GRAY_P)
    return AugmentParams((pre_h, pre_w), resized, found, fallback, flip, gray)


def _augment_frame(frame: np.ndarray, params: AugmentParams, size: int) -> np.ndarray:
    """Apply one clip's params to one uint8 (H, W, 3) frame -> uint8 (size, size, 3)."""
    image = Image.fromarray(frame)
    pre_h, pre_w = params.pre_resized
    if (pre_h, pre_w) != (frame.shape[0], frame.shape[1]):
        image = image.resize((pre_w, pre_h), Image.Resampling.BICUBIC)
    y, x, h, w = params.box
    if params.fallback:
        res_h, res_w = params.resized
        image = image.resize((res_w, res_h), Image.Resampling.BILINEAR)
        image = image.crop((x, y, x + w, y + h))
    else:
        image = image.crop((x, y, x + w, y + h))
        if (h, w) != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
    if params.flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if params.gray:
        image = image.convert("L")  # ITU-R 601-2 luma, as torchvision's Grayscale on PIL
        out = np.asarray(image)
        return np.repeat(out[:, :, None], 3, axis=2)
    return np.asarray(image)


def apply_params(frames: np.ndarray, params: AugmentParams, size: int) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, size, size, 3), the same params on every frame."""
    out = np.empty((frames.shape[0], size, size, 3), dtype=np.uint8)
    for i in range(frames.shape[0]):
        out[i] = _augment_frame(frames[i], params, size)
    return out


def augment_clip(
    frames: np.ndarray,
    size: int,
    rng: np.random.Generator,
    flip: bool = True,
    min_area: float = AREA_RANGE[0],
) -> tuple[np.ndarray, AugmentParams]:
    """Spec 7.2 on one clip: uint8 (T, H, W, 3) -> uint8 (T, size, size, 3) and the draw used.

    ``min_area``: the smallest crop, as a share of the frame (spec 7.2: 0.08).
    ``flip=False`` never mirrors the clip (``params.flip`` is then False); a flipped clip's label
    follows its dataset's ``FlipRule`` (``flips.py``). Normalise the result with
    ``transforms.normalize(torch.from_numpy(out), spec, dtype)``.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"augment_clip expects uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}"
        )
    params = draw_params(frames.shape[1], frames.shape[2], size, rng, min_area)
    if not flip:
        params = replace(params, flip=False)
    return apply_params(np.ascontiguousarray(frames), params, size), params
