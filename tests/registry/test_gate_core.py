"""The pure gate core: every branch of evaluate_gate and every refusal of GatePolicy.from_dict."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.registry_gate.core import (
    OVERALL,
    TOLERANCE,
    GatePolicy,
    MetricBound,
    evaluate_gate,
    slice_features,
    slice_name,
)
from pipelines.errors import ConfigError

POLICY = GatePolicy.from_dict(
    {
        "minimums": {"auc": 0.90, "recall": 0.85},
        "maximums": {"brier_score": 0.15},
        "slices": [{"feature": "sex", "minimums": {"recall": 0.80}, "min_examples": 20}],
        "non_inferiority": [{"metric": "auc", "margin": 0.01}, {"metric": "brier_score", "margin": 0.02}],
    }
)


def candidate(auc=0.95, recall=0.90, brier=0.10, female=0.88, male=0.86, female_n=60.0, male_n=60.0):
    return {
        OVERALL: {"auc": auc, "recall": recall, "brier_score": brier, "example_count": 120.0},
        "sex:female": {"recall": female, "example_count": female_n},
        "sex:male": {"recall": male, "example_count": male_n},
    }


CHAMPION = {OVERALL: {"auc": 0.94, "brier_score": 0.11}}


def ids(verdict):
    return {r.criterion for r in verdict.failures}


def test_pass_reports_every_criterion_checked():
    verdict = evaluate_gate(POLICY, candidate(), baseline=CHAMPION, champion="version 3", blessed=True)
    assert verdict.passed, verdict.failures
    assert {r.criterion for r in verdict.results} == {
        "evaluator_blessing",
        "minimum:auc",
        "minimum:recall",
        "maximum:brier_score",
        "slice:sex:female:minimum:recall",
        "slice:sex:male:minimum:recall",
        "non_inferiority:auc",
        "non_inferiority:brier_score",
    }


def test_fail_reports_every_failed_criterion_at_once():
    bad = candidate(auc=0.70, recall=0.50, brier=0.30, female=0.40, male=0.45)
    verdict = evaluate_gate(POLICY, bad, baseline=CHAMPION, champion="version 3", blessed=False)
    assert not verdict.passed
    assert ids(verdict) == {
        "evaluator_blessing",
        "minimum:auc",
        "minimum:recall",
        "maximum:brier_score",
        "slice:sex:female:minimum:recall",
        "slice:sex:male:minimum:recall",
        "non_inferiority:auc",
        "non_inferiority:brier_score",
    }
    messages = " | ".join(r.message for r in verdict.failures)
    assert "auc = 0.7000 on slice Overall is below the minimum 0.9000" in messages
    assert "brier_score = 0.3000 on slice Overall is above the maximum 0.1500" in messages
    assert "recall = 0.4000 on slice sex:female is below the minimum 0.8000" in messages


@pytest.mark.parametrize(
    ("overrides", "criterion"),
    [
        ({"auc": 0.90}, "minimum:auc"),
        ({"recall": 0.85}, "minimum:recall"),
        ({"brier": 0.15}, "maximum:brier_score"),
        ({"female": 0.80}, "slice:sex:female:minimum:recall"),
    ],
    ids=["auc-at-minimum", "recall-at-minimum", "brier-at-maximum", "slice-at-minimum"],
)
def test_equality_boundary_passes(overrides, criterion):
    verdict = evaluate_gate(POLICY, candidate(**overrides), baseline=CHAMPION, champion="v3", blessed=True)
    result = next(r for r in verdict.results if r.criterion == criterion)
    assert result.passed, result.message


def test_just_below_boundary_fails():
    verdict = evaluate_gate(POLICY, candidate(auc=0.8999), champion=None, blessed=True)
    assert ids(verdict) == {"minimum:auc"}


def test_float32_rounding_at_the_boundary_passes():
    # TFMA computes in float32: a model at exactly 0.9 comes back as 0.8999999761581421.
    verdict = evaluate_gate(POLICY, candidate(auc=0.8999999761581421), champion=None, blessed=True)
    assert verdict.passed, verdict.failures


def test_non_inferiority_equality_boundary_passes():
    # Champion AUC 0.94, margin 0.01: 0.93 is exactly the limit.
    verdict = evaluate_gate(POLICY, candidate(auc=0.93), baseline=CHAMPION, champion="v3", blessed=True)
    assert "non_inferiority:auc" not in ids(verdict)
    assert "non_inferiority:auc" in ids(
        evaluate_gate(POLICY, candidate(auc=0.9299), baseline=CHAMPION, champion="v3", blessed=True)
    )


def test_non_inferiority_fail_names_champion_margin_and_limit():
    verdict = evaluate_gate(
        POLICY, candidate(auc=0.91, brier=0.14), baseline=CHAMPION, champion="version 3", blessed=True
    )
    failures = {r.criterion: r.message for r in verdict.failures}
    assert set(failures) == {"non_inferiority:auc", "non_inferiority:brier_score"}
    assert "vs champion version 3 0.9400" in failures["non_inferiority:auc"]
    assert "needs >= 0.9300" in failures["non_inferiority:auc"]
    # Lower is better for the Brier score: the limit is champion + margin.
    assert "needs <= 0.1300" in failures["non_inferiority:brier_score"]


def test_missing_metric_fails_and_lists_what_is_available():
    metrics = candidate()
    del metrics[OVERALL]["recall"]
    verdict = evaluate_gate(POLICY, metrics, baseline=CHAMPION, champion="v3", blessed=True)
    failure = next(r for r in verdict.failures if r.criterion == "minimum:recall")
    assert "recall is missing from the evaluation of slice Overall" in failure.message
    assert "available: auc, brier_score, example_count" in failure.message


def test_nan_metric_fails():
    verdict = evaluate_gate(POLICY, candidate(auc=math.nan), baseline=CHAMPION, champion="v3", blessed=True)
    messages = {r.criterion: r.message for r in verdict.failures}
    assert "auc is nan on slice Overall; an undefined metric cannot pass" in messages["minimum:auc"]
    assert "non_inferiority:auc" in messages


def test_empty_evaluation_fails_every_criterion():
    verdict = evaluate_gate(POLICY, {}, baseline=None, champion=None, blessed=None)
    assert not verdict.passed
    assert "evaluator_blessing" in ids(verdict)
    assert "slice:sex:recall" in ids(verdict)


def test_no_champion_skips_non_inferiority_with_a_note():
    verdict = evaluate_gate(POLICY, candidate(), baseline=None, champion=None, blessed=True)
    assert verdict.passed
    assert "no champion yet: non-inferiority was not assessed." in verdict.notes
    assert not any(r.criterion.startswith("non_inferiority") for r in verdict.results)


def test_champion_without_rescore_fails_non_inferiority():
    verdict = evaluate_gate(POLICY, candidate(), baseline=None, champion="version 3", blessed=True)
    assert ids(verdict) == {"non_inferiority:auc", "non_inferiority:brier_score"}
    assert all(
        "champion version 3 was not re-scored on this test split" in r.message for r in verdict.failures
    )


def test_baseline_missing_the_metric_fails():
    verdict = evaluate_gate(
        POLICY, candidate(), baseline={OVERALL: {"auc": 0.9}}, champion="v3", blessed=True
    )
    failure = next(r for r in verdict.failures)
    assert failure.criterion == "non_inferiority:brier_score"
    assert "brier_score is missing from the evaluation of champion v3's slice Overall" in failure.message


def test_per_slice_failure_names_the_slice():
    verdict = evaluate_gate(POLICY, candidate(male=0.79), baseline=CHAMPION, champion="v3", blessed=True)
    assert ids(verdict) == {"slice:sex:male:minimum:recall"}
    assert "on slice sex:male is below the minimum 0.8000" in verdict.failures[0].message


def test_slice_feature_absent_fails():
    metrics = {OVERALL: candidate()[OVERALL]}
    verdict = evaluate_gate(POLICY, metrics, baseline=CHAMPION, champion="v3", blessed=True)
    assert ids(verdict) == {"slice:sex:recall"}
    assert "add SlicingSpec(feature_keys=['sex'])" in verdict.failures[0].message


def test_small_slice_is_noted_not_gated():
    verdict = evaluate_gate(
        POLICY, candidate(male=0.1, male_n=5.0), baseline=CHAMPION, champion="v3", blessed=True
    )
    assert verdict.passed
    assert any("slice sex:male has 5 test examples (< min_examples 20)" in n for n in verdict.notes)


def test_slice_without_example_count_fails_when_min_examples_is_set():
    metrics = candidate()
    del metrics["sex:male"]["example_count"]
    verdict = evaluate_gate(POLICY, metrics, baseline=CHAMPION, champion="v3", blessed=True)
    assert ids(verdict) == {"slice:sex:male:example_count"}


@pytest.mark.parametrize(
    ("blessed", "passed", "text"),
    [
        (True, True, "blessed this model"),
        (False, False, "did not bless"),
        (None, False, "no Evaluator blessing was found"),
    ],
    ids=["blessed", "not-blessed", "no-blessing"],
)
def test_evaluator_blessing(blessed, passed, text):
    verdict = evaluate_gate(POLICY, candidate(), baseline=CHAMPION, champion="v3", blessed=blessed)
    result = next(r for r in verdict.results if r.criterion == "evaluator_blessing")
    assert result.passed is passed
    assert text in result.message


def test_blessing_not_required_is_not_checked():
    policy = dataclasses.replace(POLICY, require_evaluator_blessing=False)
    verdict = evaluate_gate(policy, candidate(), baseline=CHAMPION, champion="v3", blessed=False)
    assert verdict.passed


def test_verdict_without_results_does_not_pass():
    # from_dict refuses such a policy; the core still never reads "nothing checked" as "passed".
    policy = GatePolicy(overall=(), require_evaluator_blessing=False)
    verdict = evaluate_gate(policy, candidate())
    assert verdict.results == ()
    assert verdict.passed is False


@given(
    value=st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
    threshold=st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
)
def test_minimum_passes_exactly_when_value_reaches_threshold(value, threshold):
    policy = GatePolicy(overall=(MetricBound("auc", minimum=threshold),), require_evaluator_blessing=False)
    verdict = evaluate_gate(policy, {OVERALL: {"auc": value}})
    assert verdict.passed is (value >= threshold - TOLERANCE)


def test_slice_names_round_trip():
    assert slice_name(()) == OVERALL
    assert slice_name((("sex", b"female"),)) == "sex:female"
    assert slice_features(slice_name((("sex", "f"), ("age", 40)))) == ("sex", "age")
    assert slice_features(OVERALL) == ()


# ---- GatePolicy.from_dict -------------------------------------------------------------------------


def test_from_dict_round_trips():
    assert GatePolicy.from_dict(POLICY.to_dict()) == POLICY
    assert POLICY.digest() == GatePolicy.from_dict(POLICY.to_dict()).digest()
    assert POLICY.metrics() == {"auc", "recall", "brier_score"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"minimums": {"auc": 0.9}, "minimun": {}},
            r"gate: unknown key 'minimun'; did you mean 'minimums'\?",
        ),
        (
            {"minimums": {"auc": 0.9}, "slices": [{"feature": "sex", "minimum": {"recall": 0.8}}]},
            r"gate.slices\[0\]: unknown key 'minimum'; did you mean 'minimums'\?",
        ),
        (
            {"minimums": {"auc": 0.9}, "non_inferiority": [{"metric": "auc", "margn": 0.01}]},
            r"gate.non_inferiority\[0\]: unknown key 'margn'; did you mean 'margin'\?",
        ),
        ({"minimums": {"auc": "high"}}, r"gate.minimums.auc: expected a number, got str 'high'"),
        ({"minimums": {"auc": True}}, r"gate.minimums.auc: expected a number, got bool"),
        ({"minimums": {"auc": 90}}, r"gate.minimums.auc: 90.0 is outside \[0, 1\].*write a fraction"),
        ({"minimums": {"auc": 0.9}, "maximums": {"auc": 0.8}}, r"auc minimum 0.9 is above its maximum 0.8"),
        ({}, r"gate: no absolute bound under 'minimums' or 'maximums'"),
        ({"non_inferiority": [{"metric": "auc", "margin": 0.01}]}, r"no absolute bound"),
        (
            {"minimums": {"auc": 0.9}, "non_inferiority": [{"metric": "lift", "margin": 0.1}]},
            r"direction of metric 'lift' is not known; add `higher_is_better: true`",
        ),
        (
            {"minimums": {"auc": 0.9}, "non_inferiority": [{"metric": "auc", "margin": -0.1}]},
            r"margin: must be >= 0",
        ),
        ({"minimums": {"auc": 0.9}, "non_inferiority": [{"metric": "auc"}]}, r"missing 'margin'"),
        ({"minimums": {"auc": 0.9}, "slices": [{"minimums": {"recall": 0.8}}]}, r"missing 'feature'"),
        ({"minimums": {"auc": 0.9}, "slices": [{"feature": "sex"}]}, r"slice criterion for 'sex' has no"),
        ({"minimums": {"auc": 0.9}, "slices": {"feature": "sex"}}, r"gate.slices: expected a list"),
        ({"minimums": [0.9]}, r"gate.minimums: expected a mapping"),
        ({"minimums": {"auc": 0.9}, "require_evaluator_blessing": "yes"}, r"expected true or false"),
        (
            {
                "minimums": {"auc": 0.9},
                "slices": [{"feature": "sex", "minimums": {"recall": 0.8}, "min_examples": 0}],
            },
            r"min_examples: must be >= 1",
        ),
    ],
    ids=[
        "unknown-top-key",
        "unknown-slice-key",
        "unknown-ni-key",
        "string-threshold",
        "bool-threshold",
        "percent-not-fraction",
        "min-above-max",
        "empty-policy",
        "only-non-inferiority",
        "unknown-direction",
        "negative-margin",
        "missing-margin",
        "missing-feature",
        "slice-without-bounds",
        "slices-not-a-list",
        "minimums-not-a-mapping",
        "blessing-not-bool",
        "min-examples-zero",
    ],
)
def test_from_dict_refuses(raw, message):
    with pytest.raises(ConfigError, match=message):
        GatePolicy.from_dict(raw)


def test_from_dict_explicit_direction_for_unknown_metric():
    policy = GatePolicy.from_dict(
        {
            "minimums": {"auc": 0.9},
            "non_inferiority": [{"metric": "lift", "margin": 0.1, "higher_is_better": True}],
        }
    )
    assert policy.non_inferiority[0].higher_is_better is True
