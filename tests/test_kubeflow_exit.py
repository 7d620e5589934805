"""The Kubeflow exit handler: a pipeline run that fails on the cluster ends FAILED in a real MLflow store."""

from __future__ import annotations

import json

import pytest

from pipelines.errors import DxpipeError
from pipelines.kubeflow_exit import finish_pipeline_run, parse_final_status
from pipelines.mlflow_store import TrackingConfig
from pipelines.registry_executor import RUN_ID_TAG, tracking_json

EXPERIMENT = "dxpipe-wdbc"


def _status(state: str, **extra) -> str:
    return json.dumps({"state": state, "pipelineJobResourceName": "projects/p/pipelineJobs/j1", **extra})


@pytest.mark.parametrize(
    ("text", "mlflow_status", "reason"),
    [
        (_status("SUCCEEDED"), "FINISHED", ""),
        (
            _status(
                "FAILED", pipelineTaskName="tfx-dag", error={"code": 9, "message": "DataGate failed\nmore"}
            ),
            "FAILED",
            "Kubeflow pipeline run failed (tfx-dag): DataGate failed",
        ),
        (_status("CANCELLED"), "KILLED", "Kubeflow pipeline run cancelled"),
        (_status("failed"), "FAILED", "Kubeflow pipeline run failed"),
    ],
    ids=["succeeded", "failed-with-error", "cancelled", "lower-case-state"],
)
def test_final_status_maps_to_the_mlflow_status(text, mlflow_status, reason):
    final = parse_final_status(text)
    assert (final.mlflow_status, final.reason, final.job) == (
        mlflow_status,
        reason,
        "projects/p/pipelineJobs/j1",
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [("not json", "is not JSON"), ("[1]", "has no 'state'"), ('{"error": {}}', "has no 'state'")],
    ids=["not-json", "not-an-object", "no-state"],
)
def test_unreadable_final_status_is_refused(text, match):
    with pytest.raises(DxpipeError, match=match):
        parse_final_status(text)


@pytest.fixture()
def store(tmp_path):
    from mlflow import MlflowClient

    cfg = TrackingConfig(workdir=str(tmp_path), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tracking_json(cfg), MlflowClient(cfg.tracking_uri)


def _runs(client, run_id: str):
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}'")


def test_failure_before_the_gate_creates_a_failed_run(store):
    tracking, client = store
    final = parse_final_status(
        _status("FAILED", pipelineTaskName="tfx-dag", error={"message": "Trainer: OOM"})
    )
    written = finish_pipeline_run(tracking, EXPERIMENT, "run-1", final)
    (run,) = _runs(client, "run-1")
    assert run.info.run_id == written and run.info.status == "FAILED"
    assert run.data.tags["dxpipe.failure"] == "Kubeflow pipeline run failed (tfx-dag): Trainer: OOM"
    assert run.data.tags["kfp.pipeline_job"] == "projects/p/pipelineJobs/j1"
    assert _runs(client, "run-2") == []


@pytest.mark.parametrize("gate_status", ["RUNNING", "FINISHED"], ids=["gate-pod-killed", "push-failed-later"])
def test_failure_after_the_gate_ends_its_run_failed(store, gate_status):
    tracking, client = store
    experiment_id = client.create_experiment(EXPERIMENT)
    gate_run = client.create_run(experiment_id, tags={RUN_ID_TAG: "run-1"}).info.run_id
    if gate_status == "FINISHED":
        client.set_terminated(gate_run, "FINISHED")
    other = client.create_run(experiment_id, tags={RUN_ID_TAG: "run-0"}).info.run_id
    final = parse_final_status(_status("FAILED", error={"message": "ServingPusher: disk full"}))
    assert finish_pipeline_run(tracking, EXPERIMENT, "run-1", final) == gate_run
    run = client.get_run(gate_run)
    assert run.info.status == "FAILED" and "disk full" in run.data.tags["dxpipe.failure"]
    assert client.get_run(other).info.status == "RUNNING"  # another pipeline run's is left alone
    assert len(_runs(client, "run-1")) == 1


def test_cancelled_run_ends_killed(store):
    tracking, client = store
    finish_pipeline_run(tracking, EXPERIMENT, "run-9", parse_final_status(_status("CANCELLED")))
    (run,) = _runs(client, "run-9")
    assert run.info.status == "KILLED" and run.data.tags["dxpipe.interrupted"] == "true"


def test_success_writes_nothing(store):
    tracking, client = store
    assert (
        finish_pipeline_run(tracking, EXPERIMENT, "run-1", parse_final_status(_status("SUCCEEDED"))) is None
    )
    assert client.get_experiment_by_name(EXPERIMENT) is None


def test_run_id_with_a_quote_cannot_widen_the_search(store):
    tracking, client = store
    experiment_id = client.create_experiment(EXPERIMENT)
    victim = client.create_run(experiment_id, tags={RUN_ID_TAG: "a"}).info.run_id
    final = parse_final_status(_status("FAILED"))
    finish_pipeline_run(tracking, EXPERIMENT, "a' OR tags.x = 'y", final)
    assert client.get_run(victim).info.status == "RUNNING"


def test_credentials_never_reach_the_node_parameters(tmp_path):
    cfg = TrackingConfig(workdir=str(tmp_path), tracking_uri="https://alice:s3cret@mlflow.example.org")
    assert "s3cret" not in tracking_json(cfg) and json.loads(tracking_json(cfg))["tracking_uri"] is None
    plain = TrackingConfig(workdir=str(tmp_path), tracking_uri="https://mlflow.example.org")
    assert json.loads(tracking_json(plain))["tracking_uri"] == "https://mlflow.example.org"


def test_final_status_as_the_entrypoint_hands_it_over():
    """TFX's v2 entrypoint passes a struct-valued parameter as a protobuf Struct, not as JSON text."""
    from google.protobuf import struct_pb2

    struct = struct_pb2.Struct()
    struct.update({"state": "FAILED", "pipelineTaskName": "tfx-dag", "error": {"message": "Trainer FAILED"}})
    final = parse_final_status(struct)
    assert (final.mlflow_status, final.reason) == (
        "FAILED",
        "Kubeflow pipeline run failed (tfx-dag): Trainer FAILED",
    )
    assert parse_final_status({"state": "SUCCEEDED"}).mlflow_status == "FINISHED"
