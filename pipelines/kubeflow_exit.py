"""The Kubeflow exit handler: a pipeline run that fails on the cluster still ends FAILED in MLflow.

On Kubeflow the MLflow run is opened by the RegistryGate node (`pipelines.registry_executor`), which
runs only when everything before it succeeded. TFX's v2 runner compiles an exit handler
(`KubeflowV2DagRunner.set_exit_handler`) into a task that runs after the whole DAG, whatever its
outcome, and receives the DAG's final status (`FinalStatusStr`: KFP's `PipelineTaskFinalStatus` as
JSON). This handler finds the MLflow run tagged with the pipeline run's `dxpipe_run_id`:

- the DAG failed and the gate node's run exists (still RUNNING because its pod was killed, or ended
  FINISHED before the push failed): it ends FAILED, with the failure's reason;
- the DAG failed before the gate node (data gate, Trainer, Evaluator): a run is created and ended
  FAILED, carrying the failing task and KFP's error message, as a local run records it;
- the DAG succeeded: the gate node already ended its run FINISHED; nothing is written.

The local runner needs none of this (it ends its own run FAILED around the TFX run), so only the
Kubeflow runner binds the handler.
"""

# No `from __future__ import annotations`: TFX's @component reads the real type hints.
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from tfx.dsl.component.experimental.annotations import Parameter
from tfx.orchestration.kubeflow.decorators import exit_handler

from pipelines.errors import DxpipeError

SUCCEEDED = "SUCCEEDED"


@dataclasses.dataclass(frozen=True)
class FinalStatus:
    """What the DAG's final status means for the MLflow run.

    Attributes:
        state: KFP's state of the DAG (SUCCEEDED, FAILED, CANCELLED, ...).
        mlflow_status: The MLflow run status it maps to (FINISHED, FAILED or KILLED).
        reason: A one-line account of the failure ("" when it succeeded).
        job: The pipeline job's resource name, when KFP gave it.
    """

    state: str
    mlflow_status: str
    reason: str
    job: str


def parse_final_status(text: Any) -> FinalStatus:
    """Reads KFP's `PipelineTaskFinalStatus` (pure).

    Args:
        text: The status as JSON text, a mapping, or the protobuf `Struct` TFX's v2 entrypoint hands a
            struct-valued parameter over as.

    Raises:
        DxpipeError: If it is not that object (names what was received).
    """
    if hasattr(text, "DESCRIPTOR"):  # a protobuf message (Struct)
        from google.protobuf import json_format

        text = json_format.MessageToDict(text)
    if isinstance(text, Mapping):
        status = dict(text)
    else:
        try:
            status = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise DxpipeError(f"the exit handler's final_status is not JSON: {str(text)[:200]!r}") from exc
    if not isinstance(status, dict) or not isinstance(status.get("state"), str):
        raise DxpipeError(f"the exit handler's final_status has no 'state': {str(text)[:200]!r}")
    state = status["state"].upper()
    error = status.get("error") or {}
    lines = str(error.get("message", "")).strip().splitlines() if isinstance(error, dict) else []
    message = lines[0] if lines else ""
    task = status.get("pipelineTaskName") or ""
    if state == SUCCEEDED:
        return FinalStatus(state, "FINISHED", "", str(status.get("pipelineJobResourceName", "")))
    mlflow_status = "KILLED" if state in ("CANCELLED", "CANCELLING") else "FAILED"
    reason = f"Kubeflow pipeline run {state.lower()}" + (f" ({task})" if task else "")
    if message:
        reason += f": {message}"
    return FinalStatus(state, mlflow_status, reason[:1000], str(status.get("pipelineJobResourceName", "")))


def finish_pipeline_run(tracking_json: str, experiment: str, run_id: str, final: FinalStatus) -> str | None:
    """Ends (or creates and ends) the MLflow run of pipeline run `run_id` after a failed DAG.

    Args:
        tracking_json: The RegistryGate node's `tracking` parameter.
        experiment: The MLflow experiment (the pipeline name).
        run_id: The pipeline run's `dxpipe_run_id`.
        final: The parsed final status.

    Returns:
        The MLflow run id written to, or None when nothing was written (the DAG succeeded).
    """
    from pipelines import tracking
    from pipelines.identity import current_identity
    from pipelines.mlflow_store import client_for, mlflow_errors
    from pipelines.registry_executor import RUN_ID_TAG, tracking_from_json

    if final.state == SUCCEEDED:
        return None
    cfg = tracking_from_json(tracking_json).resolved()
    client = client_for(cfg)
    tags = {
        "dxpipe.failure": final.reason,
        "dxpipe.interrupted": str(final.mlflow_status == "KILLED").lower(),
    }
    if final.job:
        tags["kfp.pipeline_job"] = final.job
    with mlflow_errors(cfg, f"ending the MLflow run of pipeline run {run_id}"):
        found = client.get_experiment_by_name(experiment)
        runs = (
            client.search_runs(
                [found.experiment_id],
                filter_string=f"tags.`{RUN_ID_TAG}` = '{_quoted(run_id)}'",
                max_results=1,
            )
            if found is not None
            else []
        )
        if runs:
            # The gate node's run: still RUNNING (its pod was killed), or ended FINISHED by the node
            # before a later task (the push) failed. Either way the pipeline run failed.
            run = runs[0]
            for key, value in tags.items():
                client.set_tag(run.info.run_id, key, value)
            client.set_terminated(run.info.run_id, final.mlflow_status)
            return run.info.run_id
    session = tracking.open_session(
        cfg,
        experiment,
        {"pipeline_name": experiment},
        {RUN_ID_TAG: run_id, "tfx.pipeline_name": experiment},
        current_identity(cfg.tracking_uri),
        None,
    )
    tracking.end_session(session, final.mlflow_status, tags)
    return session.run_id


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


@exit_handler
def MlflowRunFinalizer(
    final_status: Parameter[str],
    tracking: Parameter[str],
    pipeline_name: Parameter[str],
    run_id: Parameter[str],
) -> None:
    """Ends the pipeline run's MLflow run FAILED when the DAG failed (see the module docstring).

    Args:
        final_status: KFP's final status of the DAG (bind `FinalStatusStr()`).
        tracking: The RegistryGate node's `tracking` parameter.
        pipeline_name: The MLflow experiment.
        run_id: The pipeline run's `dxpipe_run_id`.
    """
    finish_pipeline_run(tracking, pipeline_name, run_id, parse_final_status(final_status))
