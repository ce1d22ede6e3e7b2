"""Synthetic videos: numbers survive compression; the motion set needs temporal order."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from mote.pipeline.data.synthetic import (
    MOTION_CLASSES,
    motion_flip_rule,
    numbered_frame,
    read_frame_number,
    write_motion_dataset,
)
from mote.pipeline.video.decode import open_video
from mote.pipeline.video.flips import FlipRule


def _frames(path) -> np.ndarray:
    with open_video(path, "pyav") as video:
        return video.get(np.arange(video.num_frames)).astype(np.float32)


def test_numbered_frame_round_trip_and_ambiguous_frames():
    for number in (0, 1, 255, 4097, 65535):
        assert read_frame_number(numbered_frame(number, (64, 48))) == number
    with pytest.raises(ValueError, match="not a numbered frame"):
        read_frame_number(np.full((48, 64, 3), 128, np.uint8))
    with pytest.raises(ValueError, match="even sides"):
        numbered_frame(1, (63, 48))


def test_default_classes_are_shape_by_direction_phrases():
    assert len(MOTION_CLASSES) == 8
    assert "circle moving left" in MOTION_CLASSES and "circle moving right" in MOTION_CLASSES
    assert "square approaching" in MOTION_CLASSES and "square receding" in MOTION_CLASSES
    with pytest.raises(ValueError, match="moving"):
        write_motion_dataset("/nonexistent", classes=["triangle spinning"])
    with pytest.raises(ValueError, match="approaching"):
        write_motion_dataset("/nonexistent", classes=["circle moving sideways"])


def _centre_x(frames: np.ndarray) -> np.ndarray:
    """The x centroid of each frame's bright pixels."""
    bright = frames.mean(axis=-1) > 128  # (T, H, W)
    xs = np.arange(frames.shape[2])
    return (bright.sum(axis=1) * xs).sum(axis=1) / bright.sum(axis=(1, 2))


def test_a_mirrored_left_video_moves_right_so_the_pair_swaps_on_a_flip(tmp_path):
    data = write_motion_dataset(tmp_path / "m", MOTION_CLASSES[:2], videos_per_class=1, seed=2)
    assert data.flip == FlipRule(pairs=((0, 1),)) and data.flip.text == "0:1"
    left = _centre_x(_frames(data.root / "circle_moving_left/circle_moving_left_000.mp4"))
    mirrored = _centre_x(
        _frames(data.root / "circle_moving_left/circle_moving_left_000.mp4")[:, :, ::-1]
    )
    assert (np.diff(left) < 0).all() and (np.diff(mirrored) > 0).all()
    assert MOTION_CLASSES[data.flip.label(0, flipped=True)] == "circle moving right"
    # the default classes: both left/right pairs swap; approaching/receding keep their labels
    rule = motion_flip_rule(MOTION_CLASSES)
    assert rule.pairs == ((0, 1), (4, 5)) and rule.label(2, True) == 2
    assert motion_flip_rule(["circle moving up", "square receding"]) == FlipRule()
    # a class whose mirror is no class: flips are off rather than mislabel it
    assert motion_flip_rule(["circle moving left", "circle moving up"]) == FlipRule(enabled=False)


def test_motion_dataset_files_list_and_labels_agree(tmp_path):
    data = write_motion_dataset(tmp_path / "m", videos_per_class=2, frames=16, seed=3)
    lines = data.list_file.read_text().splitlines()
    assert len(lines) == 16
    with data.labels_file.open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", "name"]
    assert [(int(i), name) for i, name in rows[1:]] == list(enumerate(MOTION_CLASSES))
    for line in lines:
        rel, label = line.rsplit(" ", 1)
        assert rel.split("/")[0] == MOTION_CLASSES[int(label)].replace(" ", "_")
        with open_video(data.root / rel) as video:
            assert video.num_frames == 16
            assert video.get([0, 15]).shape == (2, 96, 128, 3)


