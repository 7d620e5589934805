"""The gate's clinical criteria on constructed evaluations: every branch, passing and failing."""

from __future__ import annotations

import numpy as np
import pytest

from components.clinical_eval.core import ClinicalSettings, evaluate
from components.registry_gate.core import OVERALL, GatePolicy, evaluate_gate
from pipelines.errors import ConfigError

CANDIDATE = {OVERALL: {"auc": 0.99, "recall": 0.95}}
SETTINGS = ClinicalSettings(resamples=500, min_slice_examples=20)


def _policy(clinical: dict) -> GatePolicy:
    return GatePolicy.from_dict(
        {"minimums": {"auc": 0.5}, "require_evaluator_blessing": False, "clinical": clinical}
    )


def _population(n: int, seed: int, noise: float = 1.5, prevalence: float = 0.4):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(0, noise, n) + 2.5 * (2 * y - 1))))
    return p, y


def _verdict(clinical: dict, report: dict | None, champion: str | None = None):
    return evaluate_gate(_policy(clinical), CANDIDATE, champion=champion, clinical=report)


def _by_name(verdict):
    return {r.criterion: r for r in verdict.results}


def test_a_strong_model_on_a_large_split_passes_every_clinical_criterion():
    p, y = _population(1000, 0)
    report = evaluate(p, y, 0.5, SETTINGS)
    verdict = _verdict(
        {
            "min_test_examples": 100,
            "min_positives": 30,
            "lower_bounds": {"auc": 0.95, "sensitivity": 0.9, "specificity": 0.9},
            "calibration": {"min_slope": 0.3, "max_slope": 3.0, "max_abs_intercept": 1.0, "max_ece": 0.2},
        },
        report,
    )
    assert verdict.passed, [f.message for f in verdict.failures]
    assert {r.criterion for r in verdict.results} == {
        "minimum:auc",
        "clinical:min_test_examples",
        "clinical:min_positives",
        "clinical:lower_bound:auc",
        "clinical:lower_bound:sensitivity",
        "clinical:lower_bound:specificity",
        "clinical:calibration:min_slope",
        "clinical:calibration:max_slope",
        "clinical:calibration:max_abs_intercept",
        "clinical:calibration:max_ece",
    }
    assert "lower bound" in _by_name(verdict)["clinical:lower_bound:auc"].message


def test_tiny_test_split_with_a_perfect_score_fails_with_insufficient_evidence():
    # AUC 1.000 on 83 rows: the point estimate would clear any minimum; the claim is not supported.
    y = np.array([1] * 30 + [0] * 53)
    p = np.where(y == 1, 0.9, 0.1)
    report = evaluate(p, y, 0.5, SETTINGS)
    assert report["auc"]["value"] == 1.0
    verdict = _verdict({"min_test_examples": 100, "lower_bounds": {"auc": 0.97}}, report)
    assert not verdict.passed
    failure = _by_name(verdict)["clinical:min_test_examples"]
    assert not failure.passed
    assert failure.message.startswith("insufficient evidence: n = 83 test examples")


def test_a_floor_the_split_cannot_reach_even_when_perfect_is_insufficient_evidence():
    y = np.array([1] * 20 + [0] * 200)
    p = np.where(y == 1, 0.9, 0.1)  # every positive found
    report = evaluate(p, y, 0.5, SETTINGS)
    result = _by_name(_verdict({"lower_bounds": {"sensitivity": 0.9}}, report))[
        "clinical:lower_bound:sensitivity"
    ]
    assert not result.passed
    assert result.message.startswith("insufficient evidence: n = 20 cases for sensitivity")
    assert "would be 0.8389" in result.message


def test_a_lower_bound_below_the_floor_is_not_a_candidate_though_the_point_estimate_clears_it():
    y = np.array([1] * 60 + [0] * 140)
    p = np.where(y == 1, 0.9, 0.1)
    p[:4] = 0.2  # sensitivity 56/60 = 0.933, Wilson lower bound 0.84
    report = evaluate(p, y, 0.5, SETTINGS)
    sens = report["at_threshold"]["sensitivity"]
    assert sens["value"] > 0.9 > sens["lower"]
    result = _by_name(_verdict({"lower_bounds": {"sensitivity": 0.9}}, report))[
        "clinical:lower_bound:sensitivity"
    ]
    assert not result.passed
    assert "lower bound 0.8" in result.message and "is below the floor 0.9000" in result.message
    assert result.observed == pytest.approx(sens["lower"])


