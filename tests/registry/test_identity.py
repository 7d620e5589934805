"""`pipelines.identity`: who acts, from the OS account or the server's whoami; names compared normalised."""

from __future__ import annotations

import base64
import json
import os
import pwd
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipelines.identity import IdentityError, current_identity, normalise_name
from pipelines.redact import redact_uri


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice", "alice"),
        ("  Alice ", "alice"),
        ("ALICE\u200b", "alice"),  # zero-width space
        ("al\u00adice", "alice"),  # soft hyphen
        ("\u202ealice\u202c", "alice"),  # bidi override
        ("\uff41\uff4c\uff49\uff43\uff45", "alice"),  # full-width forms (NFKC)
        ("Straße", "strasse"),  # casefold, not lower
        ("\ufeffbob\t", "bob"),
    ],
)
def test_normalise_name(raw, expected):
    assert normalise_name(raw) == expected


def test_embedded_identity_is_the_os_account_not_the_environment(monkeypatch):
    monkeypatch.setenv("LOGNAME", "dr-somebody-else")
    monkeypatch.setenv("USER", "dr-somebody-else")
    identity = current_identity("sqlite:////tmp/x/mlflow.db")
    assert identity.name == pwd.getpwuid(os.getuid()).pw_name
    assert identity.authenticated is False and identity.source == f"os-account uid {os.getuid()}"


class _Whoami(BaseHTTPRequestHandler):
    users = {"alice": "pw-a"}
    status = 200
    body: object = None

    def do_GET(self):
        if self.path != "/api/2.0/dxpipe/whoami":
            self.send_error(404)
            return
        header = self.headers.get("Authorization", "")
        user = None
        if header.startswith("Basic "):
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            user = name if self.users.get(name) == password else None
        if type(self).status != 200:
            self.send_error(type(self).status)
            return
        if user is None:
            self.send_error(401)
            return
        payload = type(self).body if type(self).body is not None else {"user": user, "is_reviewer": False}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def whoami(monkeypatch):
    """A stand-in for the dxpipe server plugin's whoami endpoint (the plugin lives with the server work)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Whoami)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    _Whoami.status, _Whoami.body = 200, None


def test_server_identity_uses_mlflows_credentials(whoami, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-a")
    identity = current_identity(whoami)
    assert (identity.name, identity.authenticated) == ("alice", True)
    assert identity.source == f"mlflow-server {whoami}"


def test_wrong_credentials_are_refused(whoami, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    with pytest.raises(IdentityError, match=r"did not accept your credentials \(HTTP 401\)"):
        current_identity(whoami)


def test_no_credentials_are_refused(whoami):
    with pytest.raises(IdentityError, match=r"set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"):
        current_identity(whoami)


def test_a_server_without_the_plugin_cannot_vouch(whoami, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-a")
    _Whoami.status = 404
    with pytest.raises(IdentityError, match=r"cannot vouch for who you are \(HTTP 404.*dxpipe server plugin"):
        current_identity(whoami)


@pytest.mark.parametrize("body", [{"name": "alice"}, {"user": ""}, {"user": "\u200b"}, ["alice"]])
def test_a_whoami_without_a_user_is_refused(whoami, monkeypatch, body):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-a")
    _Whoami.body = body
    with pytest.raises(IdentityError, match=r"without a 'user' field|reports no user"):
        current_identity(whoami)


def test_an_unreachable_server_is_a_clear_error_without_credentials_in_it():
    with pytest.raises(
        IdentityError, match=r"cannot ask the MLflow server at http://\*\*\*@127.0.0.1:9/"
    ) as err:
        current_identity("http://bob:s3cret@127.0.0.1:9/")
    assert "s3cret" not in str(err.value)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://bob:s3cret@host:5000/", "http://***@host:5000/"),
        ("https://host/mlflow?token=abc&x=1", "https://host/mlflow?token=***&x=1"),
        ("postgresql://mlflow:pw@db:5432/mlflow", "postgresql://***@db:5432/mlflow"),
        ("sqlite:////srv/wd/mlflow.db", "sqlite:////srv/wd/mlflow.db"),
        ("/plain/path", "/plain/path"),
        (None, ""),
    ],
)
def test_redact_uri(uri, shown):
    assert redact_uri(uri) == shown
