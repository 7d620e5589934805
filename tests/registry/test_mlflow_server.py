"""The same code against a real `mlflow server` on loopback, including the server dying mid-run.

The server is started by the test (`--workers 1`, proxied artifacts, SQLite backend in a temp dir) and
killed with SIGKILL to the whole process group, which is what a crashed or unplugged server looks like
to a client.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from components.serving_pusher.core import list_versions, read_digest
from pipelines import promotion, registry, registry_cli, tracking
from pipelines.mlflow_store import TrackingConfig, TrackingError
from tests.registry.support import BAD, BETTER, GOOD, outputs_for, register, who

MLFLOW = Path(sys.executable).parent / "mlflow"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Server:
    root: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def backend(self) -> str:
        return f"sqlite:///{self.root / 'backend.db'}"

    def start(self) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(MLFLOW),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--backend-store-uri",
                self.backend,
                "--artifacts-destination",
                str(self.root / "artifacts"),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.exceptions.RequestException:
                pass
            time.sleep(0.5)
        self.kill()
        raise RuntimeError("mlflow server did not become healthy within 180 s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("mlflow-server"), _free_port())
    srv.start()
    yield srv
    srv.kill()


@pytest.fixture
def http_cfg(server, tmp_path, monkeypatch) -> TrackingConfig:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return TrackingConfig(
        workdir=str(tmp_path / "wd"), tracking_uri=server.url, http_max_retries=1, http_timeout_s=5
    )


def served(cfg: TrackingConfig, model: str = "wdbc") -> str | None:
    base = cfg.resolved().production_path(model)
    versions = list_versions(base)
    return read_digest(base / str(versions[-1])) if versions else None


def test_register_gate_approve_rollback_over_http(server, http_cfg, fixtures):
    cfg = http_cfg
    http = MlflowClient(tracking_uri=server.url)

    # A tracked run with real TFMA output, plots and reports, uploaded through the server's artifact proxy.
    outputs = dataclasses.replace(
        outputs_for(fixtures, "good"),
        evaluation_uri=fixtures["evaluation_uri"],
        schema_uri=fixtures["schema_uri"],
        statistics_uri=fixtures["statistics_uri"],
        anomalies_uri=fixtures["anomalies_uri"],
    )
    with tracking.pipeline_run(cfg, "dxpipe-wdbc", {"dataset": "wdbc"}, author="alice") as run:
        tracking.log_pipeline_outputs(run, outputs)
        first = registry.register_and_gate(run, outputs, registry_policy(), model_name="wdbc")
    got = http.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert {a.path for a in http.list_artifacts(run.run_id, "plots")} >= {
        "plots/roc.png",
        "plots/calibration.png",
    }
    assert first.passed and first.aliases == ("candidate",)
    assert (server.root / "artifacts").is_dir()

    bad = register(cfg, fixtures, "bad", BAD, author="alice", blessed=False)
    assert http.get_model_version("wdbc", bad.version).tags["gate"] == "failed"
    with pytest.raises(
        promotion.GateFailedError, match=r"fails the gate re-derived from its evidence and can never become"
    ):
        promotion.approve(cfg, "wdbc", bad.version, who("bob"), "")

    promotion.approve(cfg, "wdbc", first.version, who("bob"), "first")
    # Not pushed to staging: approval must download the SavedModel through the server.
    better = register(cfg, fixtures, "better", BETTER, author="alice", push=False)
    assert better.passed, better.failures
    assert not cfg.resolved().staging_path("wdbc").exists()  # nothing was pushed: approval must download
    record = promotion.approve(cfg, "wdbc", better.version, who("carol"), "better")
    assert record.production_version == 2
    assert served(cfg) == http.get_model_version("wdbc", better.version).tags["model.digest"]

    # A champion alias set on the failed version "in the UI" (through the REST API) is refused.
    http.set_model_version_tag("wdbc", bad.version, "approval.reviewer", "dave")
    http.set_registered_model_alias("wdbc", "champion", bad.version)
    assert promotion.sync_ui_alias(cfg, "wdbc", who("ops")).action == "refused"
    assert registry.aliases_of(http, "wdbc")["champion"] == better.version

    rolled = promotion.rollback(cfg, "wdbc", who("dave"), "site B")
    assert (rolled.version, rolled.production_version) == (first.version, 3)
    report = promotion.status(cfg, "wdbc")
    assert report.consistent and report.champion == first.version and report.production.version == 3
    assert [r.event for r in report.recent] == ["approve", "register", "approve", "refuse", "rollback"]


def registry_policy():
    from tests.registry.support import POLICY

    return POLICY


def test_server_killed_mid_run_gives_clear_errors_and_leaves_everything_consistent(
    server, http_cfg, fixtures, capsys
):
    cfg = http_cfg
    # Its own registered model, so the state left by the test above does not matter.
    champion = register(cfg, fixtures, "good", GOOD, author="alice", model_name="heart")
    promotion.approve(cfg, "heart", champion.version, who("bob"), "")
    log_path = cfg.resolved().production_path("heart") / "promotion_log.jsonl"
    log_before = log_path.read_text()
    digest_before = served(cfg, "heart")
    http = MlflowClient(tracking_uri=server.url)
    versions_before = sorted(int(v.version) for v in http.search_model_versions("name='heart'"))
    aliases_before = registry.aliases_of(http, "heart")

    started = time.monotonic()
    with (
        pytest.raises(TrackingError) as raised,
        tracking.pipeline_run(cfg, "dxpipe-wdbc", {}, author="alice") as run,
    ):
        tracking.log_pipeline_outputs(run, outputs_for(fixtures, "better"))
        server.kill()  # the server goes away between logging and registering
        registry.register_and_gate(
            run, outputs_for(fixtures, "better"), registry_policy(), model_name="heart"
        )
    message = str(raised.value)
    assert f"MLflow at {server.url} is unreachable while registering a version of 'heart'" in message
    assert "start the MLflow server" in message
    assert (
        f"could not be marked FAILED now; the next pipeline run in {cfg.resolved().workdir} will do it"
        in message
    )
    assert time.monotonic() - started < 60, "a dead server must be reported in seconds"
    marker = json.loads(
        (Path(cfg.resolved().workdir) / "mlflow_open_runs" / f"{run.run_id}.json").read_text()
    )
    assert marker["pending_status"] == "FAILED"

    with pytest.raises(TrackingError, match=rf"MLflow at {server.url} is unreachable while reading 'heart'"):
        promotion.approve(cfg, "heart", champion.version, who("carol"), "")
    code = registry_cli.main(["status", "heart", "--tracking-uri", server.url, "--workdir", cfg.workdir])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("dxpipe: error: MLflow at") and err.count("\n") == 1

    # Nothing half-written: the backend has no new version, the alias is unchanged, production and the
    # log are as they were.
    backend = MlflowClient(tracking_uri=server.backend, registry_uri=server.backend)
    assert sorted(int(v.version) for v in backend.search_model_versions("name='heart'")) == versions_before
    assert registry.aliases_of(backend, "heart") == aliases_before
    assert backend.get_run(run.run_id).info.status == "RUNNING"
    assert log_path.read_text() == log_before and served(cfg, "heart") == digest_before

    # When the server is back, the next pipeline run ends the orphaned run FAILED.
    server.start()
    with tracking.pipeline_run(cfg, "dxpipe-wdbc", {}, author="alice"):
        pass
    orphan = http.get_run(run.run_id)
    assert orphan.info.status == "FAILED"
    assert "could not be delivered" in orphan.data.tags["dxpipe.reaped"]
    assert promotion.status(cfg, "heart").consistent


def test_dxpipe_ui_shows_run_plots_version_verdict_and_approval(cfg, fixtures, tmp_path):
    """`dxpipe ui`'s command over the embedded store serves what a reviewer looks at."""
    outputs = dataclasses.replace(outputs_for(fixtures, "good"), evaluation_uri=fixtures["evaluation_uri"])
    with tracking.pipeline_run(cfg, "dxpipe-wdbc", {}, author="alice") as run:
        tracking.log_pipeline_outputs(run, outputs)
        version = registry.register_and_gate(run, outputs, registry_policy(), model_name="wdbc")
    promotion.approve(cfg, "wdbc", version.version, who("bob"), "reviewed ROC and slices")

    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    ui = subprocess.Popen(
        registry_cli.ui_command(cfg, port),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert ui.poll() is None, "mlflow ui exited"
            try:
                if requests.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except requests.exceptions.RequestException:
                pass
            assert time.monotonic() < deadline, "mlflow ui did not start"
            time.sleep(0.5)
        api = f"{base}/api/2.0/mlflow"
        model = requests.get(f"{api}/registered-models/get", params={"name": "wdbc"}, timeout=10).json()
        aliases = {a["alias"]: a["version"] for a in model["registered_model"]["aliases"]}
        assert aliases == {"candidate": version.version, "champion": version.version}
        mv = requests.get(
            f"{api}/model-versions/get", params={"name": "wdbc", "version": version.version}, timeout=10
        ).json()["model_version"]
        tags = {t["key"]: t["value"] for t in mv["tags"]}
        assert (
            tags["gate"] == "passed"
            and tags["approval.status"] == "approved"
            and tags["approval.by"] == "bob"
        )
        listed = requests.get(
            f"{api}/artifacts/list", params={"run_id": run.run_id, "path": "plots"}, timeout=10
        ).json()
        assert {f["path"] for f in listed["files"]} >= {"plots/roc.png", "plots/confusion_matrix.png"}
        png = requests.get(
            f"{base}/get-artifact", params={"path": "plots/roc.png", "run_uuid": run.run_id}, timeout=10
        )
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        # Bound to loopback only.
        assert (
            registry_cli.ui_command(cfg, port)[registry_cli.ui_command(cfg, port).index("--host") + 1]
            == "127.0.0.1"
        )
    finally:
        os.killpg(ui.pid, signal.SIGKILL)
        ui.wait(timeout=30)
