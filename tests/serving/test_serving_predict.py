""":predict: request formats, value conversion, response formats, and every predict row of the error table."""

from __future__ import annotations

import base64
import gzip
import json

import pytest

PREDICT = "/v1/models/half_plus_two/versions/1:predict"  # y = 0.5 x + 2
MULTI = "/v1/models/multi:predict"
DTYPES = "/v1/models/dtypes:predict"


def error_of(response, status=400) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    return body["error"]


def test_row_format_single_input(api):
    response = api.post(PREDICT, {"instances": [1.0, 2.0, 5.0]})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"predictions": [2.5, 3.0, 4.5]}


def test_row_format_single_input_as_objects(api):
    assert api.post(PREDICT, {"instances": [{"x": 1.0}, {"x": 3}]}).json() == {"predictions": [2.5, 3.5]}


def test_row_format_mixing_values_and_objects(api):
    assert error_of(api.post(PREDICT, {"instances": [1.0, {"x": 2.0}]})) == (
        "Expecting value/list but got object at item 1 of input list"
    )
    assert error_of(api.post(PREDICT, {"instances": [{"x": 2.0}, 1.0]})) == (
        "Expecting object but got list at item 1 of input list"
    )


def test_columnar_format_single_input(api):
    assert api.post(PREDICT, {"inputs": [1.0, 2.0]}).json() == {"outputs": [2.5, 3.0]}
    assert api.post(PREDICT, {"inputs": {"x": [4.0]}}).json() == {"outputs": [4.0]}
    # Unknown keys in the columnar object are ignored.
    assert api.post(PREDICT, {"inputs": {"x": [4.0], "junk": "ignored"}}).json() == {"outputs": [4.0]}


def test_signature_name(api):
    assert api.post(PREDICT, {"signature_name": "", "instances": [2.0]}).json() == {"predictions": [3.0]}
    assert api.post(PREDICT, {"signature_name": "serving_default", "instances": [2.0]}).json() == {
        "predictions": [3.0]
    }
    message = error_of(api.post(PREDICT, {"signature_name": "nope", "instances": [2.0]}))
    assert message == 'Serving signature name: "nope" not found in signature def'
    message = error_of(api.post(PREDICT, {"signature_name": 5, "instances": [2.0]}))
    assert message.startswith("JSON Value: {\n")
    assert message.endswith("not formatted correctly. 'signature_name' key must be a string value.")


def test_instances_and_inputs_keys(api):
    message = error_of(api.post(PREDICT, {"instances": [1.0], "inputs": [1.0]}))
    assert message.endswith(
        "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
    )
    assert error_of(api.post(PREDICT, {"signature_name": ""})) == "Missing 'inputs' or 'instances' key"
    message = error_of(api.post(PREDICT, {"instances": {"x": 1.0}}))
    assert message.endswith("Expecting 'instances' to be an list/array")
    assert (
        message
        == 'JSON Value: {\n    "instances": {\n        "x": 1.0\n    }\n} Expecting \'instances\' to be an list/array'
    )
    assert error_of(api.post(PREDICT, {"instances": []})).endswith("No values in 'instances' array")
    # Unknown top-level keys are ignored.
    assert api.post(PREDICT, {"instances": [2.0], "meta": {"a": [1, 2]}}).json() == {"predictions": [3.0]}


def test_error_order_body_before_model(api):
    # The body is parsed before the model is looked up: bad JSON to a missing model is 400...
    assert error_of(api.post("/v1/models/nope:predict", b"{not json")).startswith("JSON Parse error:")
    assert "Is not object" in error_of(api.post("/v1/models/nope:predict", b"[1]"))
    assert "'signature_name' key must be a string value" in error_of(
        api.post("/v1/models/nope:predict", {"signature_name": 1})
    )
    # ...but a missing instances/inputs key on a missing model is 404: the lookup comes first.
    assert (
        error_of(api.post("/v1/models/nope:predict", {"x": 1}), 404)
        == "Servable not found for request: Latest(nope)"
    )
    # An unknown signature is found before the instances/inputs keys are looked at.
    message = error_of(api.post(PREDICT, {"signature_name": "nope"}))
    assert message == 'Serving signature name: "nope" not found in signature def'


