"""Retrieval metrics: hand-computed cases (one is scikit-learn's documented example, whose AP the
current average_precision_score gives as 0.83), and a brute-force AP straight from the definition
AP = sum_n (R_n - R_(n-1)) P_n over thresholds, on scores full of ties."""

from __future__ import annotations

import numpy as np
import pytest

from mote.pipeline.errors import ConfigError
from mote.pipeline.search.search_metrics import average_precision, precision_at_k, retrieval_metrics


def ap_by_thresholds(scores: np.ndarray, relevant: np.ndarray) -> float:
    """The definition, threshold by threshold, with plain Python sets."""
    positives = {i for i, r in enumerate(relevant) if r}
    total, last_recall = 0.0, 0.0
    for threshold in sorted(set(scores.tolist()), reverse=True):
        kept = {i for i, s in enumerate(scores) if s >= threshold}
        precision = len(kept & positives) / len(kept)
        recall = len(kept & positives) / len(positives)
        total += (recall - last_recall) * precision
        last_recall = recall
    return total


def test_scikit_learns_example() -> None:
    ap = average_precision(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    assert ap == pytest.approx((1 / 1 + 2 / 3) / 2)  # 0.8333: ranks 1 and 3 are relevant


def test_tied_videos_count_as_one_threshold() -> None:
    # 0.5 keeps two videos (one relevant): P 1/2 at R 1/2; 0.1 adds the other: P 2/3 at R 1.
    ap = average_precision(np.array([0.5, 0.5, 0.1]), np.array([0, 1, 1]))
    assert ap == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    # The same videos in the other order within the tie give the same AP.
    assert average_precision(np.array([0.5, 0.5, 0.1]), np.array([1, 0, 1])) == pytest.approx(ap)


def test_ap_matches_the_definition_on_random_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        scores = rng.integers(0, 6, size=n).astype(np.float32) / 5  # few values: many ties
        relevant = rng.random(n) < 0.3
        if not relevant.any():
            assert np.isnan(average_precision(scores, relevant))
            continue
        assert average_precision(scores, relevant) == pytest.approx(
            ap_by_thresholds(scores, relevant)
        )


def test_precision_at_k_divides_by_k() -> None:
    rows = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    labels = np.array([0, 0, 1, 1])
    p = precision_at_k(rows, labels, np.array([0, 0]), 2)
    np.testing.assert_allclose(p, [100.0, 0.0])
    np.testing.assert_allclose(precision_at_k(rows, labels, np.array([1, 1]), 4), [50.0, 50.0])


def test_each_class_name_is_a_query() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    scores = np.array(
        [
            [0.9, 0.1, 0.8, 0.2, 0.0],  # class 0: ranks 1 and 4 -> AP (1 + 2/4) / 2
            [0.3, 0.3, 0.3, 0.9, 0.0],  # class 1: row 3 first, then a three-way tie
            [0.0, 0.0, 0.0, 0.0, 0.0],  # class 2: its video ties with all -> P 1/5
            [0.5, 0.4, 0.3, 0.2, 0.1],  # class 3: no video; left out
        ]
    )
    got = retrieval_metrics(scores, labels, ks=(1, 2))
    want_ap = [0.75, 0.5 * 1 + 0.5 * 2 / 4, 0.2]
    np.testing.assert_allclose(got["ap"][:3], want_ap)
    assert np.isnan(got["ap"][3]) and got["queries"] == 3
    assert got["map"] == pytest.approx(100 * np.mean(want_ap))
    # Top 1: rows 0, 3, 0 (the tie of query 2 goes to the lower row) -> hits 1, 1, 0.
    assert got["p@1"] == pytest.approx(100 * 2 / 3)
    # Top 2: rows {0, 2}, {3, 0}, {0, 1} -> hits 1, 1, 0 of 2.
    assert got["p@2"] == pytest.approx(100 * (0.5 + 0.5 + 0) / 3)


def test_scores_of_the_wrong_shape_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"scores \(2, 3\) must be \[queries 2, videos 4\]"):
        retrieval_metrics(np.zeros((2, 3)), np.zeros(4, int))
