"""`dxpipe serve` serving a SavedModel made by dxpipe's own model code, over real HTTP, on real WDBC rows.

The other serving tests use small hand-written models (`serving_models.py`). This module trains the
diagnostic model with `models.trainer.train` on the WDBC CSV, exports it as the Trainer does, puts it in a
TF Serving base path (`<tmp>/wdbc/1/`) and checks every REST call against the same signature called
in-process on held-out rows: what a client gets over HTTP must be what the model computes.
"""

from __future__ import annotations

import base64
import concurrent.futures
import csv
import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from models.features import LABEL, features_from_schema, load_schema, parse_examples
from models.network import CLASSIFY_SIGNATURE, EXAMPLES_SIGNATURE, RAW_SIGNATURE
from models.operating_point import OPERATING_POINT_ASSET
from models.trainer import train
from pipelines.data import canonical_csv
from serving import cli
from serving.client import ServingClient
from serving.config import single_model_config
from serving.contract import contract_problems
from serving.input_contract import write_schema_asset
from serving.savedmodel import read_signatures
from serving.server import ServerOptions, ServerThread
from tests.helpers import rows_to_examples, split

MODEL = "/v1/models/wdbc"
# Few epochs keep the module fast; on WDBC's standardised features a logistic model is already good after
# five (held-out AUC about 0.99), which the ranking test below relies on.
EPOCHS = 5
# The server computes in float32 and prints floats in shortest round-trip form, so its answers equal the
# in-process float32 values up to rounding; batching may also sum a row's terms in another order.
ATOL = 1e-6


