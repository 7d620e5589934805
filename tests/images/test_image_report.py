"""The image run's report: bootstrap intervals, the most confident errors, and the grid they are drawn in."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipelines.image_report import _auc, bootstrap_intervals, confident_errors, draw_errors


def _scores(n=400, seed=3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    # Rounded: ties between classes, which the rank AUC must count as one half.
    return labels, np.round(np.clip(0.3 * labels + rng.random(n) * 0.7, 0, 1), 2)


def test_rank_auc_equals_sklearn_with_ties():
    labels, scores = _scores()
    assert _auc(labels, scores)[0] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(_auc(np.ones(5), np.arange(5.0))[0])


def test_intervals_hold_the_estimate_and_narrow_with_more_data():
    labels, scores = _scores(400)
    small = bootstrap_intervals(labels, scores, 0.5)
    assert small["auc"].value == pytest.approx(roc_auc_score(labels, scores))
    assert small["accuracy"].value == pytest.approx(np.mean((scores >= 0.5) == labels))
    for interval in small.values():
        assert interval.low < interval.value < interval.high
    big = bootstrap_intervals(*_scores(4000), 0.5)
    assert big["auc"].high - big["auc"].low < small["auc"].high - small["auc"].low
    # Same seed, same resamples: the report is reproducible.
    assert bootstrap_intervals(labels, scores, 0.5) == small


def test_confident_errors_are_the_wrong_answers_furthest_from_the_threshold():
    labels = np.array([1, 0, 1, 0, 1, 0])
    probability = np.array([0.9, 0.95, 0.1, 0.2, 0.45, 0.6])
    # Wrong: 1 (0.45 from the threshold), 2 (0.40), 5 (0.10), 4 (0.05); 0 and 3 are right.
    assert confident_errors(labels, probability, 0.5) == [1, 2, 5, 4]
    assert confident_errors(labels, probability, 0.5, count=1) == [1]
    assert confident_errors(np.array([1, 0]), np.array([0.9, 0.1]), 0.5) == []


def test_the_grid_is_a_png(tmp_path):
    images = [np.full((28, 28), i * 10, np.uint8) for i in range(5)]
    path = draw_errors(tmp_path / "grid.png", images, [f"test-{i:05d}" for i in range(5)], "errors")
    assert path.read_bytes().startswith(b"\x89PNG")
