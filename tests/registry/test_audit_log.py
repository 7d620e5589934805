"""The hash-chained promotion log: edits, deletions and unreadable lines are detected, never skipped."""

from __future__ import annotations

import itertools
import json

import pytest

from pipelines.promotion.audit_log import PromotionLog, champion_history
from pipelines.promotion.errors import AuditLogError


@pytest.fixture
def log(tmp_path) -> PromotionLog:
    log = PromotionLog(tmp_path / "promotion_log.jsonl")
    log.append(event="register", model="wdbc", version="1", reviewer="alice")
    log.append(event="approve", model="wdbc", version="1", reviewer="bob", metrics={"auc": 0.93})
    log.append(event="register", model="wdbc", version="2", reviewer="alice")
    log.append(event="approve", model="wdbc", version="2", reviewer="carol")
    return log


def lines(log: PromotionLog) -> list[str]:
    return log.path.read_text().splitlines()


def test_records_are_chained(log):
    records = log.records()
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert records[0].prev == "" and all(b.prev == a.hash for a, b in itertools.pairwise(records))
    assert log.verify() == []
    assert champion_history(records) == ["1", "2"]


def test_an_edited_line_is_detected(log):
    text = lines(log)
    record = json.loads(text[1])
    record["reviewer"] = "alice"
    text[1] = json.dumps(record, sort_keys=True)
    log.path.write_text("\n".join(text) + "\n")
    [problem] = log.verify()
    assert "line 2 (seq 2)" in problem and "was edited" in problem


def test_an_edited_line_with_a_recomputed_hash_breaks_the_next_link(log):
    from pipelines.promotion.audit_log import record_hash

    text = lines(log)
    record = json.loads(text[1])
    record["reviewer"] = "alice"
    record.pop("hash")
    record["hash"] = record_hash(record)
    text[1] = json.dumps(record, sort_keys=True)
    log.path.write_text("\n".join(text) + "\n")
    assert any("line 3 (seq 3)" in p and "does not follow" in p for p in log.verify())


def test_a_deleted_line_is_detected(log):
    text = lines(log)
    del text[1]
    log.path.write_text("\n".join(text) + "\n")
    problems = log.verify()
    assert any("deleted, inserted or reordered" in p for p in problems)
    assert any("has seq 3, expected 2" in p for p in problems)


def test_an_unreadable_line_is_an_error_not_skipped(log):
    text = lines(log)
    text.insert(2, "{not json")
    log.path.write_text("\n".join(text) + "\n")
    with pytest.raises(AuditLogError, match=r"line 3 of the promotion log .* is unreadable"):
        log.records()
    assert "is unreadable" in log.verify()[0]
    with pytest.raises(AuditLogError):
        log.append(event="approve", model="wdbc", version="3", reviewer="x")


def test_a_torn_tail_blocks_appends_until_recovery_truncates_it(log):
    with log.path.open("a") as handle:
        handle.write('{"seq": 5, "ev')
    assert log.torn_tail()
    with pytest.raises(AuditLogError, match=r"ends in a partial line"):
        log.append(event="approve", model="wdbc", version="3", reviewer="x")
    assert log.truncate_torn_tail() and not log.torn_tail()
    assert log.append(event="approve", model="wdbc", version="3", reviewer="x").seq == 5
    assert log.verify() == []
