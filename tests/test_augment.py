"""Spec 7.2 training augmentation: crop bounds, flip/grayscale rates, one draw per clip."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from mote.pipeline.errors import ConfigError
from mote.pipeline.video.augment import (
    apply_params,
    augment_clip,
    draw_params,
    pre_resize_size,
)
from mote.pipeline.video.flips import FlipRule
from mote.pipeline.video.transforms import resized_shape

DRAWS = 2000


def _draws(height: int, width: int, size: int, n: int = DRAWS, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [draw_params(height, width, size, rng) for _ in range(n)]


def test_pre_resize_scales_256_with_the_input_size() -> None:
    assert pre_resize_size(224) == 256
    assert pre_resize_size(64) == 73  # round(256 / 224 * 64) = round(73.14)
    assert pre_resize_size(336) == 384


@pytest.mark.parametrize("height,width", [(240, 320), (320, 240), (256, 256)])
def test_crop_boxes_respect_the_area_and_aspect_bounds(height: int, width: int) -> None:
    params = _draws(height, width, 224)
    pre_h, pre_w = resized_shape(height, width, 256)
    area = pre_h * pre_w
    fractions, positions, wide = [], [], 0
    for p in params:
        assert not p.fallback  # 10 failed tries in a row do not happen on a 4:3 frame
        assert p.pre_resized == p.resized == (pre_h, pre_w)
        y, x, h, w = p.box
        assert 0 <= y <= pre_h - h and 0 <= x <= pre_w - w
        # w and h are rounded from sqrt(area*ar), sqrt(area/ar): undo at most 0.5 each
        assert (w + 0.5) * (h + 0.5) >= 0.08 * area
        assert (w - 0.5) * (h - 0.5) <= area
        long, short = max(w, h), min(w, h)
        assert (long - 0.5) / (short + 0.5) <= 4 / 3
        fractions.append(w * h / area)
        wide += w > h
        if pre_w > w:
            positions.append(x / (pre_w - w))
    assert min(fractions) < 0.1 and max(fractions) > 0.9  # the whole area range is used
    assert 0.35 < wide / len(params) < 0.65  # the w/h swap happens
    assert abs(np.mean(positions) - 0.5) < 0.05  # uniform position


def test_min_area_raises_the_smallest_crop() -> None:
    """``min_area`` (finetune-e2e --min-crop-area) bounds every crop from below; the default is
    spec 7.2's 0.08."""
    rng = np.random.default_rng(0)
    pre_h, pre_w = resized_shape(240, 320, 73)
    area = pre_h * pre_w
    params = [draw_params(240, 320, 64, rng, min_area=0.5) for _ in range(DRAWS)]
    crops = [p.box[2] * p.box[3] / area for p in params if not p.fallback]
    assert len(crops) > 0.9 * DRAWS
    assert min(crops) > 0.45 and max(crops) > 0.9  # 0.5 less the rounding of w and h
    default = [p.box[2] * p.box[3] / area for p in _draws(240, 320, 64) if not p.fallback]
    assert min(default) < 0.1


def test_flip_and_grayscale_rates_are_binomial() -> None:
    params = _draws(240, 320, 224, seed=7)
    flips = np.array([p.flip for p in params])
    grays = np.array([p.gray for p in params])
    sd = lambda p: np.sqrt(p * (1 - p) / DRAWS)  # noqa: E731
    assert abs(flips.mean() - 0.5) < 4 * sd(0.5)
    assert abs(grays.mean() - 0.2) < 4 * sd(0.2)
    assert abs((flips & grays).mean() - 0.1) < 4 * sd(0.1)  # independent draws


def test_one_draw_applies_to_every_frame_of_a_clip() -> None:
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, size=(4, 60, 80, 3), dtype=np.uint8)
    for seed in range(20):
        clip, params = augment_clip(frames, 64, np.random.default_rng(seed))
        assert clip.shape == (4, 64, 64, 3) and clip.dtype == np.uint8
        for i in range(4):
            alone, alone_params = augment_clip(frames[i : i + 1], 64, np.random.default_rng(seed))
            assert alone_params == params
            np.testing.assert_array_equal(alone[0], clip[i])
    same = np.repeat(frames[:1], 5, axis=0)
    for seed in range(20):
        out, _ = augment_clip(same, 64, np.random.default_rng(seed))
        assert all(np.array_equal(out[0], out[i]) for i in range(1, 5))


