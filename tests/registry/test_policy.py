"""`pipelines.promotion.policy`, branch by branch, on plain values (no MLflow, no files)."""

from __future__ import annotations

import dataclasses

import pytest

from pipelines.identity import Identity
from pipelines.promotion.evidence import Evidence, VerifiedEvidence
from pipelines.promotion.policy import (
    FOUR_EYES,
    GATE_FAILED,
    NOT_GATED,
    OK,
    TAMPERED,
    PinnedPolicy,
    decide,
    rederive_verdict,
    tag_discrepancies,
)
from tests.registry.support import BAD, BETTER, GOOD, POLICY

BOB = Identity("bob", True, "test")


def evidence(candidate=GOOD, **changes) -> Evidence:
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
        candidate=candidate,
        baseline={"Overall": GOOD["Overall"]},
        champion="1",
        compared_with="champion version 1",
        blessed=True,
        evaluation_uri=None,
        evaluation_digest=None,
        blessing_uri=None,
        blessing_digest=None,
        test_digest="240:abc",
        passed=True,
        failures=(),
        display_tags={"gate": "passed", "metric.auc": "0.93", "dxpipe.author": "alice", "model.digest": "d2"},
        registered_at="2026-11-30T00:00:00Z",
    )
    return dataclasses.replace(base, **changes)


def tags_of(ev: Evidence, **changes) -> dict[str, str]:
    return {**ev.display_tags, "approval.status": "refused", **changes}


def run(ev: Evidence | None, tags=None, reviewer=BOB, *, problems=(), missing=False, **kw):
    verified = VerifiedEvidence(ev, tuple(problems), missing=missing)
    return decide(
        "wdbc",
        "2",
        verified,
        tags if tags is not None else (tags_of(ev) if ev else {}),
        kw.pop("run_id", "r2"),
        reviewer,
        kw.pop("pinned", None),
        champion=kw.pop("champion", "1"),
        **kw,
    )


def test_allowed_when_evidence_tags_and_reviewer_agree():
    decision = run(evidence())
    assert (decision.allowed, decision.kind, decision.reasons, decision.gate) == (True, OK, (), "passed")
    assert decision.metrics["auc"] == 0.93


def test_no_evidence_is_not_gated():
    decision = run(None, {}, missing=True)
    assert (decision.allowed, decision.kind) == (False, NOT_GATED)
    assert "never gated by dxpipe" in decision.reasons[0]


def test_unverifiable_evidence_is_tampering():
    decision = run(None, {}, problems=["the evidence of version 2 was altered"])
    assert (decision.kind, decision.tampering) == (
        TAMPERED,
        ("'wdbc' version 2: the evidence of version 2 was altered",),
    )


def test_integrity_problems_found_with_readable_evidence_are_tampering():
    decision = run(evidence(), problems=["the Evaluator output of version 2 changed after registration"])
    assert decision.kind == TAMPERED and not decision.allowed


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"gate": "failed"}, "tag 'gate' says 'failed' but the evidence recorded 'passed'"),
        ({"metric.auc": "0.99"}, "tag 'metric.auc' says '0.99'"),
        ({"metric.recall": "0.99"}, "tag 'metric.recall' = '0.99' was added after registration"),
        ({"gate.fail.minimum:auc": "x"}, "tag 'gate.fail.minimum:auc' = 'x' was added"),
        ({"dxpipe.author": "zed"}, "tag 'dxpipe.author' says 'zed'"),
        ({"model.digest": "d9"}, "tag 'model.digest' says 'd9'"),
    ],
    ids=["gate", "metric-edited", "metric-added", "failure-added", "author", "digest"],
)
def test_every_display_tag_is_compared(changes, expected):
    ev = evidence()
    decision = run(ev, tags_of(ev, **changes))
    assert decision.kind == TAMPERED
    assert any(expected in r for r in decision.tampering), decision.tampering


def test_a_deleted_display_tag_is_tampering():
    ev = evidence()
    tags = tags_of(ev)
    del tags["metric.auc"]
    assert any(
        "tag 'metric.auc' (recorded as '0.93' at registration) was deleted" in p
        for p in tag_discrepancies(ev, tags, "r2")
    )


