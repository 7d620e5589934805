"""Every data-gate branch, on real TFDV statistics of the real WDBC file with one fault injected each."""

import csv
import io
from pathlib import Path

import pytest
import tensorflow_data_validation as tfdv
from apache_beam.options.pipeline_options import PipelineOptions

from components.data_gate import core
from models.features import load_schema
from pipelines.data import canonical_csv
from pipelines.errors import DataGateError

_BEAM = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])


@pytest.fixture(scope="module")
def wdbc(default_cfg):
    data = default_cfg.datasets["wdbc"]
    rows = list(csv.DictReader(io.StringIO(canonical_csv(data))))
    return rows, load_schema(str(Path(data.schema_dir) / "schema.pbtxt"))


def _findings(tmp_path, rows, schema, fieldnames=None):
    path = tmp_path / "data.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    stats = tfdv.generate_statistics_from_csv(str(path), pipeline_options=_BEAM)
    return core.findings_from_anomalies("train", tfdv.validate_statistics(stats, schema), schema)


def test_clean_data_passes(tmp_path, wdbc):
    rows, schema = wdbc
    findings = _findings(tmp_path, rows, schema)
    assert findings == []
    core.enforce(findings, "wdbc.csv")  # no exception


def _set(rows, column, value, index=3):
    rows = [dict(r) for r in rows]
    rows[index][column] = value
    return rows


@pytest.mark.parametrize(
    ("fault", "column", "expected", "found", "fix"),
    [
        (
            "missing-column",
            "mean_radius",
            "float, between 0 and 84",
            "[Cc]olumn is completely missing",
            "add the column to the CSV",
        ),
        (
            "non-numeric",
            "mean_texture",
            "float",
            "BYTES|STRING|string",
            "make every value in the column a number",
        ),
        (
            "out-of-range",
            "worst_area",
            "between 0 and 13000",
            "[Uu]nexpectedly (small|low)",
            "correct the out-of-range",
        ),
        ("unknown-label", "label", "int, between 0 and 1", "[Uu]nexpectedly large", "labels must be 0 or 1"),
        (
            "missing-value",
            "area_error",
            "present in every row",
            "[Ff]raction|present",
            "dxpipe never invents values",
        ),
    ],
)
def test_each_fault_is_reported_with_column_expectation_and_fix(
    tmp_path, wdbc, fault, column, expected, found, fix
):
    rows, schema = wdbc
    fieldnames = None
    if fault == "missing-column":
        fieldnames = [c for c in rows[0] if c != column]
        rows = [{k: v for k, v in r.items() if k != column} for r in rows]
    elif fault == "non-numeric":
        rows = _set(rows, column, "n/a")
    elif fault == "out-of-range":
        rows = _set(rows, column, "-1")
    elif fault == "unknown-label":
        rows = _set(rows, column, "2")
    else:
        rows = _set(rows, column, "")
    findings = _findings(tmp_path, rows, schema, fieldnames)
    assert [f.column for f in findings] == [column]
    finding = findings[0]
    assert expected in finding.expected
    assert __import__("re").search(found, finding.found), finding.found
    assert fix in finding.fix
    assert "fill in" not in finding.fix and "give every row" not in finding.fix
    with pytest.raises(DataGateError, match=rf"(?s)1 problem\(s\) in my\.csv.*column '{column}' \[train\]"):
        core.enforce(findings, "my.csv")


def test_report_lists_every_problem_at_once(tmp_path, wdbc):
    rows, schema = wdbc
    rows = _set(_set(rows, "mean_texture", "n/a"), "label", "7", index=5)
    findings = _findings(tmp_path, rows, schema)
    assert {f.column for f in findings} == {"mean_texture", "label"}
    report = core.format_report(findings, "x.csv")
    assert report.count("\n  - ") == 2 and "nothing was trained or pushed" in report


def test_expectation_describes_categories_and_partial_presence(default_cfg):
    schema = load_schema(str(Path(default_cfg.datasets["heart"].schema_dir) / "schema.pbtxt"))
    by_name = {f.name: f for f in schema.feature}
    assert "one of ['Female', 'Male']" in core.describe_expectation(by_name["sex"], schema)
    assert "present in at least 90% of rows" in core.describe_expectation(by_name["ca"], schema)
    assert core.describe_expectation(None, schema) == "no such column in the schema"
