"""Registration reads the ClinicalEvaluator's report: interval criteria decide the alias, evidence keeps it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from mlflow import MlflowClient

from components.clinical_eval.core import ClinicalSettings, evaluate, json_ready
from components.registry_gate.core import GatePolicy
from pipelines import registry
from pipelines.promotion.evidence import evidence_path, tree_digest
from tests.registry.support import GOOD, POLICY, register

CLINICAL = GatePolicy.from_dict(
    {
        **POLICY.to_dict(),
        "clinical": {
            "min_test_examples": 100,
            "lower_bounds": {"auc": 0.9},
            "non_inferiority": [{"metric": "auc", "margin": 0.02}],
        },
    }
)


def _report(directory: Path, separation: float, paired_shift: float | None = None) -> str:
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.4).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(0, 1.5, 300) + separation * (2 * y - 1))))
    baseline = None
    if paired_shift is not None:
        champion = p.copy()
        champion[y == 1] = np.clip(champion[y == 1] + paired_shift, 0, 1)  # the champion ranks better
        baseline = (champion, 0.5)
    report = evaluate(p, y, 0.5, ClinicalSettings(resamples=300), baseline=baseline)
    directory.mkdir(parents=True)
    (directory / "clinical_evaluation.json").write_text(json.dumps(json_ready(report)))
    return str(directory)


def _client(cfg) -> MlflowClient:
    resolved = cfg.resolved()
    return MlflowClient(tracking_uri=resolved.tracking_uri, registry_uri=resolved.registry_uri)


def test_a_lower_bound_below_the_floor_is_registered_failed_and_never_a_candidate(cfg, fixtures, tmp_path):
    uri = _report(tmp_path / "weak", separation=0.6)  # AUC about 0.75
    version = register(cfg, fixtures, "good", GOOD, policy=CLINICAL, clinical_uri=uri)
    assert not version.passed and version.aliases == ()
    tags = _client(cfg).get_model_version("wdbc", version.version).tags
    assert "is below the floor 0.9000" in tags["gate.fail.clinical:lower_bound:auc"]
    evidence = json.loads(evidence_path(cfg.resolved().production_path("wdbc"), version.version).read_text())
    assert evidence["clinical_uri"] == uri and evidence["clinical_digest"] == tree_digest(uri)
    assert evidence["clinical"]["auc"]["lower"] < 0.9


def test_a_strong_evaluation_passes_and_its_report_is_the_evidence(cfg, fixtures, tmp_path):
    uri = _report(tmp_path / "strong", separation=2.5)
    version = register(cfg, fixtures, "good", GOOD, policy=CLINICAL, clinical_uri=uri)
    assert version.passed and version.aliases == ("candidate",)
    verdict = json.loads(_client(cfg).get_model_version("wdbc", "1").tags["gate.verdict"])
    assert "paired non-inferiority was not assessed" in " ".join(verdict["notes"])


def test_a_run_without_a_clinical_evaluation_fails_a_clinical_policy(cfg, fixtures):
    version = register(cfg, fixtures, "good", GOOD, policy=CLINICAL)
    assert not version.passed
    assert "no clinical evaluation was found" in " ".join(version.failures)


def _with_champion(cfg, fixtures, tmp_path) -> None:
    register(cfg, fixtures, "good", GOOD, policy=CLINICAL, clinical_uri=_report(tmp_path / "v1", 2.5))
    _client(cfg).set_registered_model_alias("wdbc", "champion", "1")


def test_paired_comparison_with_the_champion_refuses_a_worse_challenger(cfg, fixtures, tmp_path):
    _with_champion(cfg, fixtures, tmp_path)
    uri = _report(tmp_path / "v2", separation=2.0, paired_shift=0.3)
    version = register(cfg, fixtures, "better", GOOD, policy=CLINICAL, clinical_uri=uri)
    assert not version.passed
    tags = _client(cfg).get_model_version("wdbc", version.version).tags
    message = tags["gate.fail.clinical:non_inferiority:auc"]
    assert "vs champion version 1" in message and "cannot rule out a loss larger than the margin" in message


def test_paired_comparison_with_the_champion_accepts_one_within_the_margin(cfg, fixtures, tmp_path):
    _with_champion(cfg, fixtures, tmp_path)
    uri = _report(tmp_path / "v2", separation=2.0, paired_shift=0.01)
    version = register(cfg, fixtures, "better", GOOD, policy=CLINICAL, clinical_uri=uri)
    assert version.passed, version.failures


def test_a_comparison_with_a_model_that_is_not_the_champion_does_not_count(cfg, fixtures, tmp_path):
    _with_champion(cfg, fixtures, tmp_path)
    uri = _report(tmp_path / "v2", separation=2.5, paired_shift=0.0)
    # The baseline both evaluators used was some other model, not the champion's SavedModel.
    version = register(
        cfg,
        fixtures,
        "better",
        GOOD,
        policy=CLINICAL,
        clinical_uri=uri,
        baseline={"Overall": dict(GOOD["Overall"])},
        baseline_model_uri=fixtures["model_other"],
    )
    assert not version.passed
    assert any("was not scored on the same test rows" in f for f in version.failures)
    assert registry.aliases_of(_client(cfg), "wdbc") == {"candidate": "1", "champion": "1"}