def test_the_draw_is_a_function_of_the_seed() -> None:
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 48, 64, 3), dtype=np.uint8)
    a, pa = augment_clip(frames, 32, np.random.default_rng([5, 1, 9]))
    b, pb = augment_clip(frames, 32, np.random.default_rng([5, 1, 9]))
    assert pa == pb and np.array_equal(a, b)
    others = {augment_clip(frames, 32, np.random.default_rng([5, 2, i]))[1] for i in range(10)}
    assert len(others) == 10


def test_crop_then_resize_flip_and_luma_follow_the_spec() -> None:
    """Bicubic pre-resize, crop, bilinear resize to S; flip mirrors it; gray is PIL luma."""
    frame = np.random.default_rng(1).integers(0, 256, size=(1, 48, 64, 3), dtype=np.uint8)
    base = replace(
        draw_params(48, 64, 32, np.random.default_rng(0)), fallback=False, flip=False, gray=False
    )
    pre_h, pre_w = base.pre_resized
    assert (pre_h, pre_w) == (37, 49)  # shorter side round(256/224*32) = 37, long side truncated
    y, x, h, w = base.box
    image = Image.fromarray(frame[0]).resize((pre_w, pre_h), Image.Resampling.BICUBIC)
    expected = np.asarray(
        image.crop((x, y, x + w, y + h)).resize((32, 32), Image.Resampling.BILINEAR)
    )
    plain = apply_params(frame, base, 32)
    np.testing.assert_array_equal(plain[0], expected)
    flipped = apply_params(frame, replace(base, flip=True), 32)
    np.testing.assert_array_equal(flipped[0], expected[:, ::-1])
    gray = apply_params(frame, replace(base, gray=True), 32)[0].astype(np.int32)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    luma = expected.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(gray[..., 0] - luma).max() <= 1.0


def test_fallback_resizes_to_the_size_and_takes_a_random_crop() -> None:
    """A frame too wide for any crop of area >= 8% at aspect <= 4/3 takes the fallback path."""
    frames = np.random.default_rng(2).integers(0, 256, size=(2, 8, 400, 3), dtype=np.uint8)
    xs = set()
    for seed in range(30):
        out, params = augment_clip(frames, 32, np.random.default_rng(seed))
        assert params.fallback and out.shape == (2, 32, 32, 3)
        assert params.pre_resized == (37, 1850)
        assert params.resized == resized_shape(37, 1850, 32) == (32, 1600)
        y, x, h, w = params.box
        assert (y, h, w) == (0, 32, 32) and 0 <= x <= 1600 - 32
        xs.add(x)
        plain = apply_params(frames, replace(params, flip=False, gray=False), 32)
        image = Image.fromarray(frames[1]).resize((1850, 37), Image.Resampling.BICUBIC)
        image = image.resize((1600, 32), Image.Resampling.BILINEAR)
        np.testing.assert_array_equal(plain[1], np.asarray(image)[:, x : x + 32])
    assert len(xs) > 20  # the crop position is random


def test_augment_clip_rejects_float_frames() -> None:
    with pytest.raises(ValueError, match="uint8 frames"):
        augment_clip(np.zeros((1, 8, 8, 3), np.float32), 8, np.random.default_rng(0))


def test_augment_runs_without_torch() -> None:
    """Decode workers import augment like transforms: numpy and PIL only, never torch."""
    code = (
        "import sys, numpy as np; from mote.pipeline.video.augment import augment_clip; "
        "augment_clip(np.zeros((2, 20, 30, 3), np.uint8), 16, np.random.default_rng(0)); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_flip_rule_spellings_labels_and_errors() -> None:
    pairs = FlipRule.parse("86:87, 93:94,166:167")
    assert pairs.pairs == ((86, 87), (93, 94), (166, 167)) and pairs.text == "86:87,93:94,166:167"
    assert [pairs.label(c, True) for c in (86, 87, 94, 5)] == [87, 86, 93, 5]
    assert [pairs.label(c, False) for c in (86, 87, 5)] == [86, 87, 5]
    assert FlipRule.parse("off") == FlipRule(enabled=False) and FlipRule.parse("keep") == FlipRule()
    assert FlipRule(enabled=False).text == "off" and FlipRule().text == "keep"
    for text, message in (
        ("86-87", "expected off, keep, or class index pairs"),
        ("1:1", "pair 1:1: a pair is two different class indices"),
        ("1:2,2:3", "class 2 is in two pairs"),
    ):
        with pytest.raises(ConfigError, match=message):
            FlipRule.parse(text)
    with pytest.raises(ConfigError, match="pair 3:9: training list has 8 classes"):
        FlipRule.parse("3:9").check_classes(8, "training list")
