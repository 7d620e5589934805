"""`dxpipe schema draft` on raw CSVs: what it infers, what it leaves out, and that its advice is sufficient."""

import dataclasses

import yaml

from components.data_checks import guards, rows
from pipelines.config import DatasetConfig, SourceConfig, SplitConfig
from pipelines.data import SPLITS, assign_splits, load_table
from pipelines.schema_draft import draft_schema, infer_type
from schemas.files import read_schema

RAW = "rownames,ID,Age,Sex,Steroid,Bilirubin,Glucose,Admitted,Class\n" + "".join(
    f"{i},{i // 2},{20 + (i * 7) % 60},{'FM'[i % 2]},{'?' if i % 9 == 0 else 'yes' if i % 3 else 'no'},"
    f"{'NA' if i % 11 == 0 else round(0.3 + (i * 37 % 50) / 10, 1)},{0 if i % 13 == 0 else 70 + (i * 17) % 100},"
    f"2022-{1 + i % 12:02d}-{1 + i % 27:02d},{'die' if (i * 5) % 7 < 2 else 'live'}\n"
    for i in range(1, 201)
)  # fmt: skip


def _data(tmp_path, **changes) -> DatasetConfig:
    path = tmp_path / "raw.csv"
    path.write_text(RAW)
    base = DatasetConfig(
        source=SourceConfig(kind="csv", path=str(path)),
        label_column="Class",
        label_map={"live": 0, "die": 1},
        schema_dir=str(tmp_path),
    )
    return dataclasses.replace(base, **changes)


def test_types_are_inferred_as_csv_example_gen_does():
    assert infer_type(["1", "", "-3"]) == "INT"
    assert infer_type(["1", "2.5"]) == "FLOAT"
    assert infer_type(["1", "x"]) == "BYTES"
    assert infer_type(["", ""]) == "BYTES"


def test_the_draft_leaves_out_identifiers_and_names_every_fix(tmp_path):
    draft = draft_schema(load_table(_data(tmp_path)), _data(tmp_path))
    lines = "\n".join(draft.config_lines)
    assert "split: {group_by: id}" in lines
    assert "drop_columns: [admitted, rownames]" in lines  # the date is dropped: the split is by patient
    assert 'steroid: ["?"]' in lines and 'bilirubin: ["NA"]' in lines
    assert "# only if 0 means not measured: missing_values: {glucose: [0]}" in lines
    (tmp_path / "schema.pbtxt").write_text(draft.text)
    schema, _ = read_schema(tmp_path / "schema.pbtxt")
    features = {f.name: f for f in schema.feature}
    assert set(features) == {"age", "sex", "steroid", "bilirubin", "glucose", "label"}
    assert not features["age"].HasField("int_domain")  # observed ranges are comments until reviewed
    assert "REVIEW observed range 20 .. 79" in draft.text
    domains = {d.name: list(d.value) for d in schema.string_domain}
    assert domains["steroid"] == ["no", "yes"] and domains["sex"] == ["F", "M"]
    assert features["bilirubin"].type == 3 and features["bilirubin"].presence.min_fraction < 1  # FLOAT


def test_applying_the_printed_config_lines_gives_a_clean_check(tmp_path):
    data = _data(tmp_path)
    draft = draft_schema(load_table(data), data)
    (tmp_path / "schema.pbtxt").write_text(draft.text)
    schema, _ = read_schema(tmp_path / "schema.pbtxt")
    advice = {}
    for line in draft.config_lines:  # the user accepts every suggestion, the commented one included
        for key, value in yaml.safe_load(line.replace("# only if 0 means not measured: ", "")).items():
            advice[key] = {**advice.get(key, {}), **value} if isinstance(value, dict) else value
    missing = advice["missing_values"]
    fixed = dataclasses.replace(
        data,
        split=SplitConfig(group_by=advice["split"]["group_by"]),
        drop_columns=tuple(advice["drop_columns"]),
        missing_values={k: tuple(str(v) for v in values) for k, values in missing.items()},
    )
    table = load_table(fixed)
    assignment = assign_splits(table, fixed.split)
    splits = {
        s: ([r for r, a in zip(table.rows, assignment, strict=True) if a == s],
            [n for n, a in zip(table.lines, assignment, strict=True) if a == s])
        for s in SPLITS
    }  # fmt: skip
    assert rows.check_rows(table.columns, splits, schema) == []
    assert guards.check_columns(table.columns, splits, guards.allowed_columns(schema)) == []


def test_a_date_without_patients_is_offered_as_a_temporal_split(tmp_path):
    data = _data(tmp_path, drop_columns=("ID",))
    draft = draft_schema(load_table(data), data)
    assert "split: {order_by: admitted}" in draft.config_lines


def test_unmapped_labels_are_in_the_checklist(tmp_path):
    data = _data(tmp_path, label_map={"live": 0})
    draft = draft_schema(load_table(data), data)
    assert any("raw values ['die'] are not mapped" in item for item in draft.checklist)
