"""The MLflow binding of the RegistryGate node: track the run, register the model, gate it.

`create_pipeline` names `MlflowRegistryGateExecutor` as the node's executor, so the same DAG does this
locally and on Kubeflow; what differs is only where the MLflow run comes from:

- **Bound** (the local runner, `bind_run`): `run_tracked` opened the run in its worker process while
  TFX imported (so MLflow stays off the critical path) and the node logs into that run; the runner ends
  it FINISHED or FAILED, as before. The metadata store adds MLMD's execution ids to the lineage.
- **Unbound** (a Kubeflow pod, or `local_runner.run_pipeline` on its own): the node opens the run itself
  in its process, against the tracking URI of its `tracking` parameter or, when that names none,
  `MLFLOW_TRACKING_URI` (the pod's environment), and ends it FINISHED; a failure ends it FAILED. A
  pipeline run that fails before this node is ended FAILED by the Kubeflow exit handler
  (`pipelines.kubeflow_exit`), which finds the run by its `tfx.run_id` tag.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from components.registry_gate.component import RegistryGateExecutor, verdict_record
from components.registry_gate.core import GatePolicy
from pipelines.mlflow_mlmd import MetadataError, PipelineOutputs, collect_outputs
from pipelines.mlflow_store import TrackingConfig

RUN_ID_TAG = "tfx.run_id"


@dataclasses.dataclass
class RunBinding:
    """What the local runner lends the node for one pipeline run.

    Attributes:
        run_id: The TFX pipeline run id.
        metadata_path: The run's ML Metadata SQLite file (for execution ids); None when there is none.
        run: The open `pipelines.tracking.TrackedRun`; None lets the node open its own.
        tracking: The tracking settings for a run the node opens itself (the runner's, credentials
            included); None reads them from the node's `tracking` parameter.
        version: The `RegisteredVersion` the node produced (filled by the node).
        outputs: The `PipelineOutputs` the node gated (filled by the node).
    """

    run_id: str
    metadata_path: str | None = None
    run: Any = None
    tracking: TrackingConfig | None = None
    version: Any = None
    outputs: PipelineOutputs | None = None


_BINDINGS: dict[str, RunBinding] = {}
_LOCK = threading.Lock()


@contextlib.contextmanager
def bind_run(
    run_id: str, metadata_path: str | None = None, run: Any = None, tracking: TrackingConfig | None = None
) -> Iterator[RunBinding]:
    """Lends the RegistryGate node of pipeline run `run_id` (in this process) a metadata store and run."""
    binding = RunBinding(run_id, metadata_path, run, tracking)
    with _LOCK:
        _BINDINGS[run_id] = binding
    try:
        yield binding
    finally:
        with _LOCK:
            _BINDINGS.pop(run_id, None)


def is_bound(run_id: str) -> bool:
    """Whether pipeline run `run_id` has a binding in this process."""
    with _LOCK:
        return run_id in _BINDINGS


def tracking_json(cfg: TrackingConfig) -> str:
    """The node's `tracking` parameter: the settings, with any URI that carries credentials left out.

    Execution parameters are stored in ML Metadata and in the compiled spec, so a URI with a password in
    it stays in the runner's binding or the pod's environment (`MLFLOW_TRACKING_URI`), never here.
    """
    values = dataclasses.asdict(cfg)
    for key in ("tracking_uri", "registry_uri"):
        uri = values.get(key) or ""
        if "@" in uri.split("://", 1)[-1].split("/", 1)[0]:
            values[key] = None
    return json.dumps(values, sort_keys=True)


def tracking_from_json(text: str) -> TrackingConfig:
    """Reads the node's `tracking` parameter back."""
    return TrackingConfig(**json.loads(text))


def outputs_from_inputs(
    inputs: Mapping[str, str | None], blessed: bool | None, pipeline_name: str, run_id: str
) -> PipelineOutputs:
    """The node's input artifacts as the `PipelineOutputs` the tracking and registry code reads."""
    return PipelineOutputs(
        pipeline_name=pipeline_name,
        tfx_run_id=run_id,
        metadata_path="",
        model_uri=inputs.get("model"),
        evaluation_uri=inputs.get("evaluation"),
        blessing_uri=inputs.get("blessing"),
        blessed=blessed,
        baseline_model_uri=inputs.get("baseline_model"),
        schema_uri=inputs.get("schema"),
        statistics_uri=inputs.get("statistics"),
        anomalies_uri=inputs.get("anomalies"),
        examples_uri=inputs.get("examples"),
    )


def _with_lineage(outputs: PipelineOutputs, metadata_path: str | None) -> PipelineOutputs:
    """Adds the upstream executions' ids and states from the local metadata store, when there is one."""
    if not metadata_path:
        return outputs
    try:
        recorded = collect_outputs(metadata_path, outputs.pipeline_name, run_id=outputs.tfx_run_id)
    except MetadataError:
        return outputs
    return dataclasses.replace(
        outputs,
        metadata_path=metadata_path,
        model_run_uri=recorded.model_run_uri,
        execution_ids=recorded.execution_ids,
        execution_states=recorded.execution_states,
    )


def _record(version: Any, run_id: str, mlflow_run_id: str) -> dict:
    return verdict_record(
        model_name=version.name,
        version=version.version,
        passed=version.passed,
        reused=version.reused,
        failures=version.failures,
        compared_with=version.compared_with,
        digest=version.digest,
        mlflow_run_id=mlflow_run_id,
        run_id=run_id,
        verdict=version.verdict.to_dict(),
    )


def gate_in_run(run: Any, outputs: PipelineOutputs, policy: GatePolicy, model_name: str) -> Any:
    """Logs the TFX run's outputs to the open MLflow run, then registers and gates the model."""
    from pipelines import registry, tracking

    evaluation = tracking.log_pipeline_outputs(run, outputs)
    return registry.register_and_gate(run, outputs, policy, model_name=model_name, evaluation=evaluation)


class MlflowRegistryGateExecutor(RegistryGateExecutor):
    """`RegistryGateExecutor` over MLflow (see the module docstring)."""

    def gate(self, inputs: Mapping[str, str | None], blessed: bool | None, params: Mapping[str, str]) -> dict:
        """Tracks, registers and gates the model; returns the verdict record."""
        from pipelines import tracking

        run_id = params["run_id"]
        pipeline_name = params["pipeline_name"]
        model_name = params["model_name"]
        policy = GatePolicy.from_dict(json.loads(params["gate_policy"]))
        with _LOCK:
            binding = _BINDINGS.get(run_id)
        outputs = outputs_from_inputs(inputs, blessed, pipeline_name, run_id)
        outputs = _with_lineage(outputs, binding.metadata_path if binding else None)
        if binding is not None:
            binding.outputs = outputs
        if binding is not None and binding.run is not None:
            version = gate_in_run(binding.run, outputs, policy, model_name)
            binding.version = version
            return _record(version, run_id, binding.run.run_id)

        settings = binding.tracking if binding is not None and binding.tracking is not None else None
        cfg = dataclasses.replace(settings or tracking_from_json(params["tracking"]), worker_process=False)
        tags = {
            "tfx.pipeline_name": pipeline_name,
            RUN_ID_TAG: run_id,
            "tfx.pipeline_root": str(Path(inputs["model"] or "").parents[2]) if inputs.get("model") else "",
        }
        with tracking.pipeline_run(cfg, pipeline_name, json.loads(params["run_params"]), tags) as run:
            version = gate_in_run(run, outputs, policy, model_name)
        if binding is not None:
            binding.version = version
        return _record(version, run_id, run.run_id)
