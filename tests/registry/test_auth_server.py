"""The tamper suite against the authenticated PostgreSQL server (`mlflow server --app-name dxpipe`).

Every case goes through real HTTP to the real server (basic auth, PostgreSQL backend and auth store) and
checks three things: the server's answer, the registry afterwards (nothing changed), and the server's
audit table (the attempt is recorded with the authenticated user and the reason).
"""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.registry.auth_server import AuthServer, auth_server_fixture  # noqa: F401 - the session fixture

ALIAS = "/mlflow/registered-models/alias"
PREFIXES = ("/api/2.0", "/ajax-api/2.0")


def _ok(response):
    assert response.ok, f"{response.status_code}: {response.text}"
    return response.json()


def new_version(
    server: AuthServer, user: str, *, run_user: str | None = None, tags: dict[str, str] | None = None
) -> tuple[str, str, str]:
    """A fresh registered model with one version created by `user` from a run created by `run_user`."""
    model = f"m-{uuid.uuid4().hex[:10]}"
    run_user = run_user or user
    experiment = server.call(
        "GET", "/mlflow/experiments/get-by-name", run_user, params={"experiment_name": "tamper"}
    )
    if experiment.status_code == 404:
        exp_id = _ok(server.call("POST", "/mlflow/experiments/create", run_user, json={"name": "tamper"}))[
            "experiment_id"
        ]
    else:
        exp_id = _ok(experiment)["experiment"]["experiment_id"]
    run_id = _ok(
        server.call(
            "POST",
            "/mlflow/runs/create",
            run_user,
            json={"experiment_id": exp_id, "tags": [{"key": "mlflow.user", "value": "someone-else"}]},
        )
    )["run"]["info"]["run_id"]
    _ok(server.call("POST", "/mlflow/registered-models/create", user, json={"name": model}))
    body = {
        "name": model,
        "source": f"runs:/{run_id}/model",
        "run_id": run_id,
        "tags": [
            {"key": k, "value": v} for k, v in (tags or {"gate": "failed", "gate.fail.auc": "0.57"}).items()
        ],
    }
    version = _ok(server.call("POST", "/mlflow/model-versions/create", user, json=body))["model_version"][
        "version"
    ]
    return model, str(version), run_id


def version_view(server: AuthServer, model: str, version: str) -> tuple[dict[str, str], dict[str, str]]:
    """(tags, aliases) of a version as the registry holds them."""
    mv = _ok(
        server.call("GET", "/mlflow/model-versions/get", "admin", params={"name": model, "version": version})
    )
    rm = _ok(server.call("GET", "/mlflow/registered-models/get", "admin", params={"name": model}))
    tags = {t["key"]: t["value"] for t in mv["model_version"].get("tags", [])}
    aliases = {a["alias"]: a["version"] for a in rm["registered_model"].get("aliases", [])}
    return tags, aliases


def last_audit(server: AuthServer, model: str) -> dict:
    return server.audit(model=model)[-1]


# --- identity ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("user", "reviewer", "admin"),
    [("alice", False, False), ("rita", True, False), ("rick", True, False), ("admin", False, True)],
)
@pytest.mark.parametrize("prefix", PREFIXES)
def test_whoami_answers_the_authenticated_user_and_role(auth_server, user, reviewer, admin, prefix):
    got = _ok(auth_server.call("GET", "/dxpipe/whoami", user, prefix=prefix))
    assert got == {"user": user, "is_reviewer": reviewer, "is_admin": admin}


@pytest.mark.parametrize(
    "credentials", [None, ("alice", "wrong-password-123"), ("mallory", "no-such-user-12")]
)
def test_whoami_without_valid_credentials_is_401(auth_server, credentials):
    got = requests.get(f"{auth_server.url}/api/2.0/dxpipe/whoami", auth=credentials, timeout=30)
    assert got.status_code == 401 and "WWW-Authenticate" in got.headers


def test_only_an_admin_grants_the_reviewer_role_and_it_is_audited(auth_server):
    refused = auth_server.call("POST", "/dxpipe/reviewers/grant", "rita", json={"user": "alice"})
    assert refused.status_code == 403 and "only an MLflow admin" in refused.text
    assert not _ok(auth_server.call("GET", "/dxpipe/whoami", "alice"))["is_reviewer"]
    denied = [e for e in auth_server.audit(action="grant_reviewer") if not e["allowed"]]
    assert denied and denied[-1]["user"] == "rita" and denied[-1]["detail"] == "alice"
    unknown = auth_server.call("POST", "/dxpipe/reviewers/grant", "admin", json={"user": "nobody-here"})
    assert unknown.status_code == 400 and "existing MLflow user" in unknown.text
    assert _ok(auth_server.call("GET", "/dxpipe/reviewers", "alice"))["reviewers"] == ["rick", "rita"]


