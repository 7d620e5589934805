"""What a user reads after a run: TFMA metrics on the test split and the blessing verdict with reasons."""

from __future__ import annotations

from collections.abc import Mapping

from components.registry_gate.core import OVERALL

# Metrics shown in the summary table, in order, with their display names.
SUMMARY_METRICS = (
    ("auc", "AUC"),
    ("binary_accuracy", "accuracy"),
    ("precision", "precision"),
    ("recall", "recall (sensitivity)"),
    ("specificity", "specificity"),
    ("brier_score", "Brier score"),
    ("calibration", "calibration (mean pred / mean label)"),
    ("example_count", "test examples"),
)


def load_test_metrics(evaluation_uri: str) -> dict[str, dict[str, float]]:
    """Returns the candidate's `{slice: {metric: value}}` from a TFMA output directory.

    Slices are named as in MLflow and the gate policy (`Overall`, `sex:Female`): one reader of TFMA's
    output (`pipelines.mlflow_tfma`) serves the summary, the MLflow logging and the registry gate.
    """
    from pipelines.mlflow_tfma import load_evaluation

    return load_evaluation(evaluation_uri).candidate


def load_failed_thresholds(evaluation_uri: str) -> list[str]:
    """Returns one line per TFMA threshold the candidate failed (empty when it was blessed)."""
    import tensorflow_model_analysis as tfma  # Deferred: importing TFMA costs seconds.

    from pipelines.mlflow_tfma import slice_of

    result = tfma.load_validation_result(evaluation_uri)
    lines = []
    for per_slice in result.metric_validations_per_slice:
        where = slice_of(per_slice.slice_key)
        for failure in per_slice.failures:
            name = failure.metric_key.name + (" change vs baseline" if failure.metric_key.is_diff else "")
            value = failure.metric_value.double_value.value
            lines.append(f"{where}: {name} = {value:.4f} fails {failure.message or 'its threshold'}")
    for missing in result.missing_slices:
        lines.append(f"slice {missing} had no test examples")
    return lines


def format_metrics_table(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """Returns a plain-text table: one row per summary metric, one column per slice."""
    slices = [OVERALL, *sorted(s for s in metrics if s != OVERALL)]
    slices = [s for s in slices if s in metrics]
    width = max(len(label) for _, label in SUMMARY_METRICS)
    lines = [f"  {'metric':<{width}}  " + "  ".join(f"{s:>14}" for s in slices)]
    for key, label in SUMMARY_METRICS:
        cells = []
        for s in slices:
            value = metrics[s].get(key)
            cells.append(
                f"{'-':>14}"
                if value is None
                else f"{value:>14.0f}"
                if key == "example_count"
                else f"{value:>14.4f}"
            )
        lines.append(f"  {label:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def describe_operating_point(record: Mapping) -> str:
    """One line for the run summary: the threshold the Trainer locked, for what, and how it did on eval.

    Args:
        record: The export's `dxpipe_operating_point.json` (`models.operating_point.operating_point_record`).
    """
    target = record.get("target") or {}
    if "fixed" in target:
        aim = "fixed in the config"
    else:
        aim = f"locked on the eval split for {target.get('metric')} >= {target.get('value')}"
    ev = record.get("eval") or {}

    def rate(name: str) -> str:
        value = ev.get(name)
        return "n/a" if value is None else f"{value:.3f}"

    calibration = (record.get("calibration") or {}).get("method", "none")
    recalibrated = "" if calibration == "none" else f", {calibration} recalibration"
    return (
        f"Operating point: threshold {record['threshold']:.4f} {aim}{recalibrated} "
        f"(eval: {ev.get('n')} rows, {ev.get('positives')} positive; sensitivity {rate('sensitivity')}, "
        f"specificity {rate('specificity')}). Served as `decision` with the probability."
    )
