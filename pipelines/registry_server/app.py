"""dxpipe's MLflow server app: MLflow's basic-auth app plus the approval rules, checked before the handler.

Run it with `mlflow server --app-name dxpipe ...` (the `mlflow.app` entry point in setup.py names
`create_app`); `pipelines.registry_server.deploy` does that against PostgreSQL.

How a request is checked:

1. MLflow's own hooks are kept as they are (workspace resolution, then basic-auth authentication and
   permissions). dxpipe's guard runs just before the basic-auth hook, so it applies to admins too (MLflow
   lets admins skip its permission checks) and it can audit requests without credentials.
2. The guard matches the Flask *endpoint* (MLflow's handler name), not the URL: every route that reaches
   a handler (`/api/2.0/...`, `/ajax-api/2.0/...` the UI uses, a static prefix) is covered at once.
3. It parses the body with MLflow's own request parser, so it sees exactly the fields the handler will
   see (a second parser could be fooled by a body the two read differently), asks `rules` for a decision
   and either answers 401/403 (audited) or writes an audit row and lets MLflow's hooks and handler run;
   the HTTP status MLflow answered is filled into that row afterwards.
4. After a run or a model version is created, the server records the authenticated creator in its own
   table and writes `dxpipe.author` itself; those rows are the authors the four-eyes rule checks.

dxpipe's own routes (`routes.py`, under `/api/2.0/dxpipe/...`) are answered by the guard after
authentication: MLflow's basic-auth hook fails closed on routes it does not know.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, jsonify, request

from pipelines.registry_server import rules
from pipelines.registry_server.records import Records
from pipelines.registry_server.routes import ROUTES, error
from pipelines.registry_server.rules import Actor, Decision

_logger = logging.getLogger(__name__)

DATABASE_URI_ENV = "DXPIPE_SERVER_DATABASE_URI"
API_PREFIXES = ("/api/2.0/dxpipe", "/ajax-api/2.0/dxpipe")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A decision about one request, with what it targets (for the audit row)."""

    action: str
    decision: Decision
    model: str | None = None
    version: str | None = None
    run_id: str | None = None
    detail: str | None = None