@dataclasses.dataclass
class Trained:
    """The exported model and the held-out rows it is checked on.

    Attributes:
        base_path: The TF Serving base path (`<tmp>/wdbc`).
        version_dir: `<base_path>/1`, the SavedModel.
        feature_names: The model's inputs, all numeric for WDBC.
        header: The canonical CSV's header (features and `label`).
        rows: Held-out rows as {feature: float}, without the label.
        labels: Their 0/1 labels.
        examples: The same rows as serialized tf.Examples.
        probability: `serving_default` called in-process on `rows`.
        predicted_label: Its `predicted_label` output.
        threshold: The locked threshold the export carries (`dxpipe_operating_point.json`).
    """

    base_path: Path
    version_dir: Path
    feature_names: list[str]
    header: list[str]
    rows: list[dict[str, float]]
    labels: np.ndarray
    examples: list[bytes]
    probability: np.ndarray
    predicted_label: np.ndarray
    threshold: float

    def csv_text(self) -> str:
        """The held-out rows as canonical CSV, label column included."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.header)
        for row, label in zip(self.rows, self.labels, strict=True):
            writer.writerow([repr(row[name]) if name != LABEL else int(label) for name in self.header])
        return out.getvalue()


def _columns(rows: list[dict[str, float]], names: list[str]) -> dict[str, np.ndarray]:
    return {name: np.array([row[name] for row in rows], dtype=np.float32) for name in names}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, default_cfg) -> Trained:
    data = default_cfg.datasets["wdbc"]
    schema_path = str(Path(data.schema_dir) / "schema.pbtxt")
    features = features_from_schema(load_schema(schema_path))
    names = [f.name for f in features]
    assert all(f.numeric for f in features)  # the row conversions below assume WDBC's all-float inputs

    header, *lines = canonical_csv(data).splitlines()
    train_lines, held_out_lines = split(lines, 0.7)
    train_examples = rows_to_examples("\n".join([header, *train_lines]), schema_path)
    parsed = parse_examples(tf.constant(train_examples), features, with_label=True)
    train_labels = parsed.pop(LABEL).numpy()
    train_raw = {k: v.numpy() for k, v in parsed.items()}
    # The training rows double as the early-stopping split: with this few epochs it never stops early, and
    # the held-out rows stay unseen by every part of training.
    cfg = dataclasses.replace(data.training, epochs=EPOCHS)
    # The configured operating point (sensitivity 0.95) is locked on those rows too.
    result = train(features, train_raw, train_labels, train_raw, train_labels, cfg, data.operating_point)
    base_path = tmp_path_factory.mktemp("pipeline_models") / "wdbc"
    version_dir = base_path / "1"
    result.model.save(str(version_dir))
    # As the Trainer's export is to: the version carries its schema, so serving enforces it.
    write_schema_asset(str(version_dir), Path(schema_path).read_text())

    held_out_text = "\n".join([header, *held_out_lines])
    records = list(csv.DictReader(io.StringIO(held_out_text)))
    rows = [{name: float(record[name]) for name in names} for record in records]
    labels = np.array([int(record[LABEL]) for record in records])
    loaded = tf.saved_model.load(str(version_dir))
    expected = loaded.signatures[RAW_SIGNATURE](
        **{k: tf.constant(v) for k, v in _columns(rows, names).items()}
    )
    return Trained(
        base_path=base_path,
        version_dir=version_dir,
        feature_names=names,
        header=header.split(","),
        rows=rows,
        labels=labels,
        examples=rows_to_examples(held_out_text, schema_path),
        probability=expected["probability"].numpy(),
        predicted_label=expected["predicted_label"].numpy(),
        threshold=result.operating_point["threshold"],
    )


@pytest.fixture(scope="module")
def served(trained) -> ServerThread:
    options = ServerOptions(
        models=(single_model_config("wdbc", str(trained.base_path)),),
        port=0,
        file_system_poll_seconds=0,
        access_log="off",
    )
    running = ServerThread(options)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def http(served) -> requests.Session:
    session = requests.Session()
    yield session
    session.close()


def post(http: requests.Session, served: ServerThread, path: str, body: dict) -> requests.Response:
    # json.dumps, not requests' json=: that one refuses NaN, which TF Serving reads as a missing value.
    return http.post(served.url + path, data=json.dumps(body), timeout=30)


def error_of(response: requests.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    return body["error"]


# ------------------------------------------------------------------------------------------------ the model


def test_the_held_out_rows_are_a_real_check(trained):
    # Guards the tests below: a constant or broken model would make "same as in-process" meaningless.
    assert len(trained.rows) > 150
    assert set(trained.labels) == {0, 1}
    assert roc_auc_score(trained.labels, trained.probability) > 0.97
    assert np.all((trained.probability >= 0) & (trained.probability <= 1))


def test_the_export_meets_the_serving_contract(trained, served):
    names = trained.feature_names
    on_disk = read_signatures(str(trained.version_dir))
    assert contract_problems(on_disk, names, [], operating_point=True) == []
    loaded = served.server.manager.lookup("wdbc", None, None).signatures
    assert contract_problems(loaded, names, [], operating_point=True) == []
    # The operating point's outputs are part of the check: without them the export is an older model's.
    assert "signature 'serving_default' has unexpected output 'decision'" in contract_problems(
        on_disk, names, []
    )
    # The check can fail: the same signatures against a contract with one feature fewer and one more.
    problems = contract_problems(on_disk, names[1:], ["site"])
    assert f"signature 'serving_default' has unexpected input {names[0]!r}" in problems
    assert "signature 'serving_default' lacks input 'site'" in problems


# ------------------------------------------------------------------------------------------------ status, metadata


def test_status_is_available(http, served):
    response = http.get(served.url + MODEL, timeout=30)
    assert response.status_code == 200
    assert response.json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


def _io(signature_def: dict, side: str) -> dict[str, tuple[str, list[str]]]:
    return {
        alias: (info["dtype"], [d["size"] for d in info["tensor_shape"]["dim"]])
        for alias, info in signature_def[side].items()
    }


def test_metadata_lists_the_three_signatures(trained, http, served):
    response = http.get(served.url + MODEL + "/metadata", timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert body["model_spec"] == {"name": "wdbc", "signature_name": "", "version": "1"}
    defs = body["metadata"]["signature_def"]["signature_def"]
    # TF2 exports also carry the init op, which TF Serving lists too.
    assert set(defs) == {RAW_SIGNATURE, EXAMPLES_SIGNATURE, CLASSIFY_SIGNATURE, "__saved_model_init_op"}
    prediction = {
        "probability": ("DT_FLOAT", ["-1"]),
        "predicted_label": ("DT_INT64", ["-1"]),
        "decision": ("DT_INT64", ["-1"]),
        "threshold": ("DT_FLOAT", ["-1"]),
    }
    assert _io(defs[RAW_SIGNATURE], "inputs") == {
        name: ("DT_FLOAT", ["-1"]) for name in trained.feature_names
    }
    assert _io(defs[RAW_SIGNATURE], "outputs") == prediction
    assert _io(defs[EXAMPLES_SIGNATURE], "inputs") == {"examples": ("DT_STRING", ["-1"])}
    assert _io(defs[EXAMPLES_SIGNATURE], "outputs") == prediction
    assert _io(defs[CLASSIFY_SIGNATURE], "inputs") == {"inputs": ("DT_STRING", ["-1"])}
    assert _io(defs[CLASSIFY_SIGNATURE], "outputs") == {
        "classes": ("DT_STRING", ["-1", "2"]),
        "scores": ("DT_FLOAT", ["-1", "2"]),
    }
    for key in (RAW_SIGNATURE, EXAMPLES_SIGNATURE, CLASSIFY_SIGNATURE):
        assert defs[key]["method_name"] == "tensorflow/serving/predict"


# ------------------------------------------------------------------------------------------------ predict


def test_predict_row_format_matches_in_process(trained, http, served):
    response = post(http, served, MODEL + ":predict", {"instances": trained.rows})
    assert response.status_code == 200, response.text
    body = response.json()
    # TF Serving's row shape, plus the version whose locked threshold made the decisions.
    assert list(body) == ["predictions", "model_version"] and body["model_version"] == "1"
    predictions = body["predictions"]
    assert len(predictions) == len(trained.rows)
    assert all(set(p) == {"probability", "predicted_label", "decision", "threshold"} for p in predictions)
    probability = np.array([p["probability"] for p in predictions])
    np.testing.assert_allclose(probability, trained.probability, rtol=0, atol=ATOL)
    assert np.all((probability >= 0) & (probability <= 1))
    np.testing.assert_array_equal([p["predicted_label"] for p in predictions], trained.predicted_label)
    # The decision is the served probability against the locked threshold, which every row repeats.
    assert {np.float32(p["threshold"]) for p in predictions} == {np.float32(trained.threshold)}
    decision = [p["decision"] for p in predictions]
    assert decision == [
        int(np.float32(p["probability"]) >= np.float32(trained.threshold)) for p in predictions
    ]
    assert decision == trained.predicted_label.tolist()
    assert 0 < sum(decision) < len(decision)
    # The served model ranks the held-out malignant tumours above the benign ones.
    assert roc_auc_score(trained.labels, probability) > 0.97


def test_predict_columnar_format_matches_in_process(trained, http, served):
    inputs = {name: [row[name] for row in trained.rows] for name in trained.feature_names}
    response = post(http, served, MODEL + ":predict", {"inputs": inputs})
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["outputs", "model_version"] and body["model_version"] == "1"
    outputs = body["outputs"]
    assert set(outputs) == {"probability", "predicted_label", "decision", "threshold"}
    np.testing.assert_array_equal(outputs["decision"], trained.predicted_label)
    probability = np.array(outputs["probability"])
    np.testing.assert_allclose(probability, trained.probability, rtol=0, atol=ATOL)
    assert np.all((probability >= 0) & (probability <= 1))
    np.testing.assert_array_equal(outputs["predicted_label"], trained.predicted_label)


def test_predict_from_serialized_examples(trained, http, served):
    instances = [{"b64": base64.b64encode(e).decode("ascii")} for e in trained.examples]
    body = {"signature_name": EXAMPLES_SIGNATURE, "instances": instances}
    response = post(http, served, MODEL + ":predict", body)
    assert response.status_code == 200, response.text
    probability = [p["probability"] for p in response.json()["predictions"]]
    # tf.Examples store float32, the rows' decimal text rounds to the same float32: the same answers.
    np.testing.assert_allclose(probability, trained.probability, rtol=0, atol=ATOL)


def test_concurrent_single_rows_are_batched_without_mixing_answers(trained, served):
    rows = trained.rows[:24]

    def one(index: int) -> float:
        response = requests.post(
            served.url + MODEL + ":predict", json={"instances": [rows[index]]}, timeout=30
        )
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]["probability"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        probability = list(pool.map(one, range(len(rows))))
    np.testing.assert_allclose(probability, trained.probability[: len(rows)], rtol=0, atol=ATOL)


def test_a_missing_measurement_sent_as_null_is_imputed_and_nan_is_refused(trained, http, served):
    rows = [dict(row) for row in trained.rows[:3]]
    rows[0]["mean_radius"] = None
    response = post(http, served, MODEL + ":predict", {"instances": rows})
    assert response.status_code == 200, response.text
    probability = [p["probability"] for p in response.json()["predictions"]]
    loaded = tf.saved_model.load(str(trained.version_dir))
    rows[0]["mean_radius"] = float("nan")  # what the model receives for null, and imputes
    columns = _columns(rows, trained.feature_names)
    expected = loaded.signatures[RAW_SIGNATURE](**{k: tf.constant(v) for k, v in columns.items()})
    np.testing.assert_allclose(probability, expected["probability"].numpy(), rtol=0, atol=ATOL)
    assert np.all(np.isfinite(probability))
    # The imputed row is scored differently from the complete one, so the missing value really reached
    # the model as one.
    assert abs(probability[0] - trained.probability[0]) > ATOL
    # The bare NaN token is a number that is not finite: refused, as the data gate refuses it.
    refused = post(http, served, MODEL + ":predict", {"instances": rows})
    assert refused.status_code == 400
    assert "'mean_radius' is NaN" in refused.json()["error"]


# ------------------------------------------------------------------------------------------------ classify


def test_classify_tf_example_json(trained, http, served):
    body = {"signature_name": CLASSIFY_SIGNATURE, "examples": trained.rows}
    response = post(http, served, MODEL + ":classify", body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == len(trained.rows)
    assert all([label for label, _ in result] == ["0", "1"] for result in results)
    scores = np.array([[score for _, score in result] for result in results])
    np.testing.assert_allclose(scores[:, 1], trained.probability, rtol=0, atol=ATOL)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=0, atol=ATOL)
    in_process = tf.saved_model.load(str(trained.version_dir)).signatures[CLASSIFY_SIGNATURE](
        inputs=tf.constant(trained.examples)
    )
    np.testing.assert_allclose(scores, in_process["scores"].numpy(), rtol=0, atol=ATOL)


def test_classify_context_features_are_shared_by_every_example(trained, http, served):
    rows = trained.rows[:4]
    shared = {"mean_radius": rows[0]["mean_radius"]}
    examples = [{k: v for k, v in row.items() if k != "mean_radius"} for row in rows]
    body = {"signature_name": CLASSIFY_SIGNATURE, "context": shared, "examples": examples}
    response = post(http, served, MODEL + ":classify", body)
    assert response.status_code == 200, response.text
    scores = [result[1][1] for result in response.json()["results"]]
    with_shared = [{**row, **shared} for row in rows]
    predicted = post(http, served, MODEL + ":predict", {"instances": with_shared}).json()["predictions"]
    np.testing.assert_allclose(scores, [p["probability"] for p in predicted], rtol=0, atol=ATOL)


# ------------------------------------------------------------------------------------------------ errors


def _without(row: dict, name: str) -> dict:
    return {k: v for k, v in row.items() if k != name}


def _error_cases():
    # Each: (verb and path suffix, body from a real row, HTTP status, fragments the error must contain).
    return [
        pytest.param(
            ":predict",
            lambda row: {"instances": [_without(row, "worst_area")]},
            400,
            # The model carries its schema: the contract's error, naming the feature and the fix.
            ["instance 0: missing feature(s) 'worst_area'", "with null for a value that is unknown"],
            id="row-missing-feature",
        ),
        pytest.param(
            ":predict",
            lambda row: {"inputs": {k: [v] for k, v in _without(row, "worst_area").items()}},
            400,
            ["inputs: missing feature(s) 'worst_area'"],
            id="columnar-missing-feature",
        ),
        pytest.param(
            ":predict",
            lambda row: {"instances": [{**row, "mean_radius": "17.99"}]},
            400,
            ["key: mean_radius", "Type: String is not of expected type: float"],
            id="row-string-for-float",
        ),
        pytest.param(
            ":predict",
            lambda row: {"instances": [{**row, "mean_radius": [row["mean_radius"], 1.0]}]},
            400,
            ["Cannot feed value of shape (1, 2)", "mean_radius"],
            id="row-list-for-scalar",
        ),
        pytest.param(
            ":predict",
            lambda row: {"inputs": {**{k: [v] for k, v in row.items()}, "mean_radius": [1.0, 2.0]}},
            400,
            ["Shapes of all inputs must match"],
            id="columnar-ragged-batch-fails-in-the-model",
        ),
        pytest.param(
            ":classify",
            # JSON 1 is an int64 feature where the schema says float: the model's parser refuses it.
            lambda row: {"signature_name": CLASSIFY_SIGNATURE, "examples": [{**row, "mean_area": 1001}]},
            400,
            ["mean_area", "Data types don't match"],
            id="classify-int-for-float",
        ),
        pytest.param(
            ":predict",
            lambda row: {"signature_name": "nope", "instances": [row]},
            400,
            ['Serving signature name: "nope" not found in signature def'],
            id="predict-unknown-signature",
        ),
        pytest.param(
            ":classify",
            lambda row: {"signature_name": "nope", "examples": [row]},
            400,
            ["No signature was found with the name: nope"],
            id="classify-unknown-signature",
        ),
        pytest.param(
            ":classify",
            # Without signature_name :classify uses serving_default, which takes 30 named inputs.
            lambda row: {"examples": [row]},
            400,
            ["Expected one input Tensor."],
            id="classify-default-signature-is-not-a-classifier",
        ),
        pytest.param(
            ":regress",
            lambda row: {"signature_name": CLASSIFY_SIGNATURE, "examples": [row]},
            400,
            ["Expected one output Tensor."],
            id="regress-on-the-classifier",
        ),
        pytest.param(
            "/versions/2:predict",
            lambda row: {"instances": [row]},
            404,
            ["Servable not found for request: Specific(wdbc, 2)"],
            id="unknown-version",
        ),
    ]


@pytest.mark.parametrize(("suffix", "make_body", "status", "fragments"), _error_cases())
def test_errors_name_the_problem(trained, http, served, suffix, make_body, status, fragments):
    message = error_of(post(http, served, MODEL + suffix, make_body(trained.rows[0])), status)
    for fragment in fragments:
        assert fragment in message


def test_the_server_still_answers_after_the_errors(trained, http, served):
    # Model-side failures (INVALID_ARGUMENT from a kernel) must not poison the version's session.
    response = post(http, served, MODEL + ":predict", {"instances": trained.rows[:5]})
    assert response.status_code == 200
    probability = [p["probability"] for p in response.json()["predictions"]]
    np.testing.assert_allclose(probability, trained.probability[:5], rtol=0, atol=ATOL)


# ------------------------------------------------------------------------------------------------ client, CLI


def test_serving_client_matches_in_process(trained, served):
    client = ServingClient(served.url)
    assert client.wait_until_available("wdbc", timeout=5) == 1
    assert set(client.signature_defs("wdbc")) >= {RAW_SIGNATURE, EXAMPLES_SIGNATURE, CLASSIFY_SIGNATURE}
    rows = trained.rows[:40]
    expected = trained.probability[:40]
    predictions = client.predict("wdbc", rows)
    np.testing.assert_allclose([p["probability"] for p in predictions], expected, rtol=0, atol=ATOL)
    # numpy columns are accepted as they are (the client turns them into JSON lists).
    outputs = client.predict("wdbc", inputs=_columns(rows, trained.feature_names))
    np.testing.assert_allclose(outputs["probability"], expected, rtol=0, atol=ATOL)
    results = client.classify("wdbc", rows, signature_name=CLASSIFY_SIGNATURE)
    np.testing.assert_allclose([r[1][1] for r in results], expected, rtol=0, atol=ATOL)


def test_dxpipe_predict_with_a_csv_of_real_rows(trained, served, tmp_path, capsys):
    path = tmp_path / "held_out.csv"
    path.write_text(trained.csv_text())  # canonical CSV, `label` included: extra columns are ignored
    # A batch size that does not divide the row count: several requests and a short last one.
    code = cli.main(["predict", "wdbc", "--csv", str(path), "--server", served.url, "--batch_size", "50"])
    captured = capsys.readouterr()
    assert (code, captured.err) == (0, "")
    predictions = [json.loads(line) for line in captured.out.splitlines()]
    assert len(predictions) == len(trained.rows)
    np.testing.assert_allclose(
        [p["probability"] for p in predictions], trained.probability, rtol=0, atol=ATOL
    )
    np.testing.assert_array_equal([p["predicted_label"] for p in predictions], trained.predicted_label)
    # Each line carries the decision, the threshold that made it, and the version that holds the threshold.
    np.testing.assert_array_equal([p["decision"] for p in predictions], trained.predicted_label)
    assert {p["model_version"] for p in predictions} == {"1"}
    assert {np.float32(p["threshold"]) for p in predictions} == {np.float32(trained.threshold)}


def test_a_version_without_an_operating_point_answers_tf_servings_exact_shape(trained, tmp_path):
    # An older export (no dxpipe_operating_point.json) is served as TF Serving serves it: no extra key.
    # One with an unreadable operating point is not served at all: its decisions could not be accounted for.
    base = tmp_path / "wdbc"
    shutil.copytree(trained.version_dir, base / "1")
    (base / "1" / OPERATING_POINT_ASSET).unlink()
    shutil.copytree(trained.version_dir, tmp_path / "broken" / "1")
    (tmp_path / "broken" / "1" / OPERATING_POINT_ASSET).write_text("{not json")
    options = ServerOptions(
        models=(
            single_model_config("wdbc", str(base)),
            single_model_config("broken", str(tmp_path / "broken")),
        ),
        port=0,
        file_system_poll_seconds=0,
        access_log="off",
    )
    running = ServerThread(options)
    try:
        response = requests.post(
            running.url + MODEL + ":predict", data=json.dumps({"instances": trained.rows[:3]}), timeout=30
        )
        assert response.status_code == 200, response.text
        assert list(response.json()) == ["predictions"]
        status = requests.get(running.url + "/v1/models/broken", timeout=30).json()
        (entry,) = status["model_version_status"]
        assert (
            entry["state"] == "END"
            and "dxpipe_operating_point.json is not JSON" in entry["status"]["error_message"]
        )
    finally:
        running.stop()


def test_dxpipe_predict_sends_blank_csv_cells_as_missing_measurements(trained, served, tmp_path, capsys):
    lines = trained.csv_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("mean_radius")] = ""
    cells[header.index("worst_area")] = "  "
    path = tmp_path / "gaps.csv"
    path.write_text("\n".join([lines[0], ",".join(cells), lines[2]]) + "\n")
    code = cli.main(["predict", "wdbc", "--csv", str(path), "--server", served.url])
    captured = capsys.readouterr()
    assert (code, captured.err) == (0, "")
    probability = [json.loads(line)["probability"] for line in captured.out.splitlines()]
    rows = [dict(row) for row in trained.rows[:2]]
    rows[0].update(mean_radius=float("nan"), worst_area=float("nan"))
    columns = _columns(rows, trained.feature_names)
    loaded = tf.saved_model.load(str(trained.version_dir))
    expected = loaded.signatures[RAW_SIGNATURE](**{k: tf.constant(v) for k, v in columns.items()})
    np.testing.assert_allclose(probability, expected["probability"].numpy(), rtol=0, atol=ATOL)
    assert abs(probability[0] - trained.probability[0]) > ATOL and np.isfinite(probability[0])
