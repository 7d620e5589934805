"""The registry gate: decides, on plain numbers, whether a registered model version may become `candidate`.

Pure: metrics in, a verdict out. No MLflow, no TensorFlow, no I/O. The registry shell
(`pipelines.registry.register_and_gate`) reads the TFMA result and the champion, calls `evaluate_gate` and
writes the verdict as tags; everything that decides lives here so each branch is unit-tested directly.

A verdict lists *every* failed criterion (not the first), because a reviewer fixing one threshold at a
time, one pipeline run per fix, is how bad models end up rubber-stamped.

Bounds are inclusive: a metric equal to its minimum passes. Comparisons allow `TOLERANCE` (1e-6) of
rounding, since TFMA computes in float32 and a model at exactly 0.9 comes back as 0.89999998; a real
shortfall (0.8999) still fails.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from components.registry_gate.clinical import ClinicalCriteria, check_clinical
from components.registry_gate.dictcfg import as_bool, as_float, as_int, as_list, as_str, check_keys
from schemas.errors import ConfigError

# Name of the slice holding metrics over the whole test split.
OVERALL = "Overall"
TOLERANCE = 1e-6

# Metrics whose direction is known; any other metric in a non-inferiority criterion needs
# `higher_is_better` spelled out, since guessing the direction wrong inverts the gate.
HIGHER_IS_BETTER = frozenset(
    {
        "auc",
        "auc_precision_recall",
        "binary_accuracy",
        "accuracy",
        "precision",
        "recall",
        "sensitivity",
        "specificity",
        "f1_score",
        "fbeta_score",
    }
)
LOWER_IS_BETTER = frozenset(
    {
        "brier_score",
        "mean_squared_error",
        "mean_absolute_error",
        "loss",
        "binary_crossentropy",
        "expected_calibration_error",
    }
)
# Metrics that live in [0, 1]: a threshold outside is a typo (90 for 0.90) that would make the gate
# impossible (or trivial) to pass.
UNIT_INTERVAL = HIGHER_IS_BETTER | {"brier_score", "expected_calibration_error"}

# {slice name: {metric name: value}}; the whole test split is under OVERALL. Slice names are
# "feature:value", crosses joined with "&" (see `slice_name`).
SliceMetrics = Mapping[str, Mapping[str, float]]


def slice_name(columns: tuple[tuple[str, Any], ...] | list[tuple[str, Any]]) -> str:
    """Returns the slice name for TFMA slice columns, e.g. (("sex", "female"),) -> "sex:female"."""
    if not columns:
        return OVERALL
    parts = []
    for feature, value in columns:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        parts.append(f"{feature}:{value}")
    return "&".join(parts)


def slice_features(name: str) -> tuple[str, ...]:
    """Returns the features a slice is keyed on; () for OVERALL."""
    if name == OVERALL:
        return ()
    return tuple(part.split(":", 1)[0] for part in name.split("&"))


@dataclasses.dataclass(frozen=True)
class MetricBound:
    """An inclusive bound on one metric.

    Attributes:
        metric: TFMA metric name, e.g. "auc" or "recall" (sensitivity at the operating threshold).
        minimum: Lowest acceptable value, or None.
        maximum: Highest acceptable value, or None (for lower-is-better metrics such as "brier_score").
    """

    metric: str
    minimum: float | None = None
    maximum: float | None = None


@dataclasses.dataclass(frozen=True)
class SliceCriterion:
    """Bounds applied to every slice of one feature (e.g. each value of `sex`).

    Attributes:
        feature: The slicing feature, as in the Evaluator's `SlicingSpec(feature_keys=[feature])`.
        bounds: Bounds each slice must meet.
        min_examples: Slices with fewer test examples are reported as not assessed rather than gated:
            a recall over 3 patients is noise, and the note keeps the gap visible to the reviewer.
    """

    feature: str
    bounds: tuple[MetricBound, ...]
    min_examples: int = 1


@dataclasses.dataclass(frozen=True)
class NonInferiority:
    """The candidate may be worse than the champion on `metric` by at most `margin`.

    Attributes:
        metric: Metric compared on the overall test split.
        margin: Largest tolerated loss (absolute, in the metric's units).
        higher_is_better: Direction of the metric.
    """

    metric: str
    margin: float
    higher_is_better: bool


@dataclasses.dataclass(frozen=True)
class GatePolicy:
    """What a model version must meet to become `candidate`.

    Attributes:
        overall: Absolute bounds on the overall test split.
        slices: Per-slice bounds.
        non_inferiority: Comparisons against the current champion re-scored on the same test split.
        require_evaluator_blessing: Also require the TFX Evaluator's own blessing.
        clinical: Criteria on the clinical evaluation's intervals (`components.registry_gate.clinical`),
            or None.
    """

    overall: tuple[MetricBound, ...]
    slices: tuple[SliceCriterion, ...] = ()
    non_inferiority: tuple[NonInferiority, ...] = ()
    require_evaluator_blessing: bool = True
    clinical: ClinicalCriteria | None = None

    _KEYS = ("minimums", "maximums", "slices", "non_inferiority", "require_evaluator_blessing", "clinical")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str = "gate") -> GatePolicy:
        """Builds a policy from the `gate:` section of the config.

        Example::

            minimums: {auc: 0.90, recall: 0.85}
            maximums: {brier_score: 0.15}
            slices:
              - {feature: sex, minimums: {recall: 0.80}, min_examples: 20}
            non_inferiority:
              - {metric: auc, margin: 0.01}
            require_evaluator_blessing: true
            clinical: {min_test_examples: 100, lower_bounds: {auc: 0.95}}   # see registry_gate.clinical

        Raises:
            ConfigError: On unknown keys (with a did-you-mean hint), wrong types, contradictory or
                out-of-range thresholds, or a policy without any absolute bound.
        """
        check_keys(d, cls._KEYS, path)
        overall = _bounds(d.get("minimums", {}), d.get("maximums", {}), path)
        if not overall:
            raise ConfigError(
                f"{path}: no absolute bound under 'minimums' or 'maximums'; the first model (no champion to "
                f"compare with) would pass unchecked. Add e.g. `minimums: {{auc: 0.8, recall: 0.8}}`."
            )
        slices_raw = as_list(d.get("slices", []), f"{path}.slices", "feature, minimums, ...")
        slices = tuple(_slice_criterion(s, f"{path}.slices[{i}]") for i, s in enumerate(slices_raw))
        ni_raw = as_list(d.get("non_inferiority", []), f"{path}.non_inferiority", "metric, margin")
        non_inferiority = tuple(
            _non_inferiority(n, f"{path}.non_inferiority[{i}]") for i, n in enumerate(ni_raw)
        )
        blessing = as_bool(d.get("require_evaluator_blessing", True), f"{path}.require_evaluator_blessing")
        clinical = None
        if d.get("clinical") is not None:
            clinical = ClinicalCriteria.from_dict(d["clinical"], f"{path}.clinical")
        return cls(overall, slices, non_inferiority, blessing, clinical)

    def to_dict(self) -> dict[str, Any]:
        """Returns the policy in the `from_dict` format (round-trips)."""

        def split(bounds: tuple[MetricBound, ...]) -> dict[str, dict[str, float]]:
            out: dict[str, dict[str, float]] = {}
            mins = {b.metric: b.minimum for b in bounds if b.minimum is not None}
            maxs = {b.metric: b.maximum for b in bounds if b.maximum is not None}
            if mins:
                out["minimums"] = mins
            if maxs:
                out["maximums"] = maxs
            return out

        # `clinical` only when set, so the digest of every policy pinned before it existed is unchanged.
        clinical = {} if self.clinical is None else {"clinical": self.clinical.to_dict()}
        return {
            **split(self.overall),
            **clinical,
            "slices": [
                {"feature": s.feature, "min_examples": s.min_examples, **split(s.bounds)} for s in self.slices
            ],
            "non_inferiority": [
                {"metric": n.metric, "margin": n.margin, "higher_is_better": n.higher_is_better}
                for n in self.non_inferiority
            ],
            "require_evaluator_blessing": self.require_evaluator_blessing,
        }

    def digest(self) -> str:
        """Returns a short digest of the policy, recorded with each verdict."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def metrics(self) -> frozenset[str]:
        """Returns every metric name the policy reads."""
        names = {b.metric for b in self.overall} | {n.metric for n in self.non_inferiority}
        for s in self.slices:
            names |= {b.metric for b in s.bounds}
        return frozenset(names)


def _bounds(minimums: Any, maximums: Any, path: str) -> tuple[MetricBound, ...]:
    mins = check_keys(minimums, list(minimums) if isinstance(minimums, Mapping) else [], f"{path}.minimums")
    maxs = check_keys(maximums, list(maximums) if isinstance(maximums, Mapping) else [], f"{path}.maximums")
    bounds = []
    for metric in sorted(set(mins) | set(maxs)):
        as_str(metric, f"{path}: metric name")
        lo = as_float(mins[metric], f"{path}.minimums.{metric}") if metric in mins else None
        hi = as_float(maxs[metric], f"{path}.maximums.{metric}") if metric in maxs else None
        for kind, value in (("minimums", lo), ("maximums", hi)):
            if value is not None and metric in UNIT_INTERVAL and not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"{path}.{kind}.{metric}: {value} is outside [0, 1], where {metric} lives; write a "
                    "fraction (e.g. 0.9, not 90)."
                )
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(
                f"{path}: {metric} minimum {lo} is above its maximum {hi}; no model can pass. Fix one of "
                "them."
            )
        bounds.append(MetricBound(metric, lo, hi))
    return tuple(bounds)


