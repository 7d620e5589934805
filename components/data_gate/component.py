"""TFX shell of the data gate: read ExampleValidator's anomalies, the schema and the split rows; call the cores."""

import csv
import json
import os

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from components.data_checks import guards, rows
from components.data_checks.findings import Finding
from components.data_gate import core
from models.features import load_schema

_ANOMALIES_FILE = "SchemaDiff.pb"  # Where ExampleValidator writes each split's Anomalies proto.
_DATA_FILE = "data.csv"  # One per split directory under the ExampleGen input base (pipelines/data.py).
_ROWS_FILE = "rows.json"  # Each row's source line, beside the split directories.


def read_splits(data_dir: str) -> tuple[list[str], dict, dict]:
    """Reads the split CSVs the pipeline was fed.

    Returns:
        (header, split -> (rows, source lines), split -> group values). Without `rows.json` (data
        prepared by hand) the line numbers are those of the split file.
    """
    manifest_path = os.path.join(data_dir, _ROWS_FILE)
    manifest = {}
    if tf.io.gfile.exists(manifest_path):
        manifest = json.loads(tf.io.gfile.GFile(manifest_path).read()).get("splits", {})
    header: list[str] = []
    splits, groups = {}, {}
    for split in sorted(tf.io.gfile.listdir(data_dir)):
        split = split.rstrip("/")
        path = os.path.join(data_dir, split, _DATA_FILE)
        if not tf.io.gfile.exists(path):
            continue
        table = list(csv.reader(tf.io.gfile.GFile(path).read().splitlines()))
        header, body = table[0], table[1:]
        lines = manifest.get(split, {}).get("lines") or list(range(2, len(body) + 2))
        splits[split] = (body, lines)
        groups[split] = manifest.get(split, {}).get("groups", [])
    return header, splits, groups


@component
def DataGate(
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    schema: InputArtifact[standard_artifacts.Schema],
    source: Parameter[str],
    data_dir: Parameter[str] = "",
    checks: Parameter[str] = "{}",
) -> None:
    """Fails the run with a readable report when the data breaks the schema or the guards.

    Args:
        anomalies: ExampleValidator output.
        schema: The curated schema (ImportSchemaGen output).
        source: The user-facing name of the data (file path), for the report.
        data_dir: The ExampleGen input base: one directory per split and `rows.json`. Empty for data
            without CSV rows (images, which the ImageGate checks): only TFDV's findings are reported.
        checks: The guards' settings (`DataChecksConfig` as JSON); part of this component's cache key.
    """
    schema_proto = load_schema(os.path.join(schema.uri, "schema.pbtxt"))
    settings = json.loads(checks)
    tfdv_findings = []
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        path = os.path.join(artifact_utils.get_split_uri([anomalies], split), _ANOMALIES_FILE)
        proto = anomalies_pb2.Anomalies()
        proto.ParseFromString(tf.io.gfile.GFile(path, "rb").read())
        tfdv_findings.extend(core.findings_from_anomalies(split, proto, schema_proto))
    if not data_dir:
        core.enforce(core.combine(tfdv_findings, [], []), source)
        return
    header, splits, groups = read_splits(data_dir)
    limit = settings.get("report_rows", 20)
    row_findings = rows.check_rows(header, splits, schema_proto, limit)
    guard_findings = guards.check_columns(
        header,
        splits,
        guards.allowed_columns(schema_proto),
        max_unique_fraction=settings.get("max_unique_fraction", 0.9),
        max_single_feature_auc=settings.get("max_single_feature_auc", 0.99),
        limit=limit,
    )
    shared = guards.split_leakage(header, {s: (r, groups[s]) for s, (r, _) in splits.items()})
    if shared["shared_groups"]:
        guard_findings.append(
            Finding(
                "",
                tuple(splits),
                "every group (patient) in one split",
                f"{shared['shared_groups']} group(s) with rows in more than one split",
                "re-prepare the data with `dxpipe run` (the split of pipelines/data.py keeps groups whole)",
            )
        )
    core.enforce(core.combine(tfdv_findings, row_findings, guard_findings), source)
