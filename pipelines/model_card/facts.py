"""Reads a run's own artifacts into the facts a model card is rendered from (aggregates only).

Sources, each optional (a card from an older or partial run says what it lacks rather than failing):

- the ExampleStatistics artifact: split sizes, label prevalence and per-feature aggregates from
  `pipelines.mlflow_summaries.statistics_summary` (two significant digits, 10th/50th/90th percentiles,
  categories shared by at least 10 examples: never one patient's value);
- the ExampleAnomalies artifact: anomaly counts per split;
- the Schema artifact: features, types, presence and domains (the reviewed contract, not data);
- the ExampleGen input directory (`pipelines.data.materialize`'s CSVs): how the data was split and the
  leakage check (identical feature rows and shared patients across splits), as counts;
- the Evaluator's metrics per slice (`pipelines.mlflow_tfma.Evaluation`);
- `clinical_evaluation.json` of the clinical evaluation component, when the run has one;
- `assets.extra/dxpipe_operating_point.json` in the exported SavedModel, when the Trainer wrote one;
- the config's `model_card:` (intended use and limitations, written by people).

Reading protos needs tensorflow_metadata only; TensorFlow is never imported here.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.mlflow_summaries import anomalies_summary, statistics_summary

LABEL = "label"
CLINICAL_FILE = "clinical_evaluation.json"
OPERATING_POINT_FILE = "assets.extra/dxpipe_operating_point.json"
# The largest JSON file read from an artifact; the real ones are a few kilobytes.
MAX_JSON_BYTES = 8 << 20


def _label_positives(statistics_uri: str) -> dict[str, int | None]:
    """Positives per split from the label's exact mean (the summary's mean is rounded for privacy)."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    found: dict[str, int | None] = {}
    for path in sorted(Path(statistics_uri).glob("Split-*/FeatureStats.pb")):
        split = path.parent.name[len("Split-") :]
        stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(path.read_bytes())
        for dataset in stats.datasets:
            for feature in dataset.features:
                name = feature.path.step[-1] if feature.path.step else feature.name
                if name == LABEL and feature.WhichOneof("stats") == "num_stats":
                    s = feature.num_stats
                    present = dataset.num_examples - s.common_stats.num_missing
                    found[split] = round(s.mean * present) if math.isfinite(s.mean) else None
    return found


def data_summary(statistics_uri: str, features_split: str = "train") -> dict[str, Any]:
    """Split sizes, positives and per-feature aggregates of one split (privacy-preserving, see module doc)."""
    summary = statistics_summary(statistics_uri)
    positives = _label_positives(statistics_uri)
    splits = {
        split: {"examples": int(entry["num_examples"]), "positives": positives.get(split)}
        for split, entry in summary.items()
    }
    chosen = features_split if features_split in summary else next(iter(summary), None)
    features = []
    if chosen is not None:
        for name, entry in sorted(summary[chosen]["features"].items()):
            if name == LABEL:
                continue
            kept = {k: v for k, v in entry.items() if k in _FEATURE_KEYS}
            features.append({"name": name, **kept})
    return {"splits": splits, "features": features, "features_split": chosen}


# What a feature's row in the card may show: aggregates, never a row's value (no min/max).
_FEATURE_KEYS = ("type", "missing", "mean", "std_dev", "p10", "median", "p90", "unique", "top_values")


def anomaly_counts(anomalies_uri: str) -> dict[str, int]:
    """The number of anomalies TFDV reported per split."""
    return {split: int(entry["count"]) for split, entry in anomalies_summary(anomalies_uri).items()}


