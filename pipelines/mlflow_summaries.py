"""Readable JSON summaries of the data-validation artifacts (statistics, anomalies) for the MLflow run.

Read with tensorflow_metadata's protos directly (pure protobuf, no TensorFlow import): the full
statistics file is megabytes of histograms, a reviewer needs counts, missing values and ranges.

What reaches MLflow is aggregates, never a patient's cells: a feature's minimum and maximum are one
row's values (often the one patient who stands out), and a rare category names the rows that carry it.
So numbers are rounded to two significant digits, ranges are the 10th/50th/90th percentiles from the
quantile histogram, and a category is listed only when at least `MIN_CATEGORY_COUNT` examples share it.
Raw extremes and all top values are logged only when configured (`tracking.log_raw_extremes: true`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# A category shared by fewer examples than this is not shown: it could single out a patient.
MIN_CATEGORY_COUNT = 10


def rounded(value: float, digits: int = 2) -> float | None:
    """`value` to `digits` significant digits (None for NaN/inf)."""
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def _quantiles(num_stats: Any) -> dict[str, float | None]:
    from tensorflow_metadata.proto.v0 import statistics_pb2

    for histogram in num_stats.histograms:
        if histogram.type != statistics_pb2.Histogram.QUANTILES or len(histogram.buckets) < 3:
            continue
        buckets = histogram.buckets
        middle = buckets[len(buckets) // 2]
        return {
            "p10": rounded(buckets[0].high_value),
            "median": rounded(
                middle.low_value if len(buckets) % 2 == 0 else (middle.low_value + middle.high_value) / 2
            ),
            "p90": rounded(buckets[-1].low_value),
        }
    return {}


def _splits(uri: str, filename: str) -> dict[str, Path]:
    root = Path(uri)
    return {
        p.name[len("Split-") :]: p / filename
        for p in sorted(root.glob("Split-*"))
        if p.is_dir() and (p / filename).is_file()
    }


def statistics_summary(statistics_uri: str, raw_extremes: bool = False) -> dict[str, Any]:
    """Summarizes `Split-*/FeatureStats.pb`: per split, example count and per-feature aggregates.

    Args:
        statistics_uri: The ExampleStatistics artifact.
        raw_extremes: Also log each numeric feature's exact min and max and every top value (cells of
            single rows); off unless configured.
    """
    from tensorflow_metadata.proto.v0 import statistics_pb2

    summary: dict[str, Any] = {}
    for split, path in _splits(statistics_uri, "FeatureStats.pb").items():
        stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(path.read_bytes())
        for dataset in stats.datasets:
            features: dict[str, Any] = {}
            for feature in dataset.features:
                name = feature.path.step[-1] if feature.path.step else feature.name
                kind = feature.WhichOneof("stats")
                entry: dict[str, Any] = {"type": statistics_pb2.FeatureNameStatistics.Type.Name(feature.type)}
                if kind == "num_stats":
                    s = feature.num_stats
                    entry.update(
                        missing=s.common_stats.num_missing,
                        mean=rounded(s.mean),
                        std_dev=rounded(s.std_dev),
                        zeros=s.num_zeros,
                        **_quantiles(s),
                    )
                    if raw_extremes:
                        entry.update(min=s.min, max=s.max)
                elif kind == "string_stats":
                    s = feature.string_stats
                    shown = [
                        {"value": v.value, "frequency": v.frequency}
                        for v in s.top_values[:5]
                        if raw_extremes or v.frequency >= MIN_CATEGORY_COUNT
                    ]
                    entry.update(
                        missing=s.common_stats.num_missing,
                        unique=s.unique,
                        top_values=shown,
                        rare_values_hidden=0 if raw_extremes else len(s.top_values[:5]) - len(shown),
                    )
                features[name] = entry
            summary[split] = {"num_examples": dataset.num_examples, "features": features}
    return summary


def anomalies_summary(anomalies_uri: str) -> dict[str, Any]:
    """Summarizes `Split-*/SchemaDiff.pb`: per split, each anomalous feature's short descriptions."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    summary: dict[str, Any] = {}
    for split, path in _splits(anomalies_uri, "SchemaDiff.pb").items():
        anomalies = anomalies_pb2.Anomalies.FromString(path.read_bytes())
        per_feature = {
            feature: sorted({r.short_description for r in info.reason} | {info.short_description} - {""})
            for feature, info in anomalies.anomaly_info.items()
        }
        dataset = [r.short_description for r in anomalies.dataset_anomaly_info.reason]
        summary[split] = {
            "features": per_feature,
            "dataset": dataset,
            "count": len(per_feature) + len(dataset),
        }
    return summary
