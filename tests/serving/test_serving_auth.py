"""Bearer tokens (hashed, per-model scopes, public probes) and HTTPS, over real sockets on loopback."""

from __future__ import annotations

import json
import ssl
import subprocess

import pytest
import requests

from serving import auth
from serving.auth import AuthPolicy
from serving.config import ModelConfig
from serving.errors import ServingError
from serving.server import ServerOptions, ServerThread, build_parser, options_from_args

PREDICT = "/v1/models/half_plus_two:predict"  # the latest version, 3: 0.5 * x + 4
BODY = {"instances": [2.0]}


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    """Two tokens: one for half_plus_two only, one for every model; the file stores digests only."""
    scoped, scoped_entry = auth.new_entry("triage-frontend", ["half_plus_two"])
    admin, admin_entry = auth.new_entry("ops", ["*"])
    path = tmp_path_factory.mktemp("auth") / "tokens.json"
    path.write_text(json.dumps({"tokens": [scoped_entry, admin_entry]}))
    assert scoped not in path.read_text() and admin not in path.read_text()
    return {"scoped": scoped, "admin": admin, "file": str(path)}


@pytest.fixture(scope="module")
def secured(model_store, tokens):
    options = ServerOptions(
        models=(
            ModelConfig(name="half_plus_two", base_path=str(model_store.root / "half_plus_two")),
            ModelConfig(name="multi", base_path=str(model_store.root / "multi")),
        ),
        port=0,
        file_system_poll_seconds=0,
        auth=AuthPolicy.load(tokens["file"], public=["status"]),
    )
    with ServerThread(options) as running:
        yield running


def call(server, method, path, token=None, header=None, **kwargs):
    headers = (
        {"Authorization": header if header is not None else f"Bearer {token}"} if token or header else {}
    )
    return requests.request(method, server.url + path, headers=headers, timeout=30, **kwargs)


