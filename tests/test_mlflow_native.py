"""The MLflow-native model, its signature and input example, and the reviewer's report (no pipeline run).

A real DiagnosticModel is trained for a few epochs on WDBC rows and exported as the Trainer exports it;
`save_native_model` turns the export into an MLflow Model that `mlflow.pyfunc.load_model` loads, and
its predictions are compared with the SavedModel's own signature called in-process. The end-to-end
checks (registry aliases, `dxpipe serve`, `mlflow models serve`, the browser) are in
test_mlflow_native_e2e.py.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from components.registry_gate.core import OVERALL, CriterionResult, GateVerdict
from components.serving_pusher.core import saved_model_digest
from models.features import LABEL, features_from_schema, load_schema, parse_examples
from models.network import RAW_SIGNATURE
from models.trainer import train
from pipelines.data import canonical_csv
from pipelines.mlflow_model import (
    NativeModelError,
    input_features,
    model_signature,
    pinned_requirements,
    save_native_model,
    synthetic_example,
)
from pipelines.version_report import DISPLAY_ONLY, MAX_CHARS, Evidence, describe_version, margin
from tests.helpers import rows_to_examples, split

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
WDBC_SCHEMA = SCHEMAS / "wdbc" / "schema.pbtxt"
HEART_SCHEMA = SCHEMAS / "heart" / "schema.pbtxt"


# ------------------------------------------------------------------------------- the signature and example


def test_signature_lists_every_schema_feature_with_its_type():
    signature = model_signature(HEART_SCHEMA)
    inputs = {c.name: c for c in signature.inputs.inputs}
    schema = load_schema(str(HEART_SCHEMA))
    assert list(inputs) == [f.name for f in schema.feature if f.name != LABEL]
    assert inputs["age"].type.name == "double" and inputs["sex"].type.name == "string"
    assert [c.name for c in signature.outputs.inputs] == ["probability", "predicted_label"]


def test_features_the_schema_lets_be_absent_are_optional_inputs():
    features = {name: required for name, _, required in input_features(HEART_SCHEMA)}
    schema = load_schema(str(HEART_SCHEMA))
    may_be_absent = {f.name for f in schema.feature if f.presence.min_fraction < 1.0}
    assert may_be_absent, "the heart schema lets some features be absent; the check below needs one"
    assert {name for name, required in features.items() if not required} == may_be_absent
    assert all(required for _, _, required in input_features(WDBC_SCHEMA))


def test_unreadable_schema_is_a_clear_error(tmp_path):
    bad = tmp_path / "schema.pbtxt"
    bad.write_text("feature { name: ")
    with pytest.raises(NativeModelError, match=r"cannot read the schema .*schema.pbtxt"):
        input_features(bad)


def test_input_example_is_aggregated_not_a_patient_row(default_cfg):
    statistics = {
        "train": {
            "features": {"mean_radius": {"mean": 14.123456, "min": 6.9}, "mean_texture": {"mean": 19.25}}
        }
    }
    example = synthetic_example(WDBC_SCHEMA, statistics)
    assert example["mean_radius"] == [14.1235] and example["mean_texture"] == [19.25]
    names = [name for name, _, _ in input_features(WDBC_SCHEMA)]
    assert list(example) == names
    header, *lines = canonical_csv(default_cfg.datasets["wdbc"]).splitlines()
    rows = [dict(zip(header.split(","), line.split(","), strict=True)) for line in lines]
    # No row of the data set has the example's values for these two features.
    assert not any(
        abs(float(r["mean_radius"]) - 14.1235) < 1e-9 and abs(float(r["mean_texture"]) - 19.25) < 1e-9
        for r in rows
    )


def test_input_example_without_statistics_uses_domains_and_categories():
    example = synthetic_example(HEART_SCHEMA, None)
    schema = load_schema(str(HEART_SCHEMA))
    age = next(f for f in schema.feature if f.name == "age")
    assert example["age"] == [float((age.int_domain.min + age.int_domain.max) // 2)]
    sex_domain = next(d for d in schema.string_domain if d.name == "sex")
    assert example["sex"] == [sex_domain.value[0]]


def test_requirements_are_exact_pins():
    pins = dict(r.split("==") for r in pinned_requirements())
    assert set(pins) == {"mlflow", "tensorflow", "numpy", "pandas"}
    assert pins["tensorflow"] == tf.__version__ and pins["numpy"] == np.__version__


# ---------------------------------------------------------------------------------------- the MLflow Model


@dataclasses.dataclass
class Exported:
    export_dir: Path
    names: list[str]
    rows: pd.DataFrame
    probability: np.ndarray


@pytest.fixture(scope="module")
def exported(tmp_path_factory, default_cfg) -> Exported:
    data = default_cfg.datasets["wdbc"]
    features = features_from_schema(load_schema(str(WDBC_SCHEMA)))
    names = [f.name for f in features]
    header, *lines = canonical_csv(data).splitlines()
    train_lines, held_out = split(lines, 0.7)
    parsed = parse_examples(
        tf.constant(rows_to_examples("\n".join([header, *train_lines]), str(WDBC_SCHEMA))), features, True
    )
    labels = parsed.pop(LABEL).numpy()
    raw = {k: v.numpy() for k, v in parsed.items()}
    result = train(features, raw, labels, raw, labels, dataclasses.replace(data.training, epochs=3))
    export_dir = tmp_path_factory.mktemp("export") / "Format-Serving"
    result.model.save(str(export_dir))
    records = list(csv.DictReader(io.StringIO("\n".join([header, *held_out]))))
    rows = pd.DataFrame({n: [float(r[n]) for r in records] for n in names})
    signature = tf.saved_model.load(str(export_dir)).signatures[RAW_SIGNATURE]
    expected = signature(**{n: tf.constant(rows[n].to_numpy(np.float32)) for n in names})["probability"]
    return Exported(export_dir, names, rows, expected.numpy())


@pytest.fixture(scope="module")
def native(exported, tmp_path_factory) -> Path:
    statistics = {
        "train": {"features": {n: {"mean": float(exported.rows[n].mean())} for n in exported.names}}
    }
    dest, inner = save_native_model(
        exported.export_dir, tmp_path_factory.mktemp("native") / "model", WDBC_SCHEMA, statistics
    )
    assert inner == "data/Format-Serving"
    return dest


def test_the_mlflow_model_holds_the_same_savedmodel_bytes(exported, native):
    assert saved_model_digest(native / "data" / "Format-Serving") == saved_model_digest(exported.export_dir)
    mlmodel = (native / "MLmodel").read_text()
    assert "loader_module: dxpipe_pyfunc" in mlmodel and "data: data/Format-Serving" in mlmodel
    assert (native / "code" / "dxpipe_pyfunc.py").is_file()
    assert set((native / "requirements.txt").read_text().split()) >= set(pinned_requirements())


def test_pyfunc_predicts_what_the_savedmodel_computes(exported, native):
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(native))
    assert [c.name for c in model.metadata.get_input_schema().inputs] == exported.names
    predicted = model.predict(exported.rows)
    assert len(exported.rows) > 150
    np.testing.assert_allclose(predicted["probability"].to_numpy(), exported.probability, atol=1e-6, rtol=0)
    assert set(predicted["predicted_label"]) <= {0, 1}
    # The stored input example is valid input for the model.
    example = json.loads((native / "input_example.json").read_text())
    assert model.predict(pd.DataFrame(example))["probability"].between(0, 1).all()


def test_pyfunc_refuses_a_frame_without_a_required_feature(exported, native):
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(str(native))
    with pytest.raises(MlflowException, match="mean_radius"):
        model.predict(exported.rows.drop(columns=["mean_radius"]))


def test_loader_treats_a_missing_value_as_the_model_does(exported, native):
    from pipelines.dxpipe_pyfunc import SavedModelPredictor

    predictor = SavedModelPredictor(str(native / "data" / "Format-Serving"))
    rows = exported.rows.head(3).copy()
    rows.loc[0, "mean_radius"] = None
    rows.loc[1, "mean_radius"] = np.nan
    got = predictor.predict(rows)["probability"].to_numpy()
    signature = tf.saved_model.load(str(exported.export_dir)).signatures[RAW_SIGNATURE]
    feeds = {n: tf.constant(rows[n].to_numpy(np.float32)) for n in exported.names}
    np.testing.assert_allclose(got, signature(**feeds)["probability"].numpy(), atol=1e-6, rtol=0)
    # A value of the wrong kind is named, not silently coerced.
    rows["mean_texture"] = rows["mean_texture"].astype(object)
    rows.loc[2, "mean_texture"] = "high"
    with pytest.raises(ValueError, match="feature 'mean_texture' must be numeric"):
        predictor.predict(rows)


def test_a_copy_that_differs_from_the_registered_digest_is_refused(exported, tmp_path):
    with pytest.raises(NativeModelError, match=r"differs from .*Format-Serving \(digest 000000000000\)"):
        save_native_model(exported.export_dir, tmp_path / "model", WDBC_SCHEMA, expected_digest="0" * 64)


# ---------------------------------------------------------------------------------- the reviewer's report


def _verdict(passed: bool) -> GateVerdict:
    auc = 0.93 if passed else 0.70
    return GateVerdict(
        (
            CriterionResult("evaluator_blessing", passed, "the TFX Evaluator blessed this model."),
            CriterionResult("minimum:auc", passed, f"auc = {auc}", auc, 0.80),
            CriterionResult("maximum:mean_squared_error", True, "mse = 0.12", 0.12, 0.25),
            CriterionResult("slice:sex:female:minimum:recall", True, "recall = 0.85", 0.85, 0.60),
            CriterionResult("non_inferiority:auc", passed, "auc vs champion", auc, 0.91),
        ),
        ("slice sex:other has 3 test examples (< min_examples 20); its bounds were not assessed.",),
    )


def _evidence(passed: bool = True, **changes) -> Evidence:
    base = Evidence(
        model_name="wdbc",
        verdict=_verdict(passed),
        compared_with="champion version 1, re-scored by the Evaluator on this test split",
        candidate={
            OVERALL: {"auc": 0.93, "recall": 0.85, "example_count": 127.0},
            "sex:female": {"recall": 0.85, "example_count": 60.0},
        },
        champion={"auc": 0.93 - 0.0125, "recall": 0.80},
        digest="ab" * 32,
        test_digest="127:" + "c" * 32,
        splits={"train": 400, "eval": 42, "test": 127},
        anomalies={"train": {}, "test": {"mean_radius": ["Out-of-range values"]}},
        plots={
            "roc": "ajax-api/2.0/mlflow/logged-models/m-1/artifacts/files?artifact_file_path=plots/roc.png"
        },
        run_id="r" * 32,
        tfx_run_id="2026-11-30T21:00:00",
    )
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("criterion", "observed", "bound", "expected"),
    [
        ("minimum:auc", 0.93, 0.80, 0.13),
        ("maximum:mean_squared_error", 0.12, 0.25, 0.13),
        ("slice:sex:female:maximum:mean_squared_error", 0.30, 0.25, -0.05),
        ("slice:sex:female:minimum:recall", 0.55, 0.60, -0.05),
        ("non_inferiority:auc", 0.92, 0.91, 0.01),
        ("minimum:auc", 0.80, 0.80, 0.0),
    ],
)
def test_margin_is_positive_inside_the_bound_and_negative_outside(criterion, observed, bound, expected):
    assert margin(criterion, observed, bound) == pytest.approx(expected)


def test_margin_of_a_criterion_without_values_is_unknown():
    assert margin("evaluator_blessing", None, None) is None
    assert margin("minimum:auc", None, 0.8) is None


def test_report_shows_each_criterion_with_value_bound_and_margin():
    text = describe_version(_evidence())
    assert text.startswith("Gate passed (5 criteria met).")
    assert DISPLAY_ONLY in text
    assert "| `minimum:auc` | pass | 0.9300 | 0.8000 | +0.1300 |" in text
    assert "| `maximum:mean_squared_error` | pass | 0.1200 | 0.2500 | +0.1300 |" in text
    assert "| `evaluator_blessing` | pass | — | — | — |" in text
    assert "- Note: slice sex:other has 3 test examples" in text
    assert "| auc | 0.9300 | 0.9175 | +0.0125 |" in text  # champion comparison
    assert "Examples per split: eval 42, test 127, train 400" in text
    assert "Data validation, test: 1 anomalous feature(s) — mean_radius: Out-of-range values." in text
    assert "Data validation, train: no anomalies." in text
    assert (
        "- [roc](ajax-api/2.0/mlflow/logged-models/m-1/artifacts/files?artifact_file_path=plots/roc.png)"
        in text
    )
    assert "| recall | 0.8500 | 0.8500 |" in text  # per slice: Overall, sex:female


def test_report_of_a_failed_version_says_it_cannot_be_approved():
    text = describe_version(_evidence(passed=False))
    assert text.startswith("Gate FAILED: 3 of 5 criteria failed; this version cannot be approved.")
    assert "| `minimum:auc` | **FAIL** | 0.7000 | 0.8000 | -0.1000 |" in text


def test_report_without_champion_plots_or_reports_says_so():
    text = describe_version(
        _evidence(champion=None, plots={}, anomalies={}, compared_with="none (no champion yet)")
    )
    assert "Compared with: none (no champion yet)." in text and "| metric | this version |" not in text
    assert "- No plots were recorded." in text
    assert "Data validation: no anomalies report recorded." in text


def test_report_fits_mlflow_description_limit_and_keeps_the_failures():
    slices = {f"site:{i}": {"recall": 0.5, "auc": 0.6} for i in range(300)}
    many = tuple(
        CriterionResult(f"slice:site:{i}:minimum:recall", False, f"recall of site {i} | low", 0.5, 0.6)
        for i in range(300)
    )
    evidence = _evidence(candidate={OVERALL: {"auc": 0.9}, **slices}, verdict=GateVerdict(many))
    text = describe_version(evidence)
    assert len(text) <= MAX_CHARS
    assert text.startswith("Gate FAILED: 300 of 300 criteria failed")
    assert (
        "see the tag `gate.verdict`" in text
        and "FAIL `slice:site:0:minimum:recall`: recall of site 0 \\| low" in text
    )
    assert DISPLAY_ONLY in text


def test_promotion_downloads_the_savedmodel_the_version_holds(exported, native, tmp_path):
    """An MLflow Model version yields its pyfunc data path; an older bare-SavedModel version itself."""
    from mlflow import MlflowClient

    from pipelines.mlflow_native import download_saved_model

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model("wdbc")
    client.create_model_version("wdbc", str(native))  # an MLflow Model
    client.create_model_version("wdbc", str(exported.export_dir))  # a bare SavedModel (older versions)
    expected = saved_model_digest(exported.export_dir)
    for version in ("1", "2"):
        scratch = tmp_path / f"scratch{version}"
        scratch.mkdir()
        local = download_saved_model(client, "wdbc", version, scratch)
        assert saved_model_digest(local) == expected and not (local / "MLmodel").exists()