def test_json_parse_errors(api):
    assert error_of(api.post(PREDICT, b"")) == "JSON Parse error: The document is empty"
    assert error_of(api.post(PREDICT, b"   ")) == "JSON Parse error: The document is empty. at offset: 3"
    assert error_of(api.post(PREDICT, b'{"instances": [1.0 2.0]}')) == (
        "JSON Parse error: Missing a comma or ']' after an array element. at offset: 19"
    )
    assert error_of(api.post(PREDICT, b'{"instances": }')) == "JSON Parse error: Invalid value. at offset: 14"
    assert error_of(api.post(PREDICT, b"[1.0]")) == "JSON Value: [1.0] Is not object"
    assert error_of(api.post(PREDICT, b'"text"')) == 'JSON Value: "text" Is not object'


def test_lenient_json(api):
    # NaN/Infinity accepted, trailing bytes ignored, nesting inside an ignored key is fine up to the limit
    # (TF Serving has none; here memory per request is bounded, see test_serving_limits).
    response = api.post(PREDICT, b'{"instances": [NaN, Infinity, -Infinity, 2]} and then some garbage')
    assert response.status_code == 200
    assert response.text == '{"predictions":[NaN,Infinity,-Infinity,3.0]}'
    deep = b'{"ignored": ' + b"[" * 1000 + b"]" * 1000 + b', "instances": [2.0]}'
    assert api.post(PREDICT, deep).json() == {"predictions": [3.0]}
    deeper = b'{"ignored": ' + b"[" * 50000 + b"]" * 50000 + b', "instances": [2.0]}'
    assert api.post(PREDICT, deeper).status_code == 400


