"""The shared server's approval rules, branch by branch, on plain values (no server, no MLflow)."""

from __future__ import annotations

import pytest

from pipelines.registry_server import rules
from pipelines.registry_server.rules import Actor, TagKind

ANON = Actor(None)
ALICE = Actor("alice")  # data scientist
RITA = Actor("rita", is_reviewer=True)
RICK = Actor("rick", is_reviewer=True)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Alice", "alice"),
        ("a\u200blice", "alice"),  # zero-width space
        ("\u202ealice", "alice"),  # bidi override
        (" alice\t", "alice"),
        ("\uff41lice", "alice"),  # fullwidth a (NFKC)
        ("ALİCE", "ali̇ce"),  # casefold keeps the dot: a different name, not silently merged
    ],
)
def test_names_are_compared_after_nfkc_casefold_and_without_invisible_characters(raw, expected):
    assert rules.normalize(raw) == expected


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("dxpipe.author", TagKind.AUTHOR),
        ("DXPIPE.author\u200b", TagKind.AUTHOR),
        ("dxpipe.author.authenticated", TagKind.AUTHOR),
        ("dxpipe.authorship", TagKind.FREE),
        ("approval.reviewer", TagKind.APPROVAL),
        ("approval.status", TagKind.APPROVAL),
        ("Approval.Note", TagKind.APPROVAL),
        ("approval", TagKind.APPROVAL),
        ("gate", TagKind.EVIDENCE),
        ("Gate", TagKind.EVIDENCE),
        ("gate.fail.auc", TagKind.EVIDENCE),
        ("gate.verdict", TagKind.EVIDENCE),
        ("metric.auc", TagKind.EVIDENCE),
        ("model.digest", TagKind.EVIDENCE),
        ("data.test_digest", TagKind.EVIDENCE),
        ("tfx.run_id", TagKind.EVIDENCE),
        ("mlmd.execution_ids", TagKind.EVIDENCE),
        ("policy.four_eyes", TagKind.EVIDENCE),
        ("serving.staging_version", TagKind.EVIDENCE),
        ("note", TagKind.FREE),
        ("gateway", TagKind.FREE),
        ("metrics_dashboard", TagKind.FREE),
    ],
)
def test_version_tag_kinds(key, kind):
    assert rules.version_tag_kind(key) is kind


def test_champion_by_a_reviewer_who_is_not_an_author_is_allowed():
    decision = rules.set_alias(RITA, "champion", "setting champion", ["alice", "bob"])
    assert decision.allowed and decision.guarded
    assert "reviewer 'rita'" in decision.reason and "alice" in decision.reason


@pytest.mark.parametrize(
    ("actor", "authors", "status", "match"),
    [
        (ANON, ["alice"], 401, "needs an authenticated MLflow user"),
        (ALICE, ["bob"], 403, "'alice' is not a reviewer"),
        (RICK, ["rick"], 403, "reviewer 'rick' is an author of this version"),
        (
            RICK,
            ["alice", "Rick\u200b"],
            403,
            "is an author",
        ),  # run by alice, registered by a look-alike of rick
        (RITA, None, 403, "no record of who created this version"),
        (RITA, [], 403, "no record of who created this version"),
    ],
)
def test_champion_refusals(actor, authors, status, match):
    decision = rules.set_alias(actor, "champion", "setting champion", authors)
    assert not decision.allowed and decision.status == status
    assert match in decision.reason


@pytest.mark.parametrize("alias", ["Champion", "champion\u200b", "CHAMPION", "\uff43hampion"])
def test_a_look_alike_of_champion_is_refused_even_for_a_reviewer(alias):
    decision = rules.set_alias(RITA, alias, "setting alias", ["alice"])
    assert not decision.allowed and "imitates 'champion'" in decision.reason


def test_other_aliases_are_not_guarded():
    decision = rules.set_alias(ANON, "candidate", "setting candidate", None)
    assert decision.allowed and not decision.guarded


