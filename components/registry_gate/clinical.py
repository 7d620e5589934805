"""The gate's clinical criteria: bounds on the clinical evaluation's intervals, not on point estimates.

Pure: the `gate.clinical` policy and a `clinical_evaluation.json` document in, criterion results out
(`components.registry_gate.core.evaluate_gate` calls `check_clinical`). Example policy::

    clinical:
      min_test_examples: 100          # fewer test rows: "insufficient evidence: n = 83", a failure
      min_positives: 30
      lower_bounds: {auc: 0.95, sensitivity: 0.85}   # the 95 % lower bound must clear the floor
      calibration: {min_slope: 0.6, max_slope: 1.6, max_abs_intercept: 1.0, max_ece: 0.1, max_ici: 0.1}
      slices:
        - {feature: sex, worst: {sensitivity: 0.8}, max_gap: {sensitivity: 0.15}}
      non_inferiority:                # paired bootstrap on the same test rows against the champion
        - {metric: auc, margin: 0.02}

A floor that the test split cannot reach even with every case right (the best Wilson/Clopper-Pearson
lower bound of n successes out of n is below it) fails as insufficient evidence, naming n: passing such a
claim would mean trusting a point estimate the data cannot support. A slice under the evaluation's
minimum count fails the same way when the policy bounds that feature.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from components.clinical_eval.intervals import METHODS, WILSON, best_lower_bound
from components.registry_gate.dictcfg import as_float, as_int, as_list, as_str, check_keys
from schemas.errors import ConfigError

LOWER_BOUND_METRICS = ("auc", "sensitivity", "specificity", "ppv", "npv")
# The denominator each threshold metric is a proportion of (what limits its best lower bound).
_DENOMINATOR = {"sensitivity": "positives", "specificity": "negatives", "ppv": None, "npv": None}
SLICE_METRICS = ("auc", "sensitivity", "specificity")
PAIRED_METRICS = ("auc", "sensitivity", "specificity")
_CALIBRATION_KEYS = ("min_slope", "max_slope", "max_abs_intercept", "max_ece", "max_ici")


@dataclasses.dataclass(frozen=True)
class ClinicalSlice:
    """Bounds across the slices of one feature.

    Attributes:
        feature: The slicing feature (one of the dataset's `slice_features`).
        worst: Metric -> floor for the point estimate of every assessed slice (so of the worst one).
        max_gap: Metric -> largest tolerated difference between the best and the worst assessed slice.
    """

    feature: str
    worst: Mapping[str, float] = dataclasses.field(default_factory=dict)
    max_gap: Mapping[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ClinicalCriteria:
    """The gate's criteria on the clinical evaluation (see the module docstring for the YAML form)."""

    min_test_examples: int = 0
    min_positives: int = 0
    lower_bounds: Mapping[str, float] = dataclasses.field(default_factory=dict)
    calibration: Mapping[str, float] = dataclasses.field(default_factory=dict)
    slices: tuple[ClinicalSlice, ...] = ()
    non_inferiority: Mapping[str, float] = dataclasses.field(default_factory=dict)

    _KEYS = ("min_test_examples", "min_positives", "lower_bounds", "calibration", "slices", "non_inferiority")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str = "gate.clinical") -> ClinicalCriteria:
        """Builds the criteria, naming the key, the value and the fix on any error.

        Raises:
            ConfigError: On unknown keys, wrong types, out-of-range floors or an empty section.
        """
        check_keys(d, cls._KEYS, path)
        lower = _unit_map(d.get("lower_bounds", {}), LOWER_BOUND_METRICS, f"{path}.lower_bounds")
        calibration = check_keys(d.get("calibration", {}), _CALIBRATION_KEYS, f"{path}.calibration")
        calibration = {k: as_float(v, f"{path}.calibration.{k}") for k, v in calibration.items()}
        for key in ("max_ece", "max_ici", "max_abs_intercept", "min_slope", "max_slope"):
            if calibration.get(key, 0.0) < 0:
                raise ConfigError(f"{path}.calibration.{key}: must be >= 0, got {calibration[key]}.")
        if calibration.get("min_slope", -math.inf) > calibration.get("max_slope", math.inf):
            raise ConfigError(
                f"{path}.calibration: min_slope {calibration['min_slope']} is above max_slope "
                f"{calibration['max_slope']}; no model can pass. Fix one of them."
            )
        slices_raw = as_list(d.get("slices", []), f"{path}.slices", "feature, worst, max_gap")
        slices = tuple(_slice(s, f"{path}.slices[{i}]") for i, s in enumerate(slices_raw))
        ni_raw = as_list(d.get("non_inferiority", []), f"{path}.non_inferiority", "metric, margin")
        non_inferiority: dict[str, float] = {}
        for i, item in enumerate(ni_raw):
            where = f"{path}.non_inferiority[{i}]"
            check_keys(item, ("metric", "margin"), where)
            if "metric" not in item or "margin" not in item:
                raise ConfigError(
                    f"{where}: write both metric and margin, e.g. {{metric: auc, margin: 0.02}}."
                )
            metric = _metric(item["metric"], PAIRED_METRICS, f"{where}.metric")
            margin = as_float(item["margin"], f"{where}.margin")
            if not 0.0 <= margin < 1.0:
                raise ConfigError(
                    f"{where}.margin: {margin} must be in [0, 1) (a loss in {metric}, e.g. 0.02)."
                )
            non_inferiority[metric] = margin
        criteria = cls(
            as_int(d.get("min_test_examples", 0), f"{path}.min_test_examples"),
            as_int(d.get("min_positives", 0), f"{path}.min_positives"),
            lower,
            calibration,
            slices,
            non_inferiority,
        )
        if criteria == cls():
            raise ConfigError(
                f"{path}: the section is empty; remove it or add e.g. `lower_bounds: {{auc: 0.9}}`."
            )
        return criteria

    def to_dict(self) -> dict[str, Any]:
        """The `from_dict` form (round-trips)."""
        return {
            "min_test_examples": self.min_test_examples,
            "min_positives": self.min_positives,
            "lower_bounds": dict(self.lower_bounds),
            "calibration": dict(self.calibration),
            "slices": [
                {"feature": s.feature, "worst": dict(s.worst), "max_gap": dict(s.max_gap)}
                for s in self.slices
            ],
            "non_inferiority": [{"metric": m, "margin": v} for m, v in self.non_inferiority.items()],
        }