def test_a_version_linked_to_another_run_is_tampering():
    decision = run(evidence(), run_id="r9")
    assert decision.kind == TAMPERED and "registered by run r2" in decision.reasons[0]


def test_failed_evidence_fails_with_every_reason():
    ev = evidence(BAD, blessed=False)
    decision = run(ev)
    assert (decision.kind, decision.gate) == (GATE_FAILED, "failed")
    [reason] = decision.reasons
    for text in (
        "did not bless",
        "auc = 0.5000",
        "recall = 0.3000 on slice sex:female",
        "mean_squared_error",
    ):
        assert text in reason


def test_tampering_outranks_a_failed_gate_and_both_are_listed():
    ev = evidence(BAD, blessed=False)
    decision = run(ev, tags_of(ev, gate="failed"))
    assert decision.kind == TAMPERED and len(decision.reasons) == 2


@pytest.mark.parametrize(
    "reviewer", ["alice", "Alice", " ALICE ", "alice\u200b", "\uff41\uff4c\uff49\uff43\uff45", "\u202ealice"]
)
def test_four_eyes_compares_normalised_names(reviewer):
    decision = run(evidence(), reviewer=Identity(reviewer, True, "test"))
    assert (decision.allowed, decision.kind) == (False, FOUR_EYES)
    assert "is the author of its run" in decision.reasons[0]


def test_four_eyes_with_an_unknown_author():
    decision = run(evidence(author="\u200b"))
    assert decision.kind == FOUR_EYES and "author of its run is unknown" in decision.reasons[0]


def test_four_eyes_off_when_pinned_off():
    pinned = PinnedPolicy(POLICY.to_dict(), False, POLICY.digest())
    assert run(evidence(), reviewer=Identity("alice", True, "t"), pinned=pinned).allowed


def test_four_eyes_from_the_pinned_policy_not_the_versions_own():
    pinned = PinnedPolicy(POLICY.to_dict(), True, POLICY.digest())
    decision = run(evidence(four_eyes=False), reviewer=Identity("alice", True, "t"), pinned=pinned)
    assert decision.kind == FOUR_EYES


def test_rollback_does_not_apply_four_eyes():
    assert run(evidence(), reviewer=Identity("alice", True, "t"), action="rollback").allowed


def test_the_pinned_policy_governs_not_the_one_registered_with():
    strict = POLICY.from_dict({"minimums": {"auc": 0.99}})
    pinned = PinnedPolicy(strict.to_dict(), True, strict.digest())
    decision = run(evidence(), pinned=pinned)
    assert (
        decision.kind == GATE_FAILED
        and "auc = 0.9300 on slice Overall is below the minimum 0.9900" in decision.reasons[0]
    )


def test_a_newcomer_is_compared_with_the_champion_it_replaces():
    # Registered against champion 1 (0.93); the champion is now 3 with AUC 0.99 on the same test split.
    champion3 = evidence({"Overall": {**GOOD["Overall"], "auc": 0.99}}, version="3")
    decision = run(evidence(BETTER), champion="3", champion_evidence=champion3)
    assert decision.kind == GATE_FAILED and "vs champion version 3 0.9900" in decision.reasons[0]


def test_a_newcomer_passes_against_a_new_champion_it_beats():
    champion3 = evidence(GOOD, version="3")
    assert run(evidence(BETTER), champion="3", champion_evidence=champion3).allowed


def test_a_newcomer_scored_on_another_test_split_than_the_new_champion_cannot_be_compared():
    champion3 = evidence(GOOD, version="3", test_digest="240:other")
    decision = run(evidence(BETTER), champion="3", champion_evidence=champion3)
    assert decision.kind == GATE_FAILED and "was not re-scored on this test split" in decision.reasons[0]
    assert any("the champion is now version 3" in n for n in decision.verdict.notes)


def test_with_no_champion_left_non_inferiority_is_not_assessed():
    decision = run(evidence(), champion=None)
    assert decision.allowed and any("non-inferiority was not assessed" in n for n in decision.verdict.notes)


def test_rollback_keeps_the_verdict_it_was_registered_with():
    verdict = rederive_verdict(
        evidence(),
        PinnedPolicy.of(evidence()),
        champion="5",
        champion_evidence=None,
        compare_with_current=False,
    )
    assert verdict.passed
