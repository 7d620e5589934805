""":classify and :regress on tf.Example signatures (reference section 6), and the diagnostic contract."""

from __future__ import annotations

import base64

import pytest
import serving_models
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from serving import contract, tensors

EXAMPLES = "/v1/models/examples"


def error_of(response, status=400) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    return body["error"]


def test_regress(api):
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}, {"x": [3.0]}, {}]}
    response = api.post(EXAMPLES + ":regress", body)
    assert response.status_code == 200
    assert response.json() == {"results": [2.5, 3.5, 2.0]}
    body["signature_name"] = "regress_x_to_y2"  # [batch, 1] outputs are accepted too
    assert api.post(EXAMPLES + ":regress", body).json() == {"results": [3.5, 4.5, 3.0]}


def test_classify_results_key_and_labels(api):
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}, {"x": 2.0}]}
    response = api.post(EXAMPLES + ":classify", body)
    assert response.status_code == 200
    # No classes output: the label is "".
    assert response.json() == {"results": [[["", 2.5]], [["", 3.0]]]}
    assert "result" not in response.json()
    body["signature_name"] = "classify_classes"
    assert api.post(EXAMPLES + ":classify", body).json() == {
        "results": [[["no", 0.0], ["yes", 1.0]], [["no", -1.0], ["yes", 2.0]]]
    }
    body["signature_name"] = "classify_classes_only"  # no scores output: the score is 0.0
    assert api.post(EXAMPLES + ":classify", body).json() == {
        "results": [[["a", 0.0], ["b", 0.0], ["c", 0.0]]] * 2
    }


def test_context_is_merged_and_the_example_wins(api):
    body = {"signature_name": "regress_x_to_y", "context": {"x": 10.0}, "examples": [{}, {"x": 2.0}]}
    assert api.post(EXAMPLES + ":regress", body).json() == {"results": [7.0, 3.0]}


def test_integer_and_float_features_differ(api):
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 1}]}
    message = error_of(api.post(EXAMPLES + ":regress", body))
    assert "Data types don't match" in message or "expected type: float" in message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"examples": 5}, "Expecting 'examples' value to be an list/array"),
        ({"examples": []}, "'examples' value is an empty array"),
        ({"examples": [1]}, "Example must be JSON object but got JSON Number"),
        ({"examples": [{}], "context": []}, "Example must be JSON object but got JSON Array"),
        ({"examples": [{"x": None}]}, "Feature: x has element with unexpected JSON type: Null"),
        ({"examples": [{"x": [[1.0]]}]}, "Feature: x has element with unexpected JSON type: Array"),
        ({"examples": [{"x": {"a": 1}}]}, "Feature: x has element with unexpected JSON type: Object"),
        ({"examples": [{"x": [1.0, 2]}]}, "Unexpected element type in feature: x expecting type: float"),
        ({"examples": [{"x": [1, "a"]}]}, "Unexpected element type in feature: x expecting type: int64"),
        ({"examples": [{"x": ["a", True]}]}, "Unexpected element type in feature: x expecting type: bytes"),
        ({"examples": [{"x": 2**63}]}, "Feature: x has uint64_t element. Only int64_t is supported."),
        ({"examples": [{"x": {"b64": "!"}}]}, "Unable to base64 decode"),
    ],
)
def test_example_conversion_errors(api, body, message):
    for verb in ("classify", "regress"):
        got = error_of(api.post(f"{EXAMPLES}:{verb}", body))
        assert got.endswith(message), got


def test_missing_examples_key_says_classify_even_for_regress(api):
    for verb in ("classify", "regress"):
        got = error_of(api.post(f"{EXAMPLES}:{verb}", {"context": {}}))
        assert got.endswith("When method is classify, key 'examples' is expected and was not found")


def test_body_is_converted_before_the_model_is_looked_up(api):
    # Unlike :predict, even a missing 'examples' key on an unknown model is a 400.
    got = error_of(api.post("/v1/models/nope:classify", {"foo": 1}))
    assert got.endswith("When method is classify, key 'examples' is expected and was not found")
    for verb in ("classify", "regress"):
        got = error_of(api.post(f"/v1/models/nope:{verb}", {"examples": [{"x": 1.0}]}), 404)
        assert got == "Servable not found for request: Latest(nope)"
    got = error_of(api.post("/v1/models/examples/versions/9:classify", {"examples": [{"x": 1.0}]}), 404)
    assert got == "Servable not found for request: Specific(examples, 9)"
    got = error_of(api.post("/v1/models/examples/labels/x:regress", {"examples": [{"x": 1.0}]}))
    assert got == "Unrecognized servable version label: x"


@pytest.mark.parametrize(
    ("verb", "signature", "message"),
    [
        ("classify", "nope", "No signature was found with the name: nope"),
        ("regress", "nope", "No signature was found with the name: nope"),
        ("classify", "", "No classification inputs found in SignatureDef: "),  # serving_default takes x
        ("regress", "", "No regression inputs found in SignatureDef: "),
        ("classify", "classify_three_outputs", "Expected one or two output Tensors, found 3"),
        ("classify", "two_inputs", "Expected one input Tensor."),
        ("regress", "classify_classes", "Expected one output Tensor."),
        (
            "classify",
            "classify_other_output",
            'Expected classification signature outputs to contain at least one of "classes" or "scores".',
        ),
        ("regress", "classify_x_to_y", "No regression outputs found in SignatureDef: "),
        (
            "regress",
            "regress_bad_shape",
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [1,2]",
        ),
        ("regress", "regress_int", "Expected output Tensor of DT_FLOAT.  Got: DT_INT64"),
        ("classify", "classify_1d_scores", "Expected Tensor shape: [batch_size num_classes] but got [1]"),
    ],
)
def test_signature_checks(api, verb, signature, message):
    body = {"signature_name": signature, "examples": [{"x": 1.0}]}
    got = error_of(api.post(f"{EXAMPLES}:{verb}", body))
    assert got.startswith(message), got


