"""bench/scale's generator: the generated table has WDBC's columns and a distribution close to the real one."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from bench.scale import generate
from pipelines.config import load_config
from pipelines.data import canonical_csv


@pytest.fixture(scope="module")
def real_and_fitted():
    text = canonical_csv(load_config(dataset="wdbc").data)
    return generate.read_csv(text), generate.fit_wdbc()


def test_generated_rows_follow_the_real_per_class_distributions(real_and_fitted):
    (names, x, y), table = real_and_fitted
    gx, gy = generate.sample(table, 20_000, seed=1)
    assert table.features == names
    assert abs(gy.mean() - y.mean()) < 0.02  # the class prior (37 % malignant)
    for k in (0, 1):
        real, fake = x[y == k], gx[gy == k]
        scale = real.std(axis=0)
        # Per-class means and medians within a tenth of a standard deviation of the real ones ...
        assert np.all(np.abs(fake.mean(axis=0) - real.mean(axis=0)) < 0.1 * scale)
        assert np.all(np.abs(np.median(fake, axis=0) - np.median(real, axis=0)) < 0.1 * scale)
        # ... spreads close, and the features' dependence kept (radius, perimeter, area move together).
        assert np.all(np.abs(fake.std(axis=0) / scale - 1) < 0.15)
        rank_gap = np.abs(spearmanr(fake[:5000]).correlation - spearmanr(real).correlation)
        assert rank_gap.mean() < 0.05 and rank_gap.max() < 0.2
    # The mass at zero of benign concavities survives (a Gaussian would smear it).
    concavity = names.index("mean_concavity")
    assert abs((gx[:, concavity] == 0).mean() - (x[:, concavity] == 0).mean()) < 0.01
    # The strongest single predictor separates the classes as it does in the real data (AUC ~0.975).
    perimeter = names.index("worst_perimeter")
    assert abs(roc_auc_score(gy, gx[:, perimeter]) - roc_auc_score(y, x[:, perimeter])) < 0.01


def test_generated_rows_stay_in_the_schema_domain_and_are_not_copies(real_and_fitted):
    (_names, x, _y), table = real_and_fitted
    gx, _gy = generate.sample(table, 5_000, seed=2)
    assert np.all(gx >= table.low) and np.all(gx <= table.high)
    real_rows = {tuple(row) for row in np.round(x, 6)}
    assert not any(tuple(row) in real_rows for row in np.round(gx, 6))


def test_the_csv_has_the_canonical_header_and_the_asked_rows(tmp_path, real_and_fitted):
    (names, _x, _y), table = real_and_fitted
    out = tmp_path / "data.csv"
    generate.write_csv(table, 2_500, out, seed=3, chunk=1_000)
    back_names, bx, by = generate.read_csv(out.read_text())
    assert back_names == names and bx.shape == (2_500, len(names)) and set(by) <= {0, 1}
    # Chunks draw different rows (each chunk has its own seed).
    assert not np.array_equal(bx[:1_000], bx[1_000:2_000])
