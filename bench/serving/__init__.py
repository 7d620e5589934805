"""Serving benchmark: in-process signature call vs `dxpipe serve` vs `mlflow models serve` (see run.py)."""
