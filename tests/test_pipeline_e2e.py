"""One real LocalDagRunner run on WDBC, its cached re-run, a bad-data run and a bad-model run."""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import requests
import tensorflow as tf

from components.clinical_eval.component import locked_threshold
from components.serving_pusher.core import list_versions
from models.features import LABEL, features_from_schema, load_schema, parse_examples
from models.operating_point import OPERATING_POINT_ASSET
from models.trainer import read_split
from pipelines import local_runner
from pipelines.clinical_report import load_clinical
from pipelines.data import canonical_csv
from pipelines.errors import DataGateError
from pipelines.mlflow_mlmd import collect_outputs
from pipelines.report import load_failed_thresholds, load_test_metrics
from serving.config import single_model_config
from serving.server import ServerOptions, ServerThread
from tests.helpers import config_with_out_of_range_row

pytestmark = pytest.mark.slow
UPSTREAM = {"CsvExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator", "DataGate", "Trainer"}


def _outputs(cfg):
    return collect_outputs(str(local_runner.Paths.for_config(cfg).metadata), cfg.pipeline_name)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, default_cfg):
    cfg = dataclasses.replace(default_cfg, workdir=str(tmp_path_factory.mktemp("e2e") / "work"))
    timings, digest = local_runner.run_pipeline(cfg)
    return cfg, timings, _outputs(cfg)


def test_every_component_executed_and_the_model_was_blessed(first_run):
    cfg, timings, outputs = first_run
    assert [t.name for t in timings][0] == "CsvExampleGen"
    assert set(outputs.execution_states) == UPSTREAM | {
        "baseline_resolver",
        "Evaluator",
        "ClinicalEvaluator",
        "RegistryGate",
        "ServingPusher",
    }
    assert all(state == "COMPLETE" for state in outputs.execution_states.values()), outputs.execution_states
    assert outputs.blessed is True and outputs.baseline_model_uri is None


def test_registry_gate_node_tracks_registers_and_gates_in_its_own_run(first_run):
    """Unbound (as on Kubeflow), the RegistryGate node opens, fills and ends the MLflow run itself."""
    from mlflow import MlflowClient

    cfg, _, outputs = first_run
    client = MlflowClient(f"sqlite:///{Path(cfg.workdir).absolute() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(cfg.pipeline_name)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["tfx.run_id"] == outputs.tfx_run_id
    assert run.data.metrics["test/Overall/auc"] >= 0.99 and "train/loss" in run.data.metrics
    assert json.loads(run.data.tags["mlmd.execution_ids"])["Evaluator"] > 0
    version = client.get_model_version(cfg.model_name, "1")
    assert version.tags["gate"] == "passed" and version.run_id == run.info.run_id
    assert version.tags["tfx.model_uri"] == outputs.model_uri


def test_test_split_meets_the_published_bar(first_run):
    _, _, outputs = first_run
    overall = load_test_metrics(outputs.evaluation_uri)["Overall"]
    assert overall["auc"] >= 0.99 and overall["binary_accuracy"] >= 0.97, overall
    assert 0 <= overall["brier_score"] < 0.05


def test_clinical_evaluation_agrees_with_tfma_on_the_same_rows(first_run):
    cfg, _, outputs = first_run
    report = load_clinical(outputs.clinical_uri)
    threshold, _ = locked_threshold(outputs.saved_model_dir)
    assert report["threshold"] == threshold
    overall = load_test_metrics(outputs.evaluation_uri)["Overall"]
    # Same rows, same model, same threshold: the exact AUC and TFMA's 10000-bucket AUC agree closely,
    # and the counts-based recall and specificity agree exactly.
    assert report["n"] == overall["example_count"]
    assert report["auc"]["value"] == pytest.approx(overall["auc"], abs=2e-3)
    if threshold == cfg.data.training.operating_threshold:  # TFMA counts at the config's threshold
        assert report["at_threshold"]["sensitivity"]["value"] == pytest.approx(overall["recall"], abs=1e-6)
        assert report["at_threshold"]["specificity"]["value"] == pytest.approx(
            overall["specificity"], abs=1e-6
        )
    assert report["auc"]["lower"] < report["auc"]["value"] <= report["auc"]["upper"]
    assert report["noninferiority"] is None  # the first model has no baseline
    assert report["bootstrap"]["resamples"] == 2000


def test_pushed_version_loads_and_predicts_real_rows(first_run):
    cfg, _, outputs = first_run
    versions = list_versions(cfg.staging_base_path)
    assert len(versions) == 1 and outputs.pushed_destination == str(cfg.staging_base_path / str(versions[0]))
    loaded = tf.saved_model.load(outputs.pushed_destination)
    schema_path = str(Path(cfg.data.schema_dir) / "schema.pbtxt")
    features = features_from_schema(load_schema(schema_path))
    from tests.helpers import rows_to_examples

    examples = tf.constant(rows_to_examples(canonical_csv(cfg.data), schema_path)[:50])
    raw = parse_examples(examples, features, with_label=True)
    labels = raw.pop(LABEL).numpy()
    predicted = loaded.signatures["serving_default"](**raw)["predicted_label"].numpy()
    assert np.mean(predicted == labels) > 0.9
    # Only complete version directories are visible: no staging leftovers.
    assert sorted(os.listdir(cfg.staging_base_path)) == [str(versions[0])]


def test_the_trainer_locks_its_threshold_on_eval_and_the_server_applies_it(first_run):
    cfg, _, outputs = first_run
    pushed = outputs.pushed_destination
    record = json.loads((Path(pushed) / OPERATING_POINT_ASSET).read_text())
    assert record["target"] == {"metric": "sensitivity", "value": 0.95} and record["chosen_on"] == "eval"
    assert record["calibration"] == {"method": "none", "params": {}}
    # The Trainer's summary (logged to MLflow as `train/operating_threshold`) names the same threshold.
    summary = json.loads(Path(outputs.training_history_path).read_text())
    assert summary["operating_point"] == record and summary["operating_threshold"] == record["threshold"]
    # The pipeline's own eval split (ExampleGen's), run through the pushed export's signature.
    schema_path = str(Path(cfg.data.schema_dir) / "schema.pbtxt")
    features = features_from_schema(load_schema(schema_path))
    eval_files = [str(p) for p in sorted(Path(outputs.examples_uri, "Split-eval").glob("*.gz"))]
    raw, labels = read_split(eval_files, features)
    loaded = tf.saved_model.load(pushed)
    out = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in raw.items()})
    probability, decision = out["probability"].numpy(), out["decision"].numpy()
    assert record["eval"]["n"] == len(labels) and record["eval"]["positives"] == int(labels.sum())
    sensitivity = decision[labels == 1].mean()
    assert sensitivity >= 0.95 and record["eval"]["sensitivity"] == pytest.approx(sensitivity)
    threshold = np.float32(record["threshold"])
    np.testing.assert_array_equal(decision, (probability >= threshold).astype(np.int64))
    np.testing.assert_array_equal(out["threshold"].numpy(), np.full(len(labels), threshold))
    # The same rows over real HTTP: the answer carries probability, decision, threshold and the version.
    options = ServerOptions(
        models=(single_model_config("wdbc", str(cfg.staging_base_path)),),
        port=0,
        file_system_poll_seconds=0,
        access_log="off",
    )
    server = ServerThread(options)
    try:
        instances = [{k: float(v[i]) for k, v in raw.items()} for i in range(len(labels))]
        response = requests.post(
            server.url + "/v1/models/wdbc:predict", data=json.dumps({"instances": instances}), timeout=60
        )
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == str(outputs.pushed_version or Path(pushed).name)
    served = body["predictions"]
    assert [p["decision"] for p in served] == decision.tolist()
    assert {np.float32(p["threshold"]) for p in served} == {threshold}
    np.testing.assert_allclose([p["probability"] for p in served], probability, rtol=0, atol=1e-6)