@pytest.mark.parametrize(
    ("bound", "value", "passes"),
    [
        ({"min_slope": 0.8}, 0.5, False),
        ({"min_slope": 0.4}, 0.5, True),
        ({"max_slope": 1.2}, 1.5, False),
        ({"max_abs_intercept": 0.2}, -0.3, False),
        ({"max_abs_intercept": 0.5}, -0.3, True),
        ({"max_ece": 0.05}, 0.08, False),
        ({"max_ici": 0.05}, 0.03, True),
    ],
)
def test_calibration_bounds(bound, value, passes):
    name = {"min_slope": "slope", "max_slope": "slope", "max_abs_intercept": "intercept"}.get(
        next(iter(bound)), next(iter(bound)).removeprefix("max_")
    )
    report = {"n": 200, "positives": 80, "calibration": {name: value}}
    result = _by_name(_verdict({"calibration": bound}, report))[f"clinical:calibration:{next(iter(bound))}"]
    assert result.passed is passes
    assert f"calibration {name} = " in result.message


def test_an_undefined_calibration_slope_fails():
    report = {"n": 200, "positives": 80, "calibration": {"slope": None, "intercept": None}}
    result = _by_name(_verdict({"calibration": {"min_slope": 0.5}}, report))["clinical:calibration:min_slope"]
    assert not result.passed and "perfectly separated" in result.message


def _sliced(seed: int = 1, small_group: int = 200, weak_site: bool = False):
    p, y = _population(400 + small_group, seed)
    group = np.array(["a"] * 400 + ["b"] * small_group)
    if weak_site:
        rng = np.random.default_rng(seed)
        weak = (group == "b") & (y == 1)
        p[weak] = rng.uniform(0.2, 0.8, weak.sum())
    return evaluate(p, y, 0.5, SETTINGS, features={"site": group})


def test_slice_below_its_minimum_count_fails_with_insufficient_evidence():
    report = _sliced(small_group=12)
    verdict = _verdict({"slices": [{"feature": "site", "worst": {"sensitivity": 0.5}}]}, report)
    result = _by_name(verdict)["clinical:slice:site:b:insufficient_evidence"]
    assert not result.passed and not verdict.passed
    assert "insufficient evidence: n = 12 (< min_slice_examples 20)" in result.message
    assert _by_name(verdict)["clinical:slice:site:worst:sensitivity"].passed  # site a alone is fine


def test_worst_slice_below_its_floor_is_not_a_candidate():
    report = _sliced(weak_site=True)
    verdict = _verdict(
        {"slices": [{"feature": "site", "worst": {"sensitivity": 0.8}, "max_gap": {"sensitivity": 0.1}}]},
        report,
    )
    worst = _by_name(verdict)["clinical:slice:site:worst:sensitivity"]
    gap = _by_name(verdict)["clinical:slice:site:max_gap:sensitivity"]
    assert not worst.passed and "worst slice site=b" in worst.message
    assert not gap.passed and "above the maximum 0.1000" in gap.message


def test_equal_slices_pass_worst_and_gap():
    report = _sliced()
    verdict = _verdict(
        {"slices": [{"feature": "site", "worst": {"auc": 0.9}, "max_gap": {"auc": 0.1}}]}, report
    )
    assert verdict.passed, [f.message for f in verdict.failures]


def test_a_bounded_feature_missing_from_the_evaluation_fails():
    report = _sliced()
    result = _by_name(_verdict({"slices": [{"feature": "sex", "worst": {"auc": 0.9}}]}, report))
    assert not result["clinical:slice:sex:missing"].passed


def _paired_report(shift: float, seed: int = 3):
    p, y = _population(600, seed)
    rng = np.random.default_rng(seed)
    # The champion is a little noisier than the candidate; the candidate loses `shift` of score on
    # some positives.
    champion = np.clip(p + rng.normal(0, 0.02, len(p)), 0, 1)
    candidate = p.copy()
    candidate[y == 1] = np.clip(candidate[y == 1] - shift * rng.random((y == 1).sum()), 0, 1)
    return evaluate(candidate, y, 0.5, SETTINGS, baseline=(champion, 0.5))


def test_paired_non_inferiority_accepts_a_challenger_within_the_margin():
    report = _paired_report(shift=0.0)
    result = _by_name(_verdict({"non_inferiority": [{"metric": "auc", "margin": 0.02}]}, report, "version 1"))
    assert result["clinical:non_inferiority:auc"].passed
    assert "non-inferior within margin 0.0200" in result["clinical:non_inferiority:auc"].message


