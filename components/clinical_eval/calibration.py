"""Calibration of predicted probabilities: logistic recalibration slope/intercept, ECE, ICI, reliability bins.

- Slope: b in logit P(y=1) = a + b * logit(p), fitted by maximum likelihood (Newton-Raphson). 1 is ideal;
  below 1 the predictions are too extreme (overfitting), above 1 too timid.
- Intercept (calibration-in-the-large): a in logit P(y=1) = a + logit(p), the slope held at 1. 0 is
  ideal; positive means the model under-predicts risk on average.
- ECE: the bin-weighted mean |observed rate - mean prediction| over equal-width bins.
- ICI (Austin & Steyerberg 2019): the mean |p - smoothed observed rate at p|, smoothed with a local-linear
  tricube (LOWESS-style) fit, which does not depend on a choice of bins.

When the test split is perfectly separated the likelihood has no maximum and the slope is undefined: the
fit reports `converged: false` and None, which the gate treats as a failed calibration criterion.
"""

from __future__ import annotations

import math

import numpy as np

from components.clinical_eval.intervals import wilson

_EPS = 1e-6
_MAX_ITER = 100
_DIVERGED = 1e3
_SMOOTH_GRID = 201


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), with p clipped to [1e-6, 1 - 1e-6] so a 0 or 1 stays finite."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _log_likelihood(eta: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


def _newton(x: np.ndarray, y: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, bool]:
    """Maximum-likelihood logistic coefficients for design `x` (n, k) with a fixed offset.

    Newton-Raphson with step halving: a full Newton step from 0 can overshoot on steep fits and never
    come back, so a step that lowers the likelihood is halved until it does not.
    """
    beta = np.zeros(x.shape[1])
    current = _log_likelihood(x @ beta + offset, y)
    for _ in range(_MAX_ITER):
        eta = x @ beta + offset
        mu = np.exp(-np.logaddexp(0.0, -eta))  # the logistic function without overflow
        weights = mu * (1 - mu)
        hessian = x.T @ (x * weights[:, None])
        try:
            step = np.linalg.solve(hessian, x.T @ (y - mu))
        except np.linalg.LinAlgError:
            return beta, False
        for _ in range(30):
            candidate = beta + step
            value = _log_likelihood(x @ candidate + offset, y)
            if value >= current - 1e-12:
                break
            step = step / 2
        beta, current = candidate, value
        if not np.all(np.isfinite(beta)) or np.abs(beta).max() > _DIVERGED:
            return beta, False
        if np.abs(step).max() < 1e-10:
            return beta, True
    return beta, False


def recalibration(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Calibration slope and intercept: {"slope", "intercept", "converged"} (None when undefined)."""
    y = np.asarray(labels, dtype=np.float64)
    lp = logit(probabilities)
    if y.min(initial=0) == y.max(initial=0) or len(y) < 2:
        return {"slope": None, "intercept": None, "converged": False}
    ones = np.ones((len(y), 1))
    (_, slope), ok_slope = _newton(np.column_stack([ones, lp]), y, np.zeros(len(y)))
    (intercept,), ok_int = _newton(ones, y, lp)
    return {
        "slope": float(slope) if ok_slope else None,
        "intercept": float(intercept) if ok_int else None,
        "converged": bool(ok_slope and ok_int),
    }


def reliability_bins(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 10, confidence: float = 0.95
) -> list[dict]:
    """Equal-width bins of predicted probability with the observed rate and its Wilson interval.

    Returns:
        One dict per non-empty bin: {"lower", "upper", "n", "mean_predicted", "observed",
        "observed_lower", "observed_upper"}.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        if n == 0:
            continue
        positives = int(y[mask].sum())
        lower, upper = wilson(positives, n, confidence)
        out.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "n": n,
                "mean_predicted": float(p[mask].mean()),
                "observed": positives / n,
                "observed_lower": lower,
                "observed_upper": upper,
            }
        )
    return out


def expected_calibration_error(bins: list[dict]) -> float:
    """ECE from `reliability_bins`: sum over bins of n_b / n * |observed_b - mean_predicted_b|."""
    total = sum(b["n"] for b in bins)
    if total == 0:
        return math.nan
    return float(sum(b["n"] * abs(b["observed"] - b["mean_predicted"]) for b in bins) / total)


def smoothed_observed(probabilities: np.ndarray, labels: np.ndarray, frac: float = 2 / 3) -> np.ndarray:
    """The observed event rate at each prediction, by local-linear regression with tricube weights.

    Evaluated on a grid of at most 201 points across the predictions' range and interpolated, so the
    cost is O(n * 201) rather than O(n^2) on large test splits.
    """
    x = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    n = len(x)
    unique = np.unique(x)
    grid = unique if len(unique) <= _SMOOTH_GRID else np.linspace(x.min(), x.max(), _SMOOTH_GRID)
    k = max(2, min(n, math.ceil(frac * n)))
    dist = np.abs(x[None, :] - grid[:, None])
    radius = np.partition(dist, k - 1, axis=1)[:, k - 1]
    radius = np.where(radius > 0, radius, 1.0)
    w = np.clip(1 - (dist / radius[:, None]) ** 3, 0, None) ** 3
    sw = w.sum(1)
    mx = (w * x).sum(1) / sw
    my = (w * y).sum(1) / sw
    sxx = (w * (x - mx[:, None]) ** 2).sum(1)
    sxy = (w * (x - mx[:, None]) * (y - my[:, None])).sum(1)
    slope = np.divide(sxy, sxx, out=np.zeros_like(sxy), where=sxx > 1e-12)
    fitted = np.clip(my + slope * (grid - mx), 0.0, 1.0)
    return np.interp(x, grid, fitted)


def integrated_calibration_index(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """ICI: mean |p - smoothed observed rate at p| over the predictions."""
    p = np.asarray(probabilities, dtype=np.float64)
    if len(p) < 2:
        return math.nan
    return float(np.abs(p - smoothed_observed(p, labels)).mean())


def calibration_report(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 10, confidence: float = 0.95
) -> dict:
    """{"slope", "intercept", "converged", "ece", "ici", "bins"} for the shared report."""
    table = reliability_bins(probabilities, labels, bins, confidence)
    return {
        **recalibration(probabilities, labels),
        "ece": expected_calibration_error(table),
        "ici": integrated_calibration_index(probabilities, labels),
        "bins": table,
    }