def test_content_type_is_ignored_and_gzip_is_accepted(api):
    body = b'{"instances": [2.0]}'
    form = api.post(PREDICT, body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.json() == {"predictions": [3.0]}
    zipped = api.post(PREDICT, gzip.compress(body), headers={"Content-Encoding": "gzip"})
    assert zipped.json() == {"predictions": [3.0]}
    bad = api.post(PREDICT, b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert bad.status_code == 400
    assert "gzip" in bad.json()["error"]


def test_version_and_label_routes(api):
    assert api.post("/v1/models/half_plus_two:predict", {"instances": [2.0]}).json() == {"predictions": [4.0]}
    assert api.post("/v1/models/half_plus_two/versions/2:predict", {"instances": [2.0]}).json() == {
        "predictions": [4.0]
    }
    assert api.post("/v1/models/half_plus_two/labels/stable:predict", {"instances": [2.0]}).json() == {
        "predictions": [3.0]
    }
    assert api.post("/v1/models/half_plus_two/labels/canary:predict", {"instances": [2.0]}).json() == {
        "predictions": [4.0]
    }
    assert error_of(api.post("/v1/models/half_plus_two/versions/3:predict", {"instances": [2.0]}), 404) == (
        "Servable not found for request: Specific(half_plus_two, 3)"
    )
    assert error_of(api.post("/v1/models/half_plus_two/labels/beta:predict", {"instances": [2.0]})) == (
        "Unrecognized servable version label: beta"
    )
    assert error_of(api.post("/v1/models/nope/labels/stable:predict", {"instances": [2.0]})) == (
        "Unrecognized servable version label: stable"
    )


MULTI_ROW = {"a": 1.0, "b": [1.0, 2.0], "n": 3, "tag": "héllo", "flag": True}


def test_multi_input_row_format_and_output_kinds(api):
    response = api.post(MULTI, {"instances": [MULTI_ROW, {**MULTI_ROW, "a": 2.5, "flag": False, "tag": "x"}]})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert predictions[0] == {
        "n2": 6,
        "not_flag": False,
        "pair": [1.0, 10.0],
        "tag_bytes": {"b64": base64.b64encode("héllo".encode()).decode()},
        "tag_upper": "HéLLO",
        "total": 7.0,
    }
    assert predictions[1]["total"] == 8.5
    assert predictions[1]["not_flag"] is True
    assert predictions[1]["tag_bytes"] == {"b64": "eA=="}


def test_multi_input_row_errors(api):
    assert error_of(api.post(MULTI, {"instances": [1.0, 2.0]})) == (
        "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
        "tensorinfo_map"
    )
    message = error_of(api.post(MULTI, {"instances": [{**MULTI_ROW, "zzz": 1}]}))
    assert message == (
        "Failed to process element: 0 key: zzz of 'instances' list. Error: INVALID_ARGUMENT: JSON object: "
        "does not have named input: zzz"
    )
    missing = {k: v for k, v in MULTI_ROW.items() if k != "n"}
    message = error_of(api.post(MULTI, {"instances": [MULTI_ROW, missing]}))
    assert message.startswith("Failed to process element: 1 of 'instances' list. JSON object: {\n")
    assert message.endswith("keys must be equal to: a,b,flag,n,tag")
    message = error_of(api.post(MULTI, {"instances": [MULTI_ROW, {**MULTI_ROW, "b": [1.0, 2.0, 3.0]}]}))
    assert message == (
        "Failed to process element: 1 key: b of 'instances' list. Error: INVALID_ARGUMENT: "
        "Expecting tensor size: 2 but got: 3"
    )
    message = error_of(api.post(MULTI, {"instances": [{**MULTI_ROW, "n": 1.5}]}))
    assert message == (
        "Failed to process element: 0 key: n of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON Value: 1.5 Type: Number is not of expected type: int64"
    )


def test_multi_input_columnar(api):
    body = {"inputs": {"a": [1.0], "b": [[1.0, 2.0]], "n": [3], "tag": ["q"], "flag": [True], "extra": 1}}
    response = api.post(MULTI, body)
    assert response.status_code == 200
    outputs = response.json()["outputs"]
    assert outputs["total"] == [7.0]
    assert outputs["pair"] == [[1.0, 10.0]]
    assert outputs["tag_bytes"] == [{"b64": "cQ=="}]
    assert error_of(api.post(MULTI, {"inputs": [1.0]})) == (
        "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
        "tensorinfo_map"
    )
    del body["inputs"]["b"]
    assert error_of(api.post(MULTI, body)) == "Missing named input: b in 'inputs' object."


def test_columnar_inputs_with_different_batch_sizes_fail_in_the_model(api):
    # The JSON layer accepts different 0-th dimensions; the model's own broadcasting decides.
    body = {"inputs": {"a": [1.0, 2.0], "b": [[1.0, 2.0]], "n": [3], "tag": ["q"], "flag": [True]}}
    assert api.post(MULTI, body).json()["outputs"]["total"] == [7.0, 8.0]
    body["inputs"]["n"] = [1, 2, 3]
    assert "Incompatible shapes" in error_of(api.post(MULTI, body))


@pytest.mark.parametrize(
    ("signature", "values", "expected"),
    [
        ("float", [1, 2.5, -0.0], [1.0, 2.5, -0.0]),
        ("double", [1, 0.1], [1.0, 0.1]),
        ("int32", [-(2**31), 2**31 - 1], [-(2**31), 2**31 - 1]),
        ("int16", [7, -7], [7, -7]),
        ("int8", [100], [100]),
        ("uint8", [200, 300], [200, 44]),  # int32 accepted, then narrowed like the C++ cast
        ("int64", [2**63 - 1, -(2**63)], [2**63 - 1, -(2**63)]),
        ("uint32", [2**32 - 1], [2**32 - 1]),
        ("uint64", [2**64 - 1], [2**64 - 1]),
        ("bool", [True, False], [True, False]),
        ("string", ["abc", "", "ünï"], ["abc", "", "ünï"]),
    ],
)
def test_accepted_values_by_dtype(api, signature, values, expected):
    response = api.post(DTYPES, {"signature_name": signature, "instances": values})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected}


@pytest.mark.parametrize(
    ("signature", "value", "json_value", "json_type"),
    [
        ("float", "1.0", '"1.0"', "String"),
        ("float", True, "true", "True"),
        ("float", None, "null", "Null"),
        ("int32", 1.5, "1.5", "Number"),
        ("int32", 2**31, str(2**31), "Number"),
        ("int32", False, "false", "False"),
        ("int64", 2**63, str(2**63), "Number"),
        ("int64", 1.0, "1.0", "Number"),
        ("uint32", -1, "-1", "Number"),
        ("uint64", 2**64, "18446744073709552000.0", "Number"),  # a double to rapidjson
        ("bool", 1, "1", "Number"),
        ("string", 1, "1", "Number"),
        ("float", {"b64": "AAAA"}, '{\n    "b64": "AAAA"\n}', "Object"),
    ],
)
def test_rejected_values_by_dtype(api, signature, value, json_value, json_type):
    expected = f"JSON Value: {json_value} Type: {json_type} is not of expected type: {signature}"
    response = api.post(DTYPES, {"signature_name": signature, "inputs": [value]})
    assert error_of(response) == expected
    response = api.post(DTYPES, {"signature_name": signature, "instances": [value]})
    assert error_of(response) == (
        f"Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: {expected}"
    )


def test_unsupported_dtype_is_unimplemented(api):
    response = api.post(DTYPES, {"signature_name": "half", "inputs": [1.0]})
    assert error_of(response, 501) == "Conversion of JSON Value: 1.0 to type: half"
    response = api.post(DTYPES, {"signature_name": "half", "instances": [1.0]})
    assert error_of(response, 400).endswith(
        "Error: UNIMPLEMENTED: Conversion of JSON Value: 1.0 to type: half"
    )


def test_float_overflow_becomes_infinity(api):
    assert api.post(DTYPES, {"inputs": [1e300, -1e300]}).text == '{"outputs":[Infinity,-Infinity]}'


def test_b64_strings(api):
    raw = bytes(range(256))
    encoded = base64.b64encode(raw).decode()
    response = api.post(DTYPES, {"signature_name": "string", "inputs": [{"b64": encoded}, "plain"]})
    assert response.status_code == 200
    # Not a *_bytes output: the bytes come back as a raw JSON string (control characters escaped).
    outputs = json.loads(response.content.decode("utf-8", "surrogateescape"))["outputs"]
    assert outputs[0].encode("utf-8", "surrogateescape") == raw
    assert outputs[1] == "plain"
    no_padding = base64.b64encode(b"ab").decode().rstrip("=")
    response = api.post(DTYPES, {"signature_name": "string", "instances": [{"b64": no_padding}]})
    assert response.json() == {"predictions": ["ab"]}
    assert error_of(api.post(DTYPES, {"signature_name": "string", "inputs": [{"b64": "!!!"}]})) == (
        "Unable to base64 decode"
    )
    message = error_of(api.post(DTYPES, {"signature_name": "string", "inputs": [{"b64": "AA==", "x": 1}]}))
    assert message.endswith("not formatted correctly for base64 data")
    message = error_of(api.post(DTYPES, {"signature_name": "string", "inputs": [{"b64": 5}]}))
    assert message.endswith("not formatted correctly for base64 data")


def test_invalid_utf8_strings_pass_through(api):
    body = b'{"signature_name": "string", "inputs": ["a\xff\xfeb"]}'
    response = api.post(DTYPES, body)
    assert response.status_code == 200
    assert response.content == b'{"outputs":["a\xff\xfeb"]}'


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        (
            [[[1, 2, 3], [4, 5, 6]], [[1, 2], [3, 4]]],
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 6 but got: 4",
        ),
        (
            [[[1, 2, 3], [4, 5, 6]], [[1, 2], [3, 4], [5, 6]]],
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting shape [2,3] but got: [3,2]",
        ),
        (
            [[[1, 2, 3], [4, 5]]],
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Encountered list at unexpected size: 2 at level: 1 expected size: 3",
        ),
        (
            [[[1, [2], 3], [4, 5, 6]]],
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Encountered list at unexpected level: 2 expected < 2",
        ),
        (
            [[[1, 2, 3], 4]],
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON Value: 4 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
        ),
    ],
)
def test_shape_errors(api, instances, message):
    assert error_of(api.post(DTYPES, {"signature_name": "matrix", "instances": instances})) == message


