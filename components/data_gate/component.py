"""TFX shell of the data gate: read ExampleValidator's anomalies and the schema, call the core."""

import os

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from components.data_gate import core
from models.features import load_schema

_ANOMALIES_FILE = "SchemaDiff.pb"  # Where ExampleValidator writes each split's Anomalies proto.


@component
def DataGate(
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    schema: InputArtifact[standard_artifacts.Schema],
    source: Parameter[str],
) -> None:
    """Fails the run with a readable report when any split has anomalies.

    Args:
        anomalies: ExampleValidator output.
        schema: The curated schema (ImportSchemaGen output).
        source: The user-facing name of the data (file path), for the report.
    """
    schema_proto = load_schema(os.path.join(schema.uri, "schema.pbtxt"))
    findings = []
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        path = os.path.join(artifact_utils.get_split_uri([anomalies], split), _ANOMALIES_FILE)
        proto = anomalies_pb2.Anomalies()
        proto.ParseFromString(tf.io.gfile.GFile(path, "rb").read())
        findings.extend(core.findings_from_anomalies(split, proto, schema_proto))
    core.enforce(findings, source)
