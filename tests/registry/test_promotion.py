"""Approval, promotion to production, rollback, UI-set aliases, concurrency and drift between registry and disk."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from components.serving_pusher.core import list_versions, publish_version, read_digest, saved_model_digest
from pipelines import registry
from pipelines.mlflow_store import TrackingConfig
from pipelines.promotion import (
    AlreadyChampionError,
    ConcurrentPromotionError,
    FourEyesError,
    GateFailedError,
    ModelUnavailableError,
    NotGatedError,
    PromotionError,
    RollbackError,
    VersionNotFoundError,
    approve,
    journal,
    publish,
    rollback,
    status,
    sync_ui_alias,
)
from tests.registry.support import BAD, BETTER, GOOD, register, who


def client(cfg: TrackingConfig) -> MlflowClient:
    resolved = cfg.resolved()
    return MlflowClient(tracking_uri=resolved.tracking_uri, registry_uri=resolved.registry_uri)


def production(cfg: TrackingConfig) -> Path:
    return cfg.resolved().production_path("wdbc")


def served_digest(cfg: TrackingConfig) -> str | None:
    versions = list_versions(production(cfg))
    return read_digest(production(cfg) / str(versions[-1])) if versions else None


def digest_of(fixtures: dict, model: str) -> str:
    return saved_model_digest(Path(fixtures[f"model_{model}"]) / "Format-Serving")


def log_lines(cfg: TrackingConfig) -> list[dict]:
    path = production(cfg) / "promotion_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def champion(cfg: TrackingConfig) -> str | None:
    return registry.aliases_of(client(cfg), "wdbc").get("champion")


def tags(cfg: TrackingConfig, version: str) -> dict:
    return client(cfg).get_model_version("wdbc", version).tags


@pytest.fixture
def served_v1(cfg, fixtures):
    """Version 1 ("good", by alice) approved by bob and served."""
    register(cfg, fixtures, "good", GOOD, author="alice")
    approve(cfg, "wdbc", "1", who("bob"), "first champion")
    return cfg


# ---- approve ----------------------------------------------------------------------------------------


def test_approve_publishes_the_champion_atomically_and_records_it(cfg, fixtures):
    register(cfg, fixtures, "good", GOOD, author="alice")
    record = approve(cfg, "wdbc", "1", who("bob"), "AUC 0.93, reviewed the slices")
    assert (record.event, record.version, record.reviewer, record.author) == ("approve", "1", "bob", "alice")
    assert (record.production_version, record.previous_champion, record.seq) == (1, None, 2)
    assert record.metrics["auc"] == 0.93 and record.gate == "passed" and record.warning is None
    assert list_versions(production(cfg)) == [1]
    assert served_digest(cfg) == digest_of(fixtures, "good") == saved_model_digest(production(cfg) / "1")
    assert not list(production(cfg).glob(".incoming-*"))
    assert champion(cfg) == "1"
    t = tags(cfg, "1")
    assert (t["approval.status"], t["approval.by"], t["approval.seq"]) == ("approved", "bob", "2")
    assert json.loads(t["promotion.00002"])["note"] == "AUC 0.93, reviewed the slices"
    registered, line = log_lines(cfg)
    assert (registered["event"], registered["reviewer"], registered["gate"]) == (
        "register",
        "alice",
        "passed",
    )
    assert line["event"] == "approve" and line["reviewer"] == "bob" and line["metrics"]["recall"] == 0.85
    assert (line["author"], line["four_eyes"], line["reviewer_authenticated"]) == ("alice", True, False)
    assert line["prev"] == registered["hash"]
    assert status(cfg, "wdbc").consistent


def test_next_approval_supersedes_and_is_served_as_a_higher_version(served_v1, fixtures):
    cfg = served_v1
    register(cfg, fixtures, "better", BETTER, author="alice")
    record = approve(cfg, "wdbc", "2", who("carol"), "better recall")
    assert (record.previous_champion, record.production_version) == ("1", 2)
    assert list_versions(production(cfg)) == [1, 2]
    assert served_digest(cfg) == digest_of(fixtures, "better")
    assert tags(cfg, "1")["approval.status"] == "superseded by version 2"


def test_approve_nonexistent_version_is_refused_and_logged(served_v1):
    with pytest.raises(
        VersionNotFoundError, match=r"'wdbc' has no version 9 \(versions: 1\); see `dxpipe status wdbc`"
    ):
        approve(served_v1, "wdbc", "9", who("carol"), "typo")
    assert log_lines(served_v1)[-1]["event"] == "refuse"
    assert list_versions(production(served_v1)) == [1] and champion(served_v1) == "1"


def test_approve_unknown_model_names_the_registered_ones_and_creates_nothing(served_v1):
    with pytest.raises(
        VersionNotFoundError, match=r"no registered model 'heart' \(registered models: wdbc\)"
    ):
        approve(served_v1, "heart", "1", who("carol"), "")
    assert not served_v1.resolved().production_path("heart").exists()


def test_approve_a_version_number_that_is_not_a_number(served_v1):
    with pytest.raises(VersionNotFoundError, match=r"version 'latest' of 'wdbc' is not a version number"):
        approve(served_v1, "wdbc", "latest", who("carol"), "")


def test_approve_never_gated_version_is_refused(served_v1, fixtures):
    c = client(served_v1)
    c.create_model_version(
        "wdbc", fixtures["model_better"], tags={"model.digest": digest_of(fixtures, "better")}
    )
    with pytest.raises(
        NotGatedError,
        match=r"'wdbc' version 2 was never gated by dxpipe \(no evidence recorded at registration\)",
    ):
        approve(served_v1, "wdbc", "2", who("carol"), "")
    assert tags(served_v1, "2")["approval.status"] == "refused"
    assert champion(served_v1) == "1" and served_digest(served_v1) == digest_of(fixtures, "good")


def test_approve_failed_version_is_refused_and_the_champion_keeps_serving(served_v1, fixtures):
    register(served_v1, fixtures, "bad", BAD, author="alice", blessed=False)
    with pytest.raises(
        GateFailedError,
        match=r"'wdbc' version 2 fails the gate re-derived from its evidence and can never become the served "
        r"champion: .*auc = 0.5000 on slice Overall is below the minimum 0.8000.*\(refusal recorded as log entry 4\)",
    ):
        approve(served_v1, "wdbc", "2", who("carol"), "looks fine to me")
    assert champion(served_v1) == "1"
    assert list_versions(production(served_v1)) == [1]
    assert served_digest(served_v1) == digest_of(fixtures, "good")
    refusal = log_lines(served_v1)[-1]
    assert (refusal["event"], refusal["version"], refusal["reviewer"], refusal["gate"]) == (
        "refuse",
        "2",
        "carol",
        "failed",
    )
    assert refusal["metrics"]["auc"] == 0.5
    assert tags(served_v1, "2")["approval.refused_by"] == "carol"


def test_four_eyes_rule_refuses_the_author_case_insensitively(cfg, fixtures):
    register(cfg, fixtures, "good", GOOD, author="alice")
    with pytest.raises(
        FourEyesError, match=r"reviewer ' Alice ' is the author of its run; a second person must approve"
    ):
        approve(cfg, "wdbc", "1", who(" Alice "), "self-approval")
    assert champion(cfg) is None and list_versions(production(cfg)) == []
    assert log_lines(cfg)[-1]["event"] == "refuse"


def test_four_eyes_off_is_pinned_at_registration_and_logged(cfg, fixtures):
    solo = dataclasses.replace(cfg, four_eyes=False)
    register(solo, fixtures, "good", GOOD, author="alice")
    record = approve(cfg, "wdbc", "1", who("alice"), "solo lab")
    assert record.event == "approve" and log_lines(cfg)[-1]["four_eyes"] is False


def test_an_approver_cannot_loosen_the_pinned_four_eyes_rule(cfg, fixtures):
    register(cfg, fixtures, "good", GOOD, author="alice")
    with pytest.raises(FourEyesError, match=r"pinned at registration"):
        approve(dataclasses.replace(cfg, four_eyes=False), "wdbc", "1", who("alice"), "my own config")
    assert list_versions(production(cfg)) == []


def test_a_later_config_cannot_loosen_the_pinned_policy(served_v1, fixtures):
    from tests.registry.support import POLICY

    loose = POLICY.from_dict({"minimums": {"auc": 0.1}, "require_evaluator_blessing": False})
    version = register(
        dataclasses.replace(served_v1, four_eyes=False), fixtures, "bad", BAD, policy=loose, blessed=False
    )
    assert not version.passed
    assert any("the pinned one applies" in note for note in version.verdict.notes)
    with pytest.raises(GateFailedError):
        approve(served_v1, "wdbc", "2", who("alice"), "")


@pytest.mark.parametrize("name", ["", "  ", "\u200b"])
def test_a_reviewer_identity_with_no_name_is_refused(served_v1, name):
    with pytest.raises(PromotionError, match=r"no reviewer identity"):
        approve(served_v1, "wdbc", "1", who(name), "")


def test_a_free_text_reviewer_is_refused(served_v1):
    with pytest.raises(PromotionError, match=r"free-text reviewer names are not accepted"):
        approve(served_v1, "wdbc", "1", "carol", "")


def test_approving_the_served_champion_again_changes_nothing(served_v1):
    with pytest.raises(
        AlreadyChampionError, match=r"'wdbc' version 1 is already the champion and is being served"
    ):
        approve(served_v1, "wdbc", "1", who("carol"), "")
    assert list_versions(production(served_v1)) == [1] and len(log_lines(served_v1)) == 2


def race(cfg: TrackingConfig, monkeypatch, calls: dict[str, object]) -> dict[str, object]:
    """Runs the calls in threads that all read the state and then queue on the held promotion lock.

    Deterministic: the test holds the lock until every call is waiting for it, like two reviewers who
    press the button in the same second.
    """
    waiting = threading.Semaphore(0)
    original = journal._acquire

    def announce_then_wait(fd, path, timeout_s):
        waiting.release()
        original(fd, path, timeout_s)

    monkeypatch.setattr(journal, "_acquire", announce_then_wait)
    lock_fd = os.open(production(cfg) / ".promotion.lock", os.O_RDWR)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    results: dict[str, object] = {}

    def attempt(name, call):
        try:
            results[name] = call()
        except PromotionError as exc:
            results[name] = exc

    threads = [threading.Thread(target=attempt, args=item) for item in calls.items()]
    for t in threads:
        t.start()
    for _ in threads:
        assert waiting.acquire(timeout=30)
    fcntl.flock(lock_fd, fcntl.LOCK_UN)
    os.close(lock_fd)
    for t in threads:
        t.join(timeout=60)
    return results


def test_concurrent_approvals_serialize_and_the_second_sees_the_first(served_v1, fixtures, monkeypatch):
    cfg = served_v1
    register(cfg, fixtures, "better", BETTER, author="alice")
    register(cfg, fixtures, "other", GOOD, author="alice")
    results = race(
        cfg,
        monkeypatch,
        {
            "2": lambda: approve(cfg, "wdbc", "2", who("carol"), "mine"),
            "3": lambda: approve(cfg, "wdbc", "3", who("dave"), "mine"),
        },
    )
    winners = [v for v, r in results.items() if not isinstance(r, Exception)]
    losers = [v for v, r in results.items() if isinstance(r, ConcurrentPromotionError)]
    assert len(winners) == 1 and len(losers) == 1, results
    winner, loser = winners[0], losers[0]
    assert f"while this approval of 'wdbc' version {loser} waited" in str(results[loser])
    assert f"made version {winner} champion" in str(results[loser])
    assert champion(cfg) == winner
    assert served_digest(cfg) == tags(cfg, winner)["model.digest"]
    assert list_versions(production(cfg)) == [1, 2]
    assert [(r["event"], r["version"]) for r in log_lines(cfg)[4:]] == [
        ("approve", winner),
        ("refuse", loser),
    ]
    assert status(cfg, "wdbc").consistent


def test_concurrent_rollbacks_roll_back_only_once(served_v1, fixtures, monkeypatch):
    cfg = served_v1
    register(cfg, fixtures, "better", BETTER, author="alice")
    approve(cfg, "wdbc", "2", who("carol"), "")
    register(cfg, fixtures, "other", GOOD, author="alice")
    approve(cfg, "wdbc", "3", who("carol"), "")
    results = race(
        cfg,
        monkeypatch,
        {
            "dave": lambda: rollback(cfg, "wdbc", who("dave"), "incident"),
            "erin": lambda: rollback(cfg, "wdbc", who("erin"), "incident"),
        },
    )
    done = [r for r in results.values() if not isinstance(r, Exception)]
    refused = [r for r in results.values() if isinstance(r, ConcurrentPromotionError)]
    assert len(done) == 1 and len(refused) == 1, results
    assert done[0].version == "2" and champion(cfg) == "2"
    assert "while this rollback of 'wdbc' waited" in str(refused[0]) and "made version 2 champion" in str(
        refused[0]
    )
    assert served_digest(cfg) == digest_of(fixtures, "better")


# ---- champion alias set in the MLflow UI -------------------------------------------------------------


def test_ui_alias_on_a_failed_version_is_refused_and_put_back(served_v1, fixtures):
    cfg = served_v1
    register(cfg, fixtures, "bad", BAD, author="alice", blessed=False)
    c = client(cfg)
    c.set_model_version_tag("wdbc", "2", "approval.reviewer", "carol")
    c.set_registered_model_alias("wdbc", "champion", "2")  # what the UI does
    assert any("changed outside dxpipe" in p for p in status(cfg, "wdbc").problems)

    result = sync_ui_alias(cfg, "wdbc", who("ops"))
    assert result.action == "refused"
    assert (
        "the champion alias set outside dxpipe (MLflow UI or REST API) on version 2 was refused"
        in result.message
    )
    assert "fails the gate re-derived from its evidence" in result.message
    assert "version 1 keeps serving" in result.message
    assert champion(cfg) == "1"
    assert list_versions(production(cfg)) == [1] and served_digest(cfg) == digest_of(fixtures, "good")
    refusal = log_lines(cfg)[-1]
    assert (refusal["event"], refusal["source"], refusal["version"], refusal["gate"]) == (
        "refuse",
        "ui",
        "2",
        "failed",
    )
    assert tags(cfg, "2")["approval.status"] == "refused"
    assert status(cfg, "wdbc").consistent


@pytest.mark.parametrize("reviewer_tag", [None, "carol", "alice"])
def test_ui_alias_on_a_passing_version_is_refused_whatever_its_reviewer_tag(
    served_v1, fixtures, reviewer_tag
):
    """Nobody accountable set it: a tag naming a reviewer is free text anyone can type."""
    cfg = served_v1
    register(cfg, fixtures, "better", BETTER, author="alice")
    c = client(cfg)
    if reviewer_tag:
        c.set_model_version_tag("wdbc", "2", "approval.reviewer", reviewer_tag)
    c.set_registered_model_alias("wdbc", "champion", "2")
    result = sync_ui_alias(cfg, "wdbc", who("ops"))
    assert result.action == "refused"
    assert "nobody accountable approved it (approve with `dxpipe approve wdbc 2`)" in result.message
    assert champion(cfg) == "1" and served_digest(cfg) == digest_of(fixtures, "good")
    assert list_versions(production(cfg)) == [1]
    assert status(cfg, "wdbc").consistent


def test_ui_alias_refused_with_no_previous_champion_removes_the_alias(cfg, fixtures):
    register(cfg, fixtures, "bad", BAD, author="alice", blessed=False)
    client(cfg).set_registered_model_alias("wdbc", "champion", "1")
    result = sync_ui_alias(cfg, "wdbc")
    assert result.action == "refused" and "no champion is served" in result.message
    assert champion(cfg) is None and list_versions(production(cfg)) == []


def test_approve_replaces_an_unpromoted_ui_alias_and_says_so(served_v1, fixtures):
    cfg = served_v1
    register(cfg, fixtures, "bad", BAD, author="alice", blessed=False)
    register(cfg, fixtures, "better", BETTER, author="alice")
    client(cfg).set_registered_model_alias("wdbc", "champion", "2")
    record = approve(cfg, "wdbc", "3", who("carol"), "")
    assert record.previous_champion == "1"
    assert "the champion alias pointed at version 2, which was never promoted" in record.reason
    assert champion(cfg) == "3"


# ---- rollback ---------------------------------------------------------------------------------------


def test_rollback_serves_the_previous_champion_as_a_new_higher_version(served_v1, fixtures):
    cfg = served_v1
    register(cfg, fixtures, "better", BETTER, author="alice")
    approve(cfg, "wdbc", "2", who("carol"), "")
    record = rollback(cfg, "wdbc", who("dave"), "v2 misbehaves on site B")
    assert (record.event, record.version, record.previous_champion, record.production_version) == (
        "rollback",
        "1",
        "2",
        3,
    )
    assert list_versions(production(cfg)) == [1, 2, 3]
    assert served_digest(cfg) == digest_of(fixtures, "good")
    assert champion(cfg) == "1"
    assert tags(cfg, "1")["approval.status"] == "restored by rollback"
    assert tags(cfg, "2")["approval.status"] == "rolled back by version 1"
    assert status(cfg, "wdbc").consistent
    with pytest.raises(
        RollbackError, match=r"has had only one champion \(version 1\); there is no previous champion"
    ):
        rollback(cfg, "wdbc", who("dave"), "again")


def test_rollback_walks_back_through_the_champion_history(cfg, fixtures):
    # All scored on one test split, so a version can be compared with whichever champion it replaces.
    split = {"examples_uri": fixtures["examples_uri"]}
    register(cfg, fixtures, "good", GOOD, author="alice", **split)
    approve(cfg, "wdbc", "1", who("bob"), "")
    register(cfg, fixtures, "better", BETTER, author="alice", **split)
    approve(cfg, "wdbc", "2", who("carol"), "")
    register(cfg, fixtures, "other", GOOD, author="alice", **split)
    approve(cfg, "wdbc", "3", who("carol"), "")
    assert rollback(cfg, "wdbc", who("dave"), "").version == "2"
    assert rollback(cfg, "wdbc", who("dave"), "").version == "1"
    assert served_digest(cfg) == digest_of(fixtures, "good")
    # Approving again after rollbacks starts a new history from the served champion, and version 3 (gated
    # against version 2) is compared with version 1, the champion it now replaces.
    assert approve(cfg, "wdbc", "3", who("carol"), "fixed").previous_champion == "1"
    assert rollback(cfg, "wdbc", who("dave"), "").version == "1"


def test_a_version_gated_against_an_older_champion_on_another_split_must_be_rescored(served_v1, fixtures):
    cfg = served_v1
    register(cfg, fixtures, "better", BETTER, author="alice")
    register(cfg, fixtures, "other", GOOD, author="alice")
    approve(cfg, "wdbc", "2", who("carol"), "")
    with pytest.raises(GateFailedError, match=r"champion version 2 was not re-scored on this test split"):
        approve(cfg, "wdbc", "3", who("carol"), "gated against version 1 only")
    assert served_digest(cfg) == digest_of(fixtures, "better")


def test_rollback_without_any_champion(cfg, fixtures):
    register(cfg, fixtures, "good", GOOD)
    with pytest.raises(
        RollbackError, match=r"'wdbc' has never had a champion promoted; there is nothing to roll back"
    ):
        rollback(cfg, "wdbc", who("dave"), "")


# ---- registry and serving directory disagreeing --------------------------------------------------


def test_deleted_production_version_is_reported_and_repaired(served_v1, fixtures):
    cfg = served_v1
    shutil.rmtree(production(cfg) / "1")
    report = status(cfg, "wdbc")
    assert not report.consistent
    assert any("production serves nothing, not the champion version 1" in p for p in report.problems)
    result = sync_ui_alias(cfg, "wdbc")
    assert result.action == "repaired"
    assert (
        "production served nothing instead of champion version 1; champion version 1 re-published"
        in result.message
    )
    # The number is never reused: a client pinned to version 1 must not silently get another model.
    assert list_versions(production(cfg)) == [2]
    assert served_digest(cfg) == digest_of(fixtures, "good")
    assert status(cfg, "wdbc").consistent


def test_altered_production_is_reported(served_v1, fixtures):
    cfg = served_v1
    publish_version(
        Path(fixtures["model_bad"]) / "Format-Serving", production(cfg)
    )  # someone copied a model in
    report = status(cfg, "wdbc")
    assert any("not the champion version 1" in p and "registry version unknown" in p for p in report.problems)
    assert sync_ui_alias(cfg, "wdbc").action == "repaired"
    assert served_digest(cfg) == digest_of(fixtures, "good")


def test_approve_after_staging_was_deleted_downloads_the_model_from_mlflow(cfg, fixtures):
    register(cfg, fixtures, "good", GOOD, author="alice")
    shutil.rmtree(cfg.resolved().staging_path("wdbc"))
    approve(cfg, "wdbc", "1", who("bob"), "")
    assert served_digest(cfg) == digest_of(fixtures, "good")


def test_tampered_model_artifact_is_never_served(served_v1, fixtures):
    cfg = served_v1
    register(cfg, fixtures, "better", BETTER, author="alice", push=False)
    source = Path(client(cfg).get_model_version_download_uri("wdbc", "2").removeprefix("file://"))
    # The bytes `mlflow.pyfunc.load_model` would load: the MLflow Model's SavedModel.
    with (source / "data" / "Format-Serving" / "saved_model.pb").open("ab") as handle:
        handle.write(b"tampered")
    shutil.rmtree(cfg.resolved().staging_path("wdbc"))
    with pytest.raises(
        ModelUnavailableError, match=r"does not match its registered digest .* refusing to serve it"
    ):
        approve(cfg, "wdbc", "2", who("carol"), "")
    assert champion(cfg) == "1" and list_versions(production(cfg)) == [1]


def test_missing_model_artifact_everywhere_is_a_clear_error(served_v1, fixtures):
    cfg = served_v1
    register(cfg, fixtures, "better", BETTER, author="alice", push=False)
    shutil.rmtree(Path(client(cfg).get_model_version_download_uri("wdbc", "2").removeprefix("file://")))
    with pytest.raises(
        ModelUnavailableError, match=r"is not in staging or production and could not be downloaded"
    ):
        approve(cfg, "wdbc", "2", who("carol"), "")
    assert champion(cfg) == "1"


# ---- faults in the middle of a promotion -------------------------------------------------------------


def test_publish_failure_puts_the_alias_back(served_v1, fixtures, monkeypatch):
    cfg = served_v1
    register(cfg, fixtures, "better", BETTER, author="alice")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(publish, "publish_version", disk_full)
    with pytest.raises(
        PromotionError,
        match=r"approve of 'wdbc' version 2 failed and was undone: publishing to .* failed .*No space left.*"
        r"production is unchanged and the champion alias was restored",
    ):
        approve(cfg, "wdbc", "2", who("carol"), "")
    assert champion(cfg) == "1" and list_versions(production(cfg)) == [1]
    assert log_lines(cfg)[-1]["event"] == "error"
    assert status(cfg, "wdbc").consistent


def test_registry_unreachable_at_the_alias_step_changes_nothing(served_v1, fixtures, monkeypatch):
    cfg = served_v1
    register(cfg, fixtures, "better", BETTER, author="alice")

    def gone(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", gone)
    with pytest.raises(
        PromotionError,
        match=r"approve of 'wdbc' version 2 failed and was undone: MLflow at .* is unreachable.*nothing changed",
    ):
        approve(cfg, "wdbc", "2", who("carol"), "")
    monkeypatch.undo()
    assert champion(cfg) == "1" and list_versions(production(cfg)) == [1]
    assert log_lines(cfg)[-1]["event"] == "error"
    assert status(cfg, "wdbc").consistent


def test_tags_lost_after_the_commit_are_a_warning_and_sync_reapplies_them(served_v1, fixtures, monkeypatch):
    cfg = served_v1
    register(cfg, fixtures, "better", BETTER, author="alice")

    def gone(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(MlflowClient, "set_model_version_tag", gone)
    record = approve(cfg, "wdbc", "2", who("carol"), "")
    monkeypatch.undo()
    assert record.event == "approve" and "`dxpipe sync wdbc` re-applies them" in record.warning
    assert champion(cfg) == "2" and served_digest(cfg) == digest_of(fixtures, "better")
    assert "approval.seq" not in tags(cfg, "2")
    result = sync_ui_alias(cfg, "wdbc")
    assert result.action == "repaired" and "approval tags of version 2 re-applied" in result.message
    assert tags(cfg, "2")["approval.seq"] == str(record.seq)


def test_torn_log_line_without_an_interrupted_promotion_is_an_error(served_v1, fixtures):
    cfg = served_v1
    register(cfg, fixtures, "better", BETTER, author="alice")
    with (production(cfg) / "promotion_log.jsonl").open("a") as handle:
        handle.write('{"seq": 4, "event": "appr')  # cut, and no journal explains it
    assert any("ends in a partial line" in p or "unreadable" in p for p in status(cfg, "wdbc").problems)
    with pytest.raises(PromotionError, match=r"unreadable|partial line"):
        approve(cfg, "wdbc", "2", who("carol"), "")
    assert champion(cfg) == "1" and list_versions(production(cfg)) == [1]


def test_interrupted_publish_leftover_is_removed_by_the_next_command(served_v1):
    cfg = served_v1
    (production(cfg) / ".incoming-7-1234").mkdir()
    assert status(cfg, "wdbc").consistent
    assert not (production(cfg) / ".incoming-7-1234").exists()


# ---- status ----------------------------------------------------------------------------------------


def test_status_shows_champion_candidate_verdicts_serving_and_the_log(served_v1, fixtures):
    cfg = served_v1
    register(cfg, fixtures, "bad", BAD, author="alice", blessed=False)
    register(cfg, fixtures, "better", BETTER, author="alice")
    report = status(cfg, "wdbc")
    assert (report.champion, report.candidate, report.promoted_champion) == ("1", "3", "1")
    assert (report.production.version, report.production.registry_version) == (1, "1")
    assert report.staging.registry_version == "3"
    gates = {v.version: v.gate for v in report.versions}
    assert gates == {"1": "passed", "2": "failed", "3": "passed"}
    assert report.consistent
    text = report.render()
    assert "champion:  1   candidate: 3" in text
    assert "serves v1 = registry version 1" in text
    assert "gate failed" in text and "auc = 0.5000 on slice Overall is below the minimum 0.8000" in text
    assert "approve v1 by bob" in text


def test_status_of_an_unknown_model(cfg, fixtures):
    register(cfg, fixtures, "good", GOOD)
    with pytest.raises(VersionNotFoundError, match=r"no registered model 'pima' \(registered models: wdbc\)"):
        status(cfg, "pima")
