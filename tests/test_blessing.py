"""The Evaluator's blessing on its every branch: pass, fail, boundary, and no baseline.

Runs TFX's own Evaluator executor (the code the pipeline runs) on our eval config, a real trained WDBC
model and real test rows, so what is tested is the blessing a pipeline run would write, not a copy of
its rules. The boundary cases set a threshold to exactly the value measured in an earlier run: TFMA's
bounds are inclusive, so that passes, and a threshold a hair above it fails.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import tensorflow as tf
from tfx.components.evaluator.executor import Executor
from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import proto_utils

from models.features import LABEL, features_from_schema, load_schema, parse_examples
from models.trainer import train
from pipelines.config import EvaluationConfig
from pipelines.data import canonical_csv
from pipelines.pipeline import GATED_SPLIT, eval_config
from pipelines.report import load_test_metrics
from tests.helpers import rows_to_examples, split

pytestmark = pytest.mark.slow
BEAM_ARGS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]


def _model_artifact(uri: Path) -> standard_artifacts.Model:
    model = standard_artifacts.Model()
    model.uri = str(uri)
    return model


def _train(cfg, root: Path, name: str, **training_changes) -> standard_artifacts.Model:
    data = cfg.data
    schema_path = str(Path(data.schema_dir) / "schema.pbtxt")
    features = features_from_schema(load_schema(schema_path))
    train_ex, _ = split(rows_to_examples(canonical_csv(data), schema_path), 0.7)
    parsed = parse_examples(tf.constant(train_ex), features, with_label=True)
    labels = parsed.pop(LABEL).numpy()
    raw = {k: v.numpy() for k, v in parsed.items()}
    training = dataclasses.replace(data.training, **training_changes)
    result = train(features, raw, labels, raw, labels, training)
    result.model.save(str(root / name / "Format-Serving"))  # where TFX's Trainer puts it
    return _model_artifact(root / name)


@pytest.fixture(scope="module")
def setup(default_cfg, tmp_path_factory):
    root = tmp_path_factory.mktemp("blessing")
    data = default_cfg.data
    schema_path = str(Path(data.schema_dir) / "schema.pbtxt")
    _, test_ex = split(rows_to_examples(canonical_csv(data), schema_path), 0.7)
    split_dir = root / "examples" / f"Split-{GATED_SPLIT}"
    split_dir.mkdir(parents=True)
    # The layout and compression CsvExampleGen writes.
    with tf.io.TFRecordWriter(str(split_dir / "data_tfrecord-00000-of-00001.gz"), options="GZIP") as writer:
        for record in test_ex:
            writer.write(record)
    examples = standard_artifacts.Examples()
    examples.uri = str(root / "examples")
    examples.split_names = artifact_utils.encode_split_names([GATED_SPLIT])
    good = _train(default_cfg, root, "good", epochs=60)
    useless = _train(default_cfg, root, "useless", epochs=5, shuffle_labels=True)
    return root, examples, good, useless


def _evaluate(setup, name: str, evaluation: EvaluationConfig, baseline=None) -> tuple[bool, dict]:
    root, examples, good, useless = setup
    candidate = {"good": good, "useless": useless}[name]
    out = root / f"run-{len(list(root.glob('run-*')))}"
    evaluation_artifact = standard_artifacts.ModelEvaluation()
    evaluation_artifact.uri = str(out / "evaluation")
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(out / "blessing")
    for path in (evaluation_artifact.uri, blessing.uri):
        Path(path).mkdir(parents=True)
    inputs = {"examples": [examples], "model": [candidate]}
    if baseline is not None:
        inputs["baseline_model"] = [baseline]
    config = eval_config(evaluation, 0.5, ())
    Executor(BaseBeamExecutor.Context(beam_pipeline_args=BEAM_ARGS)).Do(
        inputs,
        {"evaluation": [evaluation_artifact], "blessing": [blessing]},
        {
            "eval_config": proto_utils.proto_to_json(config),
            "example_splits": json.dumps([GATED_SPLIT]),
        },
    )
    blessed = (Path(blessing.uri) / "BLESSED").exists()
    assert blessed != (Path(blessing.uri) / "NOT_BLESSED").exists()
    return blessed, load_test_metrics(evaluation_artifact.uri)["Overall"]


@pytest.fixture(scope="module")
def measured(setup):
    """The good model's metrics with thresholds nobody can fail, and no baseline (first run)."""
    blessed, overall = _evaluate(setup, "good", EvaluationConfig(min_auc=0.0, min_accuracy=0.0))
    assert blessed
    return overall


def test_good_model_passes_without_a_baseline(measured):
    # No baseline: the change threshold is rubber-stamped, value thresholds still apply.
    assert measured["auc"] > 0.97


def test_threshold_equal_to_the_measured_value_passes(setup, measured):
    blessed, overall = _evaluate(setup, "good", EvaluationConfig(min_auc=measured["auc"]))
    assert overall["auc"] == measured["auc"]
    assert blessed


def test_threshold_just_above_the_measured_value_fails(setup, measured):
    blessed, _ = _evaluate(setup, "good", EvaluationConfig(min_auc=min(1.0, measured["auc"] + 1e-4)))
    assert not blessed


def test_useless_model_fails_value_and_change_thresholds(setup):
    _, _, good, _ = setup
    blessed, overall = _evaluate(setup, "useless", EvaluationConfig(min_auc=0.8), baseline=good)
    assert not blessed and overall["auc"] < 0.8


def test_no_drop_against_itself_is_the_change_boundary(setup):
    _, _, good, _ = setup
    # The same model as baseline: the AUC change is exactly 0, and a tolerated drop of 0 still passes.
    blessed, _ = _evaluate(setup, "good", EvaluationConfig(max_auc_drop=0.0), baseline=good)
    assert blessed