def test_paired_non_inferiority_refuses_a_challenger_worse_by_more_than_the_margin():
    report = _paired_report(shift=0.9)
    sens = report["noninferiority"]["metrics"]["sensitivity"]
    assert sens["upper"] < -0.05  # the candidate misses clearly more positives on the same rows
    result = _by_name(
        _verdict({"non_inferiority": [{"metric": "sensitivity", "margin": 0.05}]}, report, "version 1")
    )["clinical:non_inferiority:sensitivity"]
    assert not result.passed
    assert "cannot rule out a loss larger than the margin 0.0500" in result.message


def test_paired_non_inferiority_without_a_paired_score_fails_and_without_champion_is_noted():
    p, y = _population(300, 4)
    report = evaluate(p, y, 0.5, SETTINGS)
    policy = {"non_inferiority": [{"metric": "auc", "margin": 0.02}]}
    result = _by_name(_verdict(policy, report, "version 2"))["clinical:non_inferiority:auc"]
    assert not result.passed and "was not scored on the same test rows" in result.message
    verdict = _verdict(policy, report, None)
    assert verdict.passed and "paired non-inferiority was not assessed" in verdict.notes[0]


def test_no_clinical_evaluation_fails_every_clinical_policy():
    verdict = _verdict({"lower_bounds": {"auc": 0.9}}, None)
    assert not verdict.passed
    assert "no clinical evaluation was found" in verdict.failures[0].message


def test_policy_round_trips_and_old_policies_keep_their_digest():
    raw = {
        "min_test_examples": 100,
        "min_positives": 30,
        "lower_bounds": {"auc": 0.95},
        "calibration": {"max_ece": 0.1},
        "slices": [{"feature": "sex", "worst": {"auc": 0.8}, "max_gap": {"auc": 0.1}}],
        "non_inferiority": [{"metric": "auc", "margin": 0.02}],
    }
    policy = _policy(raw)
    assert GatePolicy.from_dict(policy.to_dict()) == policy
    plain = GatePolicy.from_dict({"minimums": {"auc": 0.5}})
    assert "clinical" not in plain.to_dict()
    assert plain.digest() != policy.digest()


@pytest.mark.parametrize(
    ("clinical", "match"),
    [
        ({"lower_bound": {"auc": 0.9}}, "unknown key 'lower_bound'; did you mean 'lower_bounds'"),
        ({"lower_bounds": {"auc": 95}}, r"lower_bounds.auc: 95.0 is outside \[0, 1\]"),
        ({"lower_bounds": {"accuracy": 0.9}}, "unknown key 'accuracy'"),
        ({"calibration": {"max_ece": -0.1}}, "max_ece: must be >= 0"),
        ({"calibration": {"min_slope": 1.5, "max_slope": 1.2}}, "min_slope 1.5 is above max_slope 1.2"),
        ({"slices": [{"worst": {"auc": 0.8}}]}, "missing 'feature'"),
        ({"slices": [{"feature": "sex"}]}, "bound the slices of 'sex'"),
        ({"non_inferiority": [{"metric": "brier", "margin": 0.1}]}, "'brier' is not one of"),
        ({"non_inferiority": [{"metric": "auc", "margin": 2}]}, r"margin: 2.0 must be in \[0, 1\)"),
        ({"min_test_examples": "100"}, "min_test_examples: expected an integer"),
        ({}, "the section is empty"),
    ],
)
def test_clinical_policy_errors_name_the_key_and_the_fix(clinical, match):
    with pytest.raises(ConfigError, match=match):
        _policy(clinical)


def test_run_summary_names_intervals_calibration_slices_and_the_paired_comparison():
    from pipelines.clinical_report import for_gate, summary_lines

    report = _sliced(small_group=12)
    text = "\n".join(summary_lines(report))
    assert text.startswith("Clinical evaluation (95% intervals; n = 412,")
    assert "sensitivity " in text and "calibration: slope " in text
    assert "slice site=b: insufficient evidence: n = 12 (< min_slice_examples 20)" in text
    paired = _paired_report(shift=0.0)
    assert "vs baseline, same rows: auc +0.0" in "\n".join(summary_lines(paired))
    assert for_gate(paired, paired_with_champion=False)["noninferiority"] is None
    assert for_gate(paired, paired_with_champion=True)["noninferiority"] == paired["noninferiority"]