class Guard:
    """The checks, bound to the server's records; one per worker process."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self.checks: dict[str, tuple[Callable[[], Any], Callable[[Actor, Any], Outcome]]] = {}
        self._register_checks()

    # Looking things up -------------------------------------------------------------------------------
    def actor(self, user: str | None) -> Actor:
        """The requester with their role."""
        return Actor(user, bool(user) and self.records.is_reviewer(user))

    def authors(self, model: str, version: str) -> list[str] | None:
        """The recorded creators of a version and of its run; None if the server never saw it created."""
        found = self.records.version_creator(model, version)
        if found is None:
            return None
        creator, run_id = found
        authors = [creator]
        if run_id and (run_creator := self.records.run_creator(run_id)):
            authors.append(run_creator)
        return authors

    def approved_by(self, model: str, version: str) -> str | None:
        """Who last approved this version as champion through this server (since it was created), or None."""
        created = self.records.version_created_at(model, version)
        if created is None:
            return None
        approvals = [
            e
            for e in self.records.entries(model=model, version=version, action="set_alias", allowed=True)
            if e.detail == rules.CHAMPION and e.status == 200 and e.at >= created
        ]
        return approvals[-1].user if approvals else None

    def champion_version(self, model: str) -> str | None:
        """The version the champion alias points at now (for auditing its removal)."""
        from mlflow.server.handlers import _get_model_registry_store

        try:
            return str(_get_model_registry_store().get_model_version_by_alias(model, rules.CHAMPION).version)
        except Exception:  # noqa: BLE001 - only for the audit row; absent alias or model is fine.
            return None

    # The checks, one per MLflow handler ---------------------------------------------------------------
    def _register_checks(self) -> None:
        from mlflow.protos import model_registry_pb2 as reg
        from mlflow.protos import service_pb2 as svc

        def set_alias(actor: Actor, m: Any) -> Outcome:
            what = f"setting alias '{m.alias}' on '{m.name}' version {m.version}"
            guarded = rules.is_champion_like(m.alias)
            authors = self.authors(m.name, m.version) if guarded else None
            approved_by = self.approved_by(m.name, m.version) if guarded else None
            decision = rules.set_alias(actor, m.alias, what, authors, approved_by)
            # A restoration is audited under its own action: `set_alias` rows are the four-eyes approvals.
            action = "restore_alias" if decision.restores else "set_alias"
            return Outcome(action, decision, m.name, m.version, None, m.alias)

        def delete_alias(actor: Actor, m: Any) -> Outcome:
            what = f"removing alias '{m.alias}' from '{m.name}'"
            decision = rules.delete_alias(actor, m.alias, what)
            version = self.champion_version(m.name) if decision.guarded else None
            return Outcome("delete_alias", decision, m.name, version, None, m.alias)

        def version_tag(action: str, verb: str) -> Callable[[Actor, Any], Outcome]:
            def check(actor: Actor, m: Any) -> Outcome:
                what = f"{verb} tag '{m.key}' on '{m.name}' version {m.version}"
                kind = rules.version_tag_kind(m.key)
                authors = self.authors(m.name, m.version) if kind is rules.TagKind.APPROVAL else None
                decision = rules.version_tag_change(actor, m.key, what, authors)
                return Outcome(action, decision, m.name, m.version, None, m.key)

            return check

        def create_version(actor: Actor, m: Any) -> Outcome:
            what = f"registering a version of '{m.name}'"
            decision = rules.creation_tags(actor, [t.key for t in m.tags], what)
            # Creation itself is audited after the fact, with the version number; only refusals here.
            if decision.allowed:
                decision = dataclasses.replace(decision, guarded=False)
            return Outcome("create_model_version", decision, m.name, None, m.run_id or None)

        def reviewer_only(action: str, verb: str) -> Callable[[Actor, Any], Outcome]:
            def check(actor: Actor, m: Any) -> Outcome:
                version = getattr(m, "version", None) or None
                what = f"{verb} '{m.name}'" + (f" version {version}" if version else "")
                detail = getattr(m, "new_name", None) or None
                return Outcome(action, rules.reviewer_only(actor, what), m.name, version, None, detail)

            return check

        def transition(actor: Actor, m: Any) -> Outcome:
            what = f"moving '{m.name}' version {m.version} to stage '{m.stage}'"
            decision = rules.four_eyes(actor, what, self.authors(m.name, m.version))
            return Outcome("transition_stage", decision, m.name, m.version, None, m.stage)

        def model_tag(action: str, verb: str) -> Callable[[Actor, Any], Outcome]:
            def check(actor: Actor, m: Any) -> Outcome:
                what = f"{verb} tag '{m.key}' on registered model '{m.name}'"
                return Outcome(action, rules.model_tag_change(actor, m.key, what), m.name, None, None, m.key)

            return check

        def run_tags(
            action: str, verb: str, keys: Callable[[Any], list[str]]
        ) -> Callable[[Actor, Any], Outcome]:
            def check(actor: Actor, m: Any) -> Outcome:
                run_id = m.run_id or getattr(m, "run_uuid", "") or None
                found = keys(m)
                what = f"{verb} tag(s) {', '.join(found)} on run {run_id}"
                decision = rules.run_tag_change(actor, found, what)
                return Outcome(action, decision, None, None, run_id, ",".join(found)[:2000])

            return check

        self.checks = {
            "_set_registered_model_alias": (reg.SetRegisteredModelAlias, set_alias),
            "_delete_registered_model_alias": (reg.DeleteRegisteredModelAlias, delete_alias),
            "_set_model_version_tag": (reg.SetModelVersionTag, version_tag("set_version_tag", "setting")),
            "_delete_model_version_tag": (
                reg.DeleteModelVersionTag,
                version_tag("delete_version_tag", "deleting"),
            ),
            "_create_model_version": (reg.CreateModelVersion, create_version),
            "_delete_model_version": (
                reg.DeleteModelVersion,
                reviewer_only("delete_model_version", "deleting"),
            ),
            "_delete_registered_model": (
                reg.DeleteRegisteredModel,
                reviewer_only("delete_registered_model", "deleting"),
            ),
            "_rename_registered_model": (
                reg.RenameRegisteredModel,
                reviewer_only("rename_registered_model", "renaming"),
            ),
            "_transition_stage": (reg.TransitionModelVersionStage, transition),
            "_set_registered_model_tag": (reg.SetRegisteredModelTag, model_tag("set_model_tag", "setting")),
            "_delete_registered_model_tag": (
                reg.DeleteRegisteredModelTag,
                model_tag("delete_model_tag", "deleting"),
            ),
            "_set_tag": (svc.SetTag, run_tags("set_run_tag", "setting", lambda m: [m.key])),
            "_delete_tag": (svc.DeleteTag, run_tags("delete_run_tag", "deleting", lambda m: [m.key])),
            "_log_batch": (svc.LogBatch, run_tags("log_batch", "logging", lambda m: [t.key for t in m.tags])),
        }

    # Hooks -------------------------------------------------------------------------------------------
    def before_request(self) -> Response | None:
        """Answers dxpipe's routes; checks guarded MLflow requests before MLflow's auth hook and handler."""
        endpoint = request.endpoint or ""
        if endpoint in ROUTES:
            user, refusal = _authenticate()
            if refusal is not None:
                return refusal
            g.dxpipe_actor = self.actor(user)
            return ROUTES[endpoint][0](self)
        if endpoint not in self.checks:
            return None
        user, _ = _authenticate()
        actor = self.actor(user)
        message_class, check = self.checks[endpoint]
        try:
            from mlflow.server.handlers import _get_normalized_request_json, _get_request_message
            from mlflow.utils.proto_json_utils import parse_dict

            # MLflow's own parser: the guard reads the request exactly as the handler will.
            message = _get_request_message(message_class())
            if request.method != "GET":
                # MLflow keeps a partially parsed message when the JSON does not fit the proto (the
                # handler's schema rejects it later); the guard must not decide on a partial parse.
                parse_dict(_get_normalized_request_json(request), message_class())
        except Exception as exc:  # noqa: BLE001 - any unparsable body is refused (fail closed).
            outcome = Outcome(endpoint.strip("_"), Decision(False, f"malformed request: {exc}", 400))
        else:
            outcome = check(actor, message)
        decision = outcome.decision
        if not decision.allowed:
            self._audit(actor, outcome, status=decision.status)
            return _refusal(decision)
        if decision.guarded:
            # Written before the handler runs: if this insert fails the change is refused, never unaudited.
            g.dxpipe_audit_id = self._audit(actor, outcome, status=None)
        return None

    def after_request(self, response: Response) -> Response:
        """Fills in the audited request's outcome and records the creators of runs and versions."""
        audit_id = g.pop("dxpipe_audit_id", None)
        if audit_id is not None:
            try:
                self.records.set_status(audit_id, response.status_code)
            except (
                Exception
            ):  # the change is done and its row exists; a missing status reads "outcome unknown".
                _logger.exception("dxpipe: recording the status of audit row %s failed", audit_id)
        if not 200 <= response.status_code < 300:
            return response
        endpoint = request.endpoint or ""
        user = getattr(g, "mlflow_authenticated_user", None)
        if endpoint not in ("_create_run", "_create_model_version", "_rename_registered_model") or not user:
            return response
        try:
            self._after_success(endpoint, user, response.get_json(silent=True) or {})
        except Exception:  # the change happened; a missing author record makes four-eyes fail closed.
            _logger.exception("dxpipe: recording the creator after %s failed", endpoint)
        return response

    def _after_success(self, endpoint: str, user: str, body: dict[str, Any]) -> None:
        from mlflow.entities import RunTag
        from mlflow.entities.model_registry import ModelVersionTag
        from mlflow.server.handlers import _get_model_registry_store, _get_tracking_store

        if endpoint == "_create_run":
            run_id = body.get("run", {}).get("info", {}).get("run_id")
            if run_id:
                self.records.record_run(run_id, user)
                _get_tracking_store().set_tag(run_id, RunTag(rules.AUTHOR_TAG, user))
        elif endpoint == "_create_model_version":
            mv = body.get("model_version", {})
            if mv.get("name") and mv.get("version"):
                self.records.record_version(mv["name"], str(mv["version"]), mv.get("run_id"), user)
                _get_model_registry_store().set_model_version_tag(
                    mv["name"], str(mv["version"]), ModelVersionTag(rules.AUTHOR_TAG, user)
                )
        else:
            name = (request.get_json(silent=True) or {}).get("name")
            new = body.get("registered_model", {}).get("name")
            if name and new:
                self.records.rename_model(name, new)

    def _audit(self, actor: Actor, outcome: Outcome, *, status: int | None) -> int:
        return self.records.append(
            user=actor.user,
            action=outcome.action,
            model=outcome.model,
            version=outcome.version,
            run_id=outcome.run_id,
            detail=outcome.detail,
            allowed=outcome.decision.allowed,
            status=status,
            reason=outcome.decision.reason,
        )


