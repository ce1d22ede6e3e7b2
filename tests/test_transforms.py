"""Evaluation crops (spec 7.3) and normalisation against open_clip's own eval transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mote.pipeline.errors import ConfigError
from mote.pipeline.video.transforms import (
    PreprocessSpec,
    crop_views,
    normalize,
    normalize_tensors,
    resized_shape,
)


def gradient_frames(k: int, height: int, width: int) -> np.ndarray:
    """Frames whose red channel is the column, green the row and blue the frame index."""
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.empty((k, height, width, 3), dtype=np.uint8)
    for i in range(k):
        frames[i, ..., 0] = xs
        frames[i, ..., 1] = ys
        frames[i, ..., 2] = i
    return frames


def top_left(view: np.ndarray) -> tuple[int, int]:
    """(y, x) of a crop cut from ``gradient_frames``."""
    return int(view[0, 0, 1]), int(view[0, 0, 0])


def test_resized_shape_truncates_the_long_side_like_torchvision() -> None:
    assert resized_shape(100, 177, 32) == (32, 56)  # 56.64 -> 56
    assert resized_shape(177, 100, 32) == (56, 32)
    assert resized_shape(50, 50, 32) == (32, 32)


def test_landscape_three_crops_are_left_right_centre() -> None:
    frames = gradient_frames(4, 32, 80)  # shorter side already 32: no resampling
    views = crop_views(frames, 32, 3)
    assert views.shape == (3, 4, 32, 32, 3) and views.dtype == np.uint8
    w_step = (80 - 32) // 4  # 12
    assert [top_left(views[c, 0]) for c in range(3)] == [(0, 0), (0, 4 * w_step), (0, 2 * w_step)]
    assert views[:, :, 0, 0, 2].tolist() == [[0, 1, 2, 3]] * 3  # frame order kept


def test_portrait_three_crops_coincide_as_in_the_reference() -> None:
    views = crop_views(gradient_frames(2, 80, 32), 32, 3)
    assert views.shape == (3, 2, 32, 32, 3)
    h_step = (80 - 32) // 4  # w_step = 0: spec 7.3 puts all three at (2 * h_step, 0)
    assert [top_left(views[c, 1]) for c in range(3)] == [(2 * h_step, 0)] * 3


@pytest.mark.parametrize(("height", "width", "expected"), [(32, 81, (0, 24)), (81, 32, (24, 0))])
def test_single_crop_is_the_torchvision_centre(height: int, width: int, expected: tuple) -> None:
    views = crop_views(gradient_frames(3, height, width), 32, 1)
    assert views.shape == (1, 3, 32, 32, 3)
    assert top_left(views[0, 2]) == expected  # round((81 - 32) / 2) = 24


def test_square_frame_three_crops_coincide() -> None:
    views = crop_views(gradient_frames(1, 40, 40), 40, 3)
    assert all(np.array_equal(views[0], views[c]) for c in (1, 2))


def test_resize_is_pil_bicubic_then_crop() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 90, 200, 3), dtype=np.uint8)
    views = crop_views(frames, 48, 3)
    new_h, new_w = resized_shape(90, 200, 48)  # (48, 106)
    w_step = (new_w - 48) // 4
    for i in range(2):
        resized = np.asarray(Image.fromarray(frames[i]).resize((new_w, new_h), Image.BICUBIC))
        for c, x in enumerate((0, 4 * w_step, 2 * w_step)):
            assert np.array_equal(views[c, i], resized[:, x : x + 48])


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="crops must be 1 or 3"):
        crop_views(gradient_frames(1, 32, 64), 32, 2)
    with pytest.raises(ValueError, match="uint8"):
        crop_views(np.zeros((1, 32, 32, 3), dtype=np.float32), 32, 1)


def test_spec_comes_from_open_clip_and_normalize_matches_its_eval_transform() -> None:
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from mote.pipeline.clip.build import build_clip

    encoder = build_clip("mote-tiny", "none", device="cpu")
    cfg = open_clip.get_model_preprocess_cfg(encoder.model)
    spec = PreprocessSpec.from_open_clip_cfg(cfg)
    assert spec == encoder.preprocess
    assert spec.mean == tuple(open_clip.OPENAI_DATASET_MEAN) and spec.size == 64

    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, size=(1, 75, 120, 3), dtype=np.uint8)
    reference = image_transform_v2(PreprocessCfg(**cfg), is_train=False)(Image.fromarray(frame[0]))
    crop = torch.from_numpy(crop_views(frame, spec.size, 1))  # (1, 1, 64, 64, 3)
    ours = normalize(crop, spec, torch.float32)
    assert ours.shape == (1, 1, 3, 64, 64) and ours.dtype == torch.float32
    torch.testing.assert_close(ours[0, 0], reference, atol=1e-5, rtol=0)
    assert normalize(crop, spec, torch.float16).dtype == torch.float16


def test_normalize_builds_its_device_tensors_once_per_spec_and_device() -> None:
    """The mean/std (and 255) are made on the first call for a (spec, device) and reused, so a
    CUDA batch does not wait for a host-to-device copy; the numbers are the per-call ones."""
    from helpers import worker_normalised

    spec = PreprocessSpec(size=8, mean=(0.25, 0.5, 0.75), std=(0.125, 0.3, 0.7))  # a fresh key
    x = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8))
    x[0, :, :, :] = torch.arange(192, dtype=torch.uint8).view(8, 8, 3)  # every value 0..255
    x[1, :, :, :] = torch.arange(64, 256, dtype=torch.uint8).view(8, 8, 3)
    before = normalize_tensors.cache_info()
    with torch.inference_mode():  # first use under inference mode (the extraction encoder)
        first = normalize(x, spec, torch.float32)
    tensors = normalize_tensors(spec, x.device)
    second = normalize(x, spec, torch.float32)
    after = normalize_tensors.cache_info()
    assert after.misses == before.misses + 1 and after.hits >= before.hits + 2
    assert all(a is b for a, b in zip(normalize_tensors(spec, x.device), tensors, strict=True))
    assert not any(t.is_inference() for t in tensors)  # usable by training after extraction
    scale, mean, std = tensors
    assert scale.item() == 255.0 and mean.flatten().tolist() == list(spec.mean)
    assert torch.equal(first, second) and torch.equal(second, worker_normalised(x, spec))
    other = PreprocessSpec(size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert normalize_tensors(other, x.device)[1] is not mean  # keyed by the spec