def test_b64_and_string_features(api):
    body = {
        "signature_name": "classification",
        "examples": [{**_wdbc_example(), "site": {"b64": base64.b64encode(b"left").decode()}}],
    }
    with_b64 = api.post("/v1/models/wdbc:classify", body).json()
    body["examples"][0]["site"] = "left"
    assert api.post("/v1/models/wdbc:classify", body).json() == with_b64


def _wdbc_example(**overrides) -> dict:
    row = {name: float(i + 1) / 10 for i, name in enumerate(serving_models.WDBC_NUMERIC)}
    row["site"] = "left"
    row.update(overrides)
    return row


# ------------------------------------------------------------------------------------------ the contract


def test_wdbc_fixture_meets_the_contract(api):
    defs = api.get("/v1/models/wdbc/metadata").json()["metadata"]["signature_def"]["signature_def"]
    signatures = {key: _signature_from_json(key, value) for key, value in defs.items()}
    assert (
        contract.contract_problems(
            signatures, serving_models.WDBC_NUMERIC, list(serving_models.WDBC_CATEGORICAL)
        )
        == []
    )
    # And the check can fail: a different feature list is reported, every problem at once.
    problems = contract.contract_problems(signatures, ["radius_mean", "other"], [])
    assert "signature 'serving_default' lacks input 'other'" in problems
    assert "signature 'serving_default' has unexpected input 'site'" in problems


def test_contract_check_reads_a_saved_model_on_disk(model_store):
    from serving.savedmodel import read_signatures

    signatures = read_signatures(str(model_store.root / "wdbc" / "7"))
    numeric, categorical = serving_models.WDBC_NUMERIC, list(serving_models.WDBC_CATEGORICAL)
    assert contract.contract_problems(signatures, numeric, categorical) == []
    half_plus_two = read_signatures(str(model_store.root / "half_plus_two" / "1"))
    problems = contract.contract_problems(half_plus_two, numeric, categorical)
    assert "signature 'from_examples' is missing" in problems
    assert "signature 'serving_default' lacks output 'probability'" in problems


def _signature_from_json(key: str, value: dict) -> tensors.Signature:
    def infos(section):
        out = {}
        for alias, info in value[section].items():
            shape = (
                None
                if info["tensor_shape"]["unknown_rank"]
                else tuple(int(d["size"]) for d in info["tensor_shape"]["dim"])
            )
            dtype = types_pb2.DataType.Value(info["dtype"])
            out[alias] = tensors.TensorInfo(alias, info["name"], dtype, shape)
        return out

    return tensors.Signature(key, value["method_name"], infos("inputs"), infos("outputs"))


def test_wdbc_three_signatures_agree(api):
    rows = [_wdbc_example(), _wdbc_example(radius_mean=5.0, site="right"), _wdbc_example(site="unknown")]
    by_features = api.post("/v1/models/wdbc:predict", {"instances": rows}).json()["predictions"]
    assert set(by_features[0]) == {"probability", "predicted_label"}
    examples = [_serialize(row) for row in rows]
    from_examples = api.post(
        "/v1/models/wdbc:predict",
        {
            "signature_name": "from_examples",
            "instances": [{"b64": base64.b64encode(e).decode()} for e in examples],
        },
    ).json()["predictions"]
    assert from_examples == by_features
    classified = api.post(
        "/v1/models/wdbc:classify", {"signature_name": "classification", "examples": rows}
    ).json()
    for row, result in zip(by_features, classified["results"], strict=True):
        (benign, p_benign), (malignant, p_malignant) = result
        assert (benign, malignant) == ("benign", "malignant")
        assert p_malignant == pytest.approx(row["probability"], abs=1e-6)
        assert p_benign == pytest.approx(1 - row["probability"], abs=1e-6)
        assert row["predicted_label"] == int(row["probability"] > 0.5)
    # The same rows in columnar format give the same numbers.
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    outputs = api.post("/v1/models/wdbc:predict", {"inputs": columns}).json()["outputs"]
    assert outputs["probability"] == [r["probability"] for r in by_features]


def _serialize(row: dict) -> bytes:
    features = {}
    for key, value in row.items():
        if isinstance(value, str):
            features[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        else:
            features[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def test_json_examples_serialize_like_tf_example(api):
    # The hand-written tf.Example encoder against TensorFlow's own proto.
    row = {"f": 1.5, "i": [1, -2, True], "s": ["a", {"b64": "Yg=="}], "e": []}
    parsed = tf.train.Example.FromString(tensors.example_from_json(row))
    feature = parsed.features.feature
    assert list(feature["f"].float_list.value) == [1.5]
    assert list(feature["i"].int64_list.value) == [1, -2, 1]
    assert list(feature["s"].bytes_list.value) == [b"a", b"b"]
    assert feature["e"].WhichOneof("kind") is None
    merged = tf.train.Example.FromString(
        b"".join(tensors.examples_from_request({"context": {"f": 2.5, "g": 1}, "examples": [row]}))
    )
    assert list(merged.features.feature["f"].float_list.value) == [1.5]
    assert list(merged.features.feature["g"].int64_list.value) == [1]