def _authenticate() -> tuple[str | None, Response | None]:
    """The authenticated user, or (None, MLflow's 401 challenge)."""
    from mlflow.server import auth

    result = auth.authenticate_request()
    if isinstance(result, Response):
        return None, result
    return result.username, None


def _refusal(decision: Decision) -> Response:
    code = "UNAUTHENTICATED" if decision.status == rules.UNAUTHENTICATED else "PERMISSION_DENIED"
    if decision.status == 400:
        code = "INVALID_PARAMETER_VALUE"
    response = jsonify({"error_code": code, "message": f"dxpipe: {decision.reason}"})
    response.status_code = decision.status
    if decision.status == rules.UNAUTHENTICATED:
        response.headers["WWW-Authenticate"] = 'Basic realm="mlflow"'
    return response


def install(app: Flask, records: Records) -> Guard:
    """Adds dxpipe's guard, after-request recorder and routes to an MLflow Flask app with basic auth.

    Args:
        app: MLflow's Flask app, after `mlflow.server.auth.create_app` ran on it.
        records: Where the server keeps reviewers, creators and the audit trail.

    Returns:
        The installed guard.
    """
    from mlflow.server import auth

    guard = Guard(records)
    for endpoint, (_, suffix, methods) in ROUTES.items():
        for prefix in API_PREFIXES:
            # Never called through Flask: the guard answers these routes (see the module docstring).
            app.add_url_rule(prefix + suffix, endpoint, _unreachable, methods=methods)
    hooks = app.before_request_funcs.setdefault(None, [])
    position = hooks.index(auth._before_request) if auth._before_request in hooks else 0
    hooks.insert(position, guard.before_request)
    app.after_request(guard.after_request)
    return guard


def _unreachable() -> Response:
    return error(500, "INTERNAL_ERROR", "route reached without dxpipe's guard")


def create_app() -> Any:
    """The `mlflow.app` entry point: MLflow's basic-auth app with dxpipe's rules (see the module docstring).

    The server's own tables live in `DXPIPE_SERVER_DATABASE_URI`, by default the auth app's database.

    Returns:
        What MLflow's basic-auth `create_app` returns (the FastAPI app under uvicorn, else the Flask app).
    """
    from mlflow.server import app as flask_app
    from mlflow.server import auth

    served = auth.create_app(flask_app)
    install(flask_app, Records(os.environ.get(DATABASE_URI_ENV) or auth.auth_config.database_uri))
    return served
