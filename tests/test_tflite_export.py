"""TFLite export: real conversions of a real trained model, parity on every test row, and a broken
conversion that parity blocks (nothing written but the report that says why)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from models import tflite_export as te
from models.features import LABEL, parse_examples
from tests.test_model import _train_and_export


@pytest.fixture(scope="module", params=["wdbc", "heart"])
def trained(request, tmp_path_factory, default_cfg):
    """A model trained on 70 % of the dataset (30 epochs: parity, not accuracy, is under test)."""
    name = request.param
    data = default_cfg.datasets[name]
    data = dataclasses.replace(data, training=dataclasses.replace(data.training, epochs=30))
    cfg = dataclasses.replace(default_cfg, datasets={**default_cfg.datasets, name: data})
    export_dir = tmp_path_factory.mktemp(name) / "model"
    features, test_ex, *_ = _train_and_export(cfg, name, export_dir)
    parsed = parse_examples(tf.constant(test_ex), features, with_label=True)
    parsed.pop(LABEL)
    return name, export_dir, features, {k: v.numpy() for k, v in parsed.items()}


def test_both_variants_match_the_savedmodel_on_every_test_row(trained, tmp_path):
    name, model, _, raw = trained
    report = te.export(model, raw, tmp_path / "tflite", latency_runs=20)
    n = len(next(iter(raw.values())))
    assert report.rows == n and report.exported == ("float16", "int8_dynamic")
    # The Trainer locks the threshold on the eval split and records it in the export (models/operating_point).
    locked = json.loads((model / te.OPERATING_POINT).read_text())["threshold"]
    assert report.threshold == locked and report.threshold_source.endswith("dxpipe_operating_point.json")
    reference = te.SavedModelRunner(model)(raw)
    for variant in report.variants:
        assert variant.passed and variant.decision_mismatches == 0 and variant.reason == ""
        assert variant.max_abs_diff <= variant.tolerance
        flatbuffer = (tmp_path / "tflite" / variant.file).read_bytes()
        assert len(flatbuffer) == variant.size_bytes > 0
        # Re-check independently of the report: the written file answers every test row the same way.
        probabilities = te.TFLiteRunner(flatbuffer)(raw)
        assert np.max(np.abs(probabilities - reference)) == pytest.approx(variant.max_abs_diff, abs=1e-9)
        assert np.array_equal(probabilities >= locked, reference >= locked)
        assert variant.latency_ms is not None and variant.latency_ms > 0
    written = json.loads((tmp_path / "tflite" / te.REPORT).read_text())
    assert written["exported"] == ["float16", "int8_dynamic"] and written["rows"] == n
    assert sorted(p.name for p in (tmp_path / "tflite").iterdir()) == [
        "float16.tflite", "int8_dynamic.tflite", te.REPORT,
    ]  # fmt: skip


def test_the_locked_threshold_comes_from_the_operating_point(trained, tmp_path):
    _, model, _, raw = trained
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    (copy / "assets.extra").mkdir(exist_ok=True)
    (copy / te.OPERATING_POINT).write_text(json.dumps({"threshold": 0.3125, "chosen_on": "eval"}))
    report = te.export(copy, raw, tmp_path / "tflite", variants=("float16",), latency_runs=5)
    assert report.threshold == 0.3125 and report.threshold_source.endswith("dxpipe_operating_point.json")
    (copy / te.OPERATING_POINT).write_text(json.dumps({"threshold": 7}))
    with pytest.raises(te.TFLiteExportError, match="threshold 7.0 is not a probability"):
        te.export(copy, raw, tmp_path / "again")
    # An export from before operating points decides at 0.5, and the report says why.
    (copy / te.OPERATING_POINT).unlink()
    report = te.export(copy, raw, tmp_path / "older", variants=("float16",), latency_runs=5)
    assert report.threshold == 0.5 and "no operating point file" in report.threshold_source


def _constant_model(features, path, probability: float) -> None:
    """A 'conversion' of the wrong graph: same inputs, constant output."""
    spec = {f.name: tf.TensorSpec([None], f.serving_dtype, name=f.name) for f in features}

    class Constant(tf.Module):
        @tf.function(input_signature=[spec])
        def serve(self, raw):
            batch = tf.shape(next(iter(raw.values())))[0]
            return {"probability": tf.fill([batch], tf.constant(probability, tf.float32))}

    module = Constant()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def test_a_broken_conversion_is_blocked_and_nothing_is_written(trained, tmp_path):
    _, model, features, raw = trained
    _constant_model(features, tmp_path / "wrong", 0.9)

    def broken(saved_model_dir, variant):
        # Converts another graph than the one it was given, as a buggy converter would.
        return te.convert(tmp_path / "wrong", variant)

    report = te.export(model, raw, tmp_path / "tflite", converter=broken, latency_runs=5)
    assert report.exported == ()
    for variant in report.variants:
        assert not variant.passed and variant.file == "" and variant.latency_ms is None
        assert variant.decision_mismatches > 0 and "exceeds" in variant.reason
        assert f"get a different decision at threshold {report.threshold:g}" in variant.reason
    assert [p.name for p in (tmp_path / "tflite").iterdir()] == [te.REPORT]


@pytest.mark.parametrize(
    ("reference", "candidate", "mismatches", "reason"),
    [
        pytest.param([0.1, 0.9], [0.1005, 0.8995], 0, "", id="within-tolerance"),
        pytest.param(
            [0.4999, 0.9], [0.5001, 0.9], 1, "1 test row(s) get a different decision", id="flip-at-threshold"
        ),
        pytest.param(
            [0.1, 0.9], [0.2, 0.9], 0, "largest probability difference 1.00e-01 exceeds", id="too-far"
        ),
        pytest.param([0.1, 0.9], [0.1, float("nan")], 1, "1 non-finite probabilities", id="nan"),
        pytest.param([0.1, 0.9], [0.1], 2, "1 predictions for 2 rows", id="row-count"),
    ],
)
def test_parity_rules(reference, candidate, mismatches, reason):
    _, found, why = te.parity(np.array(reference), np.array(candidate), 0.5, 2e-3)
    assert found == mismatches
    assert (reason in why) if reason else why == ""


def test_an_empty_test_split_or_missing_input_exports_nothing(trained, tmp_path):
    _, model, _, raw = trained
    with pytest.raises(te.TFLiteExportError, match="the test split is empty"):
        te.export(model, {k: v[:0] for k, v in raw.items()}, tmp_path / "a")
    first = sorted(raw)[0]
    with pytest.raises(te.TFLiteExportError, match=f"lacks the model's inputs \\['{first}'\\]"):
        te.export(model, {k: v for k, v in raw.items() if k != first}, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
