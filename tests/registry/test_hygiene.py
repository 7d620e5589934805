"""Hygiene: no patient cells in MLflow, no credentials in anything printed or written, artifact locations
that follow the workdir, and names checked before any MLflow object exists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipelines import tracking
from pipelines.config import DEFAULT_CONFIG, PROJECT_ROOT, config_from_dict
from pipelines.errors import ConfigError
from pipelines.mlflow_store import TrackingConfig, TrackingError, client_for, tracking_error
from pipelines.mlflow_summaries import statistics_summary


def _stats(tmp_path: Path) -> str:
    from tensorflow_metadata.proto.v0 import statistics_pb2

    stats = statistics_pb2.DatasetFeatureStatisticsList()
    dataset = stats.datasets.add(num_examples=500)
    age = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.FLOAT)
    age.path.step.append("age")
    age.num_stats.mean, age.num_stats.std_dev, age.num_stats.min, age.num_stats.max = (
        54.3671,
        9.0312,
        29.0,
        97.0,
    )
    quantiles = age.num_stats.histograms.add(type=statistics_pb2.Histogram.QUANTILES)
    for low, high in ((29.0, 41.37), (41.37, 55.12), (55.12, 66.81), (66.81, 97.0)):
        quantiles.buckets.add(low_value=low, high_value=high, sample_count=125)
    town = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.STRING)
    town.path.step.append("town")
    town.string_stats.unique = 40
    town.string_stats.top_values.add(value="Leeds", frequency=300)
    town.string_stats.top_values.add(value="Little Snoring", frequency=1)
    path = tmp_path / "stats" / "Split-train"
    path.mkdir(parents=True)
    (path / "FeatureStats.pb").write_bytes(stats.SerializeToString())
    return str(tmp_path / "stats")


def test_statistics_logged_are_aggregates_not_patient_cells(tmp_path):
    summary = statistics_summary(_stats(tmp_path))["train"]["features"]
    age, town = summary["age"], summary["town"]
    assert "min" not in age and "max" not in age  # one patient's age each
    assert (age["mean"], age["std_dev"], age["p10"], age["median"], age["p90"]) == (
        54.0,
        9.0,
        41.0,
        55.0,
        67.0,
    )
    assert town["top_values"] == [{"value": "Leeds", "frequency": 300}]
    assert town["rare_values_hidden"] == 1
    assert "Little Snoring" not in json.dumps(summary) and "97.0" not in json.dumps(summary)


def test_raw_extremes_only_when_configured(tmp_path):
    summary = statistics_summary(_stats(tmp_path), raw_extremes=True)["train"]["features"]
    assert (summary["age"]["min"], summary["age"]["max"]) == (29.0, 97.0)
    assert {v["value"] for v in summary["town"]["top_values"]} == {"Leeds", "Little Snoring"}
    assert TrackingConfig.from_dict({"log_raw_extremes": True}).log_raw_extremes


def test_errors_never_show_credentials():
    cfg = TrackingConfig(tracking_uri="http://bob:s3cret@127.0.0.1:9/").resolved()
    error = tracking_error(cfg, "opening a run", ConnectionError("Connection refused"))
    assert "s3cret" not in str(error) and "http://***@127.0.0.1:9/" in str(error)
    error = tracking_error(cfg, "x", RuntimeError("bad request to http://bob:s3cret@127.0.0.1:9/api"))
    assert "s3cret" not in str(error)


def test_a_failed_run_against_a_server_with_credentials_leaks_none(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = TrackingConfig(
        workdir=str(tmp_path), tracking_uri="http://bob:s3cret@127.0.0.1:9/", http_timeout_s=1
    )
    with pytest.raises(TrackingError) as err, tracking.pipeline_run(cfg, "dxpipe-wdbc", {}, author="alice"):
        pass
    assert "s3cret" not in str(err.value)
    assert not any("s3cret" in p.read_text() for p in tmp_path.rglob("*") if p.is_file())


def test_marker_files_hold_the_redacted_uri(cfg):
    resolved = cfg.resolved()
    marker = tracking._write_marker(
        TrackingConfig(workdir=resolved.workdir, tracking_uri="https://u:pw@host/x?token=t"), "abc"
    )
    assert json.loads(marker.read_text())["tracking_uri"] == "https://***@host/x?token=***"


def test_a_copied_workdir_writes_its_runs_into_its_own_mlartifacts(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    original = tmp_path / "original"
    with tracking.pipeline_run(
        TrackingConfig(workdir=str(original), worker_process=False), "exp", {}, author="a"
    ):
        pass
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    before = sorted(p for p in (original / "mlartifacts").rglob("*"))
    copied = TrackingConfig(workdir=str(copy), worker_process=False)
    with tracking.pipeline_run(copied, "exp", {}, author="a") as run:
        pass
    client = client_for(copied.resolved())
    assert client.get_run(run.run_id).info.artifact_uri.startswith((copy / "mlartifacts").as_uri())
    assert client.get_experiment_by_name("exp").artifact_location.startswith((copy / "mlartifacts").as_uri())
    for old in client.search_runs([client.get_experiment_by_name("exp").experiment_id]):
        assert old.info.artifact_uri.startswith((copy / "mlartifacts").as_uri())
    assert sorted(p for p in (original / "mlartifacts").rglob("*")) == before


def _raw(**serving) -> dict:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["serving"] = {**raw.get("serving", {}), **serving}
    return raw


@pytest.mark.parametrize("suffix", ["", "/", "../x", ".", " "])
def test_an_unusable_staging_suffix_is_refused_at_load(suffix):
    with pytest.raises(ConfigError, match=r"serving.staging_suffix: .* is not usable: unapproved candidates"):
        config_from_dict(_raw(staging_suffix=suffix), PROJECT_ROOT)


def test_a_staging_suffix_that_makes_one_models_staging_anothers_production_is_refused():
    raw = _raw(staging_suffix="-b")
    raw["datasets"]["wdbc-b"] = raw["datasets"]["wdbc"]
    with pytest.raises(
        ConfigError, match=r"makes the staging path of 'wdbc' the production path of 'wdbc-b'"
    ):
        config_from_dict(raw, PROJECT_ROOT)


def test_an_invalid_model_name_is_refused_at_load_before_any_mlflow_object(tmp_path):
    raw = _raw()
    raw["workdir"] = str(tmp_path)
    raw["datasets"]["../evil"] = raw["datasets"]["wdbc"]
    with pytest.raises(ConfigError, match=r"datasets.../evil: model name '../evil' is not usable"):
        config_from_dict(raw, PROJECT_ROOT)
    assert not (tmp_path / "mlflow.db").exists()
