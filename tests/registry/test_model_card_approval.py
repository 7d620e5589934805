"""The model card at approval: attached at registration, its digest approved and logged; a card that is
missing, deleted or edited after registration blocks the approval (and the refusal is logged).

Real parts: the embedded MLflow store (the card is a run artifact in `mlartifacts/`), the write-once
evidence, the hash-chained log and the write-ahead journal.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from components.serving_pusher.core import list_versions
from pipelines import registry, registry_cli
from pipelines.model_card import attach
from pipelines.promotion import ModelCardError, approve, journal, status
from pipelines.promotion.evidence import Evidence, evidence_path
from tests.registry.support import register, who


def production(cfg) -> Path:
    return cfg.resolved().production_path("wdbc")


def evidence(cfg, version: str = "1") -> Evidence:
    return Evidence.from_json(evidence_path(production(cfg), version).read_bytes())


def card_dir(cfg, version: str = "1") -> Path:
    """Where the embedded store keeps the version's card (what an MLflow user with disk access edits)."""
    client = registry.client_for(cfg.resolved())
    run = client.get_run(evidence(cfg, version).run_id)
    return Path(urlparse(run.info.artifact_uri).path) / attach.ARTIFACT_DIR


def log_lines(cfg) -> list[dict]:
    return [json.loads(line) for line in (production(cfg) / "promotion_log.jsonl").read_text().splitlines()]


def test_registration_attaches_the_card_and_records_its_digest(cfg, fixtures):
    register(cfg, fixtures, "good")
    recorded = evidence(cfg).model_card
    assert recorded is not None and set(recorded["files"]) == {
        "model_card.md",
        "model_card.html",
        "facts.json",
    }
    folder = card_dir(cfg)
    for name, digest in recorded["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    assert recorded["digest"] == recorded["files"]["model_card.md"]
    tags = registry.get_version(registry.client_for(cfg.resolved()), "wdbc", "1").tags
    assert tags["model_card"] == f"run artifacts model_card/model_card.html (sha256 {recorded['digest']})"
    markdown = (folder / "model_card.md").read_text()
    assert "# Model card: wdbc version 1" in markdown and "Registry gate: passed" in markdown
    # Built from the run's artifacts: the Evaluator's metrics and the degraded parts named as such.
    assert "| auc | 0.930 |" in markdown, markdown
    assert "no clinical evaluation for this run" in markdown
    assert recorded["summary"][0].startswith("test split n = 240: auc 0.930, recall 0.850"), recorded[
        "summary"
    ]


def test_approval_records_the_card_digest_in_the_log_and_the_journal(cfg, fixtures, monkeypatch):
    register(cfg, fixtures, "good")
    digest = evidence(cfg).model_card["digest"]
    seen: dict = {}

    def hook(step: str) -> None:
        if step == "journal-written":
            seen.update(journal.read_journal(production(cfg)).record)

    monkeypatch.setattr(journal, "fault_hook", hook)
    record = approve(cfg, "wdbc", "1", who("bob"), "card read")
    assert record.model_card_digest == digest
    assert seen["model_card_digest"] == digest
    assert log_lines(cfg)[-1]["event"] == "approve" and log_lines(cfg)[-1]["model_card_digest"] == digest
    assert list_versions(production(cfg)) == [1]


def _refused(cfg, match: str) -> None:
    with pytest.raises(ModelCardError, match=match):
        approve(cfg, "wdbc", "1", who("bob"), "looks fine")
    assert list_versions(production(cfg)) == []
    refusal = log_lines(cfg)[-1]
    assert refusal["event"] == "refuse" and refusal["version"] == "1"
    assert match.split(" ")[0] in refusal["reason"], refusal["reason"]


@pytest.mark.parametrize("name", ["model_card.md", "model_card.html", "facts.json"])
def test_an_edited_card_file_blocks_the_approval(cfg, fixtures, name):
    register(cfg, fixtures, "good")
    path = card_dir(cfg) / name
    edited = path.read_text().replace("0.93", "0.99")
    assert edited != path.read_text()
    path.write_text(edited)
    _refused(cfg, f"model_card/{name}' of 'wdbc' version 1 .* was changed after registration")


def test_a_deleted_card_file_blocks_the_approval(cfg, fixtures):
    register(cfg, fixtures, "good")
    (card_dir(cfg) / "model_card.html").unlink()
    report = status(cfg, "wdbc")
    assert not report.consistent
    assert any(
        p.startswith("model card: the model card file 'model_card/model_card.html'") for p in report.problems
    )
    _refused(cfg, "model_card/model_card.html' of 'wdbc' version 1 .* was deleted after registration")


def test_a_deleted_card_blocks_the_approval(cfg, fixtures):
    register(cfg, fixtures, "good")
    shutil.rmtree(card_dir(cfg))
    _refused(cfg, "the model card of 'wdbc' version 1 .* cannot be read")


def test_a_version_registered_without_a_card_cannot_be_approved(cfg, fixtures, monkeypatch):
    # A registration whose card could not be built (or one made before cards existed).
    monkeypatch.setattr(registry, "_model_card", lambda *args, **kwargs: None)
    register(cfg, fixtures, "good")
    assert evidence(cfg).model_card is None
    assert b"model_card" not in evidence_path(production(cfg), "1").read_bytes()
    _refused(cfg, "'wdbc' version 1 has no model card")


def test_cli_approve_shows_the_card_summary(cfg, fixtures, monkeypatch, capsys):
    register(cfg, fixtures, "good")
    monkeypatch.setattr(registry_cli, "acting_identity", lambda args, c: who("bob"))
    monkeypatch.setattr(registry_cli, "tracking_config", lambda args: cfg)
    args = registry_cli.argparse.Namespace(model="wdbc", version="1", note="ok")
    assert registry_cli.cmd_approve(args) == 0
    out = capsys.readouterr().out
    assert f"sha256 {evidence(cfg).model_card['digest']}" in out
    assert "  test split n = 240: auc 0.930" in out and "intended use: NOT STATED" in out, out
