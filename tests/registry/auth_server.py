"""The authenticated shared server for tests: real PostgreSQL + `mlflow server --app-name dxpipe`, once per session.

Started with the same code users run (`pipelines.registry_server.deploy`). The cluster lives under a
`mkdtemp` directory in /tmp rather than pytest's tmp_path: PostgreSQL refuses to run as root, so its
commands run as the `postgres` user, which cannot traverse pytest's 0700 directories.

Users (passwords are throwaway):
    alice, bob   data scientists (create runs, register versions)
    rita, rick   reviewers (rick also trains models: the four-eyes rule must stop him approving his own)
    admin        MLflow's bootstrap admin (not a reviewer: admins are subject to the approval rules too)
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from pipelines.registry_server.deploy import Deployment

DATA_SCIENTISTS = ("alice", "bob")
REVIEWERS = ("rita", "rick")


def password(user: str) -> str:
    """The test password of `user` (MLflow requires at least 12 characters)."""
    return f"{user}-test-password"


@dataclasses.dataclass
class AuthServer:
    """A running deployment plus helpers to call it as a given user."""

    deployment: Deployment

    @property
    def url(self) -> str:
        """The tracking URI."""
        return self.deployment.url

    def auth(self, user: str | None) -> tuple[str, str] | None:
        """Basic-auth credentials of a test user (admin included); None for an anonymous request."""
        if user is None:
            return None
        if user == "admin":
            return self.deployment.admin_auth()
        return user, password(user)

    def call(
        self, method: str, path: str, user: str | None, *, prefix: str = "/api/2.0", **kwargs
    ) -> requests.Response:
        """One REST call as `user` (`path` below the prefix, e.g. `/mlflow/registered-models/alias`)."""
        kwargs.setdefault("timeout", 60)
        return requests.request(method, f"{self.url}{prefix}{path}", auth=self.auth(user), **kwargs)

    def audit(self, **params: str) -> list[dict]:
        """The server's audit rows (oldest first), read as admin."""
        got = self.call("GET", "/dxpipe/audit", "admin", params=params)
        got.raise_for_status()
        return got.json()["entries"]


@pytest.fixture(scope="session", name="auth_server")
def auth_server_fixture() -> Iterator[AuthServer]:
    """PostgreSQL and the dxpipe MLflow app on loopback, with the test users; stopped after the session."""
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.fail("runuser (util-linux) is required to start PostgreSQL as root")
    root = Path(tempfile.mkdtemp(prefix="dxpipe-auth-server-"))
    deployment = Deployment(root)
    deployment.start()
    try:
        for user in DATA_SCIENTISTS:
            deployment.add_user(user, password(user))
        for user in REVIEWERS:
            deployment.add_user(user, password(user), reviewer=True)
        yield AuthServer(deployment)
    finally:
        deployment.stop()
        shutil.rmtree(root, ignore_errors=True)
