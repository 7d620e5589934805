"""Cost of locking the operating point in the Trainer, against the Trainer's own work, in the same run.

On each bundled table dataset, split as the pipeline splits it (`pipelines.data.assign_splits`):
(a) baseline: fitting the classifier (`models.trainer.fit_classifier`, early stopping on eval) and
exporting it (`DiagnosticModel.save`); (b) the addition: predicting the eval split, fitting the
recalibration and choosing the threshold (`models.operating_point.fit_operating_point`), once without
recalibration (the default) and once with Platt scaling. The export's extra outputs (`decision`,
`threshold`) are inside (a): the save is timed with them. Printed as seconds and as the ratio (b)/(a);
median of --repeats.

Usage: python -m bench.operating_point_bench [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf

from models.features import LABEL, features_from_schema, load_schema, parse_examples
from models.network import DiagnosticModel, Preprocess, fit_statistics
from models.operating_point import fit_operating_point
from models.trainer import fit_classifier
from pipelines.config import load_config
from pipelines.data import assign_splits, load_table
from tests.helpers import rows_to_examples


def _split_raw(data, features, schema_path):
    """The dataset's train and eval splits as the model's raw inputs, split as the pipeline splits."""
    table = load_table(data)
    assignment = assign_splits(table, data.split)
    out = {}
    for split in ("train", "eval"):
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(table.columns)
        writer.writerows(row for row, a in zip(table.rows, assignment, strict=True) if a == split)
        examples = rows_to_examples(text.getvalue(), schema_path)
        parsed = parse_examples(tf.constant(examples), features, with_label=True)
        labels = parsed.pop(LABEL).numpy()
        out[split] = ({k: v.numpy() for k, v in parsed.items()}, labels)
    return out


def _once(data, features, splits, calibration: str) -> tuple[float, float]:
    (train_raw, train_labels), (eval_raw, eval_labels) = splits["train"], splits["eval"]
    keras.utils.set_random_seed(data.training.seed)
    start = time.perf_counter()
    mean, std = fit_statistics(features, train_raw)
    preprocess = Preprocess(features, mean, std)
    x_train, x_eval = preprocess(train_raw).numpy(), preprocess(eval_raw).numpy()
    classifier, _ = fit_classifier(x_train, train_labels, x_eval, eval_labels, data.training)
    model = DiagnosticModel(preprocess, classifier, features, data.training.operating_threshold)
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    fitted, record = fit_operating_point(
        model.classifier_probability(eval_raw).numpy(), eval_labels, data.operating_point, calibration
    )
    model.lock(fitted, record)
    added = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model.save(str(Path(tmp) / "m"))
        baseline += time.perf_counter() - start
    return baseline, added


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = load_config()
    print(f"{'dataset':<8} {'calibration':<12} {'(a) fit+export s':>17} {'(b) lock s':>11} {'(b)/(a)':>8}")
    for name in ("wdbc", "heart", "pima"):
        data = cfg.datasets[name]
        schema_path = str(Path(data.schema_dir) / "schema.pbtxt")
        features = features_from_schema(load_schema(schema_path))
        splits = _split_raw(data, features, schema_path)
        for calibration in ("none", "platt"):
            runs = [_once(data, features, splits, calibration) for _ in range(args.repeats)]
            base = statistics.median(r[0] for r in runs)
            added = statistics.median(r[1] for r in runs)
            print(f"{name:<8} {calibration:<12} {base:>17.3f} {added:>11.4f} {added / base:>8.2%}")


if __name__ == "__main__":
    main()