# --- creators are recorded by the server, not claimed by the client -------------------------------------
def test_the_server_records_and_writes_the_authenticated_author(auth_server):
    # alice registers a version claiming rita wrote it; the run (created by bob) claims someone else.
    model, version, run_id = new_version(
        auth_server, "alice", run_user="bob", tags={"gate": "passed", "dxpipe.author": "rita"}
    )
    tags, _ = version_view(auth_server, model, version)
    assert tags["dxpipe.author"] == "alice"
    run = _ok(auth_server.call("GET", "/mlflow/runs/get", "admin", params={"run_id": run_id}))["run"]
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["dxpipe.author"] == "bob"
    provenance = _ok(
        auth_server.call(
            "GET", "/dxpipe/model-versions/provenance", "rita", params={"name": model, "version": version}
        )
    )
    assert provenance["created_by"] == "alice" and provenance["run_created_by"] == "bob"
    assert provenance["authors"] == ["alice", "bob"] and provenance["champion_set_by"] is None
    created = [e for e in auth_server.audit(model=model) if e["action"] == "create_model_version"]
    assert created[-1]["user"] == "alice" and created[-1]["version"] == version


def test_provenance_of_an_unknown_version_is_404(auth_server):
    got = auth_server.call(
        "GET", "/dxpipe/model-versions/provenance", "rita", params={"name": "nope", "version": "1"}
    )
    assert got.status_code == 404 and "cannot be established" in got.text


# --- the champion alias ------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize(
    ("who", "status", "reason"),
    [
        ("alice", 403, "'alice' is not a reviewer"),  # a data scientist (not the author)
        ("bob", 403, "'bob' is not a reviewer"),  # the author, a data scientist
        ("rick", 403, "reviewer 'rick' is an author"),  # the author, a reviewer
        (None, 401, "needs an authenticated MLflow user"),  # no credentials
        ("admin", 403, "'admin' is not a reviewer"),  # admins are not exempt
    ],
)
def test_champion_alias_set_through_the_rest_api_is_refused_and_recorded(
    auth_server, prefix, who, status, reason
):
    author = "rick" if who == "rick" else "bob"
    model, version, _ = new_version(auth_server, author, tags={"gate": "passed"})
    got = auth_server.call(
        "POST", ALIAS, who, prefix=prefix, json={"name": model, "alias": "champion", "version": version}
    )
    assert got.status_code == status and reason in got.json()["message"]
    assert "champion" not in version_view(auth_server, model, version)[1]
    entry = last_audit(auth_server, model)
    assert (entry["action"], entry["allowed"], entry["status"], entry["user"]) == (
        "set_alias",
        False,
        status,
        who,
    )
    assert entry["version"] == version and reason in entry["reason"]


def test_wrong_password_is_refused_as_anonymous_and_recorded(auth_server):
    model, version, _ = new_version(auth_server, "bob", tags={"gate": "passed"})
    got = requests.post(
        f"{auth_server.url}/api/2.0{ALIAS}",
        json={"name": model, "alias": "champion", "version": version},
        auth=("rita", "not-ritas-password"),
        timeout=30,
    )
    assert got.status_code == 401
    entry = last_audit(auth_server, model)
    assert entry["user"] is None and entry["status"] == 401 and not entry["allowed"]


@pytest.mark.parametrize("alias", ["Champion", "champion\u200b"])
def test_a_look_alike_of_the_champion_alias_is_refused(auth_server, alias):
    model, version, _ = new_version(auth_server, "bob", tags={"gate": "passed"})
    got = auth_server.call("POST", ALIAS, "rita", json={"name": model, "alias": alias, "version": version})
    assert got.status_code == 403 and "imitates 'champion'" in got.text
    assert version_view(auth_server, model, version)[1] == {}


@pytest.mark.parametrize("prefix", PREFIXES)
def test_a_reviewer_who_is_not_an_author_sets_champion_and_the_server_records_who(auth_server, prefix):
    model, version, _ = new_version(auth_server, "alice", run_user="bob", tags={"gate": "passed"})
    got = auth_server.call(
        "POST", ALIAS, "rita", prefix=prefix, json={"name": model, "alias": "champion", "version": version}
    )
    assert got.ok, got.text
    assert version_view(auth_server, model, version)[1] == {"champion": version}
    entry = last_audit(auth_server, model)
    assert (entry["action"], entry["allowed"], entry["status"], entry["user"]) == (
        "set_alias",
        True,
        200,
        "rita",
    )
    assert "not an author (alice, bob)" in entry["reason"]
    provenance = _ok(
        auth_server.call(
            "GET", "/dxpipe/model-versions/provenance", "alice", params={"name": model, "version": version}
        )
    )
    assert provenance["champion_set_by"] == "rita"

    # Removing it: a data scientist cannot, a reviewer can; both recorded.
    refused = auth_server.call(
        "DELETE", ALIAS, "alice", prefix=prefix, json={"name": model, "alias": "champion"}
    )
    assert refused.status_code == 403 and version_view(auth_server, model, version)[1] == {
        "champion": version
    }
    assert (
        _ok(
            auth_server.call(
                "DELETE", ALIAS, "rick", prefix=prefix, json={"name": model, "alias": "champion"}
            )
        )
        == {}
    )
    assert version_view(auth_server, model, version)[1] == {}
    removals = [
        (e["user"], e["allowed"], e["version"]) for e in auth_server.audit(model=model, action="delete_alias")
    ]
    assert removals == [("alice", False, version), ("rick", True, version)]


