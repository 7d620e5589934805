"""The clinical statistics against closed forms, scipy and scikit-learn on constructed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from components.clinical_eval import bootstrap, calibration, intervals
from components.clinical_eval.core import (
    INSUFFICIENT,
    OK,
    ClinicalSettings,
    decision_curve,
    evaluate,
)
from pipelines.errors import ConfigError


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _scores(n: int, separation: float, seed: int, prevalence: float = 0.37):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    p = _sigmoid(rng.normal(0, 1, n) + separation * (2 * y - 1))
    return p, y


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (8, 10), (10, 10), (41, 42), (1, 1), (500, 1000)])
def test_clopper_pearson_matches_scipy_beta_quantiles(k, n):
    lower, upper = intervals.clopper_pearson(k, n, 0.95)
    want_lower = 0.0 if k == 0 else stats.beta.ppf(0.025, k, n - k + 1)
    want_upper = 1.0 if k == n else stats.beta.ppf(0.975, k + 1, n - k)
    assert lower == pytest.approx(want_lower, abs=1e-9)
    assert upper == pytest.approx(want_upper, abs=1e-9)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (8, 10), (10, 10), (41, 42), (250, 1000)])
def test_wilson_matches_the_closed_form(k, n):
    z = stats.norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lower, upper = intervals.wilson(k, n)
    assert lower == pytest.approx(max(0.0, centre - half), abs=1e-12)
    assert upper == pytest.approx(min(1.0, centre + half), abs=1e-12)
    # Published value: 8 of 10 gives [0.4902, 0.9433] (Newcombe 1998, table I).
    if (k, n) == (8, 10):
        assert (round(lower, 4), round(upper, 4)) == (0.4902, 0.9433)


def test_a_perfect_score_on_few_cases_cannot_reach_a_high_floor():
    # 20 positives, all detected: the best Wilson lower bound is 20 / (20 + z^2) = 0.839.
    assert intervals.best_lower_bound(20) == pytest.approx(20 / (20 + stats.norm.ppf(0.975) ** 2))
    assert intervals.best_lower_bound(20) < 0.85 < intervals.best_lower_bound(30)
    assert intervals.best_lower_bound(20, method=intervals.CLOPPER_PEARSON) == pytest.approx(
        0.025 ** (1 / 20)
    )


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * y, 1)  # rounded: many ties
    assert bootstrap.auc(scores, y) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert math.isnan(bootstrap.auc(scores, np.ones(300)))


def test_bootstrap_matrix_and_loop_agree_and_are_seeded():
    p, y = _scores(114, 1.5, seed=2)
    fast = bootstrap.auc_interval(p, y, resamples=500, seed=7)
    slow = bootstrap.auc_interval(p, y, resamples=500, seed=7, force_loop=True)
    assert fast == pytest.approx(slow, abs=1e-12)
    assert fast == bootstrap.auc_interval(p, y, resamples=500, seed=7)
    assert fast["lower"] < fast["value"] < fast["upper"]
    assert fast != bootstrap.auc_interval(p, y, resamples=500, seed=8)


def test_stratified_resamples_keep_both_classes():
    y = np.array([1] * 3 + [0] * 100)
    pos_idx, neg_idx, w_pos, w_neg = bootstrap.stratified_draws(y, 1000, 0)
    assert (w_pos.sum(1) == 3).all() and (w_neg.sum(1) == 100).all()
    assert len(pos_idx) == 3 and len(neg_idx) == 100


def test_bootstrap_interval_is_stable_at_the_default_resamples():
    # The Monte-Carlo spread of the lower bound across seeds at 2000 resamples on a WDBC-sized split.
    p, y = _scores(114, 1.5, seed=3)
    lowers = [bootstrap.auc_interval(p, y, resamples=2000, seed=s)["lower"] for s in range(10)]
    assert np.std(lowers) < 0.005


def test_bootstrap_interval_covers_the_truth_at_about_its_level():
    # 200 test splits from one population: the 95 % interval should hold the population AUC most times.
    truth = bootstrap.auc(*_scores(200_000, 1.0, seed=4))
    covered = 0
    for s in range(200):
        p, y = _scores(150, 1.0, seed=100 + s)
        ci = bootstrap.auc_interval(p, y, resamples=400, seed=s)
        covered += ci["lower"] <= truth <= ci["upper"]
    assert 0.88 <= covered / 200 <= 0.99


def test_paired_difference_of_a_model_with_itself_is_exactly_zero():
    p, y = _scores(114, 1.5, seed=5)
    out = bootstrap.paired_difference(
        p, p, y, candidate_threshold=0.5, baseline_threshold=0.5, resamples=500, seed=0
    )
    for metric in ("auc", "sensitivity", "specificity"):
        assert (out[metric]["difference"], out[metric]["lower"], out[metric]["upper"]) == (0.0, 0.0, 0.0)


def test_paired_difference_sees_a_worse_model():
    rng = np.random.default_rng(6)
    p, y = _scores(400, 1.5, seed=6)
    worse = np.clip(p + rng.normal(0, 0.3, len(p)), 0, 1)
    out = bootstrap.paired_difference(
        worse, p, y, candidate_threshold=0.5, baseline_threshold=0.5, resamples=1000, seed=0
    )
    assert out["auc"]["upper"] < 0
    assert out["auc"]["difference"] == pytest.approx(bootstrap.auc(worse, y) - bootstrap.auc(p, y))


def test_calibration_slope_and_intercept_match_an_unpenalised_logistic_fit():
    rng = np.random.default_rng(7)
    p = rng.uniform(0.05, 0.95, 2000)
    y = (rng.random(2000) < p).astype(int)  # calibrated by construction
    # Make the predictions over-confident: the fitted slope must come out below 1.
    skewed = _sigmoid(2.0 * calibration.logit(p) + 0.3)
    fit = calibration.recalibration(skewed, y)
    lp = calibration.logit(skewed).reshape(-1, 1)
    ref = LogisticRegression(penalty=None, tol=1e-10, max_iter=1000).fit(lp, y)
    assert fit["slope"] == pytest.approx(ref.coef_[0, 0], abs=1e-5)
    assert fit["slope"] < 0.7
    # Intercept with the slope fixed at 1: the score equation sum(y - sigmoid(a + lp)) = 0 holds.
    a = fit["intercept"]
    assert np.sum(y - _sigmoid(a + lp[:, 0])) == pytest.approx(0.0, abs=1e-6)


def test_calibration_of_well_calibrated_predictions():
    rng = np.random.default_rng(8)
    p = rng.random(20_000)
    y = (rng.random(20_000) < p).astype(int)
    fit = calibration.calibration_report(p, y)
    assert fit["slope"] == pytest.approx(1.0, abs=0.06)
    assert fit["intercept"] == pytest.approx(0.0, abs=0.05)
    assert fit["ece"] < 0.02 and fit["ici"] < 0.02


def test_ici_and_ece_measure_a_known_offset():
    rng = np.random.default_rng(9)
    truth = rng.uniform(0.2, 0.7, 20_000)
    y = (rng.random(20_000) < truth).astype(int)
    fit = calibration.calibration_report(truth + 0.1, y)  # every prediction 0.1 too high
    assert fit["ici"] == pytest.approx(0.1, abs=0.015)
    assert fit["ece"] == pytest.approx(0.1, abs=0.015)


def test_ece_by_hand():
    p = np.array([0.05, 0.05, 0.95, 0.95])
    y = np.array([0, 1, 1, 1])
    bins = calibration.reliability_bins(p, y, bins=10)
    assert [(b["n"], b["observed"]) for b in bins] == [(2, 0.5), (2, 1.0)]
    assert calibration.expected_calibration_error(bins) == pytest.approx((2 * 0.45 + 2 * 0.05) / 4)


def test_separated_split_has_no_calibration_slope():
    fit = calibration.recalibration(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]))
    assert fit["slope"] is None and fit["converged"] is False


def test_decision_curve_closed_form():
    p = np.array([0.9, 0.8, 0.3, 0.2, 0.6])
    y = np.array([1, 1, 0, 0, 0])
    curve = {round(r["threshold"], 2): r for r in decision_curve(p, y)}
    row = curve[0.5]  # treats rows 0, 1, 4: TP 2, FP 1, odds 1
    assert row["net_benefit"] == pytest.approx(2 / 5 - 1 / 5)
    assert row["treat_all"] == pytest.approx(2 / 5 - 3 / 5)
    assert row["treat_none"] == 0.0
    assert curve[0.25]["net_benefit"] == pytest.approx(2 / 5 - 2 / 5 * (0.25 / 0.75))


def test_slice_below_its_minimum_is_insufficient_evidence():
    p, y = _scores(120, 1.5, seed=10)
    sex = np.array(["female"] * 110 + ["male"] * 10)
    report = evaluate(p, y, 0.5, ClinicalSettings(min_slice_examples=20), features={"sex": sex})
    by_value = {s["value"]: s for s in report["slices"]}
    assert by_value["male"]["status"] == INSUFFICIENT
    assert by_value["male"]["reason"] == "insufficient evidence: n = 10 (< min_slice_examples 20)"
    assert by_value["male"]["metrics"] == {}
    assert by_value["female"]["status"] == OK
    assert (
        by_value["female"]["metrics"]["sensitivity"]["lower"]
        < by_value["female"]["metrics"]["sensitivity"]["value"]
    )
    summary = report["slice_summary"]["sex"]
    assert summary["insufficient_evidence"] == [{"value": "male", "n": 10}]
    assert summary["sensitivity"]["worst"]["value"] == "female"


def test_worst_slice_and_gap():
    rng = np.random.default_rng(11)
    y = np.tile([1, 0], 200)
    site = np.repeat(["a", "b"], 200)
    # Site b's positives are scored no better than chance.
    p = np.where((site == "a") & (y == 1), 0.8, 0.2) + rng.normal(0, 0.05, 400)
    p = np.where((site == "b") & (y == 1), rng.random(400), p).clip(0, 1)
    report = evaluate(p, y, 0.5, ClinicalSettings(resamples=300), features={"site": site})
    summary = report["slice_summary"]["site"]
    assert summary["sensitivity"]["worst"]["value"] == "b"
    sens = {s["value"]: s["metrics"]["sensitivity"]["value"] for s in report["slices"]}
    assert summary["sensitivity"]["max_gap"] == pytest.approx(sens["a"] - sens["b"])
    assert summary["sensitivity"]["max_gap"] > 0.3


def test_report_shape_and_threshold_metrics():
    p, y = _scores(114, 1.5, seed=12)
    report = evaluate(p, y, 0.4, ClinicalSettings(interval="clopper_pearson"))
    assert report["n"] == 114 and report["positives"] == int(y.sum()) and report["threshold"] == 0.4
    sens = report["at_threshold"]["sensitivity"]
    tp = int(((p >= 0.4) & (y == 1)).sum())
    assert sens["value"] == pytest.approx(tp / y.sum())
    assert (sens["lower"], sens["upper"]) == pytest.approx(intervals.clopper_pearson(tp, int(y.sum())))
    assert sens["method"] == "clopper_pearson"
    assert sens["bootstrap"]["lower"] <= sens["value"] <= sens["bootstrap"]["upper"]
    assert set(report["calibration"]) >= {"slope", "intercept", "ece", "ici", "bins"}
    assert report["noninferiority"] is None
    assert report["bootstrap"]["resamples"] == 2000 and report["bootstrap"]["seed"] == 0
    assert len(report["decision_curve"]) == 99


def test_evaluate_refuses_bad_inputs():
    with pytest.raises(ValueError, match="3 probabilities for 2 labels"):
        evaluate(np.array([0.1, 0.2, 0.3]), np.array([0, 1]), 0.5, ClinicalSettings())
    with pytest.raises(ValueError, match="labels must be 0 or 1; found 2"):
        evaluate(np.array([0.1, 0.2]), np.array([0, 2]), 0.5, ClinicalSettings())
    with pytest.raises(ValueError, match=r"not finite at rows \[1\]"):
        evaluate(np.array([0.1, np.nan]), np.array([0, 1]), 0.5, ClinicalSettings())


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"resample": 2000}, "unknown key 'resample'; did you mean 'resamples'"),
        ({"resamples": 50}, "clinical.resamples is 50; use at least 200"),
        ({"confidence": 95}, "clinical.confidence is 95.0; write a level such as 0.95"),
        ({"interval": "exact"}, "clinical.interval is 'exact'; use one of"),
        ({"seed": "x"}, "clinical.seed: expected an integer"),
        ({"min_slice_examples": 0}, "clinical.min_slice_examples: must be >= 0|min_slice_examples must be"),
    ],
)
def test_settings_errors_name_the_key_and_the_fix(raw, match):
    with pytest.raises(ConfigError, match=match):
        ClinicalSettings.from_dict(raw)


def test_config_names_the_top_level_clinical_section_and_the_dataset_override(tmp_path):
    import yaml

    from pipelines.config import DEFAULT_CONFIG, config_from_dict

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    with pytest.raises(ConfigError, match=r"^clinical: unknown key 'resample'; did you mean 'resamples'"):
        config_from_dict({**raw, "clinical": {"resample": 5}})
    raw["datasets"]["wdbc"]["clinical"] = {"interval": "exact"}
    with pytest.raises(ConfigError, match="^datasets.wdbc.clinical: clinical.interval is 'exact'"):
        config_from_dict(raw)
    raw["datasets"]["wdbc"]["clinical"] = {"interval": "clopper_pearson", "resamples": 500}
    cfg = config_from_dict(raw)
    assert cfg.clinical_settings() == ClinicalSettings(resamples=500, interval="clopper_pearson")
    assert cfg.with_dataset("heart").clinical_settings() == ClinicalSettings()
