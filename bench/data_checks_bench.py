"""Cost of the data checks added before training, against reading the data, measured in the same run.

(a) baseline: reading each bundled dataset into canonical rows (`pipelines.data.load_table`: what every
run did before the checks existed); (b) the additions: the split by row content, the row-level schema
check and the identifier, date and target-leakage guards over all rows. Printed as seconds and as the
ratio (b)/(a); the issue's bar is (b) under 1 s per bundled dataset. Median of --repeats.

Usage: python -m bench.data_checks_bench [--repeats 5]
"""

import argparse
import statistics
import time

from components.data_checks import guards, rows
from pipelines.config import load_config
from pipelines.data import SPLITS, assign_splits, load_table
from schemas.files import read_schema, schema_path


def _checks(data, table, schema) -> None:
    assignment = assign_splits(table, data.split)
    splits = {
        s: (
            [r for r, a in zip(table.rows, assignment, strict=True) if a == s],
            [n for n, a in zip(table.lines, assignment, strict=True) if a == s],
        )
        for s in SPLITS
    }
    rows.check_rows(table.columns, splits, schema)
    guards.check_columns(table.columns, splits, guards.allowed_columns(schema))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cfg = load_config()
    print(f"{'dataset':<8} {'rows':>5} {'(a) read s':>11} {'(b) checks s':>13} {'(b)/(a)':>8}")
    for name in ("wdbc", "heart", "pima"):
        data = cfg.datasets[name]
        load_table(data)  # warm: the scikit-learn import and loader are cached in-process
        schema, _ = read_schema(schema_path(data.schema_dir))
        read, check = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            table = load_table(data)
            middle = time.perf_counter()
            _checks(data, table, schema)
            read.append(middle - start)
            check.append(time.perf_counter() - middle)
        a, b = statistics.median(read), statistics.median(check)
        print(f"{name:<8} {len(table.rows):>5} {a:>11.3f} {b:>13.3f} {b / a:>8.1f}")


if __name__ == "__main__":
    main()