def schema_summary(schema_uri: str) -> list[dict[str, Any]]:
    """Each schema feature's name, type, presence and domain, read from the Schema artifact."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    path = Path(schema_uri) / "schema.pbtxt"
    if not path.is_file():
        return []
    schema = text_format.Parse(path.read_text(encoding="utf-8"), schema_pb2.Schema())
    named = {d.name: list(d.value) for d in schema.string_domain}
    out = []
    for feature in schema.feature:
        kind = feature.WhichOneof("domain_info")
        domain = ""
        if kind == "int_domain":
            d = feature.int_domain
            domain = f"{d.min if d.HasField('min') else '-inf'} to {d.max if d.HasField('max') else 'inf'}"
        elif kind == "float_domain":
            d = feature.float_domain  # float32 in the proto: shown to 6 significant digits, as written
            domain = f"{f'{d.min:g}' if d.HasField('min') else '-inf'} to {f'{d.max:g}' if d.HasField('max') else 'inf'}"
        elif kind == "string_domain":
            domain = "one of: " + ", ".join(feature.string_domain.value)
        elif kind == "domain" and feature.domain in named:
            domain = "one of: " + ", ".join(named[feature.domain])
        elif kind == "image_domain":
            domain = "image"
        required = feature.presence.min_fraction >= 1.0 if feature.HasField("presence") else False
        out.append(
            {
                "name": feature.name,
                "type": schema_pb2.FeatureType.Name(feature.type),
                "required": required,
                "domain": domain,
            }
        )
    return out


def split_report(input_base: str | Path) -> dict[str, Any] | None:
    """How the table was split and what the splits share, from the ExampleGen input `materialize` wrote.

    Returns:
        {"method", "leakage": {"identical_rows_across_splits", "shared_groups"}, "removed_by_label_map"},
        or None when the directory holds no split CSVs (image datasets, a moved workdir).
    """
    from components.data_checks.guards import split_leakage

    base = Path(input_base)
    manifest_path = base / "rows.json"
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    columns: list[str] = []
    per_split = {}
    for split, entry in manifest.get("splits", {}).items():
        path = base / split / "data.csv"
        if not path.is_file():
            return None
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            columns = next(reader, [])
            rows = list(reader)
        per_split[split] = (rows, entry.get("groups") or [])
    shared = split_leakage(columns, per_split)
    group_by, order_by = manifest.get("group_by"), manifest.get("order_by")
    if group_by:
        method = f"grouped by {group_by} (every patient's rows in one split)"
    elif order_by:
        method = f"ordered by {order_by} (the newest rows are tested)"
    else:
        method = "by a hash of each row's feature values (identical rows share a split)"
    return {
        "method": method,
        "leakage": {
            "identical_rows_across_splits": shared["identical_rows_across_splits"],
            "shared_groups": shared["shared_groups"] if group_by else None,
        },
        "removed_by_label_map": dict(manifest.get("dropped_by_label") or {}),
    }


def read_json_artifact(path: str | Path) -> Any:
    """A JSON file an artifact holds, or None when absent; a file too large or not JSON is an error.

    Raises:
        ValueError: The file is not JSON or is over `MAX_JSON_BYTES`.
    """
    path = Path(path)
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ValueError(f"{path} is over {MAX_JSON_BYTES} bytes; it is not a dxpipe artifact")
    return json.loads(path.read_text(encoding="utf-8"))


def clinical_evaluation_path(outputs: Any) -> Path | None:
    """This run's `clinical_evaluation.json`: the artifact the gate read, else by this run's executions.

    `outputs.clinical_uri` is the ClinicalEvaluator artifact the RegistryGate node was given (a cached
    evaluation keeps the directory of the execution that wrote it, so it is found on re-runs and where no
    metadata store is at hand, as on Kubeflow). Without it: a run's component outputs live at
    `<pipeline root>/<component>/<key>/<execution id>/`; only the execution ids of this TFX run are looked
    at, so another run's evaluation is never picked up.
    """
    uri = getattr(outputs, "clinical_uri", None)
    if uri:
        path = Path(uri) / CLINICAL_FILE
        return path if path.is_file() else None
    if not outputs.model_uri:
        return None
    root = Path(outputs.model_uri).parents[2]
    ids = {str(i) for i in (outputs.execution_ids or {}).values()}
    for path in sorted(root.glob(f"*/*/*/{CLINICAL_FILE}")):
        if path.parent.name in ids:
            return path
    return None


def gather(
    outputs: Any,
    evaluation: Any = None,
    *,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The facts of one run's card, without the registry fields (`attach` adds model and gate).

    Args:
        outputs: The run's `PipelineOutputs`.
        evaluation: Its TFMA `Evaluation`, None when there is none.
        context: What only the config knows: {"dataset", "positive_class", "kind", "intended" (the
            `model_card:` section as a mapping), "input_base" (the ExampleGen input directory), "tflite"
            (the TFLite parity report)}.

    Returns:
        A JSON-able mapping; `notes` lists every source that was missing or unreadable.
    """
    context = dict(context or {})
    notes: list[str] = []
    facts: dict[str, Any] = {
        "card_format": 1,
        "dataset": {
            "name": context.get("dataset", outputs.pipeline_name.removeprefix("dxpipe-")),
            "positive_class": context.get("positive_class", "positive"),
            "kind": context.get("kind", "table"),
        },
        "intended": dict(context.get("intended") or {}),
        "data": {},
        "anomalies": None,
        "schema": [],
        "metrics": {},
        "clinical": None,
        "operating_point": None,
        "tflite": context.get("tflite"),
    }
    facts["intended"]["limitations"] = list(facts["intended"].get("limitations") or ())

    if outputs.statistics_uri and Path(outputs.statistics_uri).is_dir():
        facts["data"] = data_summary(outputs.statistics_uri)
    else:
        notes.append("no data statistics were found for this run: the data summary is empty")
    if context.get("input_base"):
        report = split_report(context["input_base"])
        if report is not None:
            facts["data"].update(report)
    if outputs.anomalies_uri and Path(outputs.anomalies_uri).is_dir():
        facts["anomalies"] = anomaly_counts(outputs.anomalies_uri)
    if outputs.schema_uri:
        facts["schema"] = schema_summary(outputs.schema_uri)
    if evaluation is not None:
        facts["metrics"] = {
            name: {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}
            for name, values in evaluation.candidate.items()
        }
    else:
        notes.append("no Evaluator output: no test-split metrics")

    clinical_path = clinical_evaluation_path(outputs)
    if clinical_path is not None:
        try:
            clinical = read_json_artifact(clinical_path)
        except ValueError as exc:
            notes.append(f"the clinical evaluation ({clinical_path}) could not be read: {exc}")
        else:
            if isinstance(clinical, Mapping):
                facts["clinical"] = clinical
            else:
                notes.append(
                    f"the clinical evaluation ({clinical_path}) is not a JSON object; it was ignored"
                )
    else:
        notes.append(
            "no clinical evaluation for this run: metrics are point estimates without confidence intervals, "
            "and no calibration analysis or decision curve was computed"
        )
    if outputs.saved_model_dir:
        op_path = Path(outputs.saved_model_dir) / OPERATING_POINT_FILE
        try:
            facts["operating_point"] = read_json_artifact(op_path)
        except ValueError as exc:
            notes.append(f"the operating point ({op_path}) could not be read: {exc}")
    if facts["operating_point"] is None:
        notes.append("no locked operating point was exported with the model: it decides at probability 0.5")
    clinical = facts["clinical"] or {}
    n = clinical.get("n")
    if isinstance(n, int):
        insufficient = [
            f"{s.get('feature')}={s.get('value')}"
            for s in clinical.get("slices") or ()
            if isinstance(s, Mapping) and s.get("status") == "insufficient_evidence"
        ]
        if insufficient:
            notes.append(
                "too few test cases to judge these subgroups (insufficient evidence): "
                + ", ".join(insufficient)
            )
    facts["notes"] = notes
    return facts