def test_a_failed_mlflow_handler_is_recorded_with_its_status(auth_server):
    model, version, _ = new_version(auth_server, "alice", tags={"gate": "passed"})
    got = auth_server.call("POST", ALIAS, "rita", json={"name": model, "alias": "champion", "version": "99"})
    assert got.status_code == 403  # the server has no creator for version 99: four-eyes cannot be checked
    # An accepted request that MLflow then rejects keeps MLflow's status in the audit row.
    auth_server.call("POST", ALIAS, "rita", json={"name": model, "alias": "champion", "version": version})
    deleted = auth_server.call(
        "DELETE", "/mlflow/model-versions/delete", "rita", json={"name": model, "version": version}
    )
    assert deleted.ok
    again = auth_server.call("DELETE", ALIAS, "rita", json={"name": model, "alias": "champion"})
    entry = last_audit(auth_server, model)
    assert entry["action"] == "delete_alias" and entry["allowed"] and entry["status"] == again.status_code


# --- tags -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize(
    ("method", "path", "body", "who", "reason"),
    [
        # gate=passed on a failed version, by its author and by a reviewer
        (
            "POST",
            "/mlflow/model-versions/set-tag",
            {"key": "gate", "value": "passed"},
            "alice",
            "gate evidence",
        ),
        (
            "POST",
            "/mlflow/model-versions/set-tag",
            {"key": "gate", "value": "passed"},
            "rita",
            "gate evidence",
        ),
        # failure tags deleted
        ("DELETE", "/mlflow/model-versions/delete-tag", {"key": "gate.fail.auc"}, "alice", "gate evidence"),
        # metric tags forged
        (
            "POST",
            "/mlflow/model-versions/set-tag",
            {"key": "metric.auc", "value": "0.99"},
            "alice",
            "gate evidence",
        ),
        # author tag edited
        (
            "POST",
            "/mlflow/model-versions/set-tag",
            {"key": "dxpipe.author", "value": "carol"},
            "alice",
            "written by the server",
        ),
        (
            "DELETE",
            "/mlflow/model-versions/delete-tag",
            {"key": "dxpipe.author"},
            "rita",
            "written by the server",
        ),
        # approval tags by a data scientist, by the author, without credentials
        (
            "POST",
            "/mlflow/model-versions/set-tag",
            {"key": "approval.reviewer", "value": "rita"},
            "bob",
            "not a reviewer",
        ),
        (
            "POST",
            "/mlflow/model-versions/set-tag",
            {"key": "approval.status", "value": "approved"},
            "alice",
            "not a reviewer",
        ),
        (
            "POST",
            "/mlflow/model-versions/set-tag",
            {"key": "approval.status", "value": "approved"},
            None,
            "authenticated",
        ),
    ],
)
def test_protected_version_tags_are_refused_and_recorded(
    auth_server, prefix, method, path, body, who, reason
):
    model, version, _ = new_version(auth_server, "alice")
    before = version_view(auth_server, model, version)
    got = auth_server.call(method, path, who, prefix=prefix, json={"name": model, "version": version, **body})
    assert got.status_code in (401, 403) and reason in got.json()["message"]
    assert version_view(auth_server, model, version) == before
    entry = last_audit(auth_server, model)
    assert not entry["allowed"] and entry["user"] == who and entry["detail"] == body["key"]


def test_the_authors_own_approval_tag_is_refused_and_a_reviewers_accepted(auth_server):
    model, version, _ = new_version(auth_server, "rick", tags={"gate": "passed"})
    tag = {"name": model, "version": version, "key": "approval.reviewer", "value": "rick"}
    refused = auth_server.call("POST", "/mlflow/model-versions/set-tag", "rick", json=tag)
    assert refused.status_code == 403 and "is an author" in refused.text
    assert (
        _ok(auth_server.call("POST", "/mlflow/model-versions/set-tag", "rita", json={**tag, "value": "rita"}))
        == {}
    )
    assert version_view(auth_server, model, version)[0]["approval.reviewer"] == "rita"


def test_free_tags_stay_editable_by_data_scientists(auth_server):
    model, version, _ = new_version(auth_server, "alice")
    tag = {"name": model, "version": version, "key": "note", "value": "looked at the ROC"}
    assert _ok(auth_server.call("POST", "/mlflow/model-versions/set-tag", "bob", json=tag)) == {}
    assert version_view(auth_server, model, version)[0]["note"] == "looked at the ROC"


