"""Regenerable test data for the registry tests: tiny real SavedModels, examples, a real TFMA evaluation.

Everything here is made from code (no files dumped from a pipeline run). `make_all(root)` lays out a
fake TFX pipeline root with the same artifact layout TFX writes, so tracking and registry code read it
exactly as they will read a real run:

    <root>/models/<name>/Format-Serving/             SavedModels: good, better, other, bad
    <root>/CsvExampleGen/examples/1/Split-test/      gzipped TFRecords of tf.Examples (x, sex, label)
    <root>/Evaluator/evaluation/9/                   TFMA output: candidate=good, baseline=other, sliced by sex
    <root>/SchemaGen/schema/3/schema.pbtxt, StatisticsGen/..., ExampleValidator/...
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

# Slope and bias of each model's logistic score on feature x; "bad" ignores x (as a model trained on
# shuffled labels would) and so has AUC 0.5.
MODELS = {"good": (4.0, -2.0), "better": (5.0, -2.5), "other": (1.0, -0.5), "bad": (0.0, 0.0)}
N_TEST = 240


def example_rows(n: int = N_TEST, seed: int = 0) -> list[dict]:
    """Deterministic rows: label depends on x; sex is balanced."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = 1 if rng.random() < 0.4 else 0
        x = rng.gauss(0.9 if label else 0.1, 0.35)
        rows.append({"x": x, "sex": "female" if i % 2 else "male", "label": float(label)})
    return rows


def serialized_examples(rows: list[dict]) -> list[bytes]:
    """tf.Example protos for rows, built with the tensorflow-metadata-free example_pb2 of TF."""
    from tensorflow.core.example import example_pb2

    out = []
    for row in rows:
        ex = example_pb2.Example()
        ex.features.feature["x"].float_list.value.append(row["x"])
        ex.features.feature["label"].float_list.value.append(row["label"])
        ex.features.feature["sex"].bytes_list.value.append(row["sex"].encode())
        out.append(ex.SerializeToString())
    return out


def write_examples(split_dir: Path, records: list[bytes], shards: int = 1) -> None:
    """Writes gzipped TFRecord shards with TensorFlow's writer, like ExampleGen."""
    import tensorflow as tf

    split_dir.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with tf.io.TFRecordWriter(
            str(split_dir / f"data_tfrecord-{s:05d}-of-{shards:05d}.gz"), "GZIP"
        ) as writer:
            for record in records[s::shards]:
                writer.write(record)


def make_saved_model(path: Path, slope: float, bias: float) -> None:
    """A tf.Module with a serving signature over serialized tf.Examples -> probabilities."""
    import tensorflow as tf

    class Scorer(tf.Module):
        def __init__(self):
            super().__init__()
            self.slope = tf.Variable(slope, dtype=tf.float32)
            self.bias = tf.Variable(bias, dtype=tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            features = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([1], tf.float32)})
            return {"probabilities": tf.sigmoid(self.slope * features["x"] + self.bias)}

    scorer = Scorer()
    tf.saved_model.save(scorer, str(path), signatures={"serving_default": scorer.serve})


def run_tfma(candidate: Path, baseline: Path, data_pattern: str, out_dir: Path) -> None:
    """A real TFMA evaluation with a baseline model, the metrics the pipeline gates on, and plots."""
    import tensorflow_model_analysis as tfma

    names = [
        "ExampleCount",
        "AUC",
        "BinaryAccuracy",
        "Precision",
        "Recall",
        "Specificity",
        "MeanSquaredError",
    ]
    metrics = [tfma.MetricConfig(class_name=n) for n in names]
    metrics += [
        tfma.MetricConfig(class_name=n) for n in ("Calibration", "CalibrationPlot", "ConfusionMatrixPlot")
    ]
    eval_config = tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(name="candidate", label_key="label"),
            tfma.ModelSpec(name="baseline", label_key="label", is_baseline=True),
        ],
        metrics_specs=[tfma.MetricsSpec(metrics=metrics)],
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=["sex"])],
    )
    models = [
        tfma.default_eval_shared_model(str(candidate), eval_config=eval_config, model_name="candidate"),
        tfma.default_eval_shared_model(str(baseline), eval_config=eval_config, model_name="baseline"),
    ]
    tfma.run_model_analysis(
        eval_shared_model=models,
        eval_config=eval_config,
        data_location=data_pattern,
        output_path=str(out_dir),
    )