def _metric(value: Any, allowed: tuple[str, ...], path: str) -> str:
    name = as_str(value, path)
    if name not in allowed:
        raise ConfigError(f"{path}: '{name}' is not one of {', '.join(allowed)}.")
    return name


def _unit_map(raw: Any, allowed: tuple[str, ...], path: str) -> dict[str, float]:
    check_keys(raw, allowed, path)
    out = {}
    for metric, value in raw.items():
        floor = as_float(value, f"{path}.{metric}")
        if not 0.0 <= floor <= 1.0:
            raise ConfigError(f"{path}.{metric}: {floor} is outside [0, 1]; write a fraction (0.9, not 90).")
        out[metric] = floor
    return out


def _slice(d: Any, path: str) -> ClinicalSlice:
    check_keys(d, ("feature", "worst", "max_gap"), path)
    if "feature" not in d:
        raise ConfigError(f"{path}: missing 'feature' (a dataset slice feature, e.g. `feature: sex`).")
    feature = as_str(d["feature"], f"{path}.feature")
    worst = _unit_map(d.get("worst", {}), SLICE_METRICS, f"{path}.worst")
    gap = _unit_map(d.get("max_gap", {}), SLICE_METRICS, f"{path}.max_gap")
    if not worst and not gap:
        raise ConfigError(f"{path}: bound the slices of '{feature}' with `worst:` and/or `max_gap:`.")
    return ClinicalSlice(feature, worst, gap)


@dataclasses.dataclass(frozen=True)
class Result:
    """One clinical criterion's outcome (converted to the gate's CriterionResult by the caller)."""

    criterion: str
    passed: bool
    message: str
    observed: float | None = None
    threshold: float | None = None


