"""The ClinicalEvaluator's TFX shell on real SavedModels and real gzipped TFRecords (made here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import artifact_utils, standard_artifacts

from components.clinical_eval import component as shell
from components.clinical_eval.component import ClinicalEvaluation, ClinicalEvaluator

N = 240


def _rows(seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(N) < 0.4).astype(int)
    x = rng.normal(np.where(y == 1, 0.9, 0.1), 0.35)
    sex = np.where(np.arange(N) % 8 == 0, "other", np.where(np.arange(N) % 2, "female", "male"))
    return x, y, sex


def _examples(root: Path) -> standard_artifacts.Examples:
    x, y, sex = _rows()
    split_dir = root / "Split-test"
    split_dir.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(split_dir / "data_tfrecord-00000-of-00001.gz"), "GZIP") as writer:
        for xi, yi, si in zip(x, y, sex, strict=True):
            ex = tf.train.Example()
            ex.features.feature["x"].float_list.value.append(xi)
            ex.features.feature["label"].int64_list.value.append(int(yi))
            ex.features.feature["sex"].bytes_list.value.append(si.encode())
            writer.write(ex.SerializeToString())
    examples = standard_artifacts.Examples()
    examples.uri = str(root)
    examples.split_names = artifact_utils.encode_split_names(["test"])
    return examples


def _model(root: Path, slope: float, bias: float, threshold: float | None = None) -> standard_artifacts.Model:
    class Scorer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def from_examples(self, examples):
            x = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([], tf.float32)})["x"]
            return {"probability": tf.sigmoid(slope * x + bias)}

    scorer = Scorer()
    export = root / "Format-Serving"
    tf.saved_model.save(scorer, str(export), signatures={"from_examples": scorer.from_examples})
    if threshold is not None:
        (export / "assets.extra").mkdir()
        (export / "assets.extra" / "dxpipe_operating_point.json").write_text(
            json.dumps({"threshold": threshold, "chosen_on": "eval"})
        )
    model = standard_artifacts.Model()
    model.uri = str(root)
    return model


def _run(tmp_path: Path, candidate, baseline=None, **params) -> dict:
    out = ClinicalEvaluation()
    # Only the parent exists, as KFP's launcher leaves it (TFX's local runner makes the directory itself).
    out.uri = str(tmp_path / "out")
    inputs = {"examples": [_examples(tmp_path / "examples")], "model": [candidate]}
    if baseline is not None:
        inputs["baseline_model"] = [baseline]
    executor = ClinicalEvaluator.EXECUTOR_SPEC.executor_class()
    executor.Do(
        inputs,
        {"clinical_evaluation": [out]},
        {"split": "test", "settings": json.dumps({"resamples": 300}), "slice_features": '["sex"]', **params},
    )
    return json.loads((Path(out.uri) / shell.REPORT_FILE).read_text())


def test_scores_the_split_at_the_locked_threshold_with_slices(tmp_path):
    report = _run(tmp_path, _model(tmp_path / "cand", 6.0, -3.0, threshold=0.3))
    x, y, sex = _rows()
    p = 1 / (1 + np.exp(-(6.0 * x - 3.0)))
    assert report["n"] == N and report["positives"] == int(y.sum()) and report["threshold"] == 0.3
    tp = int(((p >= 0.3) & (y == 1)).sum())
    assert report["at_threshold"]["sensitivity"]["successes"] == tp
    assert report["operating_point"] == {"threshold": 0.3, "chosen_on": "eval"}
    status = {s["value"]: s["status"] for s in report["slices"]}
    assert status == {"female": "ok", "male": "ok", "other": "ok"}
    assert report["noninferiority"] is None and report["split"] == "test"


def test_pairs_the_candidate_with_the_baseline_on_the_same_rows(tmp_path):
    candidate = _model(tmp_path / "cand", 6.0, -3.0)
    baseline = _model(tmp_path / "base", 0.0, 0.0)  # ignores x: AUC 0.5
    report = _run(tmp_path, candidate, baseline)
    auc = report["noninferiority"]["metrics"]["auc"]
    assert auc["difference"] == pytest.approx(report["auc"]["value"] - 0.5)
    assert auc["lower"] > 0.2
    assert report["noninferiority"]["baseline"]["threshold"] == 0.5


def test_a_model_without_an_operating_point_uses_one_half(tmp_path):
    threshold, record = shell.locked_threshold(str(_model(tmp_path / "m", 1.0, 0.0).uri + "/Format-Serving"))
    assert (threshold, record) == (0.5, None)


def test_a_corrupt_operating_point_is_refused(tmp_path):
    model = _model(tmp_path / "m", 1.0, 0.0, threshold=0.4)
    path = Path(model.uri) / "Format-Serving" / "assets.extra" / "dxpipe_operating_point.json"
    path.write_text(json.dumps({"threshold": 7}))
    with pytest.raises(shell.ClinicalEvaluationError, match="'threshold' is 7; the Trainer must record"):
        shell.locked_threshold(str(path.parent.parent))


def test_an_empty_split_is_refused(tmp_path):
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path)
    examples.split_names = artifact_utils.encode_split_names(["test"])
    (tmp_path / "Split-test").mkdir()
    with pytest.raises(shell.ClinicalEvaluationError, match="the test split is empty"):
        shell.read_split(examples, "test", [])


@pytest.mark.parametrize("type_name", ["components.ClinicalEvaluation", "components.RegistryVerdict"])
def test_custom_artifact_types_import_by_their_type_name(type_name):
    # TFX's KFP v2 entrypoint imports a custom artifact class from its type name; a name that is not an
    # importable path fails the task in the pod, after the compiled spec looked fine.
    import importlib

    module, _, name = type_name.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert type_name == cls.TYPE_NAME
