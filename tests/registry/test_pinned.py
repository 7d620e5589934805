"""Changing a model's pinned gate policy or four-eyes rule: proposed by one person, accepted by another."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from components.serving_pusher.core import list_versions
from pipelines.promotion import (
    FourEyesError,
    GateFailedError,
    PromotionError,
    TamperingError,
    approve,
    status,
)
from pipelines.promotion.policy import PinnedPolicy
from pipelines.promotion.service import accept_policy, propose_policy
from tests.registry.support import BETTER, GOOD, POLICY, register, who

STRICT = POLICY.from_dict({"minimums": {"auc": 0.99}})


def pinned(policy=STRICT, four_eyes=True) -> PinnedPolicy:
    return PinnedPolicy(policy.to_dict(), four_eyes, policy.digest())


def production(cfg) -> Path:
    return cfg.resolved().production_path("wdbc")


def log_events(cfg) -> list[tuple[str, str | None]]:
    lines = (production(cfg) / "promotion_log.jsonl").read_text().splitlines()
    return [(json.loads(line)["event"], json.loads(line)["reviewer"]) for line in lines]


def test_a_stricter_policy_applies_only_once_a_second_person_accepts_it(cfg, fixtures):
    register(cfg, fixtures, "good", GOOD, author="alice")
    propose_policy(cfg, "wdbc", pinned(), who("alice"), "raise the AUC floor")
    with pytest.raises(
        FourEyesError, match=r"'alice' proposed this policy change .* a second person must accept"
    ):
        accept_policy(cfg, "wdbc", who("ALICE"), "")
    record = accept_policy(cfg, "wdbc", who("bob"), "agreed")
    assert (record.event, record.policy_digest, record.four_eyes) == ("policy", STRICT.digest(), True)
    with pytest.raises(GateFailedError, match=r"auc = 0.9300 on slice Overall is below the minimum 0.9900"):
        approve(cfg, "wdbc", "1", who("carol"), "")
    assert list_versions(production(cfg)) == []
    # Later registrations are gated under it too.
    assert not register(cfg, fixtures, "better", BETTER, author="alice").passed
    assert log_events(cfg)[1:3] == [("policy-proposed", "alice"), ("policy", "bob")]
    assert status(cfg, "wdbc").consistent


def test_switching_four_eyes_off_is_itself_a_two_person_decision(cfg, fixtures):
    register(cfg, fixtures, "good", GOOD, author="alice")
    propose_policy(cfg, "wdbc", pinned(POLICY, four_eyes=False), who("alice"), "one-person clinic")
    with pytest.raises(FourEyesError):
        approve(cfg, "wdbc", "1", who("alice"), "not yet")
    accept_policy(cfg, "wdbc", who("bob"), "ok for the pilot")
    record = approve(cfg, "wdbc", "1", who("alice"), "solo")
    assert record.event == "approve" and record.four_eyes is False


def test_accepting_with_nothing_pending_is_an_error(cfg, fixtures):
    register(cfg, fixtures, "good", GOOD, author="alice")
    with pytest.raises(PromotionError, match=r"no policy change is pending for 'wdbc'"):
        accept_policy(cfg, "wdbc", who("bob"), "")


def test_an_altered_policy_file_blocks_approvals(cfg, fixtures):
    register(cfg, fixtures, "good", GOOD, author="alice")
    propose_policy(cfg, "wdbc", pinned(POLICY, four_eyes=False), who("alice"), "")
    accept_policy(cfg, "wdbc", who("bob"), "")
    [path] = (production(cfg) / ".evidence").glob("policy-*.json")
    os.chmod(path, 0o644)
    path.write_text(
        json.dumps({"policy": POLICY.from_dict({"minimums": {"auc": 0.1}}).to_dict(), "four_eyes": False})
    )
    with pytest.raises(TamperingError, match=r"was altered"):
        approve(cfg, "wdbc", "1", who("alice"), "")
    assert any("altered" in p for p in status(cfg, "wdbc").problems)
