"""The clinical evaluation, pure: scores, labels and a locked threshold in; the report out.

`evaluate` builds the `clinical_evaluation.json` document the gate and the model card read (its shape is
shared with other components; keys are only ever added):

    n, positives, threshold, auc {value, lower, upper}, at_threshold {sensitivity|specificity|ppv|npv:
    {value, lower, upper, method, ...}}, calibration {slope, intercept, ece, ici, bins}, slices [...],
    decision_curve [...], noninferiority {...} or null, bootstrap {resamples, seed}

No TensorFlow, no files: the component (`component.py`) scores the test split and writes the result.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from components.clinical_eval import bootstrap
from components.clinical_eval.calibration import calibration_report
from components.clinical_eval.intervals import METHODS, WILSON, proportion
from components.registry_gate.dictcfg import as_float, as_int, as_str, check_keys
from schemas.errors import ConfigError

OK = "ok"
INSUFFICIENT = "insufficient_evidence"
THRESHOLD_METRICS = ("sensitivity", "specificity", "ppv", "npv")
# Metrics summarised across slices (worst slice, largest gap).
SLICE_METRICS = ("auc", "sensitivity", "specificity")
DECISION_THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(1, 100))


@dataclasses.dataclass(frozen=True)
class ClinicalSettings:
    """How the clinical evaluation computes its statistics (the config's `clinical:` section).

    Attributes:
        resamples: Bootstrap resamples for AUC and the paired comparison; 2000 keeps the Monte-Carlo
            wobble of a 95 % bound under 0.001 on a WDBC-sized test split (BENCHMARKS.md).
        seed: Seed of the resampling: the same data and seed give the same intervals.
        confidence: Two-sided confidence level of every interval.
        interval: `wilson` or `clopper_pearson` (exact) for sensitivity, specificity, PPV and NPV.
        min_slice_examples: A slice with fewer test examples (or without both classes) reports
            "insufficient_evidence" instead of metrics.
        calibration_bins: Equal-width bins of the reliability table and ECE.
    """

    resamples: int = 2000
    seed: int = 0
    confidence: float = 0.95
    interval: str = WILSON
    min_slice_examples: int = 20
    calibration_bins: int = 10

    def __post_init__(self):
        if self.resamples < 200:
            raise ConfigError(
                f"clinical.resamples is {self.resamples}; use at least 200 (2000 recommended) so the "
                "interval's bounds are stable."
            )
        if not 0.5 < self.confidence < 1.0:
            raise ConfigError(f"clinical.confidence is {self.confidence}; write a level such as 0.95.")
        if self.interval not in METHODS:
            raise ConfigError(f"clinical.interval is {self.interval!r}; use one of {list(METHODS)}.")
        if self.min_slice_examples < 1 or self.calibration_bins < 2:
            raise ConfigError(
                "clinical.min_slice_examples must be >= 1 and clinical.calibration_bins >= 2; got "
                f"{self.min_slice_examples} and {self.calibration_bins}."
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str = "clinical") -> ClinicalSettings:
        """Builds the settings from a mapping, naming any unknown key or wrong type."""
        check_keys(d, [f.name for f in dataclasses.fields(cls)], path)
        values: dict[str, Any] = {}
        for key in ("resamples", "seed", "min_slice_examples", "calibration_bins"):
            if key in d:
                values[key] = as_int(d[key], f"{path}.{key}")
        if "confidence" in d:
            values["confidence"] = as_float(d["confidence"], f"{path}.confidence")
        if "interval" in d:
            values["interval"] = as_str(d["interval"], f"{path}.interval")
        try:
            return cls(**values)
        except ConfigError as exc:
            if path == "clinical":
                raise
            raise ConfigError(f"{path}: {exc}") from None


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def at_threshold(
    probabilities: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    settings: ClinicalSettings,
    draws: tuple | None = None,
) -> dict:
    """Sensitivity, specificity, PPV and NPV at `threshold` with exact/score and bootstrap intervals."""
    y = np.asarray(labels).astype(bool)
    decided = np.asarray(probabilities) >= threshold
    tp, fn = int((decided & y).sum()), int((~decided & y).sum())
    fp, tn = int((decided & ~y).sum()), int((~decided & ~y).sum())
    level, method = settings.confidence, settings.interval
    out = {
        "sensitivity": proportion(tp, tp + fn, level, method),
        "specificity": proportion(tn, tn + fp, level, method),
        "ppv": proportion(tp, tp + fp, level, method),
        "npv": proportion(tn, tn + fn, level, method),
    }
    if draws is not None:
        pos_idx, neg_idx, w_pos, w_neg = draws
        tp_b = w_pos @ decided[pos_idx].astype(np.float64)
        fn_b = len(pos_idx) - tp_b
        fp_b = w_neg @ decided[neg_idx].astype(np.float64)
        tn_b = len(neg_idx) - fp_b
        with np.errstate(divide="ignore", invalid="ignore"):
            reps = {
                "sensitivity": tp_b / (tp_b + fn_b),
                "specificity": tn_b / (tn_b + fp_b),
                "ppv": tp_b / (tp_b + fp_b),
                "npv": tn_b / (tn_b + fn_b),
            }
        for name, values in reps.items():
            values = values[np.isfinite(values)]
            if len(values):
                lower, upper = bootstrap.percentile_interval(values, level)
                out[name]["bootstrap"] = {"lower": lower, "upper": upper}
    return out


def confusion(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, int]:
    """The confusion counts at `threshold`: {"tp", "fn", "fp", "tn"}."""
    y = np.asarray(labels).astype(bool)
    decided = np.asarray(probabilities) >= threshold
    return {
        "tp": int((decided & y).sum()),
        "fn": int((~decided & y).sum()),
        "fp": int((decided & ~y).sum()),
        "tn": int((~decided & ~y).sum()),
    }


def decision_curve(probabilities: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Net benefit of treating by the model at each threshold, against treat-all and treat-none.

    Net benefit = TP/n - FP/n * pt / (1 - pt) (Vickers & Elkin 2006): true positives, less the false
    positives weighted by the harm-to-benefit ratio the threshold pt implies.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n = len(y)
    if n == 0:
        return []
    pt = np.asarray(DECISION_THRESHOLDS)
    odds = pt / (1 - pt)
    treated = p[None, :] >= pt[:, None]
    tp = (treated & y[None, :]).sum(1) / n
    fp = (treated & ~y[None, :]).sum(1) / n
    prevalence = y.mean()
    model = tp - fp * odds
    treat_all = prevalence - (1 - prevalence) * odds
    return [
        {
            "threshold": float(t),
            "net_benefit": float(m),
            "treat_all": float(a),
            "treat_none": 0.0,
        }
        for t, m, a in zip(pt, model, treat_all, strict=True)
    ]


def _slice_entry(
    feature: str,
    value: str,
    probabilities: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    settings: ClinicalSettings,
) -> dict:
    n, positives = len(labels), int(labels.sum())
    entry: dict[str, Any] = {"feature": feature, "value": value, "n": n, "positives": positives}
    reason = None
    if n < settings.min_slice_examples:
        reason = f"n = {n} (< min_slice_examples {settings.min_slice_examples})"
    elif positives == 0 or positives == n:
        reason = f"n = {n} with {positives} positives: both classes are needed"
    if reason is not None:
        entry.update(status=INSUFFICIENT, reason=f"insufficient evidence: {reason}", metrics={})
        return entry
    metrics = at_threshold(probabilities, labels, threshold, settings)
    metrics["auc"] = bootstrap.auc_interval(
        probabilities,
        labels,
        resamples=settings.resamples,
        seed=settings.seed,
        confidence=settings.confidence,
    )
    entry.update(status=OK, metrics=metrics)
    return entry


def slice_summary(slices: list[dict]) -> dict:
    """Per feature and metric: the worst slice, the largest gap, and the slices not assessed.

    The worst slice is the assessed slice with the lowest lower bound; the gap is between the assessed
    slices' point values.
    """
    out: dict[str, dict] = {}
    for feature in dict.fromkeys(s["feature"] for s in slices):
        mine = [s for s in slices if s["feature"] == feature]
        ok = [s for s in mine if s["status"] == OK]
        summary: dict[str, Any] = {
            "assessed": [s["value"] for s in ok],
            "insufficient_evidence": [{"value": s["value"], "n": s["n"]} for s in mine if s not in ok],
        }
        for metric in SLICE_METRICS:
            rows = [(s["value"], s["metrics"][metric]) for s in ok if _finite(s["metrics"][metric]["value"])]
            if not rows:
                continue
            worst_value, worst = min(rows, key=lambda r: (r[1]["lower"], r[1]["value"]))
            values = [r[1]["value"] for r in rows]
            summary[metric] = {
                "worst": {"value": worst_value, "estimate": worst["value"], "lower": worst["lower"]},
                "max_gap": float(max(values) - min(values)),
            }
        out[feature] = summary
    return out


def evaluate(
    probabilities: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    settings: ClinicalSettings,
    *,
    features: Mapping[str, np.ndarray] | None = None,
    baseline: tuple[np.ndarray, float] | None = None,
) -> dict:
    """The clinical evaluation report of one model on one test split.

    Args:
        probabilities: The model's predicted probability of the positive class per row.
        labels: 0/1 labels, same rows.
        threshold: The locked decision threshold (probability >= threshold means positive).
        settings: Resamples, seed, confidence, interval method, slice minimum, bins.
        features: Slicing features' values per row (strings), keyed by feature name.
        baseline: The baseline model's probabilities on the same rows and its own threshold, for the
            paired comparison; None when there is no baseline.

    Returns:
        The report (see the module docstring).

    Raises:
        ValueError: If the arrays disagree in length, a label is not 0/1 or a probability is not finite.
    """
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if len(p) != len(y):
        raise ValueError(f"{len(p)} probabilities for {len(y)} labels; score every test row once.")
    if len(y) and not np.isin(y, (0, 1)).all():
        bad = sorted({str(v) for v in np.unique(y) if v not in (0, 1)})[:5]
        raise ValueError(f"labels must be 0 or 1; found {', '.join(bad)}.")
    if not np.isfinite(p).all():
        rows = np.flatnonzero(~np.isfinite(p))[:5].tolist()
        raise ValueError(f"probabilities are not finite at rows {rows}; the model produced NaN/inf.")
    y = y.astype(np.int64)
    draws = bootstrap.stratified_draws(y, settings.resamples, settings.seed)
    report: dict[str, Any] = {
        "n": len(y),
        "positives": int(y.sum()),
        "threshold": float(threshold),
        "confidence": settings.confidence,
        "auc": bootstrap.auc_interval(
            p, y, resamples=settings.resamples, seed=settings.seed, confidence=settings.confidence
        ),
        "at_threshold": at_threshold(p, y, threshold, settings, draws if len(y) else None),
        "confusion": confusion(p, y, threshold),
        "calibration": calibration_report(p, y, settings.calibration_bins, settings.confidence),
    }
    slices = []
    for feature, values in (features or {}).items():
        values = np.asarray(values).astype(str).reshape(-1)
        if len(values) != len(y):
            raise ValueError(f"slice feature '{feature}' has {len(values)} values for {len(y)} rows.")
        for value in sorted(set(values.tolist())):
            mask = values == value
            slices.append(_slice_entry(feature, value, p[mask], y[mask], threshold, settings))
    report["slices"] = slices
    report["slice_summary"] = slice_summary(slices)
    report["decision_curve"] = decision_curve(p, y)
    noninferiority = None
    if baseline is not None:
        base_p, base_threshold = baseline
        base_p = np.asarray(base_p, dtype=np.float64).reshape(-1)
        if len(base_p) != len(y):
            raise ValueError(f"the baseline scored {len(base_p)} rows, the candidate {len(y)}.")
        noninferiority = {
            "baseline_threshold": float(base_threshold),
            "metrics": bootstrap.paired_difference(
                p,
                base_p,
                y,
                candidate_threshold=threshold,
                baseline_threshold=base_threshold,
                resamples=settings.resamples,
                seed=settings.seed,
                confidence=settings.confidence,
            ),
        }
    report["noninferiority"] = noninferiority
    report["bootstrap"] = {
        "resamples": settings.resamples,
        "seed": settings.seed,
        "stratified": True,
        "interval": "percentile",
    }
    return report


def json_ready(value: Any) -> Any:
    """`value` with numpy scalars made Python numbers and NaN/inf made None (strict JSON has neither)."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