def test_dense_nested_lists(api):
    matrix = [[1, 2, 3], [4, 5, 6]]
    response = api.post(DTYPES, {"signature_name": "matrix", "instances": [matrix, matrix]})
    assert response.json() == {"predictions": [[[2.0, 4.0, 6.0], [8.0, 10.0, 12.0]]] * 2}
    response = api.post(DTYPES, {"signature_name": "matrix", "inputs": [matrix]})
    assert response.json() == {"outputs": [[[2.0, 4.0, 6.0], [8.0, 10.0, 12.0]]]}
    response = api.post(DTYPES, {"signature_name": "any_shape", "inputs": 41})
    assert response.json() == {"outputs": 42.0}
    response = api.post(DTYPES, {"signature_name": "any_shape", "inputs": [[[]]]})
    assert response.json() == {"outputs": [[[]]]}


def test_shape_contradicting_the_signature_is_400(api):
    message = error_of(api.post(DTYPES, {"signature_name": "matrix", "instances": [[1.0, 2.0]]}))
    assert "Cannot feed value of shape (1, 2)" in message


def test_response_float_formatting(api):
    values = b"[3, 0.1, 0.00001, 9000000, 0.123456789, 999999, 1e-45, NaN, Infinity, -Infinity]"
    response = api.post(DTYPES, b'{"signature_name": "floats", "inputs": ' + values + b"}")
    assert response.status_code == 200
    text = response.text
    assert '"y":[3.0,0.1,1e-05,9e+06,0.123456791,999999.0,1.4013e-45,NaN,Infinity,-Infinity]' in text
    assert '"d":[3.0,0.10000000149011612,' in text


