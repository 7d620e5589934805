"""Confidence intervals for a binomial proportion (sensitivity, specificity, PPV, NPV at a threshold).

Wilson's score interval is the default: it stays inside [0, 1] and keeps close to its nominal coverage for
the small counts a test split has (Agresti & Coull 1998). Clopper-Pearson is the exact (conservative)
interval regulators often ask for. Both are computed with numpy and the standard library only: the exact
interval inverts the binomial tail by bisection rather than pulling scipy into the component's core.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

WILSON = "wilson"
CLOPPER_PEARSON = "clopper_pearson"
METHODS = (WILSON, CLOPPER_PEARSON)


def z_value(confidence: float) -> float:
    """The two-sided standard normal quantile for `confidence` (1.96 for 0.95)."""
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for `successes` out of `n`; (nan, nan) when n is 0."""
    if n <= 0:
        return math.nan, math.nan
    z = z_value(confidence)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At k = 0 or k = n the algebra gives the bound 0 or 1 up to rounding; pin it exactly.
    lower = 0.0 if successes == 0 else max(0.0, centre - half)
    upper = 1.0 if successes == n else min(1.0, centre + half)
    return lower, upper


def _log_binom_pmf(n: int) -> np.ndarray:
    k = np.arange(n + 1)
    return (
        np.array([math.lgamma(n + 1)])
        - np.vectorize(math.lgamma)(k + 1)
        - np.vectorize(math.lgamma)(n - k + 1)
    )


def _tail(log_coef: np.ndarray, k_slice: slice, p: float) -> float:
    n = len(log_coef) - 1
    k = np.arange(n + 1)[k_slice]
    logs = log_coef[k_slice] + k * math.log(p) + (n - k) * math.log1p(-p)
    top = logs.max()
    return float(math.exp(top) * np.exp(logs - top).sum())


def _bisect(f, lo: float = 0.0, hi: float = 1.0, iterations: int = 60) -> float:
    """The root of a function increasing on (lo, hi), to about 1e-18."""
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact Clopper-Pearson interval; (nan, nan) when n is 0.

    The lower bound is the p at which P(X >= k) = alpha/2, the upper the p at which P(X <= k) = alpha/2
    (the Beta quantiles of the textbook form, found by bisection on the binomial tails).
    """
    if n <= 0:
        return math.nan, math.nan
    alpha = 1.0 - confidence
    coef = _log_binom_pmf(n)
    k = successes
    lower = 0.0 if k == 0 else _bisect(lambda p: _tail(coef, slice(k, None), p) - alpha / 2)
    # P(X <= k) decreases in p: bisect on its negation.
    upper = 1.0 if k == n else _bisect(lambda p: alpha / 2 - _tail(coef, slice(0, k + 1), p))
    return lower, upper


def proportion(successes: int, n: int, confidence: float = 0.95, method: str = WILSON) -> dict:
    """A proportion with its interval: {"value", "lower", "upper", "method", "successes", "n"}.

    Raises:
        ValueError: On an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"interval method {method!r} is not one of {METHODS}")
    lower, upper = (wilson if method == WILSON else clopper_pearson)(successes, n, confidence)
    value = successes / n if n > 0 else math.nan
    return {
        "value": value,
        "lower": lower,
        "upper": upper,
        "method": method,
        "successes": int(successes),
        "n": int(n),
    }


def best_lower_bound(n: int, confidence: float = 0.95, method: str = WILSON) -> float:
    """The highest lower bound `n` cases can give (every one a success): what a floor is reachable by."""
    if n <= 0:
        return 0.0
    return (wilson if method == WILSON else clopper_pearson)(n, n, confidence)[0]
