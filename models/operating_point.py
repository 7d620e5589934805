"""The locked operating point: the decision threshold chosen on the eval split for a clinical target.

The Trainer predicts the eval split (after the optional recalibration, so the threshold applies to the
probabilities that are served), then picks the threshold here, and the export carries it twice: in the
serving signatures (`decision`, `threshold`) and in `assets.extra/dxpipe_operating_point.json`, which the
clinical evaluation, the model card and `dxpipe serve` read. The eval split chooses; the test split, which
gates, never does.

Rules (a decision is `probability >= threshold`):

* `{target: sensitivity, value: v}`: the highest threshold whose eval sensitivity is at least `v`, i.e.
  the score of the `ceil(v * P)`-th highest-scoring positive. Specificity is then as high as the eval
  split allows for that sensitivity.
* `{target: specificity, value: v}`: the lowest threshold whose eval specificity is at least `v`: just above
  the score of the `ceil(v * N)`-th lowest-scoring negative, so sensitivity is as high as it allows.
* `{fixed: t}`: `t`, with the eval rates recorded.

Ties: rows with equal scores always fall on the same side (the rule is on scores, not on row counts), so a
tie can only make the achieved rate higher than the target, never lower. Rounding: the served graph may
compute a score one float32 step away from the Trainer's (another batch shape sums in another order), so
the threshold sits `GUARD` away from the score it hinges on, on the side that keeps that row's decision,
but never past halfway to the next distinct score (the eval decisions stay exactly those of the rule).
Small eval splits: with `P` positives sensitivity moves in steps of `1 / P` (with 10 positives, a 0.95
target means all 10); an eval split without positives (or negatives, for a specificity target) cannot
support the target and is refused with an error naming the counts.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os

import numpy as np
from pydantic import StrictFloat, StrictInt, StrictStr
from pydantic.dataclasses import dataclass

from models.calibration import Calibration, fit_calibration
from models.hparams import HPARAMS
from schemas.errors import ConfigError

OPERATING_POINT_ASSET = os.path.join("assets.extra", "dxpipe_operating_point.json")
TARGETS = ("sensitivity", "specificity")
GUARD = 1e-6
# Outputs the serving signatures add for the operating point (besides `probability`, `predicted_label`).
DECISION = "decision"
THRESHOLD = "threshold"
# What an export without the asset (older models) means: threshold 0.5, no recalibration.
LEGACY = {"threshold": 0.5, "calibration": {"method": "none", "params": {}}}


class OperatingPointError(ConfigError):
    """The operating-point configuration is invalid, or the eval split cannot support its target.

    A `ConfigError` (as `models.hparams.HparamsError`), so the CLI reports it as one line.
    """


# Typed with pydantic, like the other hyperparameters the config composes (`models.hparams`): unknown
# keys are refused; the rules across fields are checked in `__post_init__`.
@dataclass(frozen=True, config=HPARAMS)
class OperatingPointSpec:
    """How the threshold is chosen: a target rate on the eval split, or a fixed threshold.

    Written in the config as `{target: sensitivity, value: 0.95}`, `{target: specificity, value: 0.9}` or
    `{fixed: 0.5}`.

    Attributes:
        target: `sensitivity` or `specificity`; empty with `fixed`.
        value: The rate the threshold must reach on the eval split, in (0, 1].
        fixed: A fixed threshold in [0, 1] instead of a target.
    """

    target: StrictStr = ""
    value: StrictFloat | StrictInt | None = None
    fixed: StrictFloat | StrictInt | None = None

    def __post_init__(self):
        if self.fixed is not None:
            if self.target or self.value is not None:
                raise OperatingPointError(
                    "operating_point: give either {fixed: <threshold>} or {target: sensitivity|specificity, "
                    f"value: <rate>}}, not both (got target={self.target!r}, value={self.value}, "
                    f"fixed={self.fixed})."
                )
            if not _is_number(self.fixed) or not 0.0 <= self.fixed <= 1.0:
                raise OperatingPointError(
                    f"operating_point.fixed is {self.fixed!r}; it must be a threshold between 0 and 1."
                )
            return
        if self.target not in TARGETS:
            raise OperatingPointError(
                f"operating_point.target is {self.target!r}; use one of {list(TARGETS)}{_hint(self.target)}, or "
                "{fixed: <threshold>} for a fixed threshold."
            )
        if not _is_number(self.value) or not 0.0 < self.value <= 1.0:
            raise OperatingPointError(
                f"operating_point.value is {self.value!r}; the target {self.target} must be a rate in (0, 1], e.g. 0.95."
            )

    def to_dict(self) -> dict:
        """The spec as recorded under `target` in `dxpipe_operating_point.json`."""
        if self.fixed is not None:
            return {"fixed": float(self.fixed)}
        return {"metric": self.target, "value": float(self.value)}

    @classmethod
    def from_dict(cls, raw: dict) -> OperatingPointSpec:
        """Rebuilds a spec from `to_dict`'s or the config's form (how the Trainer receives it)."""
        if "fixed" in raw:
            return cls(fixed=raw["fixed"])
        return cls(target=raw.get("metric", raw.get("target", "")), value=raw.get("value"))


def _hint(value: str) -> str:
    close = difflib.get_close_matches(str(value), TARGETS, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class Rates:
    """Eval-split counts and rates at a threshold (`nan` where a class is absent)."""

    n: int
    positives: int
    sensitivity: float
    specificity: float


def rates_at(probability: np.ndarray, labels: np.ndarray, threshold: float) -> Rates:
    """Sensitivity and specificity of `probability >= threshold` (compared in float32, as served)."""
    p = np.asarray(probability, dtype=np.float32)
    y = np.asarray(labels).astype(bool)
    decision = p >= np.float32(threshold)
    positives = int(y.sum())
    negatives = len(y) - positives
    sensitivity = float((decision & y).sum() / positives) if positives else float("nan")
    specificity = float((~decision & ~y).sum() / negatives) if negatives else float("nan")
    return Rates(len(y), positives, sensitivity, specificity)


def choose_threshold(probability: np.ndarray, labels: np.ndarray, spec: OperatingPointSpec) -> float:
    """Returns the threshold for `spec` on the eval split (rules in the module docstring).

    Args:
        probability: Eval-split probabilities, as the served graph computes them (float32).
        labels: Eval-split 0/1 labels.
        spec: The target.

    Returns:
        The threshold, a float32-representable value.

    Raises:
        OperatingPointError: The eval split has no row of the class the target is measured on.
    """
    if spec.fixed is not None:
        return float(np.float32(spec.fixed))
    p = np.asarray(probability, dtype=np.float32)
    y = np.asarray(labels).astype(bool)
    if len(p) != len(y):
        raise OperatingPointError(f"{len(p)} probabilities for {len(y)} labels.")
    scores = np.unique(p)  # ascending, distinct
    if spec.target == "sensitivity":
        positive_scores = np.sort(p[y])[::-1]
        if not len(positive_scores):
            raise OperatingPointError(_unsupported(spec, len(y), 0, "positives"))
        # The small epsilon keeps 0.95 * 20 = 19 from becoming 20 through floating-point error.
        k = max(1, math.ceil(spec.value * len(positive_scores) - 1e-9))
        pivot = positive_scores[k - 1]  # must stay at or above the threshold
        below = scores[scores < pivot]  # the next lower score must stay below it
        if not len(below):
            return float(np.float32(max(float(pivot) - GUARD, 0.0)))
        threshold = np.float32(max(float(pivot) - GUARD, (float(pivot) + float(below[-1])) / 2.0))
        if threshold <= below[-1]:  # float32 rounding of the midpoint
            threshold = np.nextafter(below[-1], np.float32(np.inf))
        return float(min(threshold, pivot))
    negative_scores = np.sort(p[~y])
    if not len(negative_scores):
        raise OperatingPointError(_unsupported(spec, len(y), int(y.sum()), "negatives"))
    m = max(1, math.ceil(spec.value * len(negative_scores) - 1e-9))
    pivot = negative_scores[m - 1]  # must stay below the threshold
    above = scores[scores > pivot]  # the next higher score may stay at or above it
    limit = (float(pivot) + float(above[0])) / 2.0 if len(above) else math.inf
    threshold = np.float32(min(float(pivot) + GUARD, limit))
    if threshold <= pivot:  # float32 rounding
        threshold = np.nextafter(pivot, np.float32(np.inf))
    if len(above):
        threshold = min(threshold, above[0])
    return float(threshold)


def _unsupported(spec: OperatingPointSpec, n: int, positives: int, missing: str) -> str:
    return (
        f"the eval split has {n} rows and {positives} positives: no {missing}, so no threshold can reach "
        f"{spec.target} >= {spec.value}. Use a larger eval split (split.eval), or operating_point: "
        "{fixed: <threshold>}."
    )


def operating_point_record(
    threshold: float,
    spec: OperatingPointSpec,
    rates: Rates,
    calibration_method: str,
    calibration_params: dict[str, float],
) -> dict:
    """The content of `dxpipe_operating_point.json` (the shared interface of issue 13).

    NaN rates (a class absent from the eval split, fixed threshold only) are written as null.
    """

    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {
        "threshold": float(threshold),
        "target": spec.to_dict(),
        "chosen_on": "eval",
        "eval": {
            "n": rates.n,
            "positives": rates.positives,
            "sensitivity": finite(rates.sensitivity),
            "specificity": finite(rates.specificity),
        },
        "calibration": {"method": calibration_method, "params": dict(calibration_params)},
    }


def write_record(export_dir: str, record: dict) -> None:
    """Writes `assets.extra/dxpipe_operating_point.json` into an export directory (local or remote)."""
    import tensorflow as tf  # Deferred: tf.io.gfile reaches the remote pipeline roots (gs://, s3://).

    path = os.path.join(export_dir, OPERATING_POINT_ASSET)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_record(export_dir: str) -> dict | None:
    """The operating point an export carries, or None for an export without one (threshold 0.5).

    Raises:
        OperatingPointError: The file exists but is not a JSON object with a numeric `threshold`.
    """
    path = os.path.join(export_dir, OPERATING_POINT_ASSET)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise OperatingPointError(f"{path} is not JSON ({exc}); re-export the model.") from None
    if not isinstance(record, dict) or not _is_number(record.get("threshold")):
        raise OperatingPointError(f"{path} has no numeric 'threshold'; re-export the model.")
    return record


def served_outputs(probability, threshold) -> dict:
    """The prediction outputs of a dxpipe serving signature for [batch] (recalibrated) probabilities.

    `decision` is 1 where `probability >= threshold`; `predicted_label` is the same decision under its
    older name, kept so existing clients keep working; `threshold` repeats the locked threshold per row,
    because TF Serving's row format needs every output to share the batch dimension.

    Args:
        probability: A [batch] float32 tensor.
        threshold: The locked threshold (a scalar float32 variable or tensor).
    """
    import tensorflow as tf  # Deferred, as in write_record.

    decision = tf.cast(probability >= threshold, tf.int64)
    return {
        "probability": probability,
        "predicted_label": decision,
        DECISION: decision,
        THRESHOLD: tf.fill(tf.shape(probability), tf.cast(threshold, tf.float32)),
    }


def fit_operating_point(
    raw_probability: np.ndarray, labels: np.ndarray, spec: OperatingPointSpec, calibration: str
) -> tuple[Calibration, dict]:
    """Fits the recalibration, then chooses the threshold, both on the eval split.

    The threshold is chosen on the probabilities the exported graph serves: the recalibration is applied
    with the graph's own float32 op (`Calibration.apply_tf`), element by element, so the served decisions
    on these rows are exactly the ones the rule made.

    Args:
        raw_probability: The classifier's eval-split probabilities before recalibration (float32).
        labels: The eval split's 0/1 labels.
        spec: The operating-point target.
        calibration: `none`, `platt` or `temperature`.

    Returns:
        The fitted calibration and the `dxpipe_operating_point.json` record (threshold included).

    Raises:
        OperatingPointError: The eval split cannot support the target.
        CalibrationError: A fitted calibration on an eval split without both classes.
    """
    import tensorflow as tf  # Deferred, as in write_record.

    raw = np.asarray(raw_probability, dtype=np.float32)
    fitted = fit_calibration(calibration, raw, labels)
    probability = np.asarray(fitted.apply_tf(tf.constant(raw)))
    threshold = choose_threshold(probability, labels, spec)
    record = operating_point_record(
        threshold, spec, rates_at(probability, labels, threshold), fitted.method, fitted.params
    )
    return fitted, record
