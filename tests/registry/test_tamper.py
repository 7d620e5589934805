"""The tamper suite against the embedded store: ordinary MLflow edits never put a model into production.

Each case edits what an MLflow user can edit (tags, aliases; through the client or the REST API of
`dxpipe ui`), then tries to get the model served. In every case: production (`serving/<model>/`) is
unchanged, the log records the refusal with its reason, and `status` reports the discrepancy.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from components.serving_pusher.core import list_versions
from pipelines import registry, registry_cli
from pipelines.promotion import (
    FourEyesError,
    TamperingError,
    approve,
    rollback,
    status,
    sync_ui_alias,
)
from tests.registry.support import BAD, BETTER, GOOD, register, who


def production(cfg) -> Path:
    return cfg.resolved().production_path("wdbc")


def client(cfg):
    return registry.client_for(cfg.resolved())


def log_lines(cfg) -> list[dict]:
    return [json.loads(line) for line in (production(cfg) / "promotion_log.jsonl").read_text().splitlines()]


def assert_refused_and_reported(cfg, version: str, reason: str) -> None:
    """The three bars: production unchanged, refusal logged with the reason, status reports it."""
    assert list_versions(production(cfg)) == [1]
    assert registry.aliases_of(client(cfg), "wdbc").get("champion") == "1"
    refusal = log_lines(cfg)[-1]
    assert (refusal["event"], refusal["version"]) == ("refuse", version)
    assert reason in refusal["reason"], refusal["reason"]
    report = status(cfg, "wdbc")
    assert not report.consistent
    assert any(p.startswith("tampering:") and f"version {version}" in p for p in report.problems), (
        report.problems
    )


@pytest.fixture
def failed_v2(cfg, fixtures):
    """Version 1 (good) served; version 2 failed the gate (AUC 0.5, not blessed)."""
    register(cfg, fixtures, "good", GOOD, author="alice")
    approve(cfg, "wdbc", "1", who("bob"), "first champion")
    register(cfg, fixtures, "bad", BAD, author="alice", blessed=False)
    return cfg


def test_gate_passed_set_on_a_failed_version(failed_v2):
    cfg = failed_v2
    client(cfg).set_model_version_tag("wdbc", "2", "gate", "passed")
    with pytest.raises(
        TamperingError, match=r"tag 'gate' says 'passed' but the evidence recorded 'failed'"
    ) as err:
        approve(cfg, "wdbc", "2", who("carol"), "")
    assert "fails the gate re-derived from its evidence" in str(err.value)
    assert_refused_and_reported(cfg, "2", "tag 'gate' says 'passed'")
    assert log_lines(cfg)[-1]["gate"] == "failed"


def test_failure_tags_deleted(failed_v2):
    cfg = failed_v2
    c = client(cfg)
    for key in [k for k in c.get_model_version("wdbc", "2").tags if k.startswith("gate.fail.")]:
        c.delete_model_version_tag("wdbc", "2", key)
    c.set_model_version_tag("wdbc", "2", "gate", "passed")
    c.set_model_version_tag("wdbc", "2", "gate.failures", "0")
    with pytest.raises(TamperingError, match=r"tag 'gate.fail.minimum:auc' .* was deleted"):
        approve(cfg, "wdbc", "2", who("carol"), "")
    assert_refused_and_reported(cfg, "2", "was deleted")


def test_metric_tags_forged(failed_v2):
    cfg = failed_v2
    c = client(cfg)
    c.set_model_version_tag("wdbc", "2", "metric.auc", "0.99")
    c.set_model_version_tag("wdbc", "2", "metric.sensitivity", "0.99")
    with pytest.raises(TamperingError, match=r"tag 'metric.auc' says '0.99' but the evidence recorded '0.5'"):
        approve(cfg, "wdbc", "2", who("carol"), "")
    assert_refused_and_reported(cfg, "2", "tag 'metric.sensitivity' = '0.99' was added after registration")
    # The log records the metrics re-derived from the evidence, never the forged ones.
    assert log_lines(cfg)[-1]["metrics"]["auc"] == 0.5


def test_author_tag_edited_to_approve_ones_own_model(cfg, fixtures):
    register(cfg, fixtures, "good", GOOD, author="alice")
    approve(cfg, "wdbc", "1", who("bob"), "first champion")
    register(cfg, fixtures, "better", BETTER, author="alice")
    client(cfg).set_model_version_tag("wdbc", "2", "dxpipe.author", "zed")
    with pytest.raises(
        TamperingError, match=r"tag 'dxpipe.author' says 'zed' but the evidence recorded 'alice'"
    ) as err:
        approve(cfg, "wdbc", "2", who("alice"), "")
    assert "the reviewer 'alice' is the author of its run" in str(err.value)
    assert_refused_and_reported(cfg, "2", "'dxpipe.author'")


def test_run_tags_do_not_change_the_author(cfg, fixtures):
    register(cfg, fixtures, "good", GOOD, author="alice")
    c = client(cfg)
    run_id = c.get_model_version("wdbc", "1").run_id
    c.set_tag(run_id, "mlflow.user", "zed")
    c.set_tag(run_id, "dxpipe.author", "zed")
    with pytest.raises(FourEyesError, match=r"the reviewer 'alice' is the author of its run"):
        approve(cfg, "wdbc", "1", who("alice"), "")


def test_edited_evidence_is_detected(failed_v2):
    cfg = failed_v2
    path = production(cfg) / ".evidence" / "2.json"
    os.chmod(path, 0o644)
    evidence = json.loads(path.read_text())
    evidence["passed"] = True
    evidence["candidate"]["Overall"]["auc"] = 0.99
    path.write_text(json.dumps(evidence))
    with pytest.raises(TamperingError, match=r"was altered after registration"):
        approve(cfg, "wdbc", "2", who("carol"), "")
    assert_refused_and_reported(cfg, "2", "was altered after registration")


def test_changed_evaluator_output_is_detected(cfg, fixtures, tmp_path):
    evaluation = tmp_path / "evaluation"
    shutil.copytree(fixtures["evaluation_uri"], evaluation)
    register(cfg, fixtures, "good", GOOD, author="alice")
    approve(cfg, "wdbc", "1", who("bob"), "first champion")
    register(cfg, fixtures, "better", BETTER, author="alice", evaluation_uri=str(evaluation))
    victim = next(p for p in sorted(evaluation.rglob("*")) if p.is_file())
    with victim.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(
        TamperingError, match=r"the Evaluator output of version 2 .* changed after registration"
    ):
        approve(cfg, "wdbc", "2", who("carol"), "")
    assert_refused_and_reported(cfg, "2", "changed after registration")


def test_a_version_created_outside_the_pipeline_with_a_gate_tag(failed_v2, fixtures):
    cfg = failed_v2
    client(cfg).create_model_version("wdbc", fixtures["model_bad"], tags={"gate": "passed"})
    with pytest.raises(Exception, match=r"was never gated by dxpipe"):
        approve(cfg, "wdbc", "3", who("carol"), "")
    assert list_versions(production(cfg)) == [1]


def test_rollback_to_a_champion_whose_tags_were_edited_is_refused(cfg, fixtures):
    register(cfg, fixtures, "good", GOOD, author="alice")
    approve(cfg, "wdbc", "1", who("bob"), "")
    register(cfg, fixtures, "better", BETTER, author="alice")
    approve(cfg, "wdbc", "2", who("bob"), "")
    client(cfg).set_model_version_tag("wdbc", "1", "metric.auc", "0.999")
    with pytest.raises(TamperingError, match=r"the previous champion cannot be served again"):
        rollback(cfg, "wdbc", who("dave"), "")
    assert list_versions(production(cfg)) == [1, 2]


# ---- through the REST API of `dxpipe ui` ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ui(failed_v2):
    """The real `mlflow ui` that `dxpipe ui` starts, over this test's embedded store."""
    cfg = failed_v2
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = (Path(cfg.workdir) / "ui.log").open("ab")
    process = subprocess.Popen(
        registry_cli.ui_command(cfg, port),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError((Path(cfg.workdir) / "ui.log").read_text()[-2000:])
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.exceptions.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow ui did not become healthy")
            time.sleep(0.5)
        yield cfg, url
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_champion_alias_set_through_the_ui_rest_api_then_sync(ui):
    cfg, url = ui
    api = f"{url}/api/2.0/mlflow"
    # Three unauthenticated calls, as in the bug report.
    for key, value in (("gate", "passed"), ("approval.reviewer", "carol")):
        response = requests.post(
            f"{api}/model-versions/set-tag",
            json={"name": "wdbc", "version": "2", "key": key, "value": value},
            timeout=30,
        )
        assert response.status_code == 200, response.text
    response = requests.post(
        f"{api}/registered-models/alias",
        json={"name": "wdbc", "alias": "champion", "version": "2"},
        timeout=30,
    )
    assert response.status_code == 200, response.text

    result = sync_ui_alias(cfg, "wdbc", who("ops"))
    assert result.action == "refused"
    assert "nobody accountable approved it" in result.message
    assert "tag 'gate' says 'passed' but the evidence recorded 'failed'" in result.message
    refusal = log_lines(cfg)[-1]
    assert (refusal["source"], refusal["gate"]) == ("ui", "failed")
    assert_refused_and_reported(cfg, "2", "set outside dxpipe")
