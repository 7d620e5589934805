"""Clinical evaluation: how many bootstrap resamples keep the bounds stable, and what they cost.

On WDBC-sized data (scikit-learn's copy of WDBC, a logistic regression fitted on 80 % and scored on the
other 20 %: about 114 rows, like the pipeline's test split), for each number of resamples: the spread
(standard deviation across 20 seeds) of the AUC's 95 % lower bound and of the paired AUC difference's
lower bound, and the time of one full `evaluate` (every statistic of the report). The baseline is the
same evaluation at 200 resamples, measured in the same run.

    python -m bench.clinical_bench
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from components.clinical_eval.core import ClinicalSettings, evaluate

SEEDS = 20


def _scores() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)
    y = 1 - y  # malignant = 1
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    strong = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=1000)).fit(x_train, y_train)
    weak = make_pipeline(StandardScaler(), LogisticRegression(C=0.001, max_iter=1000)).fit(
        x_train[:, :3], y_train
    )
    return strong.predict_proba(x_test)[:, 1], weak.predict_proba(x_test[:, :3])[:, 1], y_test


def main() -> None:
    """Prints the stability and cost table."""
    p, champion, y = _scores()
    print(f"test rows {len(y)}, positives {int(y.sum())}")
    print("resamples  sd(AUC lower)  sd(paired AUC diff lower)  evaluate() s  vs 200")
    base = None
    for resamples in (200, 500, 1000, 2000, 5000):
        lowers, paired, times = [], [], []
        for seed in range(SEEDS):
            started = time.perf_counter()
            report = evaluate(
                p, y, 0.5, ClinicalSettings(resamples=resamples, seed=seed), baseline=(champion, 0.5)
            )
            times.append(time.perf_counter() - started)
            lowers.append(report["auc"]["lower"])
            paired.append(report["noninferiority"]["metrics"]["auc"]["lower"])
        seconds = float(np.median(times))
        base = base or seconds
        print(
            f"{resamples:9d}  {np.std(lowers):13.4f}  {np.std(paired):25.4f}  {seconds:12.3f}  {seconds / base:6.1f}x"
        )


if __name__ == "__main__":
    main()