def test_rerun_hits_the_cache_and_pushes_no_duplicate(first_run):
    cfg, _, first = first_run
    local_runner.run_pipeline(cfg)
    second = _outputs(cfg)
    assert second.tfx_run_id != first.tfx_run_id
    # Every executor up to the Evaluator and the ClinicalEvaluator is cached: the baseline resolver
    # skips the candidate itself (blessed by the first run), so both see the same inputs as before. The
    # registry gate decides again (the registry is state outside TFX's cache key) and finds the same
    # version; the push it guards re-runs and finds the same model already published.
    executors = UPSTREAM | {"Evaluator", "ClinicalEvaluator"}
    assert {n for n, s in second.execution_states.items() if s == "CACHED"} >= executors
    assert second.execution_states["RegistryGate"] == "COMPLETE"
    assert second.model_uri == first.model_uri and second.baseline_model_uri is None
    assert len(list_versions(cfg.staging_base_path)) == 1


def test_bad_data_stops_at_the_gate_and_leaves_serving_untouched(first_run, tmp_path):
    cfg, _, _ = first_run
    bad_cfg = config_with_out_of_range_row(cfg, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in cfg.staging_base_path.rglob("*")}
    with pytest.raises(
        DataGateError,
        # The report names the split, the expectation and the offending row by its line in bad.csv.
        match=r"(?s)bad\.csv.*column 'mean_radius' \[\w+\]: expected float, between 0 and 84.*line 6: '-3'",
    ):
        local_runner.run_pipeline(bad_cfg)
    outputs = _outputs(bad_cfg)
    assert outputs.execution_states["DataGate"] == "FAILED"
    assert "Trainer" not in outputs.execution_states
    assert {p: p.stat().st_mtime_ns for p in cfg.staging_base_path.rglob("*")} == before


def test_useless_model_is_not_blessed_nor_pushed(first_run):
    cfg, _, _ = first_run
    training = dataclasses.replace(cfg.data.training, shuffle_labels=True)
    bad_cfg = dataclasses.replace(
        cfg, datasets={**cfg.datasets, "wdbc": dataclasses.replace(cfg.data, training=training)}
    )
    versions = list_versions(cfg.staging_base_path)
    local_runner.run_pipeline(bad_cfg)
    outputs = _outputs(bad_cfg)
    assert outputs.blessed is False and outputs.baseline_model_uri is not None
    failures = "\n".join(load_failed_thresholds(outputs.evaluation_uri))
    assert "auc" in failures and "binary_accuracy" in failures
    # The registry gate registers the failing version with its reasons; the Cond on its verdict skips
    # the Pusher entirely: no execution is even registered.
    assert outputs.execution_states["RegistryGate"] == "COMPLETE"
    assert "ServingPusher" not in outputs.execution_states
    assert list_versions(cfg.staging_base_path) == versions