def test_an_approval_cannot_be_smuggled_in_at_registration(auth_server):
    with pytest.raises(AssertionError, match="approval tags"):
        new_version(auth_server, "alice", tags={"gate": "passed", "approval.status": "approved"})


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/mlflow/runs/set-tag", {"key": "dxpipe.author", "value": "carol"}),
        ("/mlflow/runs/set-tag", {"key": "mlflow.user", "value": "carol"}),
        ("/mlflow/runs/delete-tag", {"key": "dxpipe.author"}),
        (
            "/mlflow/runs/log-batch",
            {"tags": [{"key": "ok", "value": "1"}, {"key": "dxpipe.author", "value": "carol"}]},
        ),
    ],
)
def test_run_identity_tags_cannot_be_edited(auth_server, path, body):
    _, _, run_id = new_version(auth_server, "alice")
    got = auth_server.call("POST", path, "alice", json={"run_id": run_id, **body})
    assert got.status_code == 403 and "written by the server" in got.text
    run = _ok(auth_server.call("GET", "/mlflow/runs/get", "admin", params={"run_id": run_id}))["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["dxpipe.author"] == "alice" and "ok" not in tags


# --- reviewer-only registry changes ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "extra", "action"),
    [
        ("DELETE", "/mlflow/model-versions/delete", {"version": "1"}, "delete_model_version"),
        ("DELETE", "/mlflow/registered-models/delete", {}, "delete_registered_model"),
        ("POST", "/mlflow/registered-models/rename", {"new_name": "renamed"}, "rename_registered_model"),
        (
            "POST",
            "/mlflow/model-versions/transition-stage",
            {"version": "1", "stage": "Production", "archive_existing_versions": False},
            "transition_stage",
        ),
        (
            "POST",
            "/mlflow/registered-models/set-tag",
            {"key": "policy.four_eyes", "value": "false"},
            "set_model_tag",
        ),
    ],
)
def test_reviewer_only_registry_changes_are_refused_for_data_scientists(
    auth_server, method, path, extra, action
):
    model, version, _ = new_version(auth_server, "alice")
    got = auth_server.call(method, path, "bob", json={"name": model, **extra})
    assert got.status_code == 403
    assert version_view(auth_server, model, version)[0]["gate"] == "failed"  # still there, unchanged
    entry = last_audit(auth_server, model)
    assert (entry["action"], entry["user"], entry["allowed"]) == (action, "bob", False)


def test_a_reviewer_renames_and_the_authors_follow_the_model(auth_server):
    model, version, _ = new_version(auth_server, "alice")
    new = f"{model}-renamed"
    _ok(
        auth_server.call(
            "POST", "/mlflow/registered-models/rename", "rita", json={"name": model, "new_name": new}
        )
    )
    provenance = _ok(
        auth_server.call(
            "GET", "/dxpipe/model-versions/provenance", "rita", params={"name": new, "version": version}
        )
    )
    assert provenance["created_by"] == "alice"
    refused = auth_server.call(
        "POST", ALIAS, "alice", json={"name": new, "alias": "champion", "version": version}
    )
    assert refused.status_code == 403


def test_a_malformed_body_on_a_guarded_route_is_refused(auth_server):
    got = auth_server.call(
        "POST",
        ALIAS,
        "rita",
        data=b'{"name": ["x"], "alias": {"champion": 1}}',
        headers={"Content-Type": "application/json"},
    )
    assert got.status_code in (400, 403)
    assert "malformed request" in got.text or "INVALID_PARAMETER_VALUE" in got.text


# --- `dxpipe approve` against the authenticated server -----------------------------------------------------
@pytest.fixture
def server_cfg(auth_server, tmp_path, monkeypatch):
    """A dxpipe tracking config on the shared server (MLflow work in-process: it is the server that counts)."""
    from pipelines.mlflow_store import TrackingConfig

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return TrackingConfig(
        workdir=str(tmp_path / "wd"),
        tracking_uri=auth_server.url,
        http_max_retries=1,
        http_timeout_s=60,
        worker_process=False,
    )


def as_user(monkeypatch, user: str) -> None:
    """Sends the MLflow client's requests as `user` (the basic-auth variables MLflow's client reads)."""
    from tests.registry.auth_server import password

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password(user))


def served_versions(cfg, model: str) -> list[int]:
    from components.serving_pusher.core import list_versions

    return list_versions(cfg.resolved().production_path(model))


def log_records(cfg, model: str) -> list:
    from pipelines.promotion.audit_log import LOG_NAME, PromotionLog

    return PromotionLog(cfg.resolved().production_path(model) / LOG_NAME).records()


