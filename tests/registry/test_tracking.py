"""Tracking: config, run lifecycle (FINISHED / FAILED / killed), and what log_pipeline_outputs records."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipelines import tracking
from pipelines.errors import ConfigError
from pipelines.mlflow_mlmd import PipelineOutputs
from pipelines.mlflow_store import TrackingConfig, TrackingError, sanitize_key
from pipelines.mlflow_tfma import BASELINE, CANDIDATE, load_evaluation

REPO = Path(__file__).resolve().parents[2]


def client(cfg: TrackingConfig) -> MlflowClient:
    resolved = cfg.resolved()
    return MlflowClient(tracking_uri=resolved.tracking_uri, registry_uri=resolved.registry_uri)


# ---- TrackingConfig ---------------------------------------------------------------------------------


def test_defaults_resolve_to_embedded_sqlite_in_workdir(tmp_path):
    cfg = TrackingConfig(workdir=str(tmp_path / "wd")).resolved(environ={})
    assert cfg.tracking_uri == f"sqlite:///{tmp_path / 'wd' / 'mlflow.db'}"
    assert cfg.registry_uri == cfg.tracking_uri
    assert cfg.serving_root == str(tmp_path / "wd" / "serving")
    assert cfg.is_embedded
    assert cfg.artifact_location("dxpipe-wdbc") == (tmp_path / "wd" / "mlartifacts" / "dxpipe-wdbc").as_uri()


def test_environment_points_at_a_server_and_config_wins_over_it(tmp_path):
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5999"}
    assert TrackingConfig(workdir=str(tmp_path)).resolved(environ=env).tracking_uri == "http://127.0.0.1:5999"
    assert not TrackingConfig(workdir=str(tmp_path)).resolved(environ=env).is_embedded
    explicit = TrackingConfig(workdir=str(tmp_path), tracking_uri="http://10.0.0.1:80").resolved(environ=env)
    assert explicit.tracking_uri == "http://10.0.0.1:80"
    assert explicit.artifact_location("x") is None


def test_from_dict_builds_and_validates():
    cfg = TrackingConfig.from_dict(
        {"tracking_uri": "http://h:1", "four_eyes": False, "operating_threshold": 0.3}
    )
    assert (cfg.tracking_uri, cfg.four_eyes, cfg.operating_threshold) == ("http://h:1", False, 0.3)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"tracking_url": "x"}, r"tracking: unknown key 'tracking_url'; did you mean 'tracking_uri'\?"),
        ({"four_eye": True}, r"did you mean 'four_eyes'\?"),
        ({"four_eyes": "no"}, r"tracking.four_eyes: expected true or false, got str 'no'"),
        ({"operating_threshold": 1.5}, r"tracking.operating_threshold: must be strictly between 0 and 1"),
        ({"http_timeout_s": 0}, r"tracking.http_timeout_s: must be >= 1"),
        ({"workdir": ""}, r"tracking.workdir: expected a non-empty string"),
    ],
    ids=[
        "misspelt-uri",
        "misspelt-four-eyes",
        "bool-as-string",
        "threshold-range",
        "zero-timeout",
        "empty-workdir",
    ],
)
def test_from_dict_refuses(raw, message):
    with pytest.raises(ConfigError, match=message):
        TrackingConfig.from_dict(raw)


def test_sanitize_key_makes_valid_mlflow_names():
    assert sanitize_key("test/sex:female&age:40/auc") == "test/sex:female_age:40/auc"
    assert sanitize_key("/../a") == "_./a"


# ---- run lifecycle ----------------------------------------------------------------------------------


def test_successful_run_is_finished_with_params_versions_and_author(cfg):
    params = {"dataset": "wdbc", "training": {"epochs": 3, "hidden_units": [8, 4]}}
    with tracking.pipeline_run(
        cfg, "dxpipe-wdbc", params, tags={"tfx.pipeline_root": "/r"}, author="alice"
    ) as run:
        assert client(cfg).get_run(run.run_id).info.status == "RUNNING"
    got = client(cfg).get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params["training.epochs"] == "3"
    assert got.data.params["training.hidden_units"] == "[8, 4]"
    assert got.data.params["env.mlflow"] == "3.17.2"
    assert got.data.params["env.tfx"] == "1.16.0"
    assert "git.commit" in got.data.params
    assert got.data.tags["mlflow.user"] == "alice"
    assert got.data.tags["tfx.pipeline_root"] == "/r"
    experiment = client(cfg).get_experiment(run.experiment_id)
    assert experiment.name == "dxpipe-wdbc"
    assert experiment.artifact_location.startswith(Path(cfg.workdir).resolve().as_uri())
    assert set(run.timings) >= {"open", "close"} and run.overhead_s > 0
    assert set(run.worker_timings) >= {"open", "params", "close"} and not run.in_worker
    assert not list((Path(cfg.workdir) / "mlflow_open_runs").glob("*.json"))


@pytest.mark.parametrize(
    "exc_type", [RuntimeError, KeyboardInterrupt], ids=["exception", "keyboard-interrupt"]
)
def test_failed_or_interrupted_run_ends_failed(cfg, exc_type):
    with pytest.raises(exc_type), tracking.pipeline_run(cfg, "dxpipe-wdbc", {}) as run:
        raise exc_type("Trainer exploded")
    got = client(cfg).get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert "Trainer exploded" in got.data.tags["dxpipe.failure"]
    assert got.data.tags["dxpipe.interrupted"] == str(exc_type is KeyboardInterrupt).lower()


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pipelines import tracking
    from pipelines.mlflow_store import TrackingConfig
    with tracking.pipeline_run(TrackingConfig(workdir=sys.argv[1]), "dxpipe-wdbc", {}) as run:
        print(run.run_id, flush=True)
        time.sleep(120)
    """
)