def test_row_format_output_rules(api):
    message = error_of(api.post(DTYPES, {"signature_name": "scalar_out", "instances": [1.0, 2.0]}))
    assert message == "Tensor name: total has no shape information "
    assert api.post(DTYPES, {"signature_name": "scalar_out", "inputs": [1.0, 2.0]}).json() == {
        "outputs": {"total": 3.0, "y": [1.0, 2.0]}
    }
    message = error_of(api.post(DTYPES, {"signature_name": "fixed_out", "instances": [1.0, 2.0]}))
    assert message == "Tensor name: z has inconsistent batch size: 3 expecting: 2"
    assert api.post(DTYPES, {"signature_name": "single_fixed", "instances": [1.0]}).json() == {
        "predictions": [7.0, 8.0, 9.0]
    }


def test_signature_without_inputs(api):
    message = error_of(api.post(DTYPES, {"signature_name": "no_inputs", "instances": [1.0]}))
    assert message == "Failed to get input map for signature: no_inputs"


def test_responses_are_valid_json_and_results_match_columnar(api):
    rows = api.post(MULTI, {"instances": [MULTI_ROW] * 3}).json()["predictions"]
    cols = api.post(
        MULTI,
        {"inputs": {k: [v] * 3 for k, v in MULTI_ROW.items()}},
    ).json()["outputs"]
    for name in ("total", "n2", "tag_upper", "not_flag", "pair"):
        assert [row[name] for row in rows] == cols[name]
    json.dumps(rows)
