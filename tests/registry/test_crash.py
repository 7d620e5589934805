"""Crash consistency: a promotion stopped at every step is completed or undone by the next dxpipe command.

The stop is deterministic: `journal.fault_hook` raises a BaseException right after the named step, which
skips every `except Exception` cleanup, as a kill -9 would (the kernel still releases the flock, as it
does for a killed process). One test kills a real child process with SIGKILL.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from components.serving_pusher.core import list_versions, saved_model_digest
from pipelines import registry
from pipelines.promotion import approve, journal, rollback, status, sync_ui_alias
from tests.registry.support import BETTER, GOOD, register, who

REPO = Path(__file__).resolve().parents[2]


class Crash(BaseException):
    """Stands for the process being killed."""


def crash_at(monkeypatch, step: str) -> None:
    def hook(name: str) -> None:
        if name == step:
            raise Crash(step)

    monkeypatch.setattr(journal, "fault_hook", hook)


def production(cfg) -> Path:
    return cfg.resolved().production_path("wdbc")


def served(cfg) -> str | None:
    versions = list_versions(production(cfg))
    return saved_model_digest(production(cfg) / str(versions[-1])) if versions else None


def digest_of(fixtures, model: str) -> str:
    return saved_model_digest(Path(fixtures[f"model_{model}"]) / "Format-Serving")


def log_lines(cfg) -> list[dict]:
    return [json.loads(line) for line in (production(cfg) / "promotion_log.jsonl").read_text().splitlines()]


def champion(cfg) -> str | None:
    client = registry.client_for(cfg.resolved())
    return registry.aliases_of(client, "wdbc").get("champion")


NEXT_COMMANDS = {
    "status": lambda cfg: status(cfg, "wdbc"),
    "sync": lambda cfg: sync_ui_alias(cfg, "wdbc", who("ops")),
}
COMPLETED_AFTER = {"published", "logged", "tagged"}


@pytest.fixture
def served_v1(cfg, fixtures):
    register(cfg, fixtures, "good", GOOD, author="alice")
    approve(cfg, "wdbc", "1", who("bob"), "first champion")
    return cfg


@pytest.mark.parametrize("next_command", sorted(NEXT_COMMANDS))
@pytest.mark.parametrize("step", journal.STEPS)
def test_approve_killed_at_each_step(served_v1, fixtures, monkeypatch, step, next_command):
    cfg = served_v1
    register(cfg, fixtures, "better", BETTER, author="alice")
    crash_at(monkeypatch, step)
    with pytest.raises(Crash):
        approve(cfg, "wdbc", "2", who("carol"), "better recall")
    monkeypatch.setattr(journal, "fault_hook", None)
    assert journal.journal_path(production(cfg)).exists()

    NEXT_COMMANDS[next_command](cfg)

    report = status(cfg, "wdbc")
    assert report.consistent, report.problems
    assert not journal.journal_path(production(cfg)).exists()
    events = [(r["event"], r["version"]) for r in log_lines(cfg)]
    if step in COMPLETED_AFTER:
        assert champion(cfg) == "2" and served(cfg) == digest_of(fixtures, "better")
        assert events.count(("approve", "2")) == 1
        approval = next(r for r in log_lines(cfg) if r["event"] == "approve" and r["version"] == "2")
        assert approval["reviewer"] == "carol" and approval["metrics"]["auc"] == 0.95
    else:
        assert champion(cfg) == "1" and served(cfg) == digest_of(fixtures, "good")
        assert list_versions(production(cfg)) == [1]
        assert events[-1] == ("abort", "2") and ("approve", "2") not in events


@pytest.mark.parametrize("step", journal.STEPS)
def test_rollback_killed_at_each_step(served_v1, fixtures, monkeypatch, step):
    cfg = served_v1
    register(cfg, fixtures, "better", BETTER, author="alice")
    approve(cfg, "wdbc", "2", who("carol"), "")
    crash_at(monkeypatch, step)
    with pytest.raises(Crash):
        rollback(cfg, "wdbc", who("dave"), "incident")
    monkeypatch.setattr(journal, "fault_hook", None)

    report = status(cfg, "wdbc")
    assert report.consistent, report.problems
    if step in COMPLETED_AFTER:
        assert champion(cfg) == "1" and served(cfg) == digest_of(fixtures, "good")
        assert [r["event"] for r in log_lines(cfg)].count("rollback") == 1
    else:
        assert champion(cfg) == "2" and served(cfg) == digest_of(fixtures, "better")
        assert log_lines(cfg)[-1]["event"] == "abort"
    # The history is intact: the next rollback or approval works from what really happened.
    assert sync_ui_alias(cfg, "wdbc", who("ops")).action == "none"


@pytest.mark.parametrize("step", journal.STEPS)
def test_sync_repair_killed_at_each_step(served_v1, fixtures, monkeypatch, step):
    cfg = served_v1
    shutil.rmtree(production(cfg) / "1")
    crash_at(monkeypatch, step)
    with pytest.raises(Crash):
        sync_ui_alias(cfg, "wdbc", who("ops"))
    monkeypatch.setattr(journal, "fault_hook", None)

    sync_ui_alias(cfg, "wdbc", who("ops"))  # the next command: completes or undoes, then repairs if needed
    report = status(cfg, "wdbc")
    assert report.consistent, report.problems
    assert champion(cfg) == "1" and served(cfg) == digest_of(fixtures, "good")


def test_a_log_line_torn_by_the_crash_is_dropped_and_the_promotion_completed(
    served_v1, fixtures, monkeypatch
):
    cfg = served_v1
    register(cfg, fixtures, "better", BETTER, author="alice")
    log = production(cfg) / "promotion_log.jsonl"

    def torn_append(name: str) -> None:
        if name == "published":
            with log.open("a") as handle:
                handle.write('{"event": "approve", "seq": 4, "mod')  # killed mid-write
            raise Crash(name)

    monkeypatch.setattr(journal, "fault_hook", torn_append)
    with pytest.raises(Crash):
        approve(cfg, "wdbc", "2", who("carol"), "")
    monkeypatch.setattr(journal, "fault_hook", None)
    report = status(cfg, "wdbc")
    assert report.consistent, report.problems
    assert "completed" in (report.recovered or "")
    assert champion(cfg) == "2" and served(cfg) == digest_of(fixtures, "better")


def test_production_never_serves_a_version_without_an_approval_record(served_v1, fixtures, monkeypatch):
    """The bug report's case: killed between publishing and logging; the next command logs it."""
    cfg = served_v1
    register(cfg, fixtures, "better", BETTER, author="alice")
    crash_at(monkeypatch, "published")
    with pytest.raises(Crash):
        approve(cfg, "wdbc", "2", who("carol"), "")
    monkeypatch.setattr(journal, "fault_hook", None)
    assert list_versions(production(cfg)) == [1, 2]  # served, not yet logged
    result = sync_ui_alias(cfg, "wdbc", who("ops"))
    assert result.action == "recovered" and "completed and logged" in result.message
    last = next(r for r in reversed(log_lines(cfg)) if r["event"] == "approve")
    assert (last["version"], last["production_version"], last["reviewer"]) == ("2", 2, "carol")
    assert "completed by recovery" in last["reason"]


def test_sigkill_of_a_real_approve_process_is_recovered(served_v1, fixtures):
    cfg = served_v1
    register(cfg, fixtures, "better", BETTER, author="alice")
    script = textwrap.dedent(
        f"""
        import os, signal
        from pipelines.identity import Identity
        from pipelines.mlflow_store import TrackingConfig
        from pipelines.promotion import approve, journal

        def die(step):
            if step == "published":
                os.kill(os.getpid(), signal.SIGKILL)

        journal.fault_hook = die
        approve(TrackingConfig(workdir={cfg.workdir!r}, worker_process=False), "wdbc", "2",
                Identity("carol", False, "test"), "killed")
        """
    )
    child = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    report = status(cfg, "wdbc")
    assert report.consistent, report.problems
    assert champion(cfg) == "2" and served(cfg) == digest_of(fixtures, "better")
