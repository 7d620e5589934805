"""The measured data steps: the split `dxpipe run` makes, then three TFX executors, each on the previous output.

`PrepareData` is `pipelines/data.py`'s `materialize` (plain Python, before any component runs): the
generated `data.csv` becomes the canonical split CSVs with `rows.json` and `column_types.json`, the
layout `dxpipe run` gives ExampleGen. ExampleGen is the pipeline's own node (its executor and
properties, from `pipelines.pipeline.data_validation_nodes`), StatisticsGen and the Evaluator TFX's.

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

    from pipelines.data import SPLITS

    examples = standard_artifacts.Examples()
    examples.uri = os.path.join(work, EXAMPLES)
    examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
    return examples


def _count_rows(split_dir: str) -> int:
    """Rows over the split CSVs (the generated cells never span lines)."""
    from pipelines.data import DATA_FILE, SPLITS

    total = 0
    for split in SPLITS:
        with open(os.path.join(split_dir, split, DATA_FILE), "rb") as f:
            total += sum(1 for _ in f) - 1
    return total


def _no_sdist(fn: Callable[[], int]) -> Callable[[], int]:
    """Runs `fn` as `dxpipe run` does: without TFX building an sdist for workers that need none."""
    from pipelines import beam_patches

    def run() -> int:
        with beam_patches.no_tfx_sdist_for_direct_runner("DirectRunner"):
            return fn()

    return run


def _generated_dataset(input_dir: str):
    """WDBC's dataset entry with the generated `data.csv` as its source (its label is already 0/1)."""
    import dataclasses

    from pipelines.config import SourceConfig, load_config

    data = load_config(dataset="wdbc").data
    source = SourceConfig(kind="csv", path=os.path.join(input_dir, "data.csv"))
    return dataclasses.replace(data, source=source, label_column="label", label_map={})


def prepare_split_data(work: str, mode: dict) -> Callable[[], int]:
    """`pipelines/data.py` as `dxpipe run` calls it: `data.csv` -> split CSVs, `rows.json`, column types."""
    from pipelines.data import materialize

    data = _generated_dataset(mode["input"])

    def run() -> int:
        return sum(materialize(data, Path(mode["splits"])).sizes.values())

    return run


def prepare_example_gen(work: str, mode: dict, executor_class=None) -> Callable[[], int]:
    """The pipeline's ExampleGen node, its executor and its properties: split CSVs -> gzipped tf.Examples.

    Args:
        work: The size's and mode's work directory.
        mode: The Beam mode and the paths.
        executor_class: Another executor for the same node (the A/B with TFX's CsvExampleGen).
    """
    from google.protobuf import message
    from tfx.utils import proto_utils

    from pipelines.config import load_config
    from pipelines.pipeline import data_validation_nodes

    # The node `create_pipeline` builds, so the bench runs the product's executor on its split layout.
    node = data_validation_nodes(load_config(dataset="wdbc"), mode["splits"], "generated")[0]
    exec_properties = {
        key: proto_utils.proto_to_json(value) if isinstance(value, message.Message) else value
        for key, value in node.exec_properties.items()
        if value is not None
    }
    executor = (executor_class or node.executor_spec.executor_class)(_context(mode, work, "example_gen"))

    def run() -> int:
        executor.Do({}, {"examples": [_examples(work)]}, exec_properties)
        return _count_rows(mode["splits"])

    return _no_sdist(run)


def prepare_tfx_csv_example_gen(work: str, mode: dict) -> Callable[[], int]:
    """TFX's CsvExampleGen executor on the same node and splits: the baseline the product's is compared with.

    It needs no column types (it infers them in its Beam graph); it writes where ExampleGen writes, so run
    it instead of ExampleGen, not before StatisticsGen in the same work directory as another's output.
    """
    from tfx.components.example_gen.csv_example_gen.executor import Executor

    return prepare_example_gen(work, mode, Executor)


def prepare_statistics_gen(work: str, mode: dict) -> Callable[[], int]:
    """StatisticsGen's executor: TFDV statistics of both splits."""
    from tfx.components.statistics_gen.executor import Executor
    from tfx.types import standard_artifacts

    statistics = standard_artifacts.ExampleStatistics()
    statistics.uri = os.path.join(work, STATISTICS)
    executor = Executor(_context(mode, work, "statistics_gen"))

    def run() -> int:
        executor.Do({"examples": [_examples(work)]}, {"statistics": [statistics]}, {"exclude_splits": "[]"})
        return _count_rows(mode["splits"])

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
    "PrepareData": prepare_split_data,
    "ExampleGen": prepare_example_gen,
    "TfxCsvExampleGen": prepare_tfx_csv_example_gen,
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