def test_same_seed_gives_the_same_files(tmp_path):
    a = write_motion_dataset(tmp_path / "a", ["square moving up"], videos_per_class=2, seed=5)
    b = write_motion_dataset(tmp_path / "b", ["square moving up"], videos_per_class=2, seed=5)
    c = write_motion_dataset(tmp_path / "c", ["square moving up"], videos_per_class=2, seed=6)
    name = "square_moving_up/square_moving_up_001.mp4"
    assert (a.root / name).read_bytes() == (b.root / name).read_bytes()
    assert (a.root / name).read_bytes() != (c.root / name).read_bytes()


def _velocity(video: np.ndarray) -> float:
    """Mean x shift in pixels per frame that best maps frame t onto frame t+1."""
    shifts = np.arange(-4, 5)
    inner = (slice(8, -8), slice(8, -8))  # (H, W) away from the wrapped border
    best = []
    for now, nxt in zip(video[:-1], video[1:], strict=True):
        errors = [np.abs(nxt[inner] - np.roll(now, s, axis=1)[inner]).mean() for s in shifts]
        best.append(shifts[int(np.argmin(errors))])
    return float(np.mean(best))


def test_left_and_right_share_the_mean_frame_but_not_the_order(tmp_path):
    """Same seed: the right-moving clip is the left-moving clip played backwards (plus noise)."""
    left = write_motion_dataset(tmp_path / "l", ["circle moving left"], videos_per_class=1, seed=9)
    right = write_motion_dataset(
        tmp_path / "r", ["circle moving right"], videos_per_class=1, seed=9
    )
    a = _frames(left.root / "circle_moving_left/circle_moving_left_000.mp4")
    b = _frames(right.root / "circle_moving_right/circle_moving_right_000.mp4")
    assert np.abs(a.mean(0) - b.mean(0)).mean() < 1.0  # mean pooling sees the same thing
    assert _velocity(a) < -0.5 and _velocity(b) > 0.5  # the order of frames does not


def test_mean_pooling_cannot_separate_a_direction_pair_but_order_can(tmp_path):
    pair = ["square moving left", "square moving right"]
    data = write_motion_dataset(tmp_path / "p", pair, videos_per_class=16, frames=16, seed=11)
    pooled, velocity, labels = [], [], []
    for line in data.list_file.read_text().splitlines():
        rel, label = line.rsplit(" ", 1)
        video = _frames(data.root / rel)
        pooled.append(video.mean(0).ravel())
        velocity.append(_velocity(video))
        labels.append(int(label))
    labels = np.array(labels)
    assert np.array_equal(np.array(velocity) > 0, labels == 1)  # right moves +x, left -x
    assert _leave_one_out_accuracy(np.array(pooled), labels) <= 0.75


def _leave_one_out_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Nearest class centroid, each sample held out of its own centroid."""
    hits = 0
    for i in range(len(labels)):
        keep = np.arange(len(labels)) != i
        centroids = [features[keep & (labels == c)].mean(0) for c in (0, 1)]
        guess = int(np.argmin([np.linalg.norm(features[i] - c) for c in centroids]))
        hits += guess == labels[i]
    return hits / len(labels)


def test_approaching_grows_and_receding_is_its_reverse(tmp_path):
    near = write_motion_dataset(tmp_path / "n", ["circle approaching"], videos_per_class=1, seed=4)
    far = write_motion_dataset(tmp_path / "f", ["circle receding"], videos_per_class=1, seed=4)
    grow = _frames(near.root / "circle_approaching/circle_approaching_000.mp4")
    shrink = _frames(far.root / "circle_receding/circle_receding_000.mp4")
    bright = [(frames > 128).mean(axis=(1, 2, 3)) for frames in (grow, shrink)]
    assert bright[0][-1] > 3 * bright[0][0]  # the shape covers more of the frame as it nears
    np.testing.assert_allclose(bright[0], bright[1][::-1], atol=0.01)
    assert np.abs(grow.mean(axis=0) - shrink.mean(axis=0)).mean() < 2.0  # same mean frame
