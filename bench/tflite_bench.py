"""TFLite export: size, parity and single-row latency against the SavedModel, measured in the same run.

For each tabular dataset: train the model as the Trainer does (default config, same split by row
content), export the SavedModel, convert its `serving_default` signature to float16 and dynamic-range
int8 (`models.tflite_export`), and report on the whole test split: the largest probability difference,
the decisions changed at 0.5, the file sizes, and the median single-row latency of the TFLite interpreter
against the SavedModel's signature (baseline, same process, same rows). Latency is the median of
--runs one-row calls after a warm-up.

Usage: python -m bench.tflite_bench [--runs 1000] [--datasets wdbc heart pima] [--hidden-units 64,32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _dataset(cfg, name: str, workdir: Path):
    import csv

    import numpy as np

    from models.features import features_from_schema, load_schema
    from models.trainer import train
    from pipelines import data as data_lib

    data = cfg.datasets[name]
    prepared = data_lib.materialize(data, workdir / "input" / name)
    features = features_from_schema(load_schema(str(Path(data.schema_dir) / "schema.pbtxt")))

    def split(which: str):
        # The canonical CSV as the model's raw inputs: blanks are missing (NaN for numbers, "" for categories).
        with (prepared.directory / which / data_lib.DATA_FILE).open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        raw = {
            f.name: np.array(
                [float(r[f.name]) if r[f.name].strip() else np.nan for r in rows], dtype=np.float32
            )
            if f.numeric
            else np.array([r[f.name].encode() for r in rows], dtype=object)
            for f in features
        }
        return raw, np.array([float(r["label"]) for r in rows], dtype=np.float32)

    (train_raw, train_y), (eval_raw, eval_y), (test_raw, _) = split("train"), split("eval"), split("test")
    result = train(features, train_raw, train_y, eval_raw, eval_y, data.training)
    export_dir = workdir / "models" / name
    result.model.save(str(export_dir))
    return export_dir, test_raw


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--datasets", nargs="+", default=["wdbc", "heart", "pima"])
    parser.add_argument(
        "--hidden-units",
        default="",
        help="e.g. 64,32: a wider network than the defaults, whose weight tensors int8 really quantises",
    )
    args = parser.parse_args()

    from models import tflite_export
    from pipelines.config import load_config

    cfg = load_config()
    if args.hidden_units:
        import dataclasses

        units = tuple(int(u) for u in args.hidden_units.split(","))
        cfg = dataclasses.replace(
            cfg,
            datasets={
                name: dataclasses.replace(d, training=dataclasses.replace(d.training, hidden_units=units))
                for name, d in cfg.datasets.items()
            },
        )
    header = (
        f"{'dataset':<7} {'rows':>5} {'variant':<13} {'bytes':>7} {'max|dp|':>8} {'flips':>5} "
        f"{'SavedModel ms':>13} {'TFLite ms':>9} {'speed-up':>8}"
    )
    print(header)
    with tempfile.TemporaryDirectory(prefix="dxpipe-tflite-bench-") as tmp:
        for name in args.datasets:
            model, test_raw = _dataset(cfg, name, Path(tmp))
            saved_bytes = sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
            report = tflite_export.export(
                model, test_raw, Path(tmp) / "tflite" / name, latency_runs=args.runs
            )
            for v in report.variants:
                latency = v.latency_ms if v.latency_ms is not None else float("nan")
                print(
                    f"{name:<7} {report.rows:>5} {v.name:<13} {v.size_bytes:>7} {v.max_abs_diff:>8.1e} "
                    f"{v.decision_mismatches:>5} {report.savedmodel_latency_ms:>13.3f} {latency:>9.3f} "
                    f"{report.savedmodel_latency_ms / latency:>7.0f}x"
                )
            print(f"{name:<7} SavedModel directory: {saved_bytes} bytes")


if __name__ == "__main__":
    main()
