"""Real LocalDagRunner runs on CSVs the tests build: the cache sees the schema and the guards stop bad data.

Slow: each run is a real TFX pipeline (ExampleGen, StatisticsGen, ExampleValidator, the data gate and,
for the clean file, Trainer and Evaluator).
"""

import dataclasses
import random

import pytest

from pipelines import local_runner
from pipelines.config import config_from_dict
from pipelines.errors import DataGateError
from pipelines.mlflow_mlmd import collect_outputs

pytestmark = pytest.mark.slow
DATA_NODES = ("CsvExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "DataGate")


def _clinic_rows(n=240, seed=1):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        y = int(rng.random() < 0.4)
        rows.append(
            {
                "Patient ID": f"P{i // 2:04d}",
                "Visit Date": f"2021-{1 + i % 12:02d}-{1 + i % 28:02d}",
                "Age": str(rng.randint(35, 85)),
                "Sex": rng.choice("FM"),
                "Systolic BP": str(int(rng.gauss(125 + 20 * y, 12))),
                "Outcome": "pos" if y else "neg",
            }
        )
    return rows


def _schema(columns: dict[str, list[str]], age_min: int = 18) -> str:
    """A reviewed-looking schema for the canonical columns (feature name -> values)."""
    parts, domains = [], []
    for name, values in columns.items():
        if name == "label":
            parts.append(
                'feature { name: "label" type: INT int_domain { min: 0 max: 1 } presence { min_fraction: 1.0 } }'
            )
        elif all(v.lstrip("-").isdigit() for v in values):
            bounds = f"int_domain {{ min: {age_min} max: 110 }}" if name == "age" else ""
            parts.append(f'feature {{ name: "{name}" type: INT {bounds} presence {{ min_fraction: 1.0 }} }}')
        else:
            parts.append(
                f'feature {{ name: "{name}" type: BYTES domain: "{name}" presence {{ min_fraction: 1.0 }} }}'
            )
            domains.append(
                f'string_domain {{ name: "{name}" '
                + " ".join(f'value: "{v}"' for v in sorted(set(values)))
                + " }"
            )
    return "\n".join(parts + domains) + "\n"  # fmt: skip


def _setup(tmp_path, rows, **entry):
    header = list(rows[0])
    (tmp_path / "clinic.csv").write_text(
        "\n".join([",".join(header), *(",".join(r[c] for c in header) for r in rows)]) + "\n"
    )
    raw = {
        "dataset": "clinic",
        "workdir": str(tmp_path / "work"),
        "training": {"epochs": 30},
        "datasets": {
            "clinic": {
                "source": {"kind": "csv", "path": "clinic.csv"},
                "label_column": "Outcome",
                "label_map": {"pos": 1, "neg": 0},
                "schema_dir": "schemas/clinic",
                "evaluation": {"min_auc": 0.5, "min_accuracy": 0.5},
                **entry,
            }
        },
    }
    cfg = config_from_dict(raw, tmp_path)
    from pipelines.data import load_table

    table = load_table(cfg.data)
    columns = {c: [r[i] for r in table.rows] for i, c in enumerate(table.columns)}
    schema = tmp_path / "schemas" / "clinic" / "schema.pbtxt"
    schema.parent.mkdir(parents=True, exist_ok=True)
    schema.write_text(_schema(columns))
    return cfg, columns, schema


def _states(cfg):
    return collect_outputs(
        str(local_runner.Paths.for_config(cfg).metadata), cfg.pipeline_name
    ).execution_states


def test_the_cache_sees_the_schema_and_the_checks(tmp_path):
    cfg, columns, schema = _setup(
        tmp_path, _clinic_rows(), split={"group_by": "Patient ID"}, drop_columns=["Visit Date"]
    )
    local_runner.run_pipeline(cfg)
    assert _states(cfg)["Trainer"] == "COMPLETE"

    # Unchanged: every executor is cached, as before.
    local_runner.run_pipeline(cfg)
    states = _states(cfg)
    assert all(states[n] == "CACHED" for n in (*DATA_NODES, "Trainer", "Evaluator")), states

    # A tightened range that real rows violate: the next default (cached) run stops at the data gate.
    original = schema.read_text()
    schema.write_text(_schema(columns, age_min=60))
    with pytest.raises(
        DataGateError, match=r"(?s)column 'age' \[.*\]: expected int, between 60 and 110.*Rows \(\d+\): line"
    ):
        local_runner.run_pipeline(cfg)
    states = _states(cfg)
    assert states["ImportSchemaGen"] == "COMPLETE" and states["DataGate"] == "FAILED", states
    assert "Trainer" not in states

    # Back to the reviewed schema: its earlier executions are reused.
    schema.write_text(original)
    local_runner.run_pipeline(cfg)
    assert _states(cfg)["Trainer"] == "CACHED"

    # A guard setting is part of the data gate's key only: the gate re-runs, training stays cached.
    checks = dataclasses.replace(cfg.data.checks, max_single_feature_auc=0.995)
    changed = dataclasses.replace(cfg, datasets={"clinic": dataclasses.replace(cfg.data, checks=checks)})
    local_runner.run_pipeline(changed)
    states = _states(changed)
    assert states["DataGate"] == "COMPLETE" and states["Trainer"] == "CACHED", states


def _index_sorted_by_label(rows):
    rows = sorted(rows, key=lambda r: r["Outcome"])
    return [{"": str(i), **r} for i, r in enumerate(rows)], "unnamed_0", "counts monotonically"


def _patient_ids(rows):
    return rows, "patient_id", r"split: \{group_by: patient_id\}"


def _label_derived(rows):
    return (
        [{**r, "Follow-up Score": "9" if r["Outcome"] == "pos" else "1"} for r in rows],
        "follow_up_score",
        "AUC 1.000",
    )


def _dates(rows):
    return rows, "visit_date", r"dates \(format %Y-%m-%d\)"


@pytest.mark.parametrize("build", [_index_sorted_by_label, _patient_ids, _label_derived, _dates])
def test_each_identifier_and_leakage_case_stops_at_the_data_gate(tmp_path, build):
    rows = _clinic_rows()
    rows, column, evidence = build(rows)
    drop = {"patient_id": ["Visit Date"], "visit_date": ["Patient ID"]}.get(
        column, ["Patient ID", "Visit Date"]
    )
    cfg, _, _ = _setup(tmp_path, rows, drop_columns=drop)
    with pytest.raises(DataGateError, match=rf"(?s)column '{column}' \[[a-z, ]+\]: .*{evidence}"):
        local_runner.run_pipeline(cfg)
    states = _states(cfg)
    assert states["DataGate"] == "FAILED" and "Trainer" not in states, states
