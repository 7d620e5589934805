"""Routing, status and metadata: reference sections 1-3 and the routing rows of section 7's error table."""

from __future__ import annotations

import pytest


def error_of(response) -> str:
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    return body["error"]


@pytest.mark.parametrize(
    "path",
    ["/", "/v2/models/half_plus_two", "/index", "/v1", "/V2/models/x:predict", "/monitoring"],
)
def test_paths_outside_v1_are_html_404(api, path):
    for response in (api.get(path), api.post(path, {"instances": [1.0]})):
        assert response.status_code == 404
        assert response.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/foo"),
        ("GET", "/v1/models/half_plus_two:predict"),
        ("POST", "/v1/models/half_plus_two"),
        ("POST", "/v1/models/half_plus_two:explain"),
        ("POST", "/v1/models/half_plus_two/metadata"),
        ("GET", "/v1/models/half_plus_two/versions/abc"),
        ("GET", "/v1/models/half_plus_two/version/1"),
        ("GET", "/v1/models/half_plus_two/label/stable"),
        ("GET", "/v1/models/half_plus_two/"),
        ("POST", "/v1/models/half_plus_two:PREDICT"),
        ("GET", "/v1/models/half_plus_two/versions/1/labels/stable"),
        ("PUT", "/v1/models/half_plus_two"),
        ("DELETE", "/v1/models/half_plus_two"),
        ("PATCH", "/v1/models/half_plus_two:predict"),
    ],
)
def test_malformed_paths_under_v1_are_400(api, method, path):
    response = api.session.request(method, api.url + path, data=b'{"instances": [1.0]}', timeout=10)
    assert response.status_code == 400
    assert error_of(response) == f"Malformed request: {method} {path}"


def test_head_is_malformed_without_a_body(api):
    response = api.session.head(api.url + "/v1/models/half_plus_two", timeout=10)
    assert response.status_code == 400
    assert response.content == b""
    assert int(response.headers["Content-Length"]) > 0


def test_query_string_is_ignored_and_paths_are_case_insensitive(api):
    response = api.get("/V1/MODELS/half_plus_two/VERSIONS/1?debug=1&x=/v2")
    assert response.status_code == 200
    assert response.json()["model_version_status"][0]["version"] == "1"
    assert api.post("/v1/Models/half_plus_two:predict?x=1", {"instances": [2.0]}).json() == {
        "predictions": [4.0]
    }
    # The model name itself is matched exactly.
    assert api.get("/v1/models/HALF_PLUS_TWO").status_code == 404


def test_malformed_message_quotes_path_without_query(api):
    response = api.get("/v1/nothing?a=b")
    assert error_of(response) == "Malformed request: GET /v1/nothing"


def test_missing_model_name(api):
    for path in ("/v1/models", "/v1/models/versions/1", "/v1/models/versions/1/metadata"):
        response = api.get(path)
        assert response.status_code == 400, path
        assert error_of(response) == "Missing model name in request."


def test_version_overflowing_int64(api):
    response = api.get("/v1/models/half_plus_two/versions/9223372036854775808")
    assert response.status_code == 400
    assert error_of(response) == "Failed to convert version: 9223372036854775808 to numeric."
    response = api.post(
        "/v1/models/half_plus_two/versions/99999999999999999999:predict", {"instances": [1.0]}
    )
    assert response.status_code == 400
    assert "Failed to convert version" in error_of(response)


