"""Spec section 7.1 frame sampling: the worked example, rounding, inclusive bounds, short videos."""

import numpy as np
import pytest

from mote.pipeline.video.sampling import eval_indices, sample_indices, train_bounds, train_indices


def test_worked_example_training_bounds():
    assert train_bounds(300, 8).tolist() == [0, 37, 75, 112, 150, 187, 224, 262, 299]


def test_worked_example_one_clip():
    got = eval_indices(300, 8, 1)
    assert got.dtype == np.int64 and got.shape == (1, 8)
    assert got[0].tolist() == [0, 37, 75, 112, 150, 187, 225, 262]


def test_worked_example_three_clips():
    got = eval_indices(300, 8, 3)
    assert got.shape == (3, 8)
    assert got[:, 0].tolist() == [0, 18, 36]
    assert got[1].tolist() == [18, 55, 93, 130, 168, 205, 243, 280]


def test_worked_example_four_clips():
    assert eval_indices(300, 8, 4)[:, 0].tolist() == [0, 12, 24, 36]


def test_eval_clip_is_offset_plus_floor_of_tick_steps():
    # n=300, T=8, clip 3 of 3 starts at 36: floor(36 + 37.5 x) mod 300
    expected = [int(np.floor(36 + 37.5 * x)) % 300 for x in range(8)]
    assert eval_indices(300, 8, 3)[2].tolist() == expected


def test_training_rounds_half_to_even():
    # n=3, T=4: seg = 0.5 -> round(0.5)=0, round(1.0)=1, round(1.5)=2 (half-up would give 1, 2)
    assert train_bounds(3, 4).tolist() == [0, 0, 1, 2, 2]
    # n=11, T=4: seg = 2.5 -> 0, 2.5->2, 5, 7.5->8, 10 (half-up would give 3 and 8)
    assert train_bounds(11, 4).tolist() == [0, 2, 5, 8, 10]


def test_training_draws_hit_both_inclusive_ends_and_nothing_outside():
    rng = np.random.default_rng(0)
    bounds = train_bounds(300, 8)
    draws = np.stack([train_indices(300, 8, rng) for _ in range(4000)])
    assert draws.dtype == np.int64 and draws.shape == (4000, 8)
    for i in range(8):
        lo, hi = bounds[i], bounds[i + 1]
        column = draws[:, i]
        assert column.min() == lo and column.max() == hi
        assert set(np.unique(column).tolist()) == set(range(lo, hi + 1))


def test_adjacent_segments_share_their_boundary_frame():
    rng = np.random.default_rng(1)
    draws = np.stack([train_indices(300, 8, rng) for _ in range(4000)])
    assert (draws[:, 0] == 37).any() and (draws[:, 1] == 37).any()


@pytest.mark.parametrize("n", range(1, 8))
def test_short_videos_repeat_frames_and_stay_in_range(n):
    rng = np.random.default_rng(n)
    for clips in (1, 3, 4):
        got = eval_indices(n, 8, clips)
        assert got.shape == (clips, 8)
        assert got.min() >= 0 and got.max() < n
    one = eval_indices(n, 8, 1)[0]
    assert one.tolist() == [int(np.floor(n / 8 * x)) for x in range(8)]
    assert np.all(np.diff(one) >= 0)
    draws = np.stack([train_indices(n, 8, rng) for _ in range(500)])
    assert draws.min() == 0 and draws.max() == n - 1
    assert set(np.unique(draws).tolist()) == set(range(n))


def test_short_video_eval_negative_offset_wraps_to_last_frame():
    # n=4, T=8, M=3: tick=0.5, offsets floor(linspace(0, -0.5, 3)) = 0, -1, -1
    got = eval_indices(4, 8, 3)
    assert got[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert got[1].tolist() == [3, 3, 0, 0, 1, 1, 2, 2]


def test_seeded_training_is_reproducible_and_seed_dependent():
    a = sample_indices(300, 8, 5, "train", np.random.default_rng(7))
    b = sample_indices(300, 8, 5, "train", np.random.default_rng(7))
    c = sample_indices(300, 8, 5, "train", np.random.default_rng(8))
    assert a.shape == (5, 8) and a.dtype == np.int64
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len({tuple(row) for row in a.tolist()}) > 1  # clips are independent draws


def test_sample_indices_eval_matches_eval_indices():
    assert np.array_equal(sample_indices(300, 8, 3, "eval"), eval_indices(300, 8, 3))


def test_invalid_inputs_raise_value_error():
    with pytest.raises(ValueError, match="at least 1"):
        eval_indices(0, 8, 1)
    with pytest.raises(ValueError, match="at least 1"):
        train_indices(0, 8, np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng"):
        sample_indices(300, 8, 1, "train")
    with pytest.raises(ValueError, match="mode"):
        sample_indices(300, 8, 1, "test")  # type: ignore[arg-type]