def registered(cfg, fixtures, monkeypatch, user: str) -> tuple[str, str]:
    """A version of a fresh model that passed the gate, registered as `user` (identity from the server)."""
    from pipelines.identity import Identity, current_identity
    from tests.registry.support import GOOD, register

    as_user(monkeypatch, user)
    identity = current_identity(cfg.tracking_uri)  # the client's whoami against the server's route
    assert identity == Identity(user, True, f"mlflow-server {cfg.tracking_uri}")
    model = f"wdbc-{uuid.uuid4().hex[:8]}"
    version = register(cfg, fixtures, "good", GOOD, author=identity, model_name=model)
    assert version.passed, version.failures
    return model, version.version


def champion_audit(server: AuthServer, model: str) -> list[tuple[str | None, bool, int | None]]:
    entries = server.audit(model=model, action="set_alias")
    return [(e["user"], e["allowed"], e["status"]) for e in entries if e["detail"] == "champion"]


def test_identity_needs_valid_credentials_on_the_server(auth_server, server_cfg, monkeypatch):
    from pipelines.identity import IdentityError, current_identity

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-alices-password")
    with pytest.raises(IdentityError, match="did not accept your credentials"):
        current_identity(server_cfg.tracking_uri)


def test_dxpipe_approve_by_a_data_scientist_is_refused_by_the_server(
    auth_server, server_cfg, fixtures, monkeypatch
):
    from pipelines import promotion
    from pipelines.errors import DxpipeError

    model, version = registered(server_cfg, fixtures, monkeypatch, "alice")
    as_user(monkeypatch, "bob")  # not the author, so dxpipe's own four-eyes check passes; bob is no reviewer
    with pytest.raises(DxpipeError, match=r"'bob' is not a reviewer"):
        promotion.approve(server_cfg, model, version, None, "looks fine")
    assert served_versions(server_cfg, model) == []
    assert "champion" not in version_view(auth_server, model, version)[1]
    assert champion_audit(auth_server, model) == [("bob", False, 403)]


def test_the_authors_own_dxpipe_approve_is_refused_and_the_server_would_refuse_it_too(
    auth_server, server_cfg, fixtures, monkeypatch
):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipelines import promotion
    from pipelines.errors import DxpipeError

    model, version = registered(server_cfg, fixtures, monkeypatch, "rick")  # rick trains and reviews
    with pytest.raises(DxpipeError, match=r"four-eyes|author"):
        promotion.approve(server_cfg, model, version, None, "my own model")
    refusal = log_records(server_cfg, model)[-1]
    assert (refusal.event, refusal.reviewer, refusal.reviewer_authenticated) == ("refuse", "rick", True)
    # A client that skips dxpipe's check (a patched dxpipe, curl, the UI) meets the server's.
    with pytest.raises(MlflowException, match=r"reviewer 'rick' is an author of this version"):
        MlflowClient(server_cfg.tracking_uri).set_registered_model_alias(model, "champion", version)
    assert served_versions(server_cfg, model) == []
    assert champion_audit(auth_server, model) == [("rick", False, 403)]


def test_a_reviewers_dxpipe_approve_succeeds_and_both_logs_record_the_authenticated_identities(
    auth_server, server_cfg, fixtures, monkeypatch
):
    from pipelines import promotion

    model, version = registered(server_cfg, fixtures, monkeypatch, "alice")
    as_user(monkeypatch, "rita")
    record = promotion.approve(server_cfg, model, version, None, "reviewed ROC and slices")
    assert record.production_version == 1 and served_versions(server_cfg, model) == [1]
    assert (record.reviewer, record.reviewer_authenticated, record.author) == ("rita", True, "alice")
    assert record.warning is None, record.warning  # the server accepted every approval tag
    register_record = next(r for r in log_records(server_cfg, model) if r.event == "register")
    assert (register_record.reviewer, register_record.reviewer_authenticated) == ("alice", True)

    tags, aliases = version_view(auth_server, model, version)
    assert aliases["champion"] == version and tags["approval.status"] == "approved"
    assert tags["dxpipe.author"] == "alice"
    entries = auth_server.audit(model=model)
    assert [(e["user"], e["version"]) for e in entries if e["action"] == "create_model_version"] == [
        ("alice", version)
    ]
    assert champion_audit(auth_server, model) == [("rita", True, 200)]
    approval_tags = [
        e for e in entries if e["action"] == "set_version_tag" and e["detail"].startswith("approval.")
    ]
    assert approval_tags and {(e["user"], e["allowed"], e["status"]) for e in approval_tags} == {
        ("rita", True, 200)
    }
    provenance = _ok(
        auth_server.call(
            "GET", "/dxpipe/model-versions/provenance", "bob", params={"name": model, "version": version}
        )
    )
    assert (provenance["created_by"], provenance["champion_set_by"]) == ("alice", "rita")
    from pipelines.promotion.status import status

    assert status(server_cfg, model).consistent


