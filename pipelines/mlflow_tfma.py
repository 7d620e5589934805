"""Turns a TFMA output directory (the Evaluator's ModelEvaluation) into plain numbers.

TFMA writes `metrics-*`, `plots-*` and `validations*` TFRecords of protos. With a baseline model (the
Evaluator re-scoring the previous model on the same split) every metric key carries the model name
`candidate` or `baseline`, and change metrics are flagged `is_diff`. Reading needs TFMA (and so
TensorFlow); it is imported only inside `load_evaluation`, which the pipeline runner calls after TFX has
already loaded both.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from components.registry_gate.core import OVERALL, slice_name
from pipelines.errors import DxpipeError

CANDIDATE = "candidate"
BASELINE = "baseline"


class EvaluationMissingError(DxpipeError):
    """The Evaluator's output holds no metrics."""


@dataclasses.dataclass(frozen=True)
class ModelPlots:
    """Plot data for one model on one slice.

    Attributes:
        thresholds: Decision thresholds of the confusion matrices, ascending.
        tp: True positives per threshold (same order); likewise fp, tn, fn.
        calibration: (lower, upper, weighted examples, sum of labels, sum of predictions) per bucket.
    """

    thresholds: tuple[float, ...] = ()
    tp: tuple[float, ...] = ()
    fp: tuple[float, ...] = ()
    tn: tuple[float, ...] = ()
    fn: tuple[float, ...] = ()
    calibration: tuple[tuple[float, float, float, float, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Metrics and plots of one TFMA run.

    Attributes:
        candidate: {slice: {metric: value}} of the evaluated model.
        baseline: The same for the baseline model, None when the Evaluator had none.
        plots: {slice: {model: ModelPlots}} with model CANDIDATE or BASELINE.
        validation_ok: TFMA's own threshold verdict, None when not written.
    """

    candidate: dict[str, dict[str, float]]
    baseline: dict[str, dict[str, float]] | None = None
    plots: dict[str, dict[str, ModelPlots]] = dataclasses.field(default_factory=dict)
    validation_ok: bool | None = None


def slice_of(proto_slice_key: Any) -> str:
    """Returns the slice name (`Overall`, `sex:Female`) of a TFMA SliceKey proto."""
    columns = []
    for key in proto_slice_key.single_slice_keys:
        kind = key.WhichOneof("kind")
        columns.append((key.column, getattr(key, kind) if kind else ""))
    return slice_name(columns)


def _model_of(name: str) -> str | None:
    if name in ("", CANDIDATE):
        return CANDIDATE
    if name == BASELINE:
        return BASELINE
    return None


def _number(value: Any) -> float | None:
    kind = value.WhichOneof("type")
    if kind == "double_value":
        return float(value.double_value.value)
    if kind == "bounded_value":
        return float(value.bounded_value.value.value)
    if kind == "array_value" and len(value.array_value.float32_values) == 1:
        return float(value.array_value.float32_values[0])
    if kind == "array_value" and len(value.array_value.float64_values) == 1:
        return float(value.array_value.float64_values[0])
    return None


def metrics_from_protos(
    records: Iterable[Any],
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]] | None]:
    """Splits MetricsForSlice protos into candidate and baseline {slice: {metric: value}}.

    Change metrics (`is_diff`), sub-keyed metrics (top-k, class ids) and non-scalar values are skipped;
    unweighted values are preferred over example-weighted ones of the same name.
    """
    out: dict[str, dict[str, dict[str, float]]] = {CANDIDATE: {}, BASELINE: {}}
    weighted_only: set[tuple[str, str, str]] = set()
    for record in records:
        name_of_slice = slice_of(record.slice_key)
        for kv in record.metric_keys_and_values:
            key = kv.key
            model = _model_of(key.model_name)
            if model is None or key.is_diff or (key.HasField("sub_key") and str(key.sub_key).strip()):
                continue
            value = _number(kv.value)
            if value is None:
                continue
            weighted = key.HasField("example_weighted") and key.example_weighted.value
            slot = out[model].setdefault(name_of_slice, {})
            marker = (model, name_of_slice, key.name)
            if key.name in slot and weighted and marker not in weighted_only:
                continue
            slot[key.name] = value
            if weighted:
                weighted_only.add(marker)
            else:
                weighted_only.discard(marker)
    return out[CANDIDATE], (out[BASELINE] or None)


def plots_from_protos(records: Iterable[Any]) -> dict[str, dict[str, ModelPlots]]:
    """Extracts confusion matrices at thresholds and calibration buckets from PlotsForSlice protos."""
    plots: dict[str, dict[str, ModelPlots]] = {}
    for record in records:
        name_of_slice = slice_of(record.slice_key)
        for kv in record.plot_keys_and_values:
            model = _model_of(kv.key.model_name)
            if model is None:
                continue
            current = plots.setdefault(name_of_slice, {}).get(model, ModelPlots())
            matrices = sorted(kv.value.confusion_matrix_at_thresholds.matrices, key=lambda m: m.threshold)
            if matrices:
                current = dataclasses.replace(
                    current,
                    thresholds=tuple(m.threshold for m in matrices),
                    tp=tuple(m.true_positives for m in matrices),
                    fp=tuple(m.false_positives for m in matrices),
                    tn=tuple(m.true_negatives for m in matrices),
                    fn=tuple(m.false_negatives for m in matrices),
                )
            buckets = kv.value.calibration_histogram_buckets.buckets
            if buckets:
                current = dataclasses.replace(
                    current,
                    calibration=tuple(
                        (
                            b.lower_threshold_inclusive,
                            b.upper_threshold_exclusive,
                            b.num_weighted_examples.value,
                            b.total_weighted_label.value,
                            b.total_weighted_refined_prediction.value,
                        )
                        for b in buckets
                    ),
                )
            plots[name_of_slice][model] = current
    return plots


def load_evaluation(eval_dir: str) -> Evaluation:
    """Loads a TFMA output directory (imports TFMA, hence TensorFlow, on first call).

    Raises:
        EvaluationMissingError: If the directory holds no TFMA metrics.
    """
    root = Path(eval_dir)
    if not root.is_dir() or not any(root.glob("metrics*")):
        raise EvaluationMissingError(
            f"{eval_dir} holds no TFMA metrics (no metrics-* files); did the Evaluator run on the test split?"
        )
    import tensorflow_model_analysis as tfma

    candidate, baseline = metrics_from_protos(tfma.load_metrics(str(root)))
    plots = plots_from_protos(tfma.load_plots(str(root))) if any(root.glob("plots*")) else {}
    validation_ok = None
    if any(root.glob("validations*")):
        validation_ok = bool(tfma.load_validation_result(str(root)).validation_ok)
    return Evaluation(candidate, baseline, plots, validation_ok)


def overall(metrics: dict[str, dict[str, float]] | None) -> dict[str, float]:
    """Returns the finite overall metrics (an empty dict when there are none)."""
    if not metrics:
        return {}
    return {k: v for k, v in metrics.get(OVERALL, {}).items() if math.isfinite(v)}
