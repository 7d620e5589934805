"""The three measured data steps, each a real TFX executor run on the previous step's output.

Each `prepare_*` builds the executor and its artifacts (not timed) and returns the call that runs it
(timed by `bench.scale.run`); the call returns the number of rows it processed. The Beam arguments come
from the project's own `BeamConfig`, so the bench measures what `dxpipe run` would pass.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

EXAMPLES = "examples"
STATISTICS = "statistics"
EVALUATION = "evaluation"
SPLITS = ("train", "test")


def _beam_args(mode: dict, work: str, step: str) -> list[str]:
    from pipelines.config import BeamConfig

    beam = BeamConfig(
        runner="DirectRunner",
        direct_running_mode=mode["direct_running_mode"],
        direct_num_workers=mode["direct_num_workers"],
    )
    return [*beam.args(), f"--temp_location={os.path.join(work, 'tmp', step)}"]


def _context(mode: dict, work: str, step: str):
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor

    tmp = os.path.join(work, "tmp", step)
    os.makedirs(tmp, exist_ok=True)
    return BaseBeamExecutor.Context(
        beam_pipeline_args=_beam_args(mode, work, step), tmp_dir=tmp, unique_id=step
    )


def _examples(work: str):
    from tfx.types import artifact_utils, standard_artifacts

    examples = standard_artifacts.Examples()
    examples.uri = os.path.join(work, EXAMPLES)
    examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
    return examples


def _count_rows(csv_dir: str) -> int:
    with open(os.path.join(csv_dir, "data.csv"), "rb") as f:
        return sum(1 for _ in f) - 1


def _no_sdist(fn: Callable[[], int]) -> Callable[[], int]:
    """Runs `fn` as `dxpipe run` does: without TFX building an sdist for workers that need none."""
    from pipelines import beam_patches

    def run() -> int:
        with beam_patches.no_tfx_sdist_for_direct_runner("DirectRunner"):
            return fn()

    return run


def prepare_example_gen(work: str, mode: dict) -> Callable[[], int]:
    """CsvExampleGen's executor: `input/data.csv` -> gzipped tf.Examples, hash-split 1:1 into train/test."""
    from tfx.components.example_gen.csv_example_gen.executor import Executor
    from tfx.proto import example_gen_pb2
    from tfx.utils import proto_utils

    output = example_gen_pb2.Output(
        split_config=example_gen_pb2.SplitConfig(
            splits=[example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=1) for name in SPLITS]
        )
    )
    exec_properties = {
        "input_base": mode["input"],
        "input_config": proto_utils.proto_to_json(
            example_gen_pb2.Input(
                splits=[example_gen_pb2.Input.Split(name="single_split", pattern="data.csv")]
            )
        ),
        "output_config": proto_utils.proto_to_json(output),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
    }
    executor = Executor(_context(mode, work, "example_gen"))

    def run() -> int:
        executor.Do({}, {"examples": [_examples(work)]}, exec_properties)
        return _count_rows(mode["input"])

    return _no_sdist(run)


def prepare_statistics_gen(work: str, mode: dict) -> Callable[[], int]:
    """StatisticsGen's executor: TFDV statistics of both splits."""
    from tfx.components.statistics_gen.executor import Executor
    from tfx.types import standard_artifacts

    statistics = standard_artifacts.ExampleStatistics()
    statistics.uri = os.path.join(work, STATISTICS)
    executor = Executor(_context(mode, work, "statistics_gen"))

    def run() -> int:
        executor.Do({"examples": [_examples(work)]}, {"statistics": [statistics]}, {"exclude_splits": "[]"})
        return _count_rows(mode["input"])

    return _no_sdist(run)


def _eval_config():
    """The pipeline's own TFMA metrics and plots, for the candidate alone (no baseline, no thresholds)."""
    import tensorflow_model_analysis as tfma

    from pipelines.config import EvaluationConfig
    from pipelines.pipeline import eval_config

    config = eval_config(EvaluationConfig(), 0.5, ())
    del config.model_specs[1:]
    for metric in config.metrics_specs[0].metrics:
        metric.ClearField("threshold")
    return tfma.EvalConfig.FromString(config.SerializeToString())


def prepare_evaluator(work: str, mode: dict) -> Callable[[], int]:
    """The Evaluator's executor: TFMA of the WDBC model on the test split."""
    from google.protobuf import json_format
    from tfx.components.evaluator.executor import Executor
    from tfx.types import standard_artifacts

    model = standard_artifacts.Model()
    model.uri = mode["model"]
    evaluation = standard_artifacts.ModelEvaluation()
    evaluation.uri = os.path.join(work, EVALUATION)
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = os.path.join(work, "blessing")
    exec_properties = {
        "eval_config": json_format.MessageToJson(_eval_config()),
        "example_splits": json.dumps(["test"]),
        "fairness_indicator_thresholds": "null",
    }
    executor = Executor(_context(mode, work, "evaluator"))

    def run() -> int:
        executor.Do(
            {"examples": [_examples(work)], "model": [model]},
            {"evaluation": [evaluation], "blessing": [blessing]},
            exec_properties,
        )
        return _count_test_rows(work)

    return _no_sdist(run)


def _count_test_rows(work: str) -> int:
    import tensorflow as tf

    files = tf.io.gfile.glob(os.path.join(work, EXAMPLES, "Split-test", "*"))
    return sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))


PREPARE = {
    "ExampleGen": prepare_example_gen,
    "StatisticsGen": prepare_statistics_gen,
    "Evaluator": prepare_evaluator,
}


def train_model(model_dir: Path) -> None:
    """Trains the pipeline's WDBC model on the real table and exports it as the Trainer does (TFX layout)."""
    import numpy as np

    from bench.scale.generate import read_csv
    from models.features import features_from_schema, load_schema
    from models.hparams import TrainingConfig
    from models.trainer import train
    from pipelines.config import load_config
    from pipelines.data import canonical_csv
    from schemas.files import schema_path

    data = load_config(dataset="wdbc").data
    names, x, y = read_csv(canonical_csv(data))
    features = features_from_schema(load_schema(str(schema_path(data.schema_dir))))
    raw = {name: x[:, i].astype(np.float32) for i, name in enumerate(names)}
    result = train(features, raw, y, raw, y, TrainingConfig(epochs=50, learning_rate=0.05, l2=0.001))
    # The Evaluator loads `<model uri>/Format-Serving`, the Trainer's export layout.
    result.model.save(str(model_dir / "Format-Serving"))