def test_dxpipe_approve_cli_refused_by_the_server_is_one_error_line(
    auth_server, server_cfg, fixtures, monkeypatch, capsys
):
    from pipelines import registry_cli

    model, version = registered(server_cfg, fixtures, monkeypatch, "alice")
    as_user(monkeypatch, "bob")
    capsys.readouterr()  # registration's own log lines
    argv = ["approve", model, version, "--note", "ok"]
    code = registry_cli.main([*argv, "--tracking-uri", auth_server.url, "--workdir", server_cfg.workdir])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("dxpipe: error: ") and err.count("\n") == 1
    assert "'bob' is not a reviewer" in err and "Traceback" not in err
    assert served_versions(server_cfg, model) == []


def test_an_approval_in_the_mlflow_ui_is_checked_and_attributed_by_the_server(
    auth_server, server_cfg, fixtures, monkeypatch
):
    """The UI calls /ajax-api/2.0: the same guard answers, on the same evidence of who is logged in."""
    model, version = registered(server_cfg, fixtures, monkeypatch, "alice")
    alias = {"name": model, "alias": "champion", "version": version}
    tag = {"name": model, "version": version, "key": "approval.reviewer"}
    ui = "/ajax-api/2.0"
    # alice (the author) tries it in the UI: both the approval tag and the alias are refused.
    assert (
        auth_server.call(
            "POST", "/mlflow/model-versions/set-tag", "alice", prefix=ui, json={**tag, "value": "rita"}
        ).status_code
        == 403
    )
    assert auth_server.call("POST", ALIAS, "alice", prefix=ui, json=alias).status_code == 403
    # rita approves in the UI: accepted and attributed to her login, whatever the tag's value says.
    _ok(
        auth_server.call(
            "POST", "/mlflow/model-versions/set-tag", "rita", prefix=ui, json={**tag, "value": "someone"}
        )
    )
    _ok(auth_server.call("POST", ALIAS, "rita", prefix=ui, json=alias))
    assert champion_audit(auth_server, model) == [("alice", False, 403), ("rita", True, 200)]
    tag_rows = [(e["user"], e["allowed"]) for e in auth_server.audit(model=model, action="set_version_tag")]
    assert tag_rows == [("alice", False), ("rita", True)]


def test_a_ui_approval_checked_by_the_server_is_decided_on_evidence_and_published_by_sync(
    auth_server, server_cfg, fixtures, monkeypatch
):
    """rita sets champion in the UI; sync, run by another reviewer, publishes it as rita's approval."""
    from pipelines.promotion.sync import sync_ui_alias

    model, version = registered(server_cfg, fixtures, monkeypatch, "alice")
    alias = {"name": model, "alias": "champion", "version": version}
    _ok(auth_server.call("POST", ALIAS, "rita", prefix="/ajax-api/2.0", json=alias))
    as_user(monkeypatch, "rick")  # whoever runs sync, the approver is the reviewer the server recorded
    result = sync_ui_alias(server_cfg, model)
    assert result.action == "approved", result.message
    assert served_versions(server_cfg, model) == [1]
    record = log_records(server_cfg, model)[-1]
    assert (record.event, record.version, record.reviewer, record.reviewer_authenticated, record.source) == (
        "approve",
        version,
        "rita",
        True,
        "ui",
    )
    assert record.author == "alice"
    assert sync_ui_alias(server_cfg, model).action == "none"  # registry, log and production agree


def test_a_ui_approval_of_a_failed_version_is_refused_by_sync_even_from_a_reviewer(
    auth_server, server_cfg, fixtures, monkeypatch
):
    from pipelines.identity import current_identity
    from pipelines.promotion.sync import sync_ui_alias
    from tests.registry.support import BAD, register

    as_user(monkeypatch, "alice")
    model = f"wdbc-{uuid.uuid4().hex[:8]}"
    failed = register(
        server_cfg, fixtures, "bad", BAD, author=current_identity(server_cfg.tracking_uri), model_name=model
    )
    assert not failed.passed
    alias = {"name": model, "alias": "champion", "version": failed.version}
    _ok(auth_server.call("POST", ALIAS, "rita", prefix="/ajax-api/2.0", json=alias))
    as_user(monkeypatch, "rick")
    result = sync_ui_alias(server_cfg, model)
    assert result.action == "refused", result.message
    assert served_versions(server_cfg, model) == []
    assert log_records(server_cfg, model)[-1].event == "refuse"


