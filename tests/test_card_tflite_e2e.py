"""WDBC end to end through `dxpipe`: the registered version carries its model card and its TFLite export
(parity on the whole test split), and a second person's approval shows the card and logs its digest.

Real parts throughout: TFX LocalDagRunner, the embedded MLflow store, the TFLite converter and interpreter.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli import main
from pipelines.promotion.evidence import Evidence, evidence_path
from tests.helpers import write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """`dxpipe run` on the default config; returns (workdir, stdout, MlflowClient)."""
    from mlflow import MlflowClient

    workdir = tmp_path_factory.mktemp("card") / "work"
    config = write_config(tmp_path_factory.mktemp("cfg") / "good.yaml", workdir)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", "--config", str(config)])
    assert code == 0, out.getvalue()
    return workdir, out.getvalue(), MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


def _evidence(workdir: Path) -> Evidence:
    return Evidence.from_json(evidence_path(workdir / "serving" / "wdbc", "1").read_bytes())


def test_the_version_carries_its_model_card(run, tmp_path):
    workdir, _, client = run
    evidence = _evidence(workdir)
    card = evidence.model_card
    local = Path(client.download_artifacts(evidence.run_id, "model_card", str(tmp_path)))
    markdown = (local / "model_card.md").read_text()
    assert hashlib.sha256(markdown.encode()).hexdigest() == card["digest"]
    assert "# Model card: wdbc version 1" in markdown
    assert "Intended use: Decision support for classifying a breast mass" in markdown
    assert "569 aspirates from one centre" in markdown
    assert "Leakage check: 0 identical feature row(s) across splits." in markdown
    assert "Split: by a hash of each row" in markdown
    assert "| mean\\_radius | FLOAT | required |" in markdown, markdown[:3000]
    facts = json.loads((local / "facts.json").read_text())
    splits = facts["data"]["splits"]
    assert sum(s["examples"] for s in splits.values()) == 569
    assert sum(s["positives"] for s in splits.values()) == 212  # malignant in WDBC
    assert facts["metrics"]["Overall"]["auc"] >= 0.97
    # The card shows this run's clinical evaluation (the one the gate read) and the locked operating point.
    assert facts["clinical"]["n"] == splits["test"]["examples"]
    assert facts["clinical"]["threshold"] == facts["operating_point"]["threshold"]
    assert facts["operating_point"]["chosen_on"] == "eval"
    assert "no clinical evaluation for this run" not in markdown
    assert "<script" not in (local / "model_card.html").read_text()


def test_the_version_carries_a_tflite_export_with_parity_on_every_test_row(run, tmp_path):
    workdir, out, client = run
    evidence = _evidence(workdir)
    report = evidence.tflite
    local = Path(client.download_artifacts(evidence.run_id, "tflite", str(tmp_path)))
    facts_splits = json.loads(
        Path(
            client.download_artifacts(evidence.run_id, "model_card/facts.json", str(tmp_path / "f"))
        ).read_text()
    )["data"]["splits"]
    assert report["rows"] == facts_splits["test"]["examples"]
    assert report["exported"] == ["float16", "int8_dynamic"]
    for variant in report["variants"]:
        assert variant["passed"] and variant["decision_mismatches"] == 0
        raw = (local / variant["file"]).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == report["files"][variant["file"]] == variant["sha256"]
    # The exported file is a working model: one row in, one probability out.
    from models.tflite_export import TFLiteRunner

    runner = TFLiteRunner((local / "float16.tflite").read_bytes())
    row = {name: np.array([15.0], dtype=np.float32) for name in runner._dtypes}
    probability = runner(row)
    assert probability.shape == (1,) and 0.0 <= probability[0] <= 1.0
    assert "TFLite parity on" in out and "float16: exported" in out, out
    tag = client.get_model_version("wdbc", "1").tags["tflite"]
    assert tag == f"run artifacts tflite/: float16, int8_dynamic; parity on {report['rows']} test rows"


def test_approval_shows_the_card_and_records_its_digest(run, monkeypatch, capsys):
    from pipelines import identity

    workdir, _, _ = run
    monkeypatch.setattr(
        identity, "os_account", lambda: identity.Identity("dr-second", False, "os-account (test)")
    )
    capsys.readouterr()
    code = main(["approve", "wdbc", "1", "--note", "card read", "--workdir", str(workdir)])
    out = capsys.readouterr().out
    assert code == 0, out
    digest = _evidence(workdir).model_card["digest"]
    assert f"sha256 {digest}:" in out and "intended use: Decision support" in out, out
    assert "AUC" in out and "operating point not recorded" not in out, out
    log = (workdir / "serving" / "wdbc" / "promotion_log.jsonl").read_text().splitlines()
    last = json.loads(log[-1])
    assert last["event"] == "approve" and last["model_card_digest"] == digest
