"""Optional recalibration of a classifier's probabilities, fitted on the eval split.

Both methods rescale the model's log-odds: Platt scaling fits `logit(p') = a * logit(p) + b` (slope and
intercept), temperature scaling fits `logit(p') = logit(p) / T` (one parameter, so it keeps the ranking and
the 0.5 crossing). The fit is plain numpy on the eval split's probabilities; `apply_tf` builds the same
transformation into the exported graph, so the served probabilities are the calibrated ones.

Separable eval splits (WDBC's nearly are) would drive a maximum-likelihood slope to infinity. Both fits
therefore use Platt's smoothed targets, `(P + 1) / (P + 2)` for positives and `1 / (N + 2)` for negatives
(Platt 1999), which keep the optimum finite, and the parameters are bounded as a last guard.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

CALIBRATIONS = ("none", "platt", "temperature")
# Probabilities are clipped before the logit: a float32 sigmoid saturates at exactly 0 or 1.
_EPS = 1e-7
# Bounds on the fitted parameters: beyond them the "calibrated" model is a step function.
_MAX_SLOPE = 100.0
_MAX_INTERCEPT = 50.0
_TEMPERATURE_RANGE = (0.01, 100.0)


class CalibrationError(ValueError):
    """A calibration cannot be fitted (unknown method, or an eval split without both classes)."""


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A fitted recalibration: `logit(p') = slope * logit(p) + intercept`.

    Attributes:
        method: `none`, `platt` or `temperature`.
        slope: Multiplier of the log-odds (`1 / T` for temperature scaling).
        intercept: Added to the log-odds (0 for temperature scaling).
    """

    method: str = "none"
    slope: float = 1.0
    intercept: float = 0.0

    @property
    def params(self) -> dict[str, float]:
        """The parameters as recorded in `dxpipe_operating_point.json`."""
        if self.method == "platt":
            return {"slope": self.slope, "intercept": self.intercept}
        if self.method == "temperature":
            return {"temperature": 1.0 / self.slope}
        return {}

    def apply(self, probability: np.ndarray) -> np.ndarray:
        """Returns the recalibrated probabilities (numpy; the served graph uses `apply_tf`)."""
        p = np.asarray(probability, dtype=np.float64)
        if self.method == "none":
            return p
        return _sigmoid(self.slope * _logit(p) + self.intercept)

    def apply_tf(self, probability):
        """Returns the recalibrated probabilities as a TensorFlow op, for the serving signatures."""
        if self.method == "none":
            # Identity without ops, so a model without recalibration computes exactly what it did before.
            return probability
        import tensorflow as tf  # Deferred: the numpy fit and its tests need no TensorFlow.

        p = tf.clip_by_value(probability, _EPS, 1.0 - _EPS)
        logit = tf.math.log(p) - tf.math.log1p(-p)
        return tf.sigmoid(
            tf.constant(self.slope, tf.float32) * logit + tf.constant(self.intercept, tf.float32)
        )


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # tanh form: no overflow warning for large |z|


def _targets(labels: np.ndarray) -> np.ndarray:
    positives = int(labels.sum())
    negatives = len(labels) - positives
    return np.where(labels == 1, (positives + 1.0) / (positives + 2.0), 1.0 / (negatives + 2.0))


def _nll(z: np.ndarray, targets: np.ndarray) -> float:
    # Cross-entropy with soft targets, written with logaddexp so saturated z stay finite.
    return float(np.sum(targets * np.logaddexp(0.0, -z) + (1.0 - targets) * np.logaddexp(0.0, z)))


def _fit_platt(logit: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Newton's method with step halving on the two-parameter logistic likelihood (convex)."""
    a, b = 1.0, 0.0
    loss = _nll(a * logit + b, targets)
    for _ in range(100):
        p = _sigmoid(a * logit + b)
        residual = p - targets
        weight = np.maximum(p * (1.0 - p), 1e-12)
        gradient = np.array([np.dot(residual, logit), residual.sum()])
        hessian = np.array(
            [[np.dot(weight, logit * logit), np.dot(weight, logit)], [np.dot(weight, logit), weight.sum()]]
        )
        hessian += 1e-9 * np.eye(2)  # keeps a constant-score eval split solvable
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-6:
            new_a, new_b = a - scale * step[0], b - scale * step[1]
            new_loss = _nll(new_a * logit + new_b, targets)
            if new_loss <= loss:
                break
            scale *= 0.5
        else:
            break
        converged = abs(loss - new_loss) < 1e-10 * max(1.0, abs(loss))
        a, b, loss = new_a, new_b, new_loss
        if converged:
            break
    return float(np.clip(a, -_MAX_SLOPE, _MAX_SLOPE)), float(np.clip(b, -_MAX_INTERCEPT, _MAX_INTERCEPT))


def _fit_temperature(logit: np.ndarray, targets: np.ndarray) -> float:
    """Golden-section search over log T (the likelihood is unimodal in T)."""
    low, high = (math.log(t) for t in _TEMPERATURE_RANGE)
    ratio = (math.sqrt(5.0) - 1.0) / 2.0

    def loss(log_t: float) -> float:
        return _nll(logit / math.exp(log_t), targets)

    c, d = high - ratio * (high - low), low + ratio * (high - low)
    for _ in range(100):
        if loss(c) < loss(d):
            high = d
        else:
            low = c
        c, d = high - ratio * (high - low), low + ratio * (high - low)
    return math.exp((low + high) / 2.0)


def fit_calibration(method: str, probability: np.ndarray, labels: np.ndarray) -> Calibration:
    """Fits a recalibration on the eval split's probabilities and labels.

    Args:
        method: `none`, `platt` or `temperature`.
        probability: The model's positive-class probabilities on the eval split.
        labels: The eval split's 0/1 labels.

    Returns:
        The fitted calibration (`none` returns the identity without looking at the data).

    Raises:
        CalibrationError: An unknown method, or (for a fitted method) an eval split without both classes.
    """
    if method not in CALIBRATIONS:
        raise CalibrationError(f"calibration is {method!r}; use one of {list(CALIBRATIONS)}.")
    if method == "none":
        return Calibration()
    labels = np.asarray(labels).astype(np.int64)
    positives = int(labels.sum())
    if positives == 0 or positives == len(labels):
        raise CalibrationError(
            f"calibration {method!r} needs both classes in the eval split; it has {len(labels)} rows and "
            f"{positives} positives. Use calibration: none, or a larger eval split."
        )
    logit = _logit(np.asarray(probability, dtype=np.float64))
    targets = _targets(labels)
    if method == "platt":
        slope, intercept = _fit_platt(logit, targets)
        return Calibration("platt", slope, intercept)
    return Calibration("temperature", 1.0 / _fit_temperature(logit, targets), 0.0)
