"""The installed `dxpipe` script on every row of the README's bad-input table, and `dxpipe schema draft|check`.

Each bad input stops before any component with one `dxpipe: error:` line (no traceback) and exit status 2.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.config import DEFAULT_CONFIG, load_config

DXPIPE = str(Path(sys.executable).parent / "dxpipe")
GOOD_SCHEMA = """
feature { name: "age" type: INT value_count { min: 1 max: 1 } presence { min_fraction: 1.0 } }
feature { name: "label" type: INT int_domain { min: 0 max: 1 } presence { min_fraction: 1.0 } }
"""


def _dxpipe(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([DXPIPE, *argv], capture_output=True, text=True, cwd=cwd, timeout=300, check=False)


def _project(tmp_path: Path, csv_text: str | bytes = "Age,Outcome\n50,yes\n60,no\n", **entry) -> Path:
    """A user's folder: clinic.csv, schemas/clinic/schema.pbtxt and clinic.yaml naming them relatively."""
    data = tmp_path / "clinic.csv"
    if isinstance(csv_text, bytes):
        data.write_bytes(csv_text)
    else:
        data.write_text(csv_text)
    (tmp_path / "schemas" / "clinic").mkdir(parents=True)
    (tmp_path / "schemas" / "clinic" / "schema.pbtxt").write_text(GOOD_SCHEMA)
    clinic = {
        "source": {"kind": "csv", "path": "clinic.csv"},
        "label_column": "Outcome",
        "label_map": {"yes": 1, "no": 0},
        "schema_dir": "schemas/clinic",
        **entry,
    }
    config = tmp_path / "clinic.yaml"
    config.write_text(
        yaml.safe_dump({"dataset": "clinic", "workdir": "work", "datasets": {"clinic": clinic}})
    )
    return config


def _many(n: int) -> str:
    return "Age,Outcome\n" + "".join(f"{30 + i % 50},{'yes' if i % 3 else 'no'}\n" for i in range(n))


# One case per row of README.md's "Bad input" table that stops before any component.
CASES = {
    "csv-missing": (dict(source={"kind": "csv", "path": "nope.csv"}), None, "nope.csv does not exist"),
    "csv-empty": ({}, "", "is empty"),
    "csv-header-only": ({}, "Age,Outcome\n", "has a header but no data rows"),
    "csv-no-label-column": ({}, "Age,Result\n50,yes\n", "label_column names column 'Outcome'"),
    "csv-not-utf8": ({}, "Age,Outcome\n50,\xe9\n".encode("latin-1"), "is not UTF-8"),
    "drop-columns-unknown": (dict(drop_columns=["MRN"]), None, "drop_columns names column 'MRN'"),
    "missing-values-unknown": (dict(missing_values={"Glucose": [0]}), None, "missing_values names column"),
    "group-by-unknown": (dict(split={"group_by": "patient"}), None, "split.group_by names column 'patient'"),
    "order-by-not-dates": (
        dict(split={"order_by": "Age"}), _many(30), "split.order_by column 'Age' .* is not a date on 30 row"
    ),
    "label-map-drops-all": (dict(label_map={"yes": "drop", "no": "drop"}), None, "label_map drops every row"),
    "label-map-not-binary": (dict(label_map={"yes": 2}), None, "other than 0, 1 or 'drop'"),
    "split-empty": ({}, "Age,Outcome\n50,yes\n", "split would be empty"),
    "schema-dir-missing": (dict(schema_dir="schemas/other"), None, r"schemas/other does not exist; create it"),
    "config-unknown-key": (dict(drop_column=["x"]), None, "unknown key 'datasets.clinic.drop_column'"),
}  # fmt: skip


def _one_line_error(done: subprocess.CompletedProcess, match: str) -> None:
    import re

    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dxpipe: error: "), done.stderr
    assert re.search(match, lines[0]), lines[0]
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_exit_two(tmp_path, case):
    entry, csv_text, match = CASES[case]
    config = _project(tmp_path, **({} if csv_text is None else {"csv_text": csv_text}), **entry)
    _one_line_error(_dxpipe("run", "--config", str(config), cwd=tmp_path), match)
    assert not (tmp_path / "work" / "pipelines").exists()  # no component ran


@pytest.mark.parametrize(
    ("case", "write", "match"),
    [
        ("file-missing", None, r"schema\.pbtxt does not exist; write a first schema with `dxpipe schema draft`"),
        ("does-not-parse", "feature { name: ", r"is not a valid schema \(1:17 "),
        ("unreadable", "<dir>", r"cannot read .*schema\.pbtxt"),
        ("not-utf8", b"\xff\xfe", "is not UTF-8 text"),
        ("no-label", 'feature { name: "age" type: INT }', "has no feature named 'label'"),
        ("category-without-domain", GOOD_SCHEMA + 'feature { name: "sex" type: BYTES }', "'sex' is BYTES without"),
    ],
)  # fmt: skip
def test_bad_schema_is_one_line_and_exit_two(tmp_path, case, write, match):
    config = _project(tmp_path)
    schema = tmp_path / "schemas" / "clinic" / "schema.pbtxt"
    schema.unlink()
    if write == "<dir>":
        schema.mkdir()  # read as a file it fails even for root, unlike a chmod
    elif isinstance(write, bytes):
        schema.write_bytes(write)
    elif write is not None:
        schema.write_text(write)
    for command in ("run", "schema check"):
        _one_line_error(_dxpipe(*command.split(), "--config", str(config), cwd=tmp_path), match)


