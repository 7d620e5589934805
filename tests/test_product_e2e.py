"""The product's promise end to end, through the `dxpipe` command a user types.

`dxpipe run` trains, gates and registers; a second person's `dxpipe approve` puts the model into the
production base path; a deliberately useless model (shuffled labels) is registered with its failed
criteria, compared against the champion re-scored on the same test split, and can't be approved; bad
data ends the MLflow run FAILED. Everything is real: TFX LocalDagRunner, SQLite MLMD, the embedded MLflow
store and SavedModels on disk.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
import tensorflow as tf

from components.serving_pusher.core import list_versions
from pipelines.cli import main
from tests.helpers import write_config

pytestmark = pytest.mark.slow


def _dxpipe(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("product") / "work"


@pytest.fixture(scope="module")
def client(workdir):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


@pytest.fixture(scope="module")
def first(workdir, tmp_path_factory):
    """`dxpipe run` on the default config; returns its stdout."""
    config = write_config(tmp_path_factory.mktemp("cfg") / "good.yaml", workdir)
    # A module-scoped fixture cannot use capsys; capture by hand.
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", "--config", str(config)])
    assert code == 0, out.getvalue()
    return out.getvalue()


def test_run_is_tracked_registered_and_gated(first, client, workdir):
    assert "'wdbc' version 1 passed the gate -> alias candidate" in first
    assert 'dxpipe approve wdbc 1 --note "<why>"' in first
    experiment = client.get_experiment_by_name("dxpipe-wdbc")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["dataset"] == "wdbc" and run.data.params["data.training.epochs"] == "300"
    assert run.data.metrics["test/Overall/auc"] >= 0.99
    assert "train/loss" in run.data.metrics and "env.tfx" in run.data.params
    assert run.data.tags["tfx.pipeline_root"] == str(workdir.absolute() / "pipelines" / "dxpipe-wdbc")
    assert json.loads(run.data.tags["mlmd.execution_ids"])["Trainer"] > 0
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {f"plots/{p}.png" for p in ("roc", "precision_recall", "calibration", "confusion_matrix")}
    version = client.get_model_version("wdbc", "1")
    assert version.tags["gate"] == "passed" and version.aliases == ["candidate"]
    # The version holds this run's own TFX run (the id dxpipe bound, never "the latest run" of ML Metadata).
    run_id = run.data.tags["tfx.run_id"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+-[0-9a-f]{8}", run_id), run_id
    assert version.tags["tfx.run_id"] == run_id and version.run_id == run.info.run_id
    assert version.tags["gate.compared_with"] == "none (no champion yet)"
    staging = list_versions(workdir / "serving" / "wdbc-staging")
    assert len(staging) == 1 and not (workdir / "serving" / "wdbc" / "1").exists()
    # The push follows the registry gate's verdict; its outcome is recorded on the same run.
    run = client.get_run(run.info.run_id)
    assert run.data.tags["tfx.pushed"] == "true" and run.data.tags["serving.staging_version"] == str(
        staging[0]
    )


def as_os_user(monkeypatch, name: str) -> None:
    """A second person on this machine is a second OS account, which a test cannot create: stand one in."""
    from pipelines import identity

    monkeypatch.setattr(identity, "os_account", lambda: identity.Identity(name, False, "os-account (test)"))


def test_author_cannot_approve_own_model(first, capsys, workdir, client):
    # The run's author is this process's OS account; the same account approving is refused.
    assert json.loads(client.get_model_version("wdbc", "1").tags["gate.verdict"])["passed"]
    code, _, err = _dxpipe(capsys, "approve", "wdbc", "1", "--note", "mine", "--workdir", str(workdir))
    assert code == 2 and "is the author of its run" in err and "four-eyes" in err, err
    assert not (workdir / "serving" / "wdbc" / "1").exists()


def test_second_person_approves_into_production(first, capsys, workdir, client, monkeypatch):
    as_os_user(monkeypatch, "dr-second")
    code, out, _ = _dxpipe(
        capsys, "approve", "wdbc", "1", "--reviewer", "dr-second", "--note", "AUC 0.997 on the test split",
        "--workdir", str(workdir),
    )  # fmt: skip
    assert code == 0 and "production now serves it as version 1" in out, out
    production = workdir / "serving" / "wdbc"
    assert list_versions(production) == [1]
    model = tf.saved_model.load(str(production / "1"))
    infer = model.signatures["serving_default"]
    row = {name: tf.constant([0.0] if spec.dtype == tf.float32 else [""], dtype=spec.dtype)
           for name, spec in infer.structured_input_signature[1].items()}  # fmt: skip
    probability = infer(**row)["probability"].numpy()
    assert probability.shape == (1,) and 0.0 <= float(probability[0]) <= 1.0
    version = client.get_model_version("wdbc", "1")
    assert sorted(version.aliases) == ["candidate", "champion"]
    assert version.tags["approval.by"] == "dr-second" and version.tags["approval.status"] == "approved"
    log = [json.loads(line) for line in (production / "promotion_log.jsonl").read_text().splitlines()]
    assert [(r["event"], r["version"], r["reviewer"]) for r in log][-1] == ("approve", "1", "dr-second")
    assert log[-1]["metrics"]["auc"] >= 0.99


def test_rerun_of_the_champion_registers_nothing_new(first, capsys, workdir, client, tmp_path):
    config = write_config(tmp_path / "same.yaml", workdir)
    staged = list_versions(workdir / "serving" / "wdbc-staging")
    code, out, _ = _dxpipe(capsys, "run", "--config", str(config))
    assert code == 0, out
    assert "the same model as 'wdbc' version 1 (candidate, champion)" in out, out
    # The champion is this run's candidate, so it is not its own baseline: nothing is re-evaluated.
    cached = next(line for line in out.splitlines() if line.strip().startswith("cached:"))
    assert "Evaluator" in cached and "Trainer" in cached, cached
    # The registry gate decides again (never from the cache) and finds version 1; the push it guards
    # finds that model already in staging.
    assert "RegistryGate" not in cached and list_versions(workdir / "serving" / "wdbc-staging") == staged
    assert [str(v.version) for v in client.search_model_versions("name='wdbc'")] == ["1"]
    assert list_versions(workdir / "serving" / "wdbc") == [1]


def test_useless_model_fails_the_gate_against_the_champion(
    first, capsys, workdir, client, tmp_path, monkeypatch
):
    if client.get_model_version("wdbc", "1").aliases != ["candidate", "champion"]:
        pytest.fail("needs the approval test's champion (run the module in order)")
    config = write_config(tmp_path / "bad.yaml", workdir, training={"shuffle_labels": True})
    code, out, _ = _dxpipe(capsys, "run", "--config", str(config))
    assert code == 0, out
    assert "compared with the registry's champion" in out
    assert "'wdbc' version 2 FAILED the gate" in out
    version = client.get_model_version("wdbc", "2")
    assert version.tags["gate"] == "failed" and "candidate" not in version.aliases
    assert version.tags["gate.compared_with"].startswith("champion version 1, re-scored")
    verdict = json.loads(version.tags["gate.verdict"])
    failed = {r["criterion"] for r in verdict["results"] if not r["passed"]}
    # Every failed criterion is listed, not the first one only.
    assert {"evaluator_blessing", "minimum:auc", "non_inferiority:auc"} <= failed, failed
    assert str(client.get_model_version_by_alias("wdbc", "candidate").version) == "1"
    as_os_user(monkeypatch, "dr-second")
    code, _, err = _dxpipe(
        capsys, "approve", "wdbc", "2", "--reviewer", "dr-second", "--note", "try", "--workdir", str(workdir)
    )
    assert code == 2 and "fails the gate re-derived from its evidence" in err, err
    assert list_versions(workdir / "serving" / "wdbc") == [1]
    code, out, _ = _dxpipe(capsys, "status", "wdbc", "--workdir", str(workdir))
    assert code == 0 and "champion:  1" in out and "consistent" in out, out


def test_bad_data_ends_the_mlflow_run_failed(first, capsys, workdir, client, tmp_path):
    from pipelines.config import load_config
    from pipelines.data import canonical_csv

    rows = canonical_csv(load_config().data).splitlines()
    header = rows[0].split(",")
    broken = rows[7].split(",")
    broken[header.index("mean_radius")] = "not-a-number"
    csv = tmp_path / "clinic.csv"
    csv.write_text("\n".join([rows[0], *rows[1:7], ",".join(broken), *rows[8:]]) + "\n")
    config = write_config(
        tmp_path / "csv.yaml", workdir, source={"kind": "csv", "path": str(csv)}, label_column="label",
        label_map={},
    )  # fmt: skip
    versions_before = {v.version for v in client.search_model_versions("name='wdbc'")}
    code, _, err = _dxpipe(capsys, "run", "--config", str(config))
    assert code == 2 and "clinic.csv" in err and "mean_radius" in err, err
    experiment = client.get_experiment_by_name("dxpipe-wdbc")
    latest = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])[0]
    assert latest.info.status == "FAILED" and "clinic.csv" in latest.data.tags["dxpipe.failure"]
    # What the reader of a failed run needs: the anomalies, logged although the run failed.
    anomalies = client.download_artifacts(latest.info.run_id, "data/anomalies.json", str(tmp_path))
    assert "mean_radius" in Path(anomalies).read_text()
    assert {v.version for v in client.search_model_versions("name='wdbc'")} == versions_before
    assert list_versions(workdir / "serving" / "wdbc") == [1]
