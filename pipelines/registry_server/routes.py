"""dxpipe's own routes on the shared server, under `/api/2.0/dxpipe` and `/ajax-api/2.0/dxpipe`.

- `GET whoami`: `{"user", "is_reviewer", "is_admin"}` for the authenticated caller (what
  `pipelines.identity` asks).
- `GET model-versions/provenance?name=&version=`: the recorded creators of a version and of its run, its
  authors, and who last approved it as champion (404 when the server never saw it created).
- `GET audit?model=&version=&action=&limit=`: the audit rows, oldest first.
- `GET reviewers`; `POST reviewers/grant` / `reviewers/revoke` `{"user"}` (admins only; audited).

The guard in `app.py` authenticates the caller and calls these views directly (see its docstring), so each
view finds the caller in `flask.g.dxpipe_actor`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Response, g, jsonify, request

from pipelines.registry_server import rules
from pipelines.registry_server.rules import Actor

if TYPE_CHECKING:
    from pipelines.registry_server.app import Guard

_logger = logging.getLogger(__name__)


def error(status: int, code: str, message: str) -> Response:
    """A JSON error in MLflow's shape (`error_code`, `message`)."""
    response = jsonify({"error_code": code, "message": f"dxpipe: {message}"})
    response.status_code = status
    return response


def _whoami(guard: Guard) -> Response:
    actor: Actor = g.dxpipe_actor
    return jsonify({"user": actor.user, "is_reviewer": actor.is_reviewer, "is_admin": _is_admin(actor.user)})


def _provenance(guard: Guard) -> Response:
    name, version = request.args.get("name", ""), request.args.get("version", "")
    if not name or not version:
        return error(400, "INVALID_PARAMETER_VALUE", "query parameters 'name' and 'version' are required.")
    found = guard.records.version_creator(name, version)
    if found is None:
        return error(
            404,
            "RESOURCE_DOES_NOT_EXIST",
            f"no creator is recorded for '{name}' version {version} (unknown, or registered before the "
            "dxpipe server app ran); its author cannot be established.",
        )
    creator, run_id = found
    run_creator = guard.records.run_creator(run_id) if run_id else None
    champion = [
        e
        for e in guard.records.entries(model=name, version=version, action="set_alias", allowed=True)
        if e.detail == rules.CHAMPION and e.status == 200
    ]
    return jsonify(
        {
            "name": name,
            "version": version,
            "run_id": run_id,
            "created_by": creator,
            "run_created_by": run_creator,
            "authors": sorted({creator, *([run_creator] if run_creator else [])}),
            "champion_set_by": champion[-1].user if champion else None,
            "champion_set_at": champion[-1].at if champion else None,
        }
    )


def _audit_entries(guard: Guard) -> Response:
    try:
        limit = min(int(request.args.get("limit", "1000")), 10000)
    except ValueError:
        return error(
            400, "INVALID_PARAMETER_VALUE", f"limit must be an integer, got {request.args['limit']!r}."
        )
    entries = guard.records.entries(
        model=request.args.get("model") or None,
        version=request.args.get("version") or None,
        action=request.args.get("action") or None,
        limit=limit,
    )
    return jsonify({"entries": [e.to_dict() for e in entries]})


def _reviewers(guard: Guard) -> Response:
    return jsonify({"reviewers": guard.records.list_reviewers()})


def _set_reviewer(grant: bool) -> Callable[[Guard], Response]:
    def view(guard: Guard) -> Response:
        from mlflow.server import auth

        actor: Actor = g.dxpipe_actor
        body = request.get_json(silent=True) or {}
        user = body.get("user")
        if not _is_admin(actor.user):
            guard.records.append(
                user=actor.user,
                action="grant_reviewer" if grant else "revoke_reviewer",
                detail=str(user),
                allowed=False,
                status=403,
                reason=f"'{actor.user}' is not an admin",
            )
            return error(
                403, "PERMISSION_DENIED", "only an MLflow admin grants or revokes the reviewer role."
            )
        if not isinstance(user, str) or not auth.store.has_user(user):
            return error(
                400, "INVALID_PARAMETER_VALUE", f"'user' must name an existing MLflow user, got {user!r}."
            )
        # MLflow's own permission check still runs after dxpipe's: removing the champion alias, deleting or
        # renaming needs MANAGE on the registered model, so a reviewer holds MANAGE on all of them.
        if grant:
            auth.store.grant_user_permission(user, "registered_model", "*", "MANAGE")
        else:
            try:
                auth.store.revoke_user_resource_permission(user, "registered_model", "*")
            except Exception:  # noqa: BLE001 - no such grant: nothing to revoke; the role is what dxpipe checks.
                _logger.info("dxpipe: %s held no wildcard registered_model grant", user)
        changed = guard.records.set_reviewer(user, grant, actor.user or "")
        return jsonify({"user": user, "is_reviewer": grant, "changed": changed})

    return view


def _is_admin(user: str | None) -> bool:
    from mlflow.server import auth

    if not user:
        return False
    try:
        return bool(auth.store.get_user(user).is_admin)
    except Exception:  # noqa: BLE001 - a user deleted mid-request is simply not an admin.
        return False


# endpoint name -> (view, path suffix, methods)
ROUTES: dict[str, tuple[Callable[[Guard], Response], str, list[str]]] = {
    "dxpipe_whoami": (_whoami, "/whoami", ["GET"]),
    "dxpipe_provenance": (_provenance, "/model-versions/provenance", ["GET"]),
    "dxpipe_audit": (_audit_entries, "/audit", ["GET"]),
    "dxpipe_reviewers": (_reviewers, "/reviewers", ["GET"]),
    "dxpipe_grant_reviewer": (_set_reviewer(True), "/reviewers/grant", ["POST"]),
    "dxpipe_revoke_reviewer": (_set_reviewer(False), "/reviewers/revoke", ["POST"]),
}