def _child_run(cfg: TrackingConfig) -> tuple[subprocess.Popen, str]:
    """A runner process with a real worker (the default), stopped while its TFX run would be running."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, cfg.workdir],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
        start_new_session=True,
    )
    run_id = child.stdout.readline().strip()
    assert run_id, "child did not open a run"
    return child, run_id


def _wait_for_status(cfg: TrackingConfig, run_id: str, status: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        current = client(cfg).get_run(run_id).info.status
        if current == status or time.monotonic() > deadline:
            return current
        time.sleep(0.2)


def test_sigterm_ends_the_run_failed(cfg):
    child, run_id = _child_run(cfg)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 128 + signal.SIGTERM
    got = client(cfg).get_run(run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags["dxpipe.interrupted"] == "true"


def test_runner_killed_outright_its_worker_ends_the_run_failed(cfg):
    child, run_id = _child_run(cfg)
    child.kill()  # SIGKILL to the runner only: nothing in it can react, its worker sees its input close.
    child.wait(timeout=30)
    assert _wait_for_status(cfg, run_id, "FAILED") == "FAILED"
    tags = client(cfg).get_run(run_id).data.tags
    assert tags["dxpipe.failure"] == "the pipeline process exited without ending the run"


def test_runner_and_worker_killed_the_run_is_reaped_by_the_next_run(cfg):
    child, run_id = _child_run(cfg)
    os.killpg(child.pid, signal.SIGKILL)  # the whole process group: runner and worker
    child.wait(timeout=30)
    time.sleep(0.5)
    assert client(cfg).get_run(run_id).info.status == "RUNNING"
    with tracking.pipeline_run(cfg, "dxpipe-wdbc", {}):
        pass
    got = client(cfg).get_run(run_id)
    assert got.info.status == "FAILED"
    assert "died" in got.data.tags["dxpipe.reaped"]


def test_worker_process_logs_and_registers_like_in_process(cfg, fixtures):
    from pipelines import registry
    from tests.registry.support import POLICY

    worker_cfg = dataclasses.replace(cfg, worker_process=True)
    with tracking.pipeline_run(worker_cfg, "dxpipe-wdbc", {"a": 1}, author="alice") as run:
        assert run.in_worker
        tracking.log_pipeline_outputs(run, _outputs(fixtures))
        version = registry.register_and_gate(run, _outputs(fixtures), POLICY, model_name="wdbc")
    got = client(cfg).get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.data.params["a"] == "1"
    assert got.data.metrics["test/Overall/auc"] > 0.9
    assert version.version == "1" and version.passed, version.failures
    assert client(cfg).get_model_version("wdbc", "1").tags["dxpipe.author"] == "alice"
    assert set(run.worker_timings) >= {"open", "params", "log_outputs", "register", "native_model", "close"}
    # The worker opened the run while the body ran; the runner waited only for the logging after it.
    assert run.timings["open"] < 1.0


def _child_env(session, name):
    return os.environ.get(name)


def test_a_clean_run_leaves_its_worker_to_the_next_run_in_the_process(cfg, monkeypatch):
    from pipelines.mlflow_worker import Worker

    worker_cfg = dataclasses.replace(cfg, worker_process=True)
    monkeypatch.setenv("DXPIPE_TEST_GONE", "1")
    ids, pids = [], []
    for params in ({"a": 1}, {"a": 2}):
        with tracking.pipeline_run(worker_cfg, "dxpipe-wdbc", params) as run:
            ids.append(run.run_id)
            pids.append(run._worker._process.pid)
    assert pids[0] == pids[1] and ids[0] != ids[1]
    runs = [client(cfg).get_run(i) for i in ids]
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert [r.data.params["a"] for r in runs] == ["1", "2"]
    # The re-used child works in this process's current environment (MLflow reads credentials there).
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "rotated")
    monkeypatch.delenv("DXPIPE_TEST_GONE")
    with tracking.pipeline_run(worker_cfg, "dxpipe-wdbc", {}) as run:
        child = run._worker._process
        assert run.call("env", "reading the env", _child_env, "MLFLOW_TRACKING_TOKEN") == "rotated"
        assert run.call("env", "reading the env", _child_env, "DXPIPE_TEST_GONE") is None
        # Settings dxpipe derives from the config are derived again after the environment was replaced.
        assert run.call("env", "reading the env", _child_env, "MLFLOW_DISABLE_TELEMETRY") == "true"
    assert child.pid == pids[0]
    # A dead child is replaced.
    child.kill()
    child.wait()
    with tracking.pipeline_run(worker_cfg, "dxpipe-wdbc", {}) as run:
        assert run._worker._process.pid != child.pid
    assert client(cfg).get_run(run.run_id).info.status == "FINISHED"
    Worker._idle.close()


def test_a_failed_run_does_not_leave_its_worker_behind(cfg):
    from pipelines.mlflow_worker import Worker

    worker_cfg = dataclasses.replace(cfg, worker_process=True)
    with pytest.raises(RuntimeError), tracking.pipeline_run(worker_cfg, "dxpipe-wdbc", {}) as run:
        raise RuntimeError("Trainer exploded")
    assert run._worker._process.poll() is not None
    assert Worker._idle is not run._worker


@pytest.mark.parametrize(
    "exc_type", [RuntimeError, KeyboardInterrupt], ids=["exception", "keyboard-interrupt"]
)
def test_worker_process_run_ends_failed_on_exception(cfg, exc_type):
    worker_cfg = dataclasses.replace(cfg, worker_process=True)
    with pytest.raises(exc_type), tracking.pipeline_run(worker_cfg, "dxpipe-wdbc", {}) as run:
        run_id = run.run_id
        raise exc_type("Evaluator exploded")
    got = client(cfg).get_run(run_id)
    assert got.info.status == "FAILED" and "Evaluator exploded" in got.data.tags["dxpipe.failure"]


def test_worker_crash_is_a_clear_error_and_the_run_is_reaped_later(cfg, fixtures):
    from pipelines import registry
    from tests.registry.support import POLICY

    worker_cfg = dataclasses.replace(cfg, worker_process=True)
    with (
        pytest.raises(TrackingError) as raised,
        tracking.pipeline_run(worker_cfg, "dxpipe-wdbc", {}) as run,
    ):
        run_id = run.run_id
        run._worker._process.kill()
        run._worker._process.wait()
        registry.register_and_gate(run, _outputs(fixtures), POLICY, model_name="wdbc")
    assert "the MLflow worker process exited (code -9) while registering a version of 'wdbc'" in str(
        raised.value
    )
    assert "could not be marked FAILED now; the next pipeline run" in str(raised.value)
    with tracking.pipeline_run(cfg, "dxpipe-wdbc", {}):
        pass
    assert client(cfg).get_run(run_id).info.status == "FAILED"


def test_unreachable_server_fails_before_the_pipeline_runs(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    cfg = TrackingConfig(workdir=str(tmp_path), tracking_uri=f"http://127.0.0.1:{port}")
    body_ran = False
    with (
        pytest.raises(
            TrackingError,
            match=rf"MLflow at http://127.0.0.1:{port} is unreachable while checking the server",
        ),
        tracking.pipeline_run(cfg, "dxpipe-wdbc", {}),
    ):
        body_ran = True
    assert not body_ran


def test_marker_of_a_live_process_is_left_alone(cfg):
    with tracking.pipeline_run(cfg, "dxpipe-wdbc", {}) as run:
        assert tracking.reap_stale_runs(cfg) == []
        assert client(cfg).get_run(run.run_id).info.status == "RUNNING"


def test_tracking_imports_no_tensorflow():
    code = (
        "import sys; import pipelines.tracking, pipelines.registry, pipelines.promotion, pipelines.registry_cli; "
        "sys.exit('tensorflow' in sys.modules or 'mlflow' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False).returncode == 0


# ---- TFMA output and log_pipeline_outputs --------------------------------------------------------


def test_load_evaluation_reads_real_tfma_output(fixtures):
    evaluation = load_evaluation(fixtures["evaluation_uri"])
    overall = evaluation.candidate["Overall"]
    assert {"auc", "binary_accuracy", "precision", "recall", "specificity", "mean_squared_error"} <= set(
        overall
    )
    assert overall["example_count"] == 240
    assert (
        evaluation.candidate["sex:female"]["example_count"]
        + evaluation.candidate["sex:male"]["example_count"]
        == 240
    )
    assert overall["auc"] > 0.9
    # The baseline ("other" model) is scored on the same examples; its calibration is worse.
    assert evaluation.baseline is not None
    assert evaluation.baseline["Overall"]["mean_squared_error"] > overall["mean_squared_error"]
    plots = evaluation.plots["Overall"]
    assert set(plots) == {CANDIDATE, BASELINE}
    assert len(plots[CANDIDATE].thresholds) > 100 and plots[CANDIDATE].calibration


def test_load_evaluation_of_an_empty_directory_is_a_clear_error(tmp_path):
    from pipelines.mlflow_tfma import EvaluationMissingError

    with pytest.raises(EvaluationMissingError, match=r"holds no TFMA metrics \(no metrics-\* files\)"):
        load_evaluation(str(tmp_path))


def _outputs(fixtures: dict) -> PipelineOutputs:
    return PipelineOutputs(
        pipeline_name="dxpipe-wdbc",
        tfx_run_id="2026-11-22T23:00:00",
        metadata_path="/w/metadata.sqlite",
        model_uri=fixtures["model_good"],
        evaluation_uri=fixtures["evaluation_uri"],
        blessed=True,
        schema_uri=fixtures["schema_uri"],
        statistics_uri=fixtures["statistics_uri"],
        anomalies_uri=fixtures["anomalies_uri"],
        examples_uri=fixtures["examples_uri"],
        execution_ids={"Trainer": 7, "Evaluator": 9},
        execution_states={"Trainer": "COMPLETE", "Evaluator": "CACHED"},
    )


def test_log_pipeline_outputs_records_metrics_plots_reports_and_lineage(cfg, fixtures):
    with tracking.pipeline_run(cfg, "dxpipe-wdbc", {}) as run:
        evaluation = tracking.log_pipeline_outputs(run, _outputs(fixtures))
    assert evaluation is not None and run.evaluations[fixtures["evaluation_uri"]] is evaluation
    got = client(cfg).get_run(run.run_id)
    m = got.data.metrics
    assert m["test/Overall/auc"] == pytest.approx(evaluation.candidate["Overall"]["auc"])
    assert m["test/sex:female/recall"] == pytest.approx(evaluation.candidate["sex:female"]["recall"])
    assert m["baseline/Overall/mean_squared_error"] > m["test/Overall/mean_squared_error"]
    assert m["data/anomalies/test"] == 1 and m["data/anomalies/train"] == 0
    assert m["data/examples/train"] == 600
    history = client(cfg).get_metric_history(run.run_id, "train/val_loss")
    assert [(h.step, h.value) for h in history] == [(0, 0.7), (1, 0.55), (2, 0.47)]
    tags = got.data.tags
    assert tags["tfx.run_id"] == "2026-11-22T23:00:00"
    assert json.loads(tags["mlmd.execution_ids"]) == {"Evaluator": 9, "Trainer": 7}
    assert tags["mlmd.execution.Trainer"] == "7" and tags["tfx.state.Evaluator"] == "CACHED"
    assert tags["data.test_digest"].startswith("240:")

    artifacts = Path(got.info.artifact_uri.removeprefix("file://"))
    for name in ("roc.png", "precision_recall.png", "calibration.png", "confusion_matrix.png"):
        assert (artifacts / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert (artifacts / "data" / "schema.pbtxt").is_file()
    stats = json.loads((artifacts / "data" / "statistics_summary.json").read_text())
    assert stats["test"]["num_examples"] == 240 and stats["train"]["features"]["x"]["mean"] == 0.42
    assert "max" not in stats["train"]["features"]["x"]  # one patient's value; logged only when configured
    anomalies = json.loads((artifacts / "data" / "anomalies.json").read_text())
    assert anomalies["test"]["features"] == {"sex": ["Unexpected string values"]}
    assert any(p.name.startswith("metrics") for p in (artifacts / "tfma").iterdir())
    assert json.loads((artifacts / "training" / "history.json").read_text())["auc"] == [0.6, 0.85, 0.93]
    assert "log_outputs" in run.timings


def test_log_pipeline_outputs_without_evaluation_or_reports_still_logs_lineage(cfg, fixtures):
    outputs = PipelineOutputs("dxpipe-wdbc", "r1", "/m.sqlite", model_uri=fixtures["model_bad"])
    with tracking.pipeline_run(cfg, "dxpipe-wdbc", {}) as run:
        assert tracking.log_pipeline_outputs(run, outputs) is None
    tags = client(cfg).get_run(run.run_id).data.tags
    assert tags["tfx.run_id"] == "r1"


def test_mlflow_overhead_is_small(cfg, fixtures):
    """The MLflow work of a run, timed the way the pipeline benchmark will (run.overhead_s)."""
    from pipelines import registry
    from tests.registry.support import POLICY

    start = time.perf_counter()
    with tracking.pipeline_run(cfg, "dxpipe-wdbc", {"a": 1}) as run:
        outputs = _outputs(fixtures)
        tracking.log_pipeline_outputs(run, outputs)
        registry.register_and_gate(run, outputs, POLICY, model_name="wdbc")
    wall = time.perf_counter() - start
    assert set(run.timings) >= {"open", "load_evaluation", "log_outputs", "register", "close"}
    assert set(run.worker_timings) >= {"open", "params", "log_outputs", "register", "native_model", "close"}
    assert run.overhead_s <= wall
    # A local pipeline run takes minutes; the whole MLflow share must stay within a few seconds.
    assert run.overhead_s < 10, run.timings


def test_trainer_history_file_with_nested_history_and_scalars(cfg, fixtures):
    history = {"history": {"loss": [0.6, 0.4], "val_auc": [0.8, 0.9]}, "best_epoch": 2, "train_examples": 319}
    outputs = PipelineOutputs("dxpipe-wdbc", "r1", "/m.sqlite", model_uri=fixtures["model_bad"])
    with tracking.pipeline_run(cfg, "dxpipe-wdbc", {}) as run:
        tracking.log_pipeline_outputs(run, outputs, training_history=history)
    c = client(cfg)
    assert [m.value for m in c.get_metric_history(run.run_id, "train/val_auc")] == [0.8, 0.9]
    assert c.get_run(run.run_id).data.metrics["train/best_epoch"] == 2
