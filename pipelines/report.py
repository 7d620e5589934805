"""What a user reads after a run: TFMA metrics on the test split and the blessing verdict with reasons."""

from __future__ import annotations

from collections.abc import Mapping

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


def slice_label(slice_key) -> str:
    """Returns `overall` or `feature=value` for a TFMA SliceKey proto."""
    parts = []
    for item in slice_key.single_slice_keys:
        value = item.WhichOneof("kind")
        raw = getattr(item, value) if value else ""
        parts.append(f"{item.column}={raw.decode() if isinstance(raw, bytes) else raw}")
    return ",".join(parts) or "overall"


def load_test_metrics(evaluation_uri: str, model_name: str = "candidate") -> dict[str, dict[str, float]]:
    """Returns `{slice: {metric: value}}` for one model from a TFMA output directory.

    The Evaluator names models only when it also scored a baseline; with a single model the name is empty.
    Diff metrics (candidate minus baseline) are returned under `<metric>_diff`.
    """
    import tensorflow_model_analysis as tfma  # Deferred: importing TFMA costs seconds.

    out: dict[str, dict[str, float]] = {}
    for per_slice in tfma.load_metrics(evaluation_uri):
        values = out.setdefault(slice_label(per_slice.slice_key), {})
        for item in per_slice.metric_keys_and_values:
            if item.key.model_name not in ("", model_name) or not item.value.HasField("double_value"):
                continue
            name = f"{item.key.name}_diff" if item.key.is_diff else item.key.name
            values[name] = item.value.double_value.value
    return out


def load_failed_thresholds(evaluation_uri: str) -> list[str]:
    """Returns one line per TFMA threshold the candidate failed (empty when it was blessed)."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(evaluation_uri)
    lines = []
    for per_slice in result.metric_validations_per_slice:
        where = slice_label(per_slice.slice_key)
        for failure in per_slice.failures:
            name = failure.metric_key.name + (" change vs baseline" if failure.metric_key.is_diff else "")
            value = failure.metric_value.double_value.value
            lines.append(f"{where}: {name} = {value:.4f} fails {failure.message or 'its threshold'}")
    for missing in result.missing_slices:
        lines.append(f"slice {missing} had no test examples")
    return lines


def format_metrics_table(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """Returns a plain-text table: one row per summary metric, one column per slice."""
    slices = ["overall", *sorted(s for s in metrics if s != "overall")]
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