# --- the deployment users run (`make mlflow-server` / `make mlflow-user`) -----------------------------------
def test_add_user_command_creates_a_reviewer_on_the_running_server(auth_server, capsys):
    from pipelines.registry_server import deploy

    root = auth_server.deployment.root
    assert deploy.main(["add-user", str(root), "dr-mensah", "--reviewer"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("user dr-mensah (reviewer); password: ")
    secret = out.rsplit(": ", 1)[1].strip()
    got = requests.get(f"{auth_server.url}/api/2.0/dxpipe/whoami", auth=("dr-mensah", secret), timeout=30)
    assert got.json() == {"user": "dr-mensah", "is_reviewer": True, "is_admin": False}


def test_deployment_keeps_secrets_out_of_command_lines_and_world_readable_files(auth_server):
    deployment = auth_server.deployment
    cmd, env = deployment.server_command()
    secret = deployment.secrets["postgres_password"]
    assert not any(secret in part for part in cmd) and env["PGPASSFILE"] == str(deployment.pgpass)
    for name in ("secrets.json", "auth.ini", "pgpass"):
        assert (deployment.root / name).stat().st_mode & 0o077 == 0, name
    assert secret not in (deployment.root / "auth.ini").read_text()
    # Loopback only, both PostgreSQL and MLflow.
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    conf = (deployment.pgdata / "postmaster.opts").read_text()
    assert "listen_addresses=127.0.0.1" in conf


def test_add_user_without_a_running_server_is_one_error_line(tmp_path, capsys):
    from pipelines.registry_server import deploy

    assert deploy.main(["add-user", str(tmp_path), "alice"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dxpipe: error: ") and err.count("\n") == 1 and "server.json" in err


def test_rollback_by_a_reviewer_restores_even_their_own_approved_version_and_a_data_scientist_cannot(
    auth_server, server_cfg, fixtures, monkeypatch
):
    """Rollback is the emergency brake: any reviewer may put back a version four-eyes already approved."""
    from pipelines import promotion
    from pipelines.errors import DxpipeError
    from tests.registry.support import BETTER, register

    model, first = registered(server_cfg, fixtures, monkeypatch, "rita")  # rita trained the first model
    as_user(monkeypatch, "rick")
    promotion.approve(server_cfg, model, first, None, "first")
    as_user(monkeypatch, "alice")
    from pipelines.identity import current_identity

    second = register(
        server_cfg,
        fixtures,
        "better",
        BETTER,
        author=current_identity(server_cfg.tracking_uri),
        model_name=model,
    )
    assert second.passed, second.failures
    as_user(monkeypatch, "rick")
    promotion.approve(server_cfg, model, second.version, None, "better")

    as_user(monkeypatch, "bob")
    with pytest.raises(DxpipeError, match=r"'bob' is not a reviewer"):
        promotion.rollback(server_cfg, model, None, "bob tries")
    as_user(monkeypatch, "rita")
    rolled = promotion.rollback(server_cfg, model, None, "calibration drift at clinic 3")
    assert (rolled.version, rolled.reviewer, rolled.reviewer_authenticated) == (first, "rita", True)
    assert version_view(auth_server, model, first)[1]["champion"] == first
    restores = [
        (e["user"], e["allowed"], e["version"])
        for e in auth_server.audit(model=model, action="restore_alias")
    ]
    assert restores == [("rita", True, first)]
    assert ("bob", False, 403) in champion_audit(auth_server, model)
    # The four-eyes approvals stay the `set_alias` rows, so provenance still names who approved first.
    provenance = _ok(
        auth_server.call(
            "GET", "/dxpipe/model-versions/provenance", "alice", params={"name": model, "version": first}
        )
    )
    assert provenance["champion_set_by"] == "rick"


def test_a_version_the_server_never_saw_created_cannot_be_approved(auth_server, monkeypatch):
    """Registered behind the server's back (straight into PostgreSQL, or before the app ran): fail closed."""
    from mlflow import MlflowClient

    deployment = auth_server.deployment
    monkeypatch.setenv("PGPASSFILE", str(deployment.pgpass))
    direct = MlflowClient(
        tracking_uri=deployment.database_uri("mlflow"), registry_uri=deployment.database_uri("mlflow")
    )
    model = f"m-{uuid.uuid4().hex[:10]}"
    direct.create_registered_model(model)
    version = str(
        direct.create_model_version(model, "mlflow-artifacts:/nowhere", tags={"gate": "passed"}).version
    )
    got = auth_server.call(
        "POST", ALIAS, "rita", json={"name": model, "alias": "champion", "version": version}
    )
    assert got.status_code == 403 and "no record of who created this version" in got.text
    assert version_view(auth_server, model, version)[1] == {}
    missing = auth_server.call(
        "GET", "/dxpipe/model-versions/provenance", "rita", params={"name": model, "version": version}
    )
    assert missing.status_code == 404


def test_an_admin_revokes_the_reviewer_role_and_its_powers_go_with_it(auth_server):
    auth_server.deployment.add_user("carol", "carol-test-password", reviewer=True)
    carol = ("carol", "carol-test-password")

    def whoami() -> dict:
        return requests.get(f"{auth_server.url}/api/2.0/dxpipe/whoami", auth=carol, timeout=30).json()

    assert whoami()["is_reviewer"]
    model, version, _ = new_version(auth_server, "alice", tags={"gate": "passed"})
    _ok(auth_server.call("POST", "/dxpipe/reviewers/revoke", "admin", json={"user": "carol"}))
    assert not whoami()["is_reviewer"]
    got = requests.post(
        f"{auth_server.url}/api/2.0{ALIAS}",
        json={"name": model, "alias": "champion", "version": version},
        auth=carol,
        timeout=30,
    )
    assert got.status_code == 403 and "'carol' is not a reviewer" in got.text
    revoked = [e for e in auth_server.audit(action="revoke_reviewer") if e["detail"] == "carol"]
    assert [(e["user"], e["allowed"]) for e in revoked] == [("admin", True)]


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/dxpipe/model-versions/provenance", {"name": "wdbc"}, "'name' and 'version' are required"),
        ("/dxpipe/audit", {"limit": "lots"}, "limit must be an integer"),
    ],
)
def test_dxpipe_routes_name_the_bad_parameter(auth_server, path, params, message):
    got = auth_server.call("GET", path, "alice", params=params)
    assert got.status_code == 400 and message in got.json()["message"]


def test_tampering_with_a_failed_dxpipe_version_on_the_server_changes_nothing(
    auth_server, server_cfg, fixtures, monkeypatch
):
    """The issue's tamper cases on a version the pipeline registered as failed, through the server's REST API."""
    from pipelines import promotion
    from pipelines.errors import DxpipeError
    from pipelines.identity import current_identity
    from pipelines.promotion.status import status
    from tests.registry.support import BAD, register

    as_user(monkeypatch, "alice")
    model = f"wdbc-{uuid.uuid4().hex[:8]}"
    failed = register(
        server_cfg,
        fixtures,
        "bad",
        BAD,
        author=current_identity(server_cfg.tracking_uri),
        model_name=model,
        blessed=False,
    )
    assert not failed.passed
    version = failed.version
    tags_before, _ = version_view(auth_server, model, version)
    failure_tag = next(k for k in tags_before if k.startswith("gate.fail."))
    metric_tag = next(k for k in tags_before if k.startswith("metric."))
    attempts = [
        ("alice", "POST", "/mlflow/model-versions/set-tag", {"key": "gate", "value": "passed"}),
        ("alice", "DELETE", "/mlflow/model-versions/delete-tag", {"key": failure_tag}),
        ("alice", "POST", "/mlflow/model-versions/set-tag", {"key": metric_tag, "value": "0.99"}),
        ("alice", "POST", "/mlflow/model-versions/set-tag", {"key": "dxpipe.author", "value": "carol"}),
        ("bob", ALIAS, None, {"alias": "champion"}),
        ("alice", ALIAS, None, {"alias": "champion"}),
        (None, ALIAS, None, {"alias": "champion"}),
    ]
    for user, method_or_path, path, body in attempts:
        if path is None:  # the alias route
            got = auth_server.call(
                "POST", method_or_path, user, json={"name": model, "version": version, **body}
            )
        else:
            got = auth_server.call(
                method_or_path, path, user, json={"name": model, "version": version, **body}
            )
        assert got.status_code in (401, 403), (user, body, got.text)
    refusals = [e for e in auth_server.audit(model=model) if not e["allowed"]]
    assert [e["user"] for e in refusals] == [a[0] for a in attempts]
    assert all(e["reason"] for e in refusals)
    assert version_view(auth_server, model, version) == (tags_before, {})
    # Nothing reached production; dxpipe itself still refuses the failed version, even for a reviewer.
    as_user(monkeypatch, "rita")
    with pytest.raises(DxpipeError, match="fails the gate"):
        promotion.approve(server_cfg, model, version, None, "forged?")
    assert served_versions(server_cfg, model) == []
    # The evidence and its display were never changed, so `status` finds every version as registered.
    report = status(server_cfg, model)
    [shown] = [v for v in report.versions if v.version == version]
    assert (shown.gate, shown.gate_tag, shown.discrepancies) == ("failed", "failed", ())
    assert report.production.version is None


def test_a_killed_start_is_reported_and_its_leftovers_stopped(tmp_path, capsys):
    """kill -9 of `make mlflow-server` leaves PostgreSQL running: start says so; `stop` cleans up."""
    import shutil
    import tempfile
    from pathlib import Path

    from pipelines.registry_server import deploy

    root = Path(tempfile.mkdtemp(prefix="dxpipe-leftover-"))
    try:
        deploy.Deployment(root).start_postgres()  # as if the server process had then been SIGKILLed
        again = deploy.Deployment(root)
        with pytest.raises(deploy.DeployError, match=r"still running .*deploy stop .*mlflow-server-stop"):
            again.start_postgres()
        assert deploy.main(["stop", str(root)]) == 0
        assert capsys.readouterr().out.strip() == "stopped: PostgreSQL"
        assert not again.postgres_running()
        assert deploy.main(["stop", str(root)]) == 0
        assert "nothing of" in capsys.readouterr().out
    finally:
        deploy.Deployment(root).stop_postgres()
        shutil.rmtree(root, ignore_errors=True)
