"""An image model through the product, as a user types it: run -> gate -> four-eyes approval -> production.

The same `dxpipe run`, registry gate, `dxpipe approve` and push code as the tabular models; only the
dataset entry differs. Training is shortened (the accuracy bars are a benchmark, see BENCHMARKS.md) and
the gate's minimums lowered to match, so the flow, not the model's quality, is what is tested here.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import tensorflow as tf
import yaml

from components.serving_pusher.core import list_versions
from pipelines.cli import main
from pipelines.config import DEFAULT_CONFIG, PROJECT_ROOT

pytestmark = pytest.mark.slow
NAME = "pneumoniamnist"


def _config(path: Path, workdir: Path, medmnist: Path) -> Path:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["workdir"] = str(workdir)
    entry = raw["datasets"][NAME]
    entry["schema_dir"] = str(PROJECT_ROOT / entry["schema_dir"])
    entry["source"]["path"] = str(medmnist / "pneumoniamnist.npz")
    entry["image"]["model"] = {"epochs": 3}
    entry["evaluation"] = {"min_auc": 0.8, "min_accuracy": 0.6}
    entry["gate"] = {"minimums": {"auc": 0.8, "recall": 0.6}, "maximums": {"brier_score": 0.3}}
    path.write_text(yaml.safe_dump(raw))
    return path


def as_os_user(monkeypatch, name: str) -> None:
    """A second reviewer is a second OS account, which a test cannot create: stand one in."""
    from pipelines import identity

    monkeypatch.setattr(identity, "os_account", lambda: identity.Identity(name, False, "os-account (test)"))


def _dxpipe(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("image_product") / "work"


@pytest.fixture(scope="module")
def client(workdir):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


@pytest.fixture(scope="module")
def first(workdir, tmp_path_factory, medmnist):
    config = _config(tmp_path_factory.mktemp("cfg") / "images.yaml", workdir, medmnist)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", "--config", str(config), "--dataset", NAME])
    assert code == 0, out.getvalue()
    return out.getvalue()


def test_run_is_evaluated_tracked_with_image_plots_and_gated(first, client, workdir):
    assert f"'{NAME}' version 1 passed the gate -> alias candidate" in first, first
    assert "95% bootstrap intervals (test split resampled 1000 times): auc 0." in first, first
    (run,) = client.search_runs([client.get_experiment_by_name(f"dxpipe-{NAME}").experiment_id])
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert metrics["test/Overall/example_count"] == 624
    assert metrics["test_auc_ci95_low"] <= metrics["test/Overall/auc"] <= metrics["test_auc_ci95_high"]
    assert metrics["test_accuracy_ci95_low"] < metrics["test_accuracy_ci95_high"]
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/roc.png", "plots/confusion_matrix.png", "plots/most_confident_errors.png"} <= plots, plots
    version = client.get_model_version(NAME, "1")
    assert version.tags["gate"] == "passed" and version.aliases == ["candidate"]
    assert len(list_versions(workdir / "serving" / f"{NAME}-staging")) == 1
    assert not (workdir / "serving" / NAME / "1").exists()


def test_author_cannot_approve_and_a_second_person_promotes_to_production(
    first, capsys, workdir, client, monkeypatch
):
    code, _, err = _dxpipe(capsys, "approve", NAME, "1", "--note", "mine", "--workdir", str(workdir))
    assert code == 2 and "four-eyes" in err, err
    assert not (workdir / "serving" / NAME / "1").exists()
    as_os_user(monkeypatch, "dr-second")
    code, out, _ = _dxpipe(capsys, "approve", NAME, "1", "--note", "reviewed", "--workdir", str(workdir))
    assert code == 0 and "production now serves it as version 1" in out, out
    production = workdir / "serving" / NAME
    assert list_versions(production) == [1]
    assert sorted(client.get_model_version(NAME, "1").aliases) == ["candidate", "champion"]
    log = [json.loads(line) for line in (production / "promotion_log.jsonl").read_text().splitlines()]
    assert (log[-1]["event"], log[-1]["reviewer"]) == ("approve", "dr-second")
    # Production serves pictures: a PNG from the test split goes in, a probability comes out.
    png = next((workdir / "data" / NAME / "test").glob("*.gz"))
    record = next(iter(tf.data.TFRecordDataset(str(png), "GZIP")))
    image = tf.train.Example.FromString(record.numpy()).features.feature["image"].bytes_list.value[0]
    served = tf.saved_model.load(str(production / "1")).signatures["serving_default"]
    probability = served(images=tf.constant([image]))["probability"].numpy()
    assert probability.shape == (1,) and 0.0 <= float(probability[0]) <= 1.0
