"""Clinical evaluation of a trained model on the test split: intervals, calibration, slices, utility.

`intervals`, `bootstrap` and `calibration` hold the statistics (numpy only, pure, seeded); `core` turns
scores and labels into the `clinical_evaluation.json` report; `component` is the thin TFX shell that
scores the test split with the candidate (and the baseline, for paired non-inferiority).
"""
