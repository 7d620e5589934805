"""The canonical data: the one naming rule, label_map `drop`, and the split (by content, patient or date)."""

import csv
import dataclasses
import io
import random

import pytest

from pipelines.config import DatasetConfig, SourceConfig, SplitConfig
from pipelines.data import SPLITS, assign_splits, canonical_csv, load_table, materialize
from pipelines.errors import ConfigError, DataError
from schemas.naming import feature_name, resolve


def _rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def _dataset(path, **changes) -> DatasetConfig:
    base = DatasetConfig(
        source=SourceConfig(kind="csv", path=str(path)), label_column="target", schema_dir="."
    )
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("dataset", "rows", "positives"),
    # Published class counts: WDBC 212 malignant of 569; Cleveland 139 with disease of 303 (+1 duplicate
    # id in this copy); Pima 268 diabetic of 768.
    [("wdbc", 569, 212), ("heart", 304, 139), ("pima", 768, 268)],
)
def test_packaged_datasets_become_canonical_csv(default_cfg, dataset, rows, positives):
    data = default_cfg.datasets[dataset]
    table = _rows(canonical_csv(data))
    assert len(table) == rows
    labels = [r["label"] for r in table]
    assert set(labels) == {"0", "1"}
    assert labels.count("1") == positives
    assert all(name == feature_name(name) for name in table[0])


def test_pima_zero_means_not_measured(default_cfg):
    table = _rows(canonical_csv(default_cfg.datasets["pima"]))
    assert not any(r["glucose"] == "0" for r in table)
    assert sum(r["insulin"] == "" for r in table) == 374  # the file's zero insulin readings


def test_values_are_copied_as_text(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("Mean Radius,target\n1,0\nabc,1\n")
    # A bad cell is kept for the data gate to report, not silently coerced here.
    assert [r["mean_radius"] for r in _rows(canonical_csv(_dataset(path)))] == ["1", "abc"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "is empty"),
        ("a,target\n", "has a header but no data rows"),
        ("a,b\n1,2\n", "label_column names column 'target', but .* has no such column"),
    ],
    ids=["empty", "header-only", "no-label-column"],
)
def test_unreadable_csv_fails_before_any_component(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        canonical_csv(_dataset(path))


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match="nope.csv does not exist"):
        canonical_csv(_dataset(tmp_path / "nope.csv"))


@pytest.mark.parametrize(
    ("raw", "position", "name"),
    [("Mean Radius", 3, "mean_radius"), ("", 0, "unnamed_0"), ("  ", 4, "unnamed_4"), ("V1", 1, "v1"),
     ("2nd dose (mg)", 2, "f_2nd_dose_mg"), ("\ufeffAge", 0, "age")],
)  # fmt: skip
def test_one_naming_rule(raw, position, name):
    assert feature_name(raw, position) == name
    header = ["x"] * 6
    header[position] = raw
    # Both spellings name the column: the file's and the feature name.
    assert resolve(raw.strip().lstrip("\ufeff"), header) == position
    assert resolve(name, header) == position


