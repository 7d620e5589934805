"""The server's own tables (`pipelines.registry_server.records`) on SQLite: no server needed."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from pipelines.registry_server.records import Records, audit


@pytest.fixture
def records(tmp_path) -> Records:
    return Records(f"sqlite:///{tmp_path / 'auth.db'}")


def test_tables_are_created_once_and_reopened(tmp_path):
    uri = f"sqlite:///{tmp_path / 'auth.db'}"
    Records(uri).record_run("r1", "alice")
    assert Records(uri).run_creator("r1") == "alice"


def test_reviewer_role_changes_are_audited_and_idempotent(records):
    assert records.set_reviewer("rita", True, by="admin")
    assert not records.set_reviewer("rita", True, by="admin")
    assert records.is_reviewer("rita") and not records.is_reviewer("Rita")  # the account name, exactly
    assert records.list_reviewers() == ["rita"]
    assert records.set_reviewer("rita", False, by="admin") and not records.is_reviewer("rita")
    rows = [(e.action, e.user, e.detail, e.reason.endswith("(no change)")) for e in records.entries()]
    assert rows == [
        ("grant_reviewer", "admin", "rita", False),
        ("grant_reviewer", "admin", "rita", True),
        ("revoke_reviewer", "admin", "rita", False),
    ]


def test_version_creators_follow_a_rename_and_a_reused_number_replaces_the_old_creator(records):
    records.record_run("run-1", "bob")
    records.record_version("wdbc", "1", "run-1", "alice")
    assert records.version_creator("wdbc", "1") == ("alice", "run-1")
    created = records.version_created_at("wdbc", "1")
    assert created is not None and created.endswith("+00:00")
    records.rename_model("wdbc", "wdbc-v2")
    assert records.version_creator("wdbc", "1") is None
    assert records.version_creator("wdbc-v2", "1") == ("alice", "run-1")
    records.record_version("wdbc-v2", "1", None, "carol")  # the model was deleted and re-created
    assert records.version_creator("wdbc-v2", "1") == ("carol", None)
    assert records.version_created_at("wdbc-v2", "1") >= created


def test_an_accepted_rows_status_is_filled_in_once_and_never_overwritten(records):
    row = records.append(
        user="rita",
        action="set_alias",
        model="m",
        version="1",
        detail="champion",
        allowed=True,
        status=None,
        reason="ok",
    )
    records.set_status(row, 200)
    records.set_status(row, 500)  # a second update is ignored: the first outcome stands
    [entry] = records.entries(model="m")
    assert (entry.status, entry.allowed, entry.user) == (200, True, "rita")


def test_entries_filter_and_keep_order(records):
    for i in range(5):
        records.append(
            user=f"u{i}",
            action="set_alias" if i % 2 else "set_version_tag",
            model="m",
            allowed=bool(i % 2),
            status=403,
            reason=str(i),
        )
    assert [e.reason for e in records.entries(model="m")] == ["0", "1", "2", "3", "4"]
    assert [e.reason for e in records.entries(action="set_alias")] == ["1", "3"]
    assert [e.reason for e in records.entries(allowed=False)] == ["0", "2", "4"]
    assert [e.reason for e in records.entries(limit=2)] == ["3", "4"]  # the most recent, oldest first


def test_the_app_has_no_code_path_that_deletes_audit_rows(records):
    records.append(user="a", action="x", allowed=False, status=403, reason="r")
    with records.engine.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(audit)).scalar() == 1
    assert not any(name.startswith(("delete", "remove", "purge")) for name in dir(records))
