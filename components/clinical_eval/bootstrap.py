"""ROC AUC and stratified, seeded bootstrap intervals for it (single model and paired difference).

A bootstrap resample is drawn *within* each class (stratified), so every resample keeps the test split's
positives and negatives and its AUC is always defined. A resample is represented by how many times it
draws each row (multinomial counts), which turns the AUC of every resample into one matrix product:

    AUC_b = (w_pos_b @ C @ w_neg_b) / (n_pos * n_neg),   C[i, j] = 1[s_i > s_j] + 0.5 * 1[s_i == s_j]

for positive i and negative j. C costs n_pos * n_neg floats; above `MATRIX_LIMIT` cells the resamples are
scored one by one with a sorted search instead (same numbers, more time). The paired bootstrap draws the
same rows for the candidate and the baseline, so the interval of their difference reflects that both
models saw the same patients.
"""

from __future__ import annotations

import math

import numpy as np

MATRIX_LIMIT = 4_000_000
_CHUNK = 256


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties count one half); nan when a class is absent."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    pos, neg = np.sort(scores[labels]), np.sort(scores[~labels])
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    below = np.searchsorted(neg, pos, side="left")
    at_or_below = np.searchsorted(neg, pos, side="right")
    return float((below + 0.5 * (at_or_below - below)).sum() / (len(pos) * len(neg)))


def _comparison(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    return (pos[:, None] > neg[None, :]).astype(np.float64) + 0.5 * (pos[:, None] == neg[None, :])


def resample_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each of `n` rows is drawn in each resample: shape (resamples, n), rows sum to n."""
    if n == 0:
        return np.zeros((resamples, 0))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def _aucs(
    pos: np.ndarray, neg: np.ndarray, w_pos: np.ndarray, w_neg: np.ndarray, force_loop: bool
) -> np.ndarray:
    n_pos, n_neg = len(pos), len(neg)
    if not force_loop and n_pos * n_neg <= MATRIX_LIMIT:
        c = _comparison(pos, neg)
        out = np.empty(len(w_pos))
        for start in range(0, len(w_pos), _CHUNK):
            stop = start + _CHUNK
            # A BLAS matrix product, then a row-wise dot: einsum over three operands would loop in C.
            out[start:stop] = ((w_pos[start:stop] @ c) * w_neg[start:stop]).sum(axis=1)
        return out / (n_pos * n_neg)
    out = np.empty(len(w_pos))
    for b in range(len(w_pos)):
        p = np.repeat(pos, w_pos[b].astype(np.int64))
        q = np.sort(np.repeat(neg, w_neg[b].astype(np.int64)))
        lo = np.searchsorted(q, p, side="left")
        hi = np.searchsorted(q, p, side="right")
        out[b] = (lo + 0.5 * (hi - lo)).sum() / (n_pos * n_neg)
    return out


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central `confidence` percentile interval of bootstrap replicates."""
    alpha = 1.0 - confidence
    lower, upper = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lower), float(upper)


def stratified_draws(
    labels: np.ndarray, resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Positive and negative row indices with their resample counts: (pos_idx, neg_idx, w_pos, w_neg)."""
    labels = np.asarray(labels).astype(bool)
    rng = np.random.default_rng(seed)
    pos_idx, neg_idx = np.flatnonzero(labels), np.flatnonzero(~labels)
    return (
        pos_idx,
        neg_idx,
        resample_counts(len(pos_idx), resamples, rng),
        resample_counts(len(neg_idx), resamples, rng),
    )


def auc_interval(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    resamples: int,
    seed: int,
    confidence: float = 0.95,
    force_loop: bool = False,
) -> dict:
    """AUC with its stratified percentile-bootstrap interval: {"value", "lower", "upper", "method"}.

    Args:
        scores: Predicted probabilities.
        labels: 0/1 labels.
        resamples: Bootstrap resamples.
        seed: Seed of the resampling (the same seed gives the same interval).
        confidence: Two-sided confidence level.
        force_loop: Score resamples one by one even when the matrix form fits (tests compare the two).
    """
    scores = np.asarray(scores, dtype=np.float64)
    value = auc(scores, labels)
    if math.isnan(value):
        return {"value": value, "lower": math.nan, "upper": math.nan, "method": "bootstrap"}
    pos_idx, neg_idx, w_pos, w_neg = stratified_draws(labels, resamples, seed)
    reps = _aucs(scores[pos_idx], scores[neg_idx], w_pos, w_neg, force_loop)
    lower, upper = percentile_interval(reps, confidence)
    return {"value": value, "lower": lower, "upper": upper, "method": "bootstrap"}


def paired_difference(
    candidate: np.ndarray,
    baseline: np.ndarray,
    labels: np.ndarray,
    *,
    candidate_threshold: float,
    baseline_threshold: float,
    resamples: int,
    seed: int,
    confidence: float = 0.95,
) -> dict:
    """Candidate minus baseline on the same rows, with paired stratified bootstrap intervals.

    Each model's sensitivity and specificity are taken at its own locked threshold: the comparison is
    between the decisions each would make in the clinic.

    Returns:
        {metric: {"candidate", "baseline", "difference", "lower", "upper"}} for auc, sensitivity and
        specificity; the bounds are of the difference.
    """
    candidate = np.asarray(candidate, dtype=np.float64)
    baseline = np.asarray(baseline, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    pos_idx, neg_idx, w_pos, w_neg = stratified_draws(labels, resamples, seed)
    n_pos, n_neg = len(pos_idx), len(neg_idx)
    out = {}
    if n_pos and n_neg:
        reps = _aucs(candidate[pos_idx], candidate[neg_idx], w_pos, w_neg, False) - _aucs(
            baseline[pos_idx], baseline[neg_idx], w_pos, w_neg, False
        )
        out["auc"] = _difference(auc(candidate, labels), auc(baseline, labels), reps, confidence)
    for metric, idx, weights, flag in (
        ("sensitivity", pos_idx, w_pos, True),
        ("specificity", neg_idx, w_neg, False),
    ):
        if len(idx) == 0:
            continue
        hit_c = (candidate[idx] >= candidate_threshold) == flag
        hit_b = (baseline[idx] >= baseline_threshold) == flag
        reps = weights @ (hit_c.astype(np.float64) - hit_b) / len(idx)
        out[metric] = _difference(float(hit_c.mean()), float(hit_b.mean()), reps, confidence)
    return out


def _difference(cand: float, base: float, reps: np.ndarray, confidence: float) -> dict:
    lower, upper = percentile_interval(reps, confidence)
    return {"candidate": cand, "baseline": base, "difference": cand - base, "lower": lower, "upper": upper}