def test_config_names_columns_raw_or_normalised_and_the_unnamed_index_is_visible(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_text(",Patient ID,Glucose (mg/dl),target\n1,A,0,0\n2,B,95,1\n3,C,101,0\n")
    for drop, blank in (([""], ["Glucose (mg/dl)"]), (["unnamed_0"], ["glucose_mg_dl"])):
        data = _dataset(path, drop_columns=(*drop, "patient_id"), missing_values={blank[0]: ("0",)})
        table = load_table(data)
        assert table.columns == ("glucose_mg_dl", "label")
        assert [r[0] for r in table.rows] == ["", "95", "101"]
    kept = load_table(_dataset(path))
    assert kept.columns[0] == "unnamed_0"


def test_unknown_column_in_config_names_the_key_and_the_columns(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_text(",a,target\n1,2,0\n")
    with pytest.raises(DataError, match=r"drop_columns names column 'id'.*columns: '' \(unnamed_0\), 'a'"):
        load_table(_dataset(path, drop_columns=("id",)))


def test_label_mapped_to_drop_removes_rows_and_counts_them(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("x,target\n1,pos\n2,neg\n3,invalid\n4,invalid\n5,pos\n")
    table = load_table(_dataset(path, label_map={"pos": 1, "neg": 0, "invalid": "drop"}))
    assert [r[-1] for r in table.rows] == ["1", "0", "1"]
    assert table.lines == [2, 3, 6]
    assert table.dropped_by_label == {"invalid": 2}


def test_label_map_refuses_other_strings():
    with pytest.raises(ConfigError, match="other than 0, 1 or 'drop'"):
        _dataset("x.csv", label_map={"pos": "yes"})


def _patients(path, n=120, seed=3):
    rng = random.Random(seed)
    lines = ["patient,visit_date,age,target"]
    for p in range(n):
        for _ in range(rng.choice([1, 2, 3])):
            lines.append(
                f"P{p},2020-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},{rng.randint(20, 90)},{p % 2}"
            )
    path.write_text("\n".join(lines) + "\n")


def test_group_by_keeps_every_patient_in_one_split_and_out_of_the_features(tmp_path):
    path = tmp_path / "patients.csv"
    _patients(path)
    data = _dataset(path, drop_columns=("visit_date",), split=SplitConfig(group_by="patient"))
    prepared = materialize(data, tmp_path / "in")
    table = prepared.table
    splits_of = {}
    for group, split in zip(table.groups, prepared.assignment, strict=True):
        splits_of.setdefault(group, set()).add(split)
    assert len(splits_of) == 120 and all(len(s) == 1 for s in splits_of.values())
    assert "patient" not in table.columns
    for split in SPLITS:
        header = (tmp_path / "in" / split / "data.csv").read_text().splitlines()[0]
        assert header == "age,label"
    assert sum(prepared.sizes.values()) == len(table.rows) and all(prepared.sizes.values())


def test_order_by_tests_only_rows_after_every_training_row(tmp_path):
    path = tmp_path / "patients.csv"
    _patients(path)
    data = _dataset(path, drop_columns=("patient",), split=SplitConfig(order_by="Visit Date"))
    table = load_table(data)
    assignment = assign_splits(table, data.split)
    dates = {s: [d for d, a in zip(table.dates, assignment, strict=True) if a == s] for s in SPLITS}
    assert max(dates["train"]) < min(dates["eval"]) and max(dates["eval"]) < min(dates["test"])
    assert "visit_date" not in table.columns
    share = len(dates["train"]) / len(table.rows)
    assert 0.5 < share < 0.7, share


def test_order_by_names_the_rows_that_are_not_dates(tmp_path):
    path = tmp_path / "dates.csv"
    path.write_text("when,x,target\n2020-01-02,1,0\nyesterday,2,1\n2020-02-03,3,0\n")
    with pytest.raises(
        DataError, match=r"order_by column 'when' .* not a date on 1 row\(s\) \(lines 3, e.g. 'yesterday'\)"
    ):
        load_table(_dataset(path, split=SplitConfig(order_by="when")))


def test_identical_feature_rows_share_a_split(tmp_path):
    path = tmp_path / "dups.csv"
    # The same measurements recorded twice with different labels must not straddle train and test.
    path.write_text("a,b,target\n" + "".join(f"{i % 40},{i % 7},{i % 2}\n" for i in range(400)))
    table = load_table(_dataset(path))
    assignment = assign_splits(table, SplitConfig())
    seen = {}
    for row, split in zip(table.rows, assignment, strict=True):
        assert seen.setdefault(tuple(row[:2]), split) == split


def test_wdbc_split_is_near_the_configured_proportions(default_cfg, tmp_path):
    prepared = materialize(default_cfg.data, tmp_path)
    shares = [prepared.sizes[s] / 569 for s in SPLITS]
    assert abs(shares[0] - 0.6) < 0.05 and abs(shares[1] - 0.2) < 0.05 and abs(shares[2] - 0.2) < 0.05


def test_materialize_rewrites_only_on_change(tmp_path, default_cfg):
    first = materialize(default_cfg.data, tmp_path)
    files = sorted(tmp_path.rglob("*.csv"))
    mtimes = [p.stat().st_mtime_ns for p in files]
    again = materialize(default_cfg.data, tmp_path)
    # ExampleGen's cache key includes the files' mtimes: an unchanged dataset must not be rewritten.
    assert again.digest == first.digest and len(files) == 3
    assert [p.stat().st_mtime_ns for p in files] == mtimes


def test_materialize_refuses_a_directory_with_other_files(tmp_path, default_cfg):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="holds notes.txt"):
        materialize(default_cfg.data, tmp_path)


def test_predict_csv_accepts_the_training_csvs_raw_header(tmp_path):
    from serving.cli import _csv_instances

    path = tmp_path / "rows.csv"
    path.write_text("V1,Mean Radius,Sex\n1.5,12,F\n,13,M\n")
    inputs = {
        "v1": {"dtype": "DT_FLOAT"},
        "mean_radius": {"dtype": "DT_FLOAT"},
        "sex": {"dtype": "DT_STRING"},
    }
    rows = list(_csv_instances(path, inputs))
    assert rows[0] == {"v1": 1.5, "mean_radius": 12.0, "sex": "F"}
    assert rows[1]["mean_radius"] == 13.0 and rows[1]["v1"] is None  # blank -> JSON null (missing)


def test_a_run_killed_while_writing_leaves_nothing_that_blocks_the_next(tmp_path, default_cfg):
    materialize(default_cfg.data, tmp_path)
    (tmp_path / "rows.tmp").write_text("half")  # killed between writing and renaming the manifest
    (tmp_path / "data.csv").write_text("old layout")  # the single file older versions wrote
    prepared = materialize(default_cfg.data, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "column_types.json",
        "eval",
        "rows.json",
        "test",
        "train",
    ]
    assert sum(prepared.sizes.values()) == 569
