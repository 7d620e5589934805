"""Identifier and leakage guards and the row-level schema check, on CSVs each test builds."""

import dataclasses
import random

import pytest
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from components.data_checks import guards, rows
from pipelines.config import DatasetConfig, SourceConfig, SplitConfig
from pipelines.data import SPLITS, assign_splits, load_table
from schemas.files import read_schema, schema_path


def _dataset(path, **changes) -> DatasetConfig:
    base = DatasetConfig(
        source=SourceConfig(kind="csv", path=str(path)), label_column="target", schema_dir="."
    )
    return dataclasses.replace(base, **changes)


def _splits(data):
    table = load_table(data)
    assignment = assign_splits(table, data.split)
    return table, {
        s: ([r for r, a in zip(table.rows, assignment, strict=True) if a == s],
            [n for n, a in zip(table.lines, assignment, strict=True) if a == s])
        for s in SPLITS
    }  # fmt: skip


def _guards(data, allowed=None, **kwargs):
    table, splits = _splits(data)
    return guards.check_columns(table.columns, splits, allowed or {}, **kwargs)


def _clinical(n=300, seed=0):
    """Rows of a plausible clinical file: two noisy predictors and a category."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        y = int(rng.random() < 0.4)
        out.append([f"{rng.gauss(120 + 15 * y, 20):.1f}", str(rng.randint(30, 80)), rng.choice("FM"), str(y)])
    return out


def _write(path, header, body):
    path.write_text("\n".join([",".join(header), *(",".join(r) for r in body)]) + "\n")
    return path


def test_a_row_index_in_a_file_sorted_by_label_is_an_identifier(tmp_path):
    body = sorted(_clinical(), key=lambda r: r[-1])
    path = _write(
        tmp_path / "sorted.csv",
        ["", "bp", "age", "sex", "target"],
        [[str(i), *r] for i, r in enumerate(body)],
    )
    findings = _guards(_dataset(path))
    assert [f.column for f in findings] == ["unnamed_0"]
    assert "counts monotonically" in findings[0].found and "300 distinct values" in findings[0].found
    assert "`drop_columns`" in findings[0].fix and findings[0].rows[0] == (2, "0")


def test_repeated_patient_ids_point_at_group_by(tmp_path):
    body = [[f"MRN{i // 3:04d}", *r] for i, r in enumerate(_clinical())]
    path = _write(tmp_path / "ids.csv", ["MRN", "bp", "age", "sex", "target"], body)
    findings = _guards(_dataset(path))
    assert [f.column for f in findings] == ["mrn"]
    assert "split: {group_by: mrn}" in findings[0].fix
    # Grouped by it, the column is no feature and the guard has nothing left to say.
    assert _guards(_dataset(path, split=SplitConfig(group_by="MRN"))) == []


def test_a_label_derived_column_stops_with_its_auc(tmp_path):
    body = [
        [*r[:-1], f"{float(r[-1]) * 10 + random.Random(i).random():.2f}", r[-1]]
        for i, r in enumerate(_clinical())
    ]
    path = _write(tmp_path / "leak.csv", ["bp", "age", "sex", "followup_score", "target"], body)
    findings = _guards(_dataset(path))
    assert [f.column for f in findings] == ["followup_score"]
    assert findings[0].splits == ("train",) and "AUC 1.000" in findings[0].found
    assert "checks.max_single_feature_auc" in findings[0].fix
    # The bound is configurable; a perfect separation trips even the loosest one.
    assert _guards(_dataset(path), max_single_feature_auc=1.0)[0].column == "followup_score"


def test_a_date_column_is_recognised_as_dates(tmp_path):
    body = [[f"2021-{1 + i % 12:02d}-{1 + i % 28:02d}", *r] for i, r in enumerate(_clinical())]
    path = _write(tmp_path / "dated.csv", ["Admission Date", "bp", "age", "sex", "target"], body)
    findings = _guards(_dataset(path))
    assert [f.column for f in findings] == ["admission_date"]
    assert findings[0].found == "dates (format %Y-%m-%d)" and "order_by: admission_date" in findings[0].fix


def test_a_reviewed_annotation_allows_a_column_and_an_unreviewed_one_does_not(tmp_path):
    body = [[str(i), *r] for i, r in enumerate(_clinical())]
    path = _write(tmp_path / "idx.csv", ["record", "bp", "age", "sex", "target"], body)
    assert _guards(_dataset(path), {"record": "reviewed by Dr A: a device reading, not an id"}) == []
    unreviewed = _guards(_dataset(path), {"record": ""})
    assert unreviewed[0].found == "the annotation has no comment" and len(unreviewed) == 2


def test_annotations_are_read_from_the_schema():
    schema = text_format.Parse(
        'feature { name: "a" annotation { tag: "dxpipe:allow" comment: "ok, Dr B" } } feature { name: "b" }',
        schema_pb2.Schema(),
    )
    assert guards.allowed_columns(schema) == {"a": "ok, Dr B"}


@pytest.mark.parametrize("dataset", ["wdbc", "heart", "pima"])
def test_bundled_datasets_pass_every_guard_and_their_schema(default_cfg, dataset):
    # WDBC's worst perimeter (AUC ~0.98 alone) is a genuine predictor: it must not trip the bound.
    data = default_cfg.datasets[dataset]
    table, splits = _splits(data)
    schema, _ = read_schema(schema_path(data.schema_dir))
    assert guards.check_columns(table.columns, splits, guards.allowed_columns(schema)) == []
    assert rows.check_rows(table.columns, splits, schema) == []


def test_wdbc_worst_perimeter_is_strong_but_under_the_default_bound(default_cfg):
    table, splits = _splits(default_cfg.datasets["wdbc"])
    train = splits["train"][0]
    column = table.columns.index("worst_perimeter")
    auc = guards.single_feature_auc([r[column] for r in train], [int(r[-1]) for r in train])
    assert 0.95 < auc < default_cfg.datasets["wdbc"].checks.max_single_feature_auc


def test_single_feature_auc_handles_ties_categories_and_blanks():
    assert guards.single_feature_auc(["1", "2", "3", "4"], [0, 0, 1, 1]) == 1.0
    assert guards.single_feature_auc(["4", "3", "2", "1"], [0, 0, 1, 1]) == 1.0  # reversed is as strong
    assert guards.single_feature_auc(["1", "1", "1", "1"], [0, 1, 0, 1]) == 0.5
    assert guards.single_feature_auc(["a", "b", "", "a"], [1, 0, 1, 1]) == 1.0
    assert guards.single_feature_auc(["1", "2"], [1, 1]) is None


def test_split_leakage_counts_identical_rows_and_shared_groups():
    shared = guards.split_leakage(
        ["a", "label"], {"train": ([["1", "0"], ["2", "1"]], ["p1", "p2"]), "test": ([["1", "1"]], ["p2"])}
    )
    assert shared == {"identical_rows_across_splits": 1, "shared_groups": 1}


_SCHEMA = """
feature { name: "glucose" type: INT int_domain { min: 30 max: 400 } value_count { min: 1 max: 1 }
          presence { min_fraction: 1.0 } }