def assert_tf_error(response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    (message,) = response.json().values()
    assert list(response.json()) == ["error"]
    assert fragment in message


def test_no_token_is_401_with_a_bearer_challenge(secured):
    response = call(secured, "POST", PREDICT, json=BODY)
    assert_tf_error(response, 401, "Missing bearer token")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="dxpipe"'


@pytest.mark.parametrize(
    "header",
    ["Bearer not-a-token", "Bearer ", "Basic dXNlcjpwYXNz", "bearer", "Token abc"],
    ids=["wrong-token", "empty", "basic", "no-token", "other-scheme"],
)
def test_wrong_token_is_401(secured, header):
    assert_tf_error(call(secured, "POST", PREDICT, header=header, json=BODY), 401, "bearer token")


def test_the_digest_itself_is_not_a_token(secured, tokens):
    digest = auth.digest_of(tokens["scoped"]).hex()
    assert_tf_error(call(secured, "POST", PREDICT, token=digest, json=BODY), 401, "Invalid bearer token")


def test_a_token_answers_within_its_scope(secured, tokens):
    response = call(secured, "POST", PREDICT, token=tokens["scoped"], json=BODY)
    assert response.json() == {"predictions": [5.0]}
    metadata = call(secured, "GET", "/v1/models/half_plus_two/metadata", token=tokens["scoped"])
    assert metadata.status_code == 200


def test_wrong_model_scope_is_403(secured, tokens):
    response = call(
        secured, "POST", "/v1/models/multi:predict", token=tokens["scoped"], json={"instances": []}
    )
    assert_tf_error(response, 403, "The token of 'triage-frontend' may not use model 'multi'")
    metadata = call(secured, "GET", "/v1/models/multi/metadata", token=tokens["scoped"])
    assert_tf_error(metadata, 403, "may not use model 'multi'")


def test_a_wildcard_token_uses_every_model(secured, tokens):
    response = call(secured, "POST", "/v1/models/multi/metadata", token=tokens["admin"])
    assert response.status_code != 401 and response.status_code != 403
    assert call(secured, "GET", "/v1/models/multi/metadata", token=tokens["admin"]).status_code == 200


def test_public_status_for_probes_and_private_everything_else(secured):
    status = call(secured, "GET", "/v1/models/half_plus_two")
    assert status.status_code == 200
    assert "model_version_status" in status.json()
    assert call(secured, "GET", "/v1/models/half_plus_two/metadata").status_code == 401
    assert call(secured, "GET", "/monitoring/prometheus/metrics").status_code == 401
    # Unknown paths do not tell an anonymous caller what exists.
    assert call(secured, "GET", "/nothing/here").status_code == 401


def test_token_file_errors_name_the_entry_and_the_fix(tmp_path):
    path = tmp_path / "tokens.json"
    cases = [
        ("{", "is not JSON"),
        ('{"tokens": {}}', 'must be {"tokens": [...]}'),
        ('{"tokens": []}', "holds no token"),
        (
            '{"tokens": [{"name": "a", "sha256": "secret-token", "models": ["m"]}]}',
            "token 0 (a): 'sha256' must be 64",
        ),
        ('{"tokens": [{"name": "a", "sha256": "' + "0" * 64 + '", "models": []}]}', "'models' must list"),
        ('{"tokens": [{"name": "a", "sha256": "' + "0" * 64 + '", "models": ["m"], "role": 1}]}', "only"),
    ]
    for text, fragment in cases:
        path.write_text(text)
        with pytest.raises(ServingError, match=None) as caught:
            AuthPolicy.load(str(path))
        assert fragment in str(caught.value), (text, str(caught.value))
    with pytest.raises(ServingError, match="not a route kind"):
        AuthPolicy([auth.TokenGrant("a", b"0" * 32, frozenset("*"))], public=["predict"])
    with pytest.raises(ServingError, match="Cannot read --auth_token_file"):
        AuthPolicy.load(str(tmp_path / "missing.json"))


def test_public_routes_need_a_token_file(tmp_path):
    args = build_parser().parse_args(["--model_base_path", str(tmp_path), "--auth_public", "status"])
    with pytest.raises(ServingError, match="--auth_public needs --auth_token_file"):
        options_from_args(args)


def test_new_token_command_prints_a_token_matching_its_entry(capsys):
    assert auth.main(["new", "--name", "frontend", "--model", "wdbc"]) == 0
    out = capsys.readouterr().out.splitlines()
    token = out[0].rsplit(" ", 1)[1]
    entry = json.loads(out[1].split(": ", 1)[1])
    assert entry == {"name": "frontend", "sha256": auth.digest_of(token).hex(), "models": ["wdbc"]}


# ----------------------------------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_with_built_in_certificate_flags(model_store, certificate, tokens, tmp_path):
    cert, key = certificate
    args = build_parser().parse_args(
        [
            "--model_name=half_plus_two",
            f"--model_base_path={model_store.root / 'half_plus_two'}",
            "--rest_api_port=0",
            f"--ssl_certfile={cert}",
            f"--ssl_keyfile={key}",
            f"--auth_token_file={tokens['file']}",
            "--file_system_poll_wait_seconds=0",
        ]
    )
    options = options_from_args(args)
    with ServerThread(options) as running:
        assert running.url.startswith("https://")
        response = requests.post(
            running.url + PREDICT,
            json=BODY,
            headers={"Authorization": f"Bearer {tokens['scoped']}"},
            verify=str(cert),
            timeout=30,
        )
        assert response.json() == {"predictions": [5.0]}
        # Plain HTTP on the TLS port gets no answer; a client that does not trust the certificate fails.
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(running.url.replace("https", "http") + "/v1/models/half_plus_two", timeout=10)
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(running.url + "/v1/models/half_plus_two", timeout=10)


def test_tls_flag_errors(certificate, tmp_path):
    cert, key = certificate
    base = ["--model_base_path", str(tmp_path)]
    with pytest.raises(ServingError, match="go together"):
        options_from_args(build_parser().parse_args([*base, f"--ssl_certfile={cert}"]))
    with pytest.raises(ServingError, match="cannot be used"):
        options_from_args(
            build_parser().parse_args([*base, f"--ssl_certfile={cert}", f"--ssl_keyfile={cert}"])
        )
    with pytest.raises(ServingError, match="Cannot read"):
        options_from_args(
            build_parser().parse_args([*base, "--ssl_certfile=/nope.pem", f"--ssl_keyfile={key}"])
        )
    assert ssl.TLSVersion.TLSv1_2  # the floor set by serving.server.tls_context


def test_dxpipe_predict_sends_the_token_from_a_file(secured, tokens, tmp_path, capsys):
    from serving import cli

    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([2.0, 4.0]))
    token_file = tmp_path / "token"
    token_file.write_text(tokens["scoped"] + "\n")
    argv = ["predict", "half_plus_two", "--json", str(rows), "--server", secured.url]
    assert cli.main([*argv, "--token_file", str(token_file)]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [5.0, 6.0]
    assert cli.main(argv) == 2
    assert "Missing bearer token" in capsys.readouterr().err
