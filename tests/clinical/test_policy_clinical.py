"""Approval re-derives the clinical criteria from the evidence recorded at registration."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from components.clinical_eval.core import ClinicalSettings, evaluate, json_ready
from components.registry_gate.core import GatePolicy
from pipelines.identity import Identity
from pipelines.promotion.audit_log import PromotionLog
from pipelines.promotion.evidence import Evidence, VerifiedEvidence, load_verified, write_evidence
from pipelines.promotion.policy import GATE_FAILED, OK, PinnedPolicy, decide
from tests.registry.support import GOOD

BOB = Identity("bob", True, "test")
POLICY = GatePolicy.from_dict(
    {
        "minimums": {"auc": 0.8},
        "require_evaluator_blessing": False,
        "clinical": {
            "min_test_examples": 100,
            "lower_bounds": {"auc": 0.8},
            "non_inferiority": [{"metric": "auc", "margin": 0.05}],
        },
    }
)


def _report(n: int = 400, with_champion: bool = True) -> dict:
    rng = np.random.default_rng(0)
    y = (rng.random(n) < 0.4).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(0, 1.5, n) + 2.5 * (2 * y - 1))))
    baseline = (np.clip(p + rng.normal(0, 0.02, n), 0, 1), 0.5) if with_champion else None
    return json_ready(evaluate(p, y, 0.5, ClinicalSettings(resamples=300), baseline=baseline))


def _evidence(clinical, **changes) -> Evidence:
    base = Evidence(
        model="wdbc",
        version="2",
        run_id="r2",
        tfx_run_id="t2",
        author="alice",
        author_authenticated=True,
        author_source="test",
        model_digest="d2",
        policy=POLICY.to_dict(),
        policy_digest=POLICY.digest(),
        four_eyes=True,
        candidate=GOOD,
        baseline={"Overall": GOOD["Overall"]},
        champion="1",
        compared_with="champion version 1",
        blessed=True,
        evaluation_uri=None,
        evaluation_digest=None,
        blessing_uri=None,
        blessing_digest=None,
        test_digest="400:abc",
        passed=True,
        failures=(),
        display_tags={},
        registered_at="2026-11-30T00:00:00Z",
        clinical=clinical,
    )
    return dataclasses.replace(base, **changes)


def _decide(ev: Evidence, champion: str | None = "1"):
    return decide(
        "wdbc", "2", VerifiedEvidence(ev, ()), {}, "r2", BOB, PinnedPolicy.of(ev), champion=champion
    )


def test_approval_passes_on_the_recorded_clinical_evaluation():
    decision = _decide(_evidence(_report()))
    assert (decision.allowed, decision.kind) == (True, OK), decision.reasons
    names = {r.criterion for r in decision.verdict.results}
    assert {"clinical:lower_bound:auc", "clinical:non_inferiority:auc"} <= names


def test_a_new_champion_since_registration_fails_the_paired_criterion_with_its_reason():
    decision = _decide(_evidence(_report()), champion="3")
    assert decision.kind == GATE_FAILED
    assert "version 3 was not scored on the same test rows" in " ".join(decision.reasons)


def test_a_policy_with_clinical_criteria_refuses_evidence_without_a_clinical_evaluation():
    decision = _decide(_evidence(None))
    assert decision.kind == GATE_FAILED and "no clinical evaluation was found" in decision.reasons[0]


def test_a_tiny_recorded_test_split_is_refused_at_approval():
    decision = _decide(_evidence(_report(n=83)))
    assert decision.kind == GATE_FAILED
    assert "insufficient evidence: n = 83 test examples" in decision.reasons[0]


def test_evidence_round_trips_and_a_changed_clinical_artifact_is_reported(tmp_path):
    out = tmp_path / "ClinicalEvaluator" / "clinical_evaluation" / "12"
    out.mkdir(parents=True)
    (out / "clinical_evaluation.json").write_text("{}")
    from pipelines.promotion.evidence import tree_digest

    ev = _evidence(_report(), clinical_uri=str(out), clinical_digest=tree_digest(out))
    base = tmp_path / "serving" / "wdbc"
    digest = write_evidence(base, ev)
    log = PromotionLog(base / "promotion_log.jsonl")
    log.append(event="register", model="wdbc", version="2", reviewer="alice", evidence_digest=digest)
    assert hashlib.sha256((base / ".evidence" / "2.json").read_bytes()).hexdigest() == digest
    verified = load_verified(base, "2", log.records())
    assert verified.problems == () and verified.evidence.clinical == ev.clinical
    (out / "clinical_evaluation.json").write_text('{"auc": {"lower": 0.99}}')
    verified = load_verified(base, "2", log.records())
    assert "the clinical evaluation of version 2" in verified.problems[0]
    assert "changed after registration" in verified.problems[0]