feature { name: "sex" type: BYTES domain: "sex" value_count { min: 1 max: 1 } presence { min_fraction: 1.0 } }
feature { name: "label" type: INT int_domain { min: 0 max: 1 } presence { min_fraction: 1.0 } }
string_domain { name: "sex" value: "F" value: "M" }
"""


def _row_findings(tmp_path, body, header=("glucose", "sex", "target"), limit=20, **changes):
    path = _write(tmp_path / "rows.csv", list(header), body)
    table, splits = _splits(_dataset(path, **changes))
    return rows.check_rows(table.columns, splits, text_format.Parse(_SCHEMA, schema_pb2.Schema()), limit)


def test_every_offending_row_is_listed_with_its_line_once_across_splits(tmp_path):
    body = [[str(90 + i), "F", str(i % 2)] for i in range(100)]
    for line in (5, 17, 60):  # three data-entry errors in one column, in whichever splits they land
        body[line - 2][0] = "1200"
    findings = _row_findings(tmp_path, body)
    assert len(findings) == 1
    finding = findings[0]
    assert finding.column == "glucose" and finding.found == "values out of range"
    assert finding.rows == ((5, "1200"), (17, "1200"), (60, "1200")) and finding.count == 3
    assert "widen the schema's domain only if" in finding.fix
    assert "line 5: '1200', line 17: '1200', line 60: '1200'" in str(finding)


def test_the_row_list_stops_at_the_limit_and_counts_the_rest(tmp_path):
    body = [["1200", "F", str(i % 2)] for i in range(50)]
    (finding,) = _row_findings(tmp_path, body, limit=5)
    assert len(finding.rows) == 5 and finding.count == 50 and "(and 45 more)" in str(finding)


def test_a_sentinel_points_at_missing_values_and_blanks_are_never_filled_in(tmp_path):
    body = [[str(90 + i), "F", str(i % 2)] for i in range(40)]
    body[3][0] = "0"
    body[7][0] = ""
    body[9][1] = "?"
    by_problem = {(f.column, f.found): f for f in _row_findings(tmp_path, body)}
    assert "`missing_values: {glucose: [0]}`" in by_problem[("glucose", "values out of range")].fix
    assert "`missing_values: {sex: [?]}`" in by_problem[("sex", "unknown categories")].fix
    blank = by_problem[("glucose", "blank cells")]
    assert blank.rows == ((9, ""),) and "never invents values" in blank.fix and "fill" not in blank.fix
    # Listing the marker, as the fix says, clears the finding.
    fixed = _row_findings(tmp_path, body, missing_values={"sex": ("?",), "glucose": ("0",)})
    assert {f.found for f in fixed} == {"blank cells"}


def test_extra_and_missing_columns_name_drop_columns_and_the_schema(tmp_path):
    body = [[str(90 + i), "x", str(i % 2)] for i in range(10)]
    findings = _row_findings(tmp_path, body, header=("glucose", "Ward", "target"))
    by_column = {f.column: f for f in findings}
    assert "`drop_columns`" in by_column["ward"].fix
    assert by_column["sex"].found == "no such column in the data"
    assert all(f.splits == ("train", "eval", "test") for f in findings)


def test_a_blank_label_points_at_label_map_drop(tmp_path):
    body = [[str(90 + i), "F", str(i % 2)] for i in range(20)]
    body[4][2] = ""
    (finding,) = _row_findings(tmp_path, body)
    assert finding.column == "label" and finding.rows == ((6, ""),)
    assert "`'': drop`" in finding.fix and "never invents" not in finding.fix


@pytest.mark.parametrize(
    ("name", "flagged"),
    [("patient_id", True), ("mrn", True), ("unnamed_0", True), ("record_no", True), ("rownames", True),
     ("patient_age", False), ("id_score", False), ("steroid", False), ("thyroid", False)],
)  # fmt: skip
def test_a_name_alone_flags_only_identifier_names(name, flagged):
    values = [str(i % 7) for i in range(50)]  # neither unique nor monotone: only the name can speak
    assert (guards.identifier_evidence(name, values, 0.9) is not None) is flagged


def test_the_gate_report_keeps_one_entry_per_column():
    from components.data_checks.findings import NOT_IN_SCHEMA, Finding
    from components.data_gate.core import combine

    tfdv = [
        Finding("age", ("train",), "int", "unexpectedly small value: 3", "fix a"),
        Finding("age", ("test",), "int", "unexpectedly small value: 3", "fix a"),
        Finding("mrn", ("train",), "no such column in the schema", "new column", "fix b"),
        Finding("bmi", ("eval",), "float", "low fraction present", "fix c"),
        Finding("", ("train",), "a dataset matching the schema", "too few examples", "fix d"),
    ]
    rows_found = [
        Finding("age", ("train", "test"), "int", "values out of range", "fix e", ((4, "3"),), 1),
        Finding("mrn", ("train", "eval", "test"), "no such column", NOT_IN_SCHEMA, "fix f"),
    ]
    guard = [Finding("mrn", ("train", "eval", "test"), "not an identifier", "identifier-like", "fix g")]
    report = combine(tfdv, rows_found, guard)
    assert [(f.column, f.fix) for f in report] == [
        ("age", "fix e"),  # the row check's entry, with the row, replaces TFDV's two
        ("bmi", "fix c"),
        ("", "fix d"),
        ("mrn", "fix g"),  # the guard's entry only
    ]
