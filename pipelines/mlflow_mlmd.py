"""Reads what one TFX run produced from its ML Metadata store, without importing TensorFlow.

TFX records each run as a `pipeline_run` context (named by the run id) holding the run's executions;
each execution links its input and output artifacts through events whose path starts with the
component's input/output key (`model`, `evaluation`, `blessing`, `baseline_model`, ...). A cached
component still records an execution in the run, linked to the reused artifacts, so cached and fresh
outputs are found the same way.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.errors import DxpipeError

PIPELINE_CONTEXT = "pipeline"
PIPELINE_RUN_CONTEXT = "pipeline_run"
NODE_CONTEXT = "node"

# (artifact type, event key, output?) -> PipelineOutputs field.
_WANTED = {
    ("Model", "model", True): "model_uri",
    ("ModelRun", "model_run", True): "model_run_uri",
    ("ModelEvaluation", "evaluation", True): "evaluation_uri",
    ("ModelBlessing", "blessing", True): "blessing_uri",
    ("Schema", "schema", True): "schema_uri",
    ("ExampleStatistics", "statistics", True): "statistics_uri",
    ("ExampleAnomalies", "anomalies", True): "anomalies_uri",
    ("Examples", "examples", True): "examples_uri",
    ("PushedModel", "pushed_model", True): "pushed_model_uri",
    ("Model", "baseline_model", False): "baseline_model_uri",
    ("components.ClinicalEvaluation", "clinical_evaluation", True): "clinical_uri",
}


class MetadataError(DxpipeError):
    """The metadata store does not hold the requested pipeline run."""


@dataclasses.dataclass(frozen=True)
class PipelineOutputs:
    """URIs and facts of one TFX run, read from ML Metadata.

    Attributes:
        pipeline_name: The TFX pipeline name.
        tfx_run_id: The run id (the `pipeline_run` context name).
        metadata_path: The SQLite file of the metadata store.
        model_uri: The Trainer's Model artifact (SavedModel under `<uri>/Format-Serving`).
        model_run_uri: The Trainer's ModelRun artifact (TensorBoard logs).
        evaluation_uri: The Evaluator's TFMA output directory.
        blessing_uri: The Evaluator's ModelBlessing artifact.
        blessed: The Evaluator's verdict, None when there is no blessing.
        baseline_model_uri: The Model the Evaluator re-scored as baseline, None when there was none.
        schema_uri: The Schema artifact (`schema.pbtxt`).
        statistics_uri: The ExampleStatistics artifact (`Split-*/FeatureStats.pb`).
        anomalies_uri: The ExampleAnomalies artifact (`Split-*/SchemaDiff.pb`).
        examples_uri: The ExampleGen output (`Split-*/` gzipped TFRecords).
        pushed_model_uri: The Pusher's PushedModel artifact, None when the push was skipped.
        pushed: Whether the Pusher pushed; None when it did not run.
        pushed_destination: Where it pushed (custom property), when recorded.
        pushed_version: The version it pushed (custom property), when recorded.
        clinical_uri: The ClinicalEvaluator's output (`clinical_evaluation.json`), None when it did not run.
        execution_ids: Node id -> MLMD execution id of this run.
        execution_states: Node id -> execution state name (COMPLETE, CACHED, FAILED, ...).
    """

    pipeline_name: str
    tfx_run_id: str
    metadata_path: str
    model_uri: str | None = None
    model_run_uri: str | None = None
    evaluation_uri: str | None = None
    blessing_uri: str | None = None
    blessed: bool | None = None
    baseline_model_uri: str | None = None
    schema_uri: str | None = None
    statistics_uri: str | None = None
    anomalies_uri: str | None = None
    examples_uri: str | None = None
    pushed_model_uri: str | None = None
    pushed: bool | None = None
    pushed_destination: str | None = None
    pushed_version: str | None = None
    clinical_uri: str | None = None
    execution_ids: Mapping[str, int] = dataclasses.field(default_factory=dict)
    execution_states: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def saved_model_dir(self) -> str | None:
        """The serving SavedModel the Trainer wrote."""
        return None if self.model_uri is None else str(Path(self.model_uri) / "Format-Serving")

    @property
    def baseline_saved_model_dir(self) -> str | None:
        """The baseline's serving SavedModel, when the Evaluator had one."""
        return (
            None if self.baseline_model_uri is None else str(Path(self.baseline_model_uri) / "Format-Serving")
        )

    @property
    def training_history_path(self) -> str | None:
        """Where the Trainer writes the per-epoch Keras history."""
        return None if self.model_uri is None else str(Path(self.model_uri) / "training_history.json")


def _store(metadata_db_path: str):
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    if not Path(metadata_db_path).is_file():
        raise MetadataError(
            f"no metadata store at {metadata_db_path}; run the pipeline first (it writes "
            "<workdir>/metadata.sqlite)."
        )
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(metadata_db_path)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def _custom(artifact: Any, key: str) -> Any:
    if key not in artifact.custom_properties:
        return None
    value = artifact.custom_properties[key]
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def _find_run_context(store: Any, pipeline_name: str, run_id: str | None) -> Any:
    pipeline_ctx = store.get_context_by_type_and_name(PIPELINE_CONTEXT, pipeline_name)
    if pipeline_ctx is None:
        raise MetadataError(
            f"the metadata store has no pipeline named '{pipeline_name}'; check the pipeline name."
        )
    if run_id is not None:
        ctx = store.get_context_by_type_and_name(PIPELINE_RUN_CONTEXT, run_id)
        if ctx is None:
            raise MetadataError(f"the metadata store has no run '{run_id}' of pipeline '{pipeline_name}'.")
        return ctx
    pipeline_executions = {e.id for e in store.get_executions_by_context(pipeline_ctx.id)}
    runs = sorted(
        store.get_contexts_by_type(PIPELINE_RUN_CONTEXT),
        key=lambda c: (c.create_time_since_epoch, c.id),
        reverse=True,
    )
    for ctx in runs:
        if {e.id for e in store.get_executions_by_context(ctx.id)} & pipeline_executions:
            return ctx
    raise MetadataError(f"pipeline '{pipeline_name}' has no recorded run in the metadata store.")