def test_a_copied_default_config_keeps_the_bundled_schemas(tmp_path):
    copy = tmp_path / "elsewhere" / "mine.yaml"
    copy.parent.mkdir()
    copy.write_text(DEFAULT_CONFIG.read_text())
    for name in ("wdbc", "heart", "pima"):
        cfg = load_config(copy, dataset=name)
        assert (Path(cfg.data.schema_dir) / "schema.pbtxt").is_file(), cfg.data.schema_dir


RAW = (
    ",Patient ID,Visit Date,Age,Sex,Glucose,Outcome\n"
    + "".join(
        f"{i},P{i // 2:03d},2021-{1 + i % 12:02d}-{1 + i % 27:02d},{30 + (i * 7) % 50},{'FM'[i % 2]},"
        f"{0 if i % 17 == 0 else 80 + (i * 13) % 90},{'invalid' if i % 41 == 0 else 'yes' if (i * 5) % 7 < 3 else 'no'}\n"
        for i in range(1, 161)
    )
)  # fmt: skip


def test_schema_draft_then_check_guides_a_raw_csv_to_a_clean_check(tmp_path):
    config = _project(tmp_path, csv_text=RAW)
    (tmp_path / "schemas" / "clinic" / "schema.pbtxt").unlink()
    drafted = _dxpipe("schema", "draft", "--config", str(config), cwd=tmp_path)
    assert drafted.returncode == 0, drafted.stderr
    out = drafted.stdout
    assert "split: {group_by: patient_id}" in out and "drop_columns: [unnamed_0, visit_date]" in out
    assert "missing_values: {glucose: [0]}" in out and "`invalid: drop`" in out
    schema = (tmp_path / "schemas" / "clinic" / "schema.pbtxt").read_text()
    assert 'name: "sex"' in schema and 'value: "F"' in schema and "REVIEW observed range" in schema
    assert "unnamed_0" not in schema.split("REVIEW every")[1].split("feature")[1:]  # identifiers left out
    # The draft is never written over a reviewed schema.
    _one_line_error(_dxpipe("schema", "draft", "--config", str(config), cwd=tmp_path), "exists")

    # Unedited config: the check names each problem with its rows and the config key that fixes it.
    check = _dxpipe("schema", "check", "--config", str(config), cwd=tmp_path)
    assert check.returncode == 2
    for expected in ("column 'unnamed_0'", "column 'patient_id'", "column 'visit_date'", "`drop_columns`"):
        assert expected in check.stderr, check.stderr
    assert "column 'label'" in check.stderr and "'invalid'" in check.stderr and "line 42" in check.stderr
    # One entry per column: the guard's (with its evidence), not also the schema's "no such column".
    assert all(check.stderr.count(f"column '{c}'") == 1 for c in ("unnamed_0", "patient_id", "visit_date"))

    # The config lines the draft printed, then the check passes.
    raw = yaml.safe_load(config.read_text())
    raw["datasets"]["clinic"].update(
        split={"group_by": "patient_id"},
        drop_columns=["unnamed_0", "visit_date"],
        missing_values={"glucose": [0]},
        label_map={"yes": 1, "no": 0, "invalid": "drop"},
    )
    config.write_text(yaml.safe_dump(raw))
    clean = _dxpipe("schema", "check", "--config", str(config), cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr
    assert "pass the identifier and leakage checks" in clean.stdout


def test_compile_reports_a_missing_schema_in_one_line(tmp_path):
    config = _project(tmp_path)
    (tmp_path / "schemas" / "clinic" / "schema.pbtxt").unlink()
    done = _dxpipe("compile", "--config", str(config), "--output", str(tmp_path / "k.yaml"), cwd=tmp_path)
    _one_line_error(done, r"schema\.pbtxt does not exist")


@pytest.mark.slow
def test_a_leaking_column_stops_the_installed_run_at_the_data_gate(tmp_path):
    body = "".join(
        f"{30 + (i * 7) % 50},{'yes' if i % 3 else 'no'},{9 if i % 3 else 1}\n" for i in range(120)
    )
    config = _project(tmp_path, csv_text="Age,Outcome,Discharge Code\n" + body)
    schema = tmp_path / "schemas" / "clinic" / "schema.pbtxt"
    schema.write_text(
        GOOD_SCHEMA + 'feature { name: "discharge_code" type: INT presence { min_fraction: 1.0 } }\n'
    )
    done = _dxpipe("run", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert (
        done.stderr.startswith("dxpipe: error: Data gate: 1 problem(s) in ")
        and "Traceback" not in done.stderr
    )
    assert "column 'discharge_code' [train]" in done.stderr and "AUC 1.000" in done.stderr
    assert "DataGate" in done.stdout and "Trainer" not in done.stdout
    assert "split by row content: train" in done.stdout  # the realised split sizes are printed first


def test_a_bundled_schema_is_never_redrafted(tmp_path):
    before = (Path(load_config().data.schema_dir) / "schema.pbtxt").read_bytes()
    done = _dxpipe("schema", "draft", "--dataset", "wdbc", "--force", cwd=tmp_path)
    _one_line_error(done, "is a schema shipped with dxpipe and is never re-drafted")
    assert (Path(load_config().data.schema_dir) / "schema.pbtxt").read_bytes() == before