def _slice_criterion(d: Any, path: str) -> SliceCriterion:
    check_keys(d, ("feature", "minimums", "maximums", "min_examples"), path)
    if "feature" not in d:
        raise ConfigError(f"{path}: missing 'feature' (the slicing feature, e.g. `feature: sex`).")
    feature = as_str(d["feature"], f"{path}.feature")
    bounds = _bounds(d.get("minimums", {}), d.get("maximums", {}), path)
    if not bounds:
        raise ConfigError(f"{path}: slice criterion for '{feature}' has no 'minimums' or 'maximums'.")
    return SliceCriterion(feature, bounds, as_int(d.get("min_examples", 1), f"{path}.min_examples", 1))


def _non_inferiority(d: Any, path: str) -> NonInferiority:
    check_keys(d, ("metric", "margin", "higher_is_better"), path)
    for key in ("metric", "margin"):
        if key not in d:
            raise ConfigError(f"{path}: missing '{key}'; write e.g. `{{metric: auc, margin: 0.01}}`.")
    metric = as_str(d["metric"], f"{path}.metric")
    margin = as_float(d["margin"], f"{path}.margin")
    if margin < 0:
        raise ConfigError(f"{path}.margin: must be >= 0 (the tolerated loss), got {margin}.")
    if "higher_is_better" in d:
        higher = as_bool(d["higher_is_better"], f"{path}.higher_is_better")
    elif metric in HIGHER_IS_BETTER or metric in LOWER_IS_BETTER:
        higher = metric in HIGHER_IS_BETTER
    else:
        raise ConfigError(
            f"{path}: the direction of metric '{metric}' is not known; add `higher_is_better: true` or false."
        )
    return NonInferiority(metric, margin, higher)