def collect_outputs(metadata_db_path: str, pipeline_name: str, run_id: str | None = None) -> PipelineOutputs:
    """Reads the URIs of one TFX run's artifacts and its execution ids from ML Metadata.

    Args:
        metadata_db_path: The SQLite file of the metadata store (`<workdir>/metadata.sqlite`).
        pipeline_name: The TFX pipeline name.
        run_id: The TFX run id; None picks the pipeline's most recent run.

    Returns:
        The run's outputs; a field is None when the run did not produce that artifact.

    Raises:
        MetadataError: If the store, the pipeline or the run does not exist.
    """
    from ml_metadata.proto import metadata_store_pb2

    store = _store(metadata_db_path)
    run_ctx = _find_run_context(store, pipeline_name, run_id)
    executions = {e.id: e for e in store.get_executions_by_context(run_ctx.id)}
    state_names = metadata_store_pb2.Execution.State.Name

    node_of: dict[int, str] = {}
    prefix = f"{pipeline_name}."
    for ctx in store.get_contexts_by_type(NODE_CONTEXT):
        if not ctx.name.startswith(prefix):
            continue
        for execution in store.get_executions_by_context(ctx.id):
            if execution.id in executions:
                node_of[execution.id] = ctx.name[len(prefix) :]

    usable = {
        e_id
        for e_id, e in executions.items()
        if e.last_known_state in (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
    }
    events = store.get_events_by_execution_ids(sorted(usable)) if usable else []
    artifact_ids = sorted({ev.artifact_id for ev in events})
    artifacts = {a.id: a for a in store.get_artifacts_by_id(artifact_ids)} if artifact_ids else {}
    type_names = {
        t.id: t.name for t in store.get_artifact_types_by_id(sorted({a.type_id for a in artifacts.values()}))
    }

    found: dict[str, Any] = {}
    for ev in sorted(events, key=lambda e: (e.execution_id, e.artifact_id)):
        artifact = artifacts.get(ev.artifact_id)
        if artifact is None or not ev.path.steps:
            continue
        is_output = ev.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
        is_input = ev.type in (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)
        if not (is_output or is_input):
            continue
        field = _WANTED.get((type_names.get(artifact.type_id), ev.path.steps[0].key, is_output))
        if field is None:
            continue
        # Several executions may link the same kind of artifact (e.g. a resolver re-emitting a Model);
        # the newest artifact wins, which is this run's own output.
        previous = found.get(field)
        if previous is None or artifact.id > previous.id:
            found[field] = artifact

    values: dict[str, Any] = {field: a.uri for field, a in found.items()}
    if "blessing_uri" in found:
        blessed = _custom(found["blessing_uri"], "blessed")
        values["blessed"] = None if blessed is None else bool(blessed)
    if "pushed_model_uri" in found:
        pushed_model = found["pushed_model_uri"]
        pushed = _custom(pushed_model, "pushed")
        values["pushed"] = None if pushed is None else bool(pushed)
        for key in ("pushed_destination", "pushed_version"):
            value = _custom(pushed_model, key)
            values[key] = None if value is None else str(value)
    return PipelineOutputs(
        pipeline_name=pipeline_name,
        tfx_run_id=run_ctx.name,
        metadata_path=str(metadata_db_path),
        execution_ids={node_of.get(e_id, str(e_id)): e_id for e_id in sorted(executions)},
        execution_states={
            node_of.get(e_id, str(e_id)): state_names(e.last_known_state) for e_id, e in executions.items()
        },
        **values,
    )


def _tfrecords(path: Path):
    """Yields the records of one (optionally gzipped) TFRecord file; the framing is simple, TF not needed."""
    with path.open("rb") as raw:
        magic = raw.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    with opener(path, "rb") as handle:
        while True:
            header = handle.read(12)
            if not header:
                return
            if len(header) < 12:
                raise MetadataError(f"{path} is not a complete TFRecord file (truncated header).")
            (length,) = struct.unpack("<Q", header[:8])
            data = handle.read(length)
            if len(data) < length or len(handle.read(4)) < 4:
                raise MetadataError(f"{path} is not a complete TFRecord file (truncated record).")
            yield data


def split_digest(examples_uri: str | None, split: str) -> str | None:
    """Returns an order-independent digest of the records of one split, or None if the split is absent.

    Two runs whose test splits hold the same examples get the same digest even when gzip headers or
    shard order differ, so a champion's recorded metrics can stand in for a re-score on an identical split.
    """
    if examples_uri is None:
        return None
    split_dir = Path(examples_uri) / f"Split-{split}"
    files = sorted(p for p in split_dir.glob("*") if p.is_file()) if split_dir.is_dir() else []
    if not files:
        return None
    digests = sorted(hashlib.sha256(record).digest() for f in files for record in _tfrecords(f))
    total = hashlib.sha256()
    for d in digests:
        total.update(d)
    return f"{len(digests)}:{total.hexdigest()[:32]}"