def _f(x: float) -> str:
    return f"{x:.4f}"


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def check_clinical(
    criteria: ClinicalCriteria, report: Mapping[str, Any] | None, champion: str | None
) -> tuple[list[Result], list[str]]:
    """Applies the clinical criteria to a clinical evaluation report.

    Args:
        criteria: The policy's clinical criteria.
        report: The `clinical_evaluation.json` document; None when the run produced none.
        champion: The champion's label when there is one; the report's `noninferiority` must then be
            the paired comparison with that champion (the caller drops it otherwise).

    Returns:
        (results, notes).
    """
    prefix = "clinical:"
    if report is None:
        return [
            Result(
                f"{prefix}evaluation",
                False,
                "no clinical evaluation was found for this model, so its clinical criteria cannot be checked; "
                "the ClinicalEvaluator node must run after the Trainer.",
            )
        ], []
    results: list[Result] = []
    notes: list[str] = []
    n = int(report.get("n", 0))
    positives = int(report.get("positives", 0))
    counts = {"positives": positives, "negatives": n - positives}
    if criteria.min_test_examples:
        ok = n >= criteria.min_test_examples
        results.append(
            Result(
                f"{prefix}min_test_examples",
                ok,
                f"n = {n} test examples meets the minimum {criteria.min_test_examples}"
                if ok
                else f"insufficient evidence: n = {n} test examples (< min_test_examples "
                f"{criteria.min_test_examples}); a larger test split is needed to support the claim",
                float(n),
                float(criteria.min_test_examples),
            )
        )
    if criteria.min_positives:
        ok = positives >= criteria.min_positives
        results.append(
            Result(
                f"{prefix}min_positives",
                ok,
                f"{positives} positive test examples meets the minimum {criteria.min_positives}"
                if ok
                else f"insufficient evidence: n = {positives} positive test examples (< min_positives "
                f"{criteria.min_positives})",
                float(positives),
                float(criteria.min_positives),
            )
        )
    confidence = float(report.get("confidence", 0.95))
    level = f"{confidence:.0%}"
    for metric, floor in criteria.lower_bounds.items():
        results.append(_lower_bound(metric, floor, report, counts, confidence, level))
    results.extend(_calibration(criteria.calibration, report.get("calibration") or {}))
    for crit in criteria.slices:
        results.extend(_slices(crit, report.get("slices") or []))
    if criteria.non_inferiority:
        if champion is None:
            notes.append("no champion yet: paired non-inferiority was not assessed.")
        else:
            paired = (report.get("noninferiority") or {}).get("metrics")
            for metric, margin in criteria.non_inferiority.items():
                results.append(_paired(metric, margin, paired, champion, level))
    return results, notes


def _lower_bound(
    metric: str, floor: float, report: Mapping, counts: Mapping[str, int], confidence: float, level: str
) -> Result:
    criterion = f"clinical:lower_bound:{metric}"
    entry = report.get("auc") if metric == "auc" else (report.get("at_threshold") or {}).get(metric)
    value = _number((entry or {}).get("value"))
    lower = _number((entry or {}).get("lower"))
    if entry is None or value is None or lower is None:
        return Result(
            criterion, False, f"{metric} has no {level} interval in the clinical evaluation", None, floor
        )
    denominator = _DENOMINATOR.get(metric)
    cases = int(entry.get("n", counts.get(denominator or "", 0)))
    method = entry.get("method", WILSON)
    if metric != "auc" and method in METHODS:
        best = best_lower_bound(cases, confidence, method)
        if best < floor:
            return Result(
                criterion,
                False,
                f"insufficient evidence: n = {cases} cases for {metric}; even with every one right its {level} "
                f"lower bound would be {_f(best)}, below the floor {_f(floor)}",
                lower,
                floor,
            )
    ok = lower >= floor - 1e-9
    return Result(
        criterion,
        ok,
        f"{metric} = {_f(value)} ({level} CI {_f(lower)}-{_f(_number(entry.get('upper')) or math.nan)}): lower "
        f"bound {_f(lower)} " + ("meets" if ok else "is below") + f" the floor {_f(floor)}",
        lower,
        floor,
    )


def _calibration(bounds: Mapping[str, float], calibration: Mapping) -> list[Result]:
    checks = {
        "min_slope": ("slope", lambda v, t: v >= t, "below the minimum"),
        "max_slope": ("slope", lambda v, t: v <= t, "above the maximum"),
        "max_abs_intercept": ("intercept", lambda v, t: abs(v) <= t, "further from 0 than"),
        "max_ece": ("ece", lambda v, t: v <= t, "above the maximum"),
        "max_ici": ("ici", lambda v, t: v <= t, "above the maximum"),
    }
    results = []
    for key, bound in bounds.items():
        name, test, relation = checks[key]
        criterion = f"clinical:calibration:{key}"
        value = _number(calibration.get(name))
        if value is None:
            why = (
                "the logistic recalibration fit did not converge (the test split is perfectly separated or "
                "one class is missing), so the calibration cannot be shown"
                if name in ("slope", "intercept")
                else "it is missing from the clinical evaluation"
            )
            results.append(Result(criterion, False, f"calibration {name} is undefined: {why}", None, bound))
            continue
        ok = bool(test(value, bound))
        results.append(
            Result(
                criterion,
                ok,
                f"calibration {name} = {_f(value)} "
                + (f"meets {key} {_f(bound)}" if ok else f"is {relation} {_f(bound)}"),
                value,
                bound,
            )
        )
    return results