@dataclasses.dataclass(frozen=True)
class CriterionResult:
    """The outcome of one criterion.

    Attributes:
        criterion: Stable identifier, e.g. "minimum:auc", "slice:sex:female:minimum:recall",
            "non_inferiority:auc", "evaluator_blessing".
        passed: Whether the criterion holds.
        message: One sentence with the observed value and the threshold.
        observed: The candidate's value, when there is one.
        threshold: The value it was compared with, when there is one.
    """

    criterion: str
    passed: bool
    message: str
    observed: float | None = None
    threshold: float | None = None


@dataclasses.dataclass(frozen=True)
class GateVerdict:
    """Every criterion's result plus notes on what was not assessed and why."""

    results: tuple[CriterionResult, ...]
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """True when at least one criterion was checked and none failed."""
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def failures(self) -> tuple[CriterionResult, ...]:
        """The failed criteria, in policy order."""
        return tuple(r for r in self.results if not r.passed)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serializable form (logged as the run's gate/verdict.json)."""
        return {
            "passed": self.passed,
            "results": [dataclasses.asdict(r) for r in self.results],
            "notes": list(self.notes),
        }


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def _value(metrics: Mapping[str, float], metric: str, where: str) -> tuple[float | None, str | None]:
    """Returns (value, None) or (None, why it cannot be used)."""
    if metric not in metrics:
        available = ", ".join(sorted(metrics)) or "none"
        return None, (
            f"{metric} is missing from the evaluation of {where} (available: {available}); add it to the "
            "Evaluator's metrics_specs."
        )
    value = metrics[metric]
    if value is None or not math.isfinite(float(value)):
        return None, f"{metric} is {value} on {where}; an undefined metric cannot pass."
    return float(value), None


def _check_bound(
    bound: MetricBound, metrics: Mapping[str, float], where: str, prefix: str
) -> list[CriterionResult]:
    results = []
    value, problem = _value(metrics, bound.metric, where)
    for kind, threshold in (("minimum", bound.minimum), ("maximum", bound.maximum)):
        if threshold is None:
            continue
        criterion = f"{prefix}{kind}:{bound.metric}"
        if value is None:
            results.append(CriterionResult(criterion, False, problem or "", None, threshold))
            continue
        if kind == "minimum":
            ok = value >= threshold - TOLERANCE
            relation = "below the minimum"
        else:
            ok = value <= threshold + TOLERANCE
            relation = "above the maximum"
        message = (
            f"{bound.metric} = {_fmt(value)} on {where} meets the {kind} {_fmt(threshold)}"
            if ok
            else f"{bound.metric} = {_fmt(value)} on {where} is {relation} {_fmt(threshold)}"
        )
        results.append(CriterionResult(criterion, ok, message, value, threshold))
    return results


def evaluate_gate(
    policy: GatePolicy,
    candidate: SliceMetrics,
    *,
    baseline: SliceMetrics | None = None,
    champion: str | None = None,
    blessed: bool | None = None,
    clinical: Mapping[str, Any] | None = None,
) -> GateVerdict:
    """Applies a gate policy to a candidate's test-split metrics.

    Args:
        policy: The gate policy.
        candidate: The candidate's metrics per slice; the whole split under OVERALL.
        baseline: The current champion's metrics re-scored on the same test split, or None when they
            are not available.
        champion: A label for the current champion (e.g. "version 3"), or None when there is none yet.
            With no champion, non-inferiority is not assessed (and noted); with a champion but no
            baseline metrics, every non-inferiority criterion fails: the comparison was required and
            could not be made.
        blessed: The TFX Evaluator's blessing, or None when no blessing was found.
        clinical: The clinical evaluation report (`clinical_evaluation.json`), or None when there is none.
            Its `noninferiority` must be the paired comparison with `champion` (callers drop it when the
            baseline it was computed against is not the champion).

    Returns:
        The verdict with every criterion's result.
    """
    results: list[CriterionResult] = []
    notes: list[str] = []
    overall = candidate.get(OVERALL, {})

    if policy.require_evaluator_blessing:
        if blessed is None:
            results.append(
                CriterionResult(
                    "evaluator_blessing", False, "no Evaluator blessing was found for this model."
                )
            )
        elif not blessed:
            results.append(
                CriterionResult(
                    "evaluator_blessing",
                    False,
                    "the TFX Evaluator did not bless this model (its thresholds failed).",
                )
            )
        else:
            results.append(
                CriterionResult("evaluator_blessing", True, "the TFX Evaluator blessed this model.")
            )

    for bound in policy.overall:
        results.extend(_check_bound(bound, overall, f"slice {OVERALL}", ""))

    for crit in policy.slices:
        names = sorted(n for n in candidate if slice_features(n) == (crit.feature,))
        if not names:
            for bound in crit.bounds:
                results.append(
                    CriterionResult(
                        f"slice:{crit.feature}:{bound.metric}",
                        False,
                        f"no slices of feature '{crit.feature}' in the evaluation, so {bound.metric} cannot "
                        f"be checked per slice; add SlicingSpec(feature_keys=['{crit.feature}']) to the "
                        "Evaluator.",
                    )
                )
            continue
        for name in names:
            metrics = candidate[name]
            if crit.min_examples > 1:
                count, problem = _value(metrics, "example_count", f"slice {name}")
                if count is None:
                    results.append(
                        CriterionResult(
                            f"slice:{name}:example_count",
                            False,
                            f"{problem} (min_examples needs it)",
                            None,
                            float(crit.min_examples),
                        )
                    )
                    continue
                if count < crit.min_examples:
                    notes.append(
                        f"slice {name} has {int(count)} test examples (< min_examples {crit.min_examples}); "
                        "its bounds were not assessed."
                    )
                    continue
            for bound in crit.bounds:
                results.extend(_check_bound(bound, metrics, f"slice {name}", f"slice:{name}:"))

    if policy.non_inferiority and champion is None:
        notes.append("no champion yet: non-inferiority was not assessed.")
    elif policy.non_inferiority:
        base_overall = None if baseline is None else baseline.get(OVERALL)
        for ni in policy.non_inferiority:
            criterion = f"non_inferiority:{ni.metric}"
            if base_overall is None:
                results.append(
                    CriterionResult(
                        criterion,
                        False,
                        f"champion {champion} was not re-scored on this test split, so non-inferiority on "
                        f"{ni.metric} cannot be checked; give the Evaluator the champion as its baseline "
                        "model.",
                    )
                )
                continue
            value, problem = _value(overall, ni.metric, f"slice {OVERALL}")
            base, base_problem = _value(base_overall, ni.metric, f"champion {champion}'s slice {OVERALL}")
            if value is None or base is None:
                results.append(CriterionResult(criterion, False, problem or base_problem or ""))
                continue
            limit = base - ni.margin if ni.higher_is_better else base + ni.margin
            ok = value >= limit - TOLERANCE if ni.higher_is_better else value <= limit + TOLERANCE
            need = ">=" if ni.higher_is_better else "<="
            message = f"{ni.metric} = {_fmt(value)} vs champion {champion} {_fmt(base)}: " + (
                f"non-inferior within margin {_fmt(ni.margin)}"
                if ok
                else f"inferior by more than the margin {_fmt(ni.margin)} (needs {need} {_fmt(limit)})"
            )
            results.append(CriterionResult(criterion, ok, message, value, limit))

    if policy.clinical is not None:
        clinical_results, clinical_notes = check_clinical(policy.clinical, clinical, champion)
        results.extend(
            CriterionResult(r.criterion, r.passed, r.message, r.observed, r.threshold)
            for r in clinical_results
        )
        notes.extend(clinical_notes)

    return GateVerdict(tuple(results), tuple(notes))
