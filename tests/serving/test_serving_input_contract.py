"""The schema as the input contract, over real HTTP: what the data gate refuses, serving refuses, in every
input form; `null` is a missing value; nothing is ever predicted from nothing."""

from __future__ import annotations

import base64
import json
import math

import pytest
import serving_models
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.input_contract import InputContract
from serving.server import ServerOptions, ServerThread

PREDICT = "/v1/models/clinic:predict"
CLASSIFY = "/v1/models/clinic:classify"
ROW = {"radius_mean": 14.0, "texture_mean": 19.0, "perimeter_mean": 90.0, "area_mean": 60.0}
ROW |= {"smoothness_mean": 0.1, "site": "left"}


def row(**changes) -> dict:
    out = dict(ROW)
    for key, value in changes.items():
        if value is _DROP:
            del out[key]
        else:
            out[key] = value
    return out


_DROP = object()


def serialize(features: dict) -> str:
    proto = {}
    for key, value in features.items():
        if isinstance(value, str):
            proto[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        elif value is None:
            proto[key] = tf.train.Feature()
        else:
            proto[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    example = tf.train.Example(features=tf.train.Features(feature=proto))
    return base64.b64encode(example.SerializeToString()).decode()


def post(api, path: str, body: dict):
    # json.dumps writes NaN and Infinity, which clients do send (requests' json= refuses them).
    return api.post(path, json.dumps(body))


def error_of(response) -> str:
    assert response.status_code == 400, response.text
    (message,) = response.json().values()
    return message


def predict_row(api, instance: dict):
    return post(api, PREDICT, {"instances": [instance]})


def predict_columns(api, instance: dict):
    return post(api, PREDICT, {"inputs": {k: [v] for k, v in instance.items()}})


def predict_example(api, instance: dict):
    return post(
        api, PREDICT, {"signature_name": "from_examples", "instances": [{"b64": serialize(instance)}]}
    )


def predict_classification(api, instance: dict):
    return api.post(
        PREDICT, {"signature_name": "classification", "instances": [{"b64": serialize(instance)}]}
    )


def classify(api, instance: dict):
    return post(api, CLASSIFY, {"signature_name": "classification", "examples": [instance]})


FORMS = [predict_row, predict_columns, predict_example, predict_classification, classify]


@pytest.mark.parametrize("send", FORMS)
def test_a_valid_row_is_answered_in_every_form(api, send):
    assert send(api, ROW).status_code == 200


@pytest.mark.parametrize("send", FORMS)
def test_missing_feature_is_refused_in_every_form(api, send):
    message = error_of(send(api, row(area_mean=_DROP)))
    assert "missing feature(s) 'area_mean'" in message
    assert "null" in message  # the fix: send null when the value is unknown


@pytest.mark.parametrize("send", FORMS)
def test_unknown_feature_name_is_refused_with_a_hint(api, send):
    instance = row(radius_mean=_DROP)
    instance["radius_meen"] = 14.0
    message = error_of(send(api, instance))
    assert "'radius_meen' is not a feature of this model (did you mean 'radius_mean'?)" in message


NON_FINITE = [
    pytest.param(send, value, id=f"{send.__name__}-{label}")
    for send in FORMS
    for value, label in ((math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf"), (3.5e38, "3.5e38"))
    # A tf.Example's float_list holds float32: 3.5e38 cannot be written into one.
    if not (value == 3.5e38 and send in (predict_example, predict_classification))
]


@pytest.mark.parametrize(("send", "value"), NON_FINITE)
def test_non_finite_numbers_are_refused(api, send, value):
    message = error_of(send(api, row(texture_mean=value)))
    assert "'texture_mean'" in message
    assert "not a finite number" in message


@pytest.mark.parametrize("send", FORMS)
def test_out_of_domain_values_are_refused(api, send):
    message = error_of(send(api, row(radius_mean=500.0)))
    assert "'radius_mean' = 500 is outside the schema's domain [0, 100]" in message


@pytest.mark.parametrize("send", FORMS)
def test_unknown_category_is_refused(api, send):
    message = error_of(send(api, row(site="weird")))
    assert "'site' = 'weird' is not a known category ('left', 'right')" in message


def test_null_is_a_missing_value_for_numbers_and_categories(api):
    base = post(api, PREDICT, {"instances": [row(radius_mean=0.0, site="")]}).json()["predictions"][0]
    # The reference model imputes a missing number as 0 (dxpipe's models use the training mean) and a
    # missing category as no category.
    for instance in (row(radius_mean=None, site=None), row(radius_mean=None, site="")):
        answer = post(api, PREDICT, {"instances": [instance]}).json()["predictions"][0]
        assert answer == base
        assert math.isfinite(answer["probability"])
    columns = post(api, PREDICT, {"inputs": {k: [v] for k, v in row(radius_mean=None, site=None).items()}})
    assert columns.json()["outputs"]["probability"] == [base["probability"]]
    classified = api.post(
        CLASSIFY, {"signature_name": "classification", "examples": [row(radius_mean=None, site=None)]}
    ).json()
    assert classified["results"][0][1][1] == pytest.approx(base["probability"], abs=1e-6)
    examples = predict_example(api, row(radius_mean=None, site=None)).json()["predictions"][0]
    assert examples["probability"] == pytest.approx(base["probability"], abs=1e-6)


@pytest.mark.parametrize(
    ("send", "body"),
    [
        (lambda api: post(api, CLASSIFY, {"signature_name": "classification", "examples": [{}]}), None),
        (lambda api: predict_row(api, dict.fromkeys(ROW)), None),
        (lambda api: predict_columns(api, dict.fromkeys(ROW)), None),
        (lambda api: predict_example(api, dict.fromkeys(ROW)), None),
        (
            lambda api: post(
                api, PREDICT, {"signature_name": "from_examples", "instances": [{"b64": ""}]}
            ),  # an empty tf.Example
            None,
        ),
        (lambda api: classify(api, {"radius_meen": 1.0, "sight": "left"}), None),
    ],
    ids=[
        "classify-empty",
        "row-all-null",
        "columns-all-null",
        "example-all-empty",
        "empty-example",
        "misspelled",
    ],
)
def test_no_prediction_from_nothing(api, send, body):
    message = error_of(send(api))
    assert any(s in message for s in ("every feature is null", "missing feature(s)", "is not a feature")), (
        message
    )


def test_truncated_example_is_refused(api):
    data = base64.b64decode(serialize(ROW))[:-7]
    response = api.post(
        PREDICT, {"signature_name": "from_examples", "instances": [{"b64": base64.b64encode(data).decode()}]}
    )
    assert "not a serialized tf.Example" in error_of(response)


def test_errors_name_the_instance(api):
    response = post(api, PREDICT, {"instances": [ROW, ROW, row(site="weird")]})
    assert error_of(response).startswith("instance 2: feature 'site'")


def test_models_without_a_schema_are_served_as_tf_serving_serves_them(api):
    # No contract: an unknown category is a category the model has no weight for, and null is refused with
    # TF Serving's own type error.
    assert post(api, "/v1/models/wdbc:predict", {"instances": [row(site="weird")]}).status_code == 200
    message = error_of(post(api, "/v1/models/wdbc:predict", {"instances": [row(radius_mean=None)]}))
    assert "Type: Null is not of expected type: float" in message


@pytest.fixture(scope="module")
def flagging_server(model_store):
    from serving.config import ModelConfig

    options = ServerOptions(
        models=(ModelConfig(name="clinic", base_path=str(model_store.root / "clinic")),),
        port=0,
        out_of_domain="flag",
        file_system_poll_seconds=0,
    )
    with ServerThread(options) as running:
        yield running


def test_out_of_domain_can_be_answered_with_a_flag(flagging_server):
    import requests

    url = flagging_server.url
    answer = requests.post(
        url + PREDICT, json={"instances": [ROW, row(radius_mean=500.0)]}, timeout=30
    ).json()
    assert len(answer["predictions"]) == 2
    assert answer["out_of_domain"] == [
        {"instance": 1, "feature": "radius_mean", "value": 500.0, "domain": [0.0, 100.0]}
    ]
    plain = requests.post(url + PREDICT, json={"instances": [ROW]}, timeout=30).json()
    assert "out_of_domain" not in plain
    classified = requests.post(
        url + CLASSIFY,
        json={"signature_name": "classification", "examples": [row(area_mean=-1.0)]},
        timeout=30,
    ).json()
    assert classified["out_of_domain"] == [
        {"instance": 0, "feature": "area_mean", "value": -1.0, "domain": [0.0, 100.0]}
    ]
    # Non-finite numbers and unknown categories are still refused.
    assert (
        requests.post(url + PREDICT, json={"instances": [row(site="weird")]}, timeout=30).status_code == 400
    )


def test_feature_names_are_matched_in_one_place():
    contract = InputContract.from_schema_text(serving_models.clinic_schema_text(), "test")
    assert contract.canonical_name("radius_mean") == "radius_mean"
    assert contract.canonical_name("Radius Mean") is None
    assert "label" not in contract.names


FEATURES = sorted(ROW)
hostile_values = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(["left", "right", "", "weird", "LEFT"]),
    st.booleans(),
    st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), max_size=2),
)
hostile_rows = st.dictionaries(
    st.sampled_from([*FEATURES, "radius_meen", "site "]), hostile_values, max_size=8
)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    instance=hostile_rows,
    form=st.sampled_from(["row", "columns", "ragged-columns", "classify"]),
    extra=st.sampled_from(FEATURES),
)
def test_fuzz_contract_rows_never_5xx_and_never_predict_from_nothing(api, instance, form, extra):
    if form == "row":
        response = post(api, PREDICT, {"instances": [instance]})
    elif form == "columns":
        response = post(api, PREDICT, {"inputs": {k: [v] for k, v in instance.items()}})
    elif form == "ragged-columns":
        # One column longer than the others: the model refuses the shapes (never a 5xx, never a prediction).
        columns = {k: [v] for k, v in instance.items()}
        columns[extra] = [*columns.get(extra, []), 1.0]
        response = post(api, PREDICT, {"inputs": columns})
        assert response.status_code == 400, response.text
        return
    else:
        response = post(api, CLASSIFY, {"signature_name": "classification", "examples": [instance]})
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        # Only a complete row with at least one value, finite numbers in their domain and known categories.
        assert set(instance) == set(FEATURES)
        assert any(v is not None for v in instance.values())
        for name, value in instance.items():
            if value is None:
                continue
            if name == "site":
                assert value in ("left", "right", "")
            else:
                assert math.isfinite(value) and 0.0 <= value <= 100.0
    else:
        assert list(response.json()) == ["error"]


def test_classify_body_errors_come_before_the_model_lookup_as_in_tf_serving(api):
    # TF Serving builds the examples before it looks the model up: a null element on an unknown model is a
    # 400 about the body, not a 404. On a model with a contract, the same null is a missing value.
    body = {"signature_name": "classification", "examples": [row(radius_mean=None)]}
    unknown = post(api, "/v1/models/nope:classify", body)
    assert "Feature: radius_mean has element with unexpected JSON type: Null" in error_of(unknown)
    without_contract = post(api, "/v1/models/wdbc:classify", body)
    assert "unexpected JSON type: Null" in error_of(without_contract)
    assert post(api, CLASSIFY, body).status_code == 200