def _slices(crit: ClinicalSlice, slices: list) -> list[Result]:
    mine = [s for s in slices if isinstance(s, Mapping) and s.get("feature") == crit.feature]
    prefix = f"clinical:slice:{crit.feature}"
    if not mine:
        return [
            Result(
                f"{prefix}:missing",
                False,
                f"the clinical evaluation has no slices of '{crit.feature}'; add it to the dataset's "
                "slice_features so each group is evaluated",
            )
        ]
    results = []
    assessed = []
    for s in mine:
        if s.get("status") != "ok":
            reason = s.get("reason") or f"insufficient evidence: n = {s.get('n')}"
            results.append(
                Result(
                    f"{prefix}:{s.get('value')}:insufficient_evidence",
                    False,
                    f"slice {crit.feature}={s.get('value')}: {reason}; the group cannot be shown to meet the "
                    "slice bounds (collect more cases or lower the evaluation's min_slice_examples knowingly)",
                    float(s.get("n", 0)),
                )
            )
        else:
            assessed.append(s)
    for metric, floor in crit.worst.items():
        rows = [(s["value"], _number(s["metrics"].get(metric, {}).get("value"))) for s in assessed]
        rows = [r for r in rows if r[1] is not None]
        if not rows:
            results.append(
                Result(f"{prefix}:worst:{metric}", False, f"no slice of '{crit.feature}' has {metric}")
            )
            continue
        name, value = min(rows, key=lambda r: r[1])
        ok = value >= floor - 1e-9
        results.append(
            Result(
                f"{prefix}:worst:{metric}",
                ok,
                f"worst slice {crit.feature}={name}: {metric} = {_f(value)} "
                + ("meets" if ok else "is below")
                + f" the floor {_f(floor)}",
                value,
                floor,
            )
        )
    for metric, limit in crit.max_gap.items():
        rows = [(s["value"], _number(s["metrics"].get(metric, {}).get("value"))) for s in assessed]
        rows = [r for r in rows if r[1] is not None]
        if len(rows) < 2:
            results.append(
                Result(
                    f"{prefix}:max_gap:{metric}",
                    False,
                    f"insufficient evidence: {len(rows)} assessed slice(s) of '{crit.feature}', so the gap in "
                    f"{metric} between groups cannot be measured",
                )
            )
            continue
        (lo_name, lo), (hi_name, hi) = min(rows, key=lambda r: r[1]), max(rows, key=lambda r: r[1])
        gap = hi - lo
        ok = gap <= limit + 1e-9
        results.append(
            Result(
                f"{prefix}:max_gap:{metric}",
                ok,
                f"{metric} gap between {crit.feature}={hi_name} ({_f(hi)}) and {crit.feature}={lo_name} "
                f"({_f(lo)}) is {_f(gap)}, " + ("within" if ok else "above") + f" the maximum {_f(limit)}",
                gap,
                limit,
            )
        )
    return results


def _paired(metric: str, margin: float, paired: Mapping | None, champion: str, level: str) -> Result:
    criterion = f"clinical:non_inferiority:{metric}"
    entry = None if paired is None else paired.get(metric)
    lower = _number((entry or {}).get("lower"))
    if entry is None or lower is None:
        return Result(
            criterion,
            False,
            f"champion {champion} was not scored on the same test rows by the clinical evaluation, so paired "
            f"non-inferiority on {metric} cannot be checked; re-run the pipeline with the champion as baseline",
            None,
            -margin,
        )
    diff = float(entry["difference"])
    ok = lower >= -margin - 1e-9
    return Result(
        criterion,
        ok,
        f"{metric} difference vs champion {champion} = {diff:+.4f} (paired {level} CI {lower:+.4f} to "
        f"{float(entry['upper']):+.4f}): "
        + (
            f"non-inferior within margin {_f(margin)}"
            if ok
            else f"cannot rule out a loss larger than the margin {_f(margin)} (lower bound below {-margin:+.4f})"
        ),
        lower,
        -margin,
    )