def write_data_reports(root: Path) -> dict[str, str]:
    """Schema, statistics and anomalies artifacts as SchemaGen / StatisticsGen / ExampleValidator write them."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

    schema = root / "SchemaGen" / "schema" / "3"
    schema.mkdir(parents=True)
    (schema / "schema.pbtxt").write_text(
        'feature { name: "x" type: FLOAT }\nfeature { name: "sex" type: BYTES }\nfeature { name: "label" type: FLOAT }\n'
    )
    stats_uri = root / "StatisticsGen" / "statistics" / "2"
    for split, n in (("train", 600), ("test", N_TEST)):
        stats = statistics_pb2.DatasetFeatureStatisticsList()
        dataset = stats.datasets.add(num_examples=n)
        x = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.FLOAT)
        x.path.step.append("x")
        x.num_stats.mean = 0.42
        x.num_stats.min = -0.8
        x.num_stats.max = 1.9
        x.num_stats.common_stats.num_missing = 0
        sex = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.STRING)
        sex.path.step.append("sex")
        sex.string_stats.unique = 2
        sex.string_stats.top_values.add(value="female", frequency=n / 2)
        (stats_uri / f"Split-{split}").mkdir(parents=True)
        (stats_uri / f"Split-{split}" / "FeatureStats.pb").write_bytes(stats.SerializeToString())
    anomalies_uri = root / "ExampleValidator" / "anomalies" / "4"
    for split, bad in (("train", False), ("test", True)):
        anomalies = anomalies_pb2.Anomalies()
        if bad:
            info = anomalies.anomaly_info["sex"]
            info.short_description = "Unexpected string values"
            info.reason.add(short_description="Unexpected string values")
        (anomalies_uri / f"Split-{split}").mkdir(parents=True)
        (anomalies_uri / f"Split-{split}" / "SchemaDiff.pb").write_bytes(anomalies.SerializeToString())
    return {"schema_uri": str(schema), "statistics_uri": str(stats_uri), "anomalies_uri": str(anomalies_uri)}


def make_all(root: Path) -> dict[str, str]:
    """Builds every fixture under `root`; returns the paths the tests use."""
    paths: dict[str, str] = {}
    for name, (slope, bias) in MODELS.items():
        model_uri = root / "models" / name
        make_saved_model(model_uri / "Format-Serving", slope, bias)
        paths[f"model_{name}"] = str(model_uri)
    history = {"loss": [0.69, 0.5, 0.41], "val_loss": [0.7, 0.55, 0.47], "auc": [0.6, 0.85, 0.93]}
    (root / "models" / "good" / "training_history.json").write_text(json.dumps(history))

    examples = root / "CsvExampleGen" / "examples" / "1"
    records = serialized_examples(example_rows())
    write_examples(examples / "Split-test", records)
    paths["examples_uri"] = str(examples)
    # The same examples in another shard layout and order: the split digest must not change.
    reshuffled = root / "CsvExampleGen" / "examples" / "2"
    write_examples(reshuffled / "Split-test", list(reversed(records)), shards=3)
    paths["examples_reshuffled_uri"] = str(reshuffled)
    different = root / "CsvExampleGen" / "examples" / "3"
    write_examples(different / "Split-test", serialized_examples(example_rows(seed=1)))
    paths["examples_other_uri"] = str(different)

    evaluation = root / "Evaluator" / "evaluation" / "9"
    run_tfma(
        Path(paths["model_good"]) / "Format-Serving",
        Path(paths["model_other"]) / "Format-Serving",
        str(examples / "Split-test" / "*"),
        evaluation,
    )
    paths["evaluation_uri"] = str(evaluation)
    paths.update(write_data_reports(root))
    return paths


def logistic(x: float, slope: float, bias: float) -> float:
    """The score the tiny models compute (for assertions)."""
    return 1.0 / (1.0 + math.exp(-(slope * x + bias)))