@pytest.mark.parametrize(
    ("actor", "allowed", "status"), [(ANON, False, 401), (ALICE, False, 403), (RITA, True, 200)]
)
def test_removing_champion_is_a_reviewers_act(actor, allowed, status):
    decision = rules.delete_alias(actor, "champion", "removing champion")
    assert (decision.allowed, decision.status) == (allowed, status)
    assert rules.delete_alias(ALICE, "candidate", "removing candidate").allowed


@pytest.mark.parametrize("actor", [ALICE, RITA, RICK])
@pytest.mark.parametrize("key", ["gate", "gate.fail.auc", "metric.auc", "model.digest"])
def test_evidence_tags_are_immutable_for_everyone_after_creation(actor, key):
    decision = rules.version_tag_change(actor, key, "changing evidence", ["alice"])
    assert not decision.allowed and "gate evidence, written once" in decision.reason


@pytest.mark.parametrize("actor", [ALICE, RITA])
def test_nobody_sets_the_author_tag(actor):
    decision = rules.version_tag_change(actor, "dxpipe.author", "setting author", ["alice"])
    assert not decision.allowed and "written by the server" in decision.reason


def test_approval_tags_follow_the_four_eyes_rule():
    assert rules.version_tag_change(RITA, "approval.reviewer", "approving", ["alice"]).allowed
    assert not rules.version_tag_change(ALICE, "approval.reviewer", "approving", ["bob"]).allowed
    assert not rules.version_tag_change(RICK, "approval.status", "approving", ["rick"]).allowed
    assert rules.version_tag_change(ANON, "approval.status", "approving", ["bob"]).status == 401


def test_free_tags_are_not_guarded_even_without_credentials():
    decision = rules.version_tag_change(ANON, "note", "setting note", None)
    assert decision.allowed and not decision.guarded


def test_creation_accepts_evidence_and_refuses_approvals():
    assert rules.creation_tags(ALICE, ["gate", "metric.auc", "dxpipe.author"], "registering").allowed
    refused = rules.creation_tags(RITA, ["gate", "approval.status"], "registering")
    assert not refused.allowed and "approval.status" in refused.reason


@pytest.mark.parametrize("key", ["dxpipe.author", "mlflow.user", "MLflow.User", "dxpipe.author.source"])
def test_run_identity_tags_are_the_servers(key):
    decision = rules.run_tag_change(RITA, ["note", key], "setting run tags")
    assert not decision.allowed and key in decision.reason
    assert rules.run_tag_change(ALICE, ["note"], "setting run tags").allowed


@pytest.mark.parametrize(
    "key", ["dxpipe.policy", "gate.policy", "policy.digest", "four_eyes", "approval.rule"]
)
def test_registered_model_policy_tags_are_reviewer_only(key):
    assert not rules.model_tag_change(ALICE, key, "pinning").allowed
    assert rules.model_tag_change(RITA, key, "pinning").allowed
    assert rules.model_tag_change(ALICE, "description_extra", "tagging").allowed


def test_reviewer_only_names_the_role_and_the_fix():
    decision = rules.reviewer_only(ALICE, "deleting 'wdbc'")
    assert not decision.allowed and "/api/2.0/dxpipe/reviewers/grant" in decision.reason


def test_putting_champion_back_on_an_approved_version_is_any_reviewers_act():
    restored = rules.set_alias(RICK, "champion", "rolling back", ["rick"], approved_by="rita")
    assert restored.allowed and restored.restores and "approved earlier" in restored.reason
    # Not for a data scientist, nor anonymously, nor through a look-alike.
    assert not rules.set_alias(ALICE, "champion", "rolling back", ["bob"], approved_by="rita").allowed
    assert rules.set_alias(ANON, "champion", "rolling back", ["bob"], approved_by="rita").status == 401
    assert not rules.set_alias(RICK, "Champion", "rolling back", ["rick"], approved_by="rita").allowed
    # A first approval is still four-eyes, and not marked as a restoration.
    first = rules.set_alias(RITA, "champion", "approving", ["alice"], approved_by=None)
    assert first.allowed and not first.restores