def test_status_of_all_versions_descending(api):
    response = api.get("/v1/models/half_plus_two")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {
        "model_version_status": [
            {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        ]
    }


def test_status_of_one_version_and_unknowns(api):
    assert api.get("/v1/models/half_plus_two/versions/1").json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    response = api.get("/v1/models/half_plus_two/versions/3")  # on disk but outside the policy
    assert response.status_code == 404
    assert error_of(response) == "Could not find version 3 of model half_plus_two"
    response = api.get("/v1/models/nope")
    assert response.status_code == 404
    assert error_of(response) == "Could not find any versions of model nope"
    response = api.get("/v1/models/empty")  # configured, but no version on disk
    assert response.status_code == 404
    assert error_of(response) == "Could not find any versions of model empty"


def test_status_ignores_labels_even_unknown_ones(api):
    all_versions = api.get("/v1/models/half_plus_two").json()
    assert api.get("/v1/models/half_plus_two/labels/stable").json() == all_versions
    response = api.get("/v1/models/half_plus_two/labels/no_such_label")
    assert response.status_code == 200
    assert response.json() == all_versions


def test_percent_encoded_model_name(api):
    assert api.get("/v1/models/half%5Fplus%5Ftwo").status_code == 200
    response = api.get("/v1/models/a%20b")
    assert error_of(response) == "Could not find any versions of model a b"


def _dim(size: int) -> dict:
    return {"size": str(size), "name": ""}


def test_metadata_shape_and_nesting(api):
    response = api.get("/v1/models/half_plus_two/metadata")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["model_spec", "metadata"]
    assert body["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "2"}
    assert list(body["metadata"]) == ["signature_def"]
    assert list(body["metadata"]["signature_def"]) == ["signature_def"]
    defs = body["metadata"]["signature_def"]["signature_def"]
    assert set(defs) == {"serving_default", "__saved_model_init_op"}
    serving = defs["serving_default"]
    assert serving["method_name"] == "tensorflow/serving/predict"
    assert serving["inputs"]["x"] == {
        "dtype": "DT_FLOAT",
        "tensor_shape": {"dim": [_dim(-1)], "unknown_rank": False},
        "name": "serving_default_x:0",
    }
    assert serving["outputs"]["y"]["dtype"] == "DT_FLOAT"
    assert serving["outputs"]["y"]["tensor_shape"] == {"dim": [_dim(-1)], "unknown_rank": False}
    assert "defaults" in serving  # printed empty, like TF Serving's always-print option


def test_metadata_versions_and_labels(api):
    for path, version in (
        ("/v1/models/half_plus_two/versions/1/metadata", "1"),
        ("/v1/models/half_plus_two/labels/stable/metadata", "1"),
        ("/v1/models/half_plus_two/labels/canary/metadata", "2"),
    ):
        assert api.get(path).json()["model_spec"]["version"] == version, path


def test_metadata_of_multi_dtype_model_uses_proto_spelling(api):
    defs = api.get("/v1/models/dtypes/metadata").json()["metadata"]["signature_def"]["signature_def"]
    assert defs["int64"]["inputs"]["x"]["dtype"] == "DT_INT64"
    assert defs["any_shape"]["inputs"]["x"]["tensor_shape"] == {"dim": [], "unknown_rank": True}
    assert defs["matrix"]["inputs"]["x"]["tensor_shape"]["dim"] == [_dim(-1), _dim(2), _dim(3)]
    assert defs["no_inputs"]["inputs"] == {}


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v1/models/nope/metadata", 404, "Servable not found for request: Latest(nope)"),
        (
            "/v1/models/half_plus_two/versions/3/metadata",
            404,
            "Servable not found for request: Specific(half_plus_two, 3)",
        ),
        ("/v1/models/half_plus_two/labels/beta/metadata", 400, "Unrecognized servable version label: beta"),
        ("/v1/models/nope/labels/stable/metadata", 400, "Unrecognized servable version label: stable"),
    ],
)
def test_metadata_errors(api, path, status, message):
    response = api.get(path)
    assert response.status_code == status
    assert error_of(response) == message


def test_uppercase_metadata_is_a_status_request(api):
    # The regex is case-insensitive but the sub-resource compare is exact: TF Serving answers status.
    assert "model_version_status" in api.get("/v1/models/half_plus_two/METADATA").json()


def test_options_cors_preflight(api):
    ok = api.session.options(
        api.url + "/v1/models/half_plus_two:predict", headers={"Origin": "https://x.org"}
    )
    assert ok.status_code == 200
    assert ok.content == b""
    ok = api.session.options(api.url + "/v1/anything/at/all", headers={"Origin": "http://localhost:3000"})
    assert ok.status_code == 200
    missing = api.session.options(api.url + "/v1/models/half_plus_two:predict")
    assert missing.status_code == 400
    assert missing.content == b""
    wrong = api.session.options(api.url + "/v1/models/half_plus_two", headers={"Origin": "null"})
    assert wrong.status_code == 400
    assert api.session.options(api.url + "/v2/x", headers={"Origin": "https://x.org"}).status_code == 404
