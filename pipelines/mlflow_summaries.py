"""Readable JSON summaries of the data-validation artifacts (statistics, anomalies) for the MLflow run.

Read with tensorflow_metadata's protos directly (pure protobuf, no TensorFlow import): the full
statistics file is megabytes of histograms, a reviewer needs counts, missing values and ranges.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _splits(uri: str, filename: str) -> dict[str, Path]:
    root = Path(uri)
    return {
        p.name[len("Split-") :]: p / filename
        for p in sorted(root.glob("Split-*"))
        if p.is_dir() and (p / filename).is_file()
    }


def statistics_summary(statistics_uri: str) -> dict[str, Any]:
    """Summarizes `Split-*/FeatureStats.pb`: per split, example count and per-feature basics."""
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
                        mean=s.mean,
                        std_dev=s.std_dev,
                        min=s.min,
                        max=s.max,
                        zeros=s.num_zeros,
                    )
                elif kind == "string_stats":
                    s = feature.string_stats
                    entry.update(
                        missing=s.common_stats.num_missing,
                        unique=s.unique,
                        top_values=[{"value": v.value, "frequency": v.frequency} for v in s.top_values[:5]],
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
