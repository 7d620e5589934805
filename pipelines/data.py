"""Turns a configured dataset into the canonical, already split CSVs that ExampleGen reads.

Values are copied as text, never re-parsed: an integer column stays integer and a bad cell stays bad, so
the data gate (not this step) judges the content against the curated schema. This step only renames
columns by the one naming rule (`schemas.naming`), filters rows, drops columns, maps labels (removing the
rows mapped to `drop`), blanks "not measured" markers, and splits the rows, as the config says.

The split happens here rather than in ExampleGen, whose hash of the whole serialized row sends a patient's
rows, and identical rows with different labels, to different splits: a row goes to a split by a hash of
its feature values, or of its `split.group_by` value, or by its `split.order_by` date. The grouping and
date columns are used for the split only and never reach the model. Next to the split files,
`rows.json` keeps each row's line in the source file, so reports can name the rows to fix, and
`column_types.json` each split's column types as CsvExampleGen would infer them, so ExampleGen
(`components/csv_examples`) converts each row as it reads it instead of holding the rows until they are typed.

Files are rewritten only when their bytes change, because ExampleGen's cache key includes the input
files' modification times: an unchanged dataset stays cached and a changed one is read again.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import functools
import hashlib
import importlib.resources
import io
import json
from collections import Counter
from pathlib import Path

from components.csv_examples.core import TYPES_FILE, file_types, sidecar_text
from components.data_checks.dates import best_format, date_format, parse
from pipelines.config import LABEL_DROP, DatasetConfig
from pipelines.errors import DataError
from schemas.naming import LABEL, feature_name, resolve

DATA_FILE = "data.csv"
ROWS_FILE = "rows.json"
SPLITS = ("train", "eval", "test")


@dataclasses.dataclass(frozen=True)
class Table:
    """The canonical rows of a dataset, before the split.

    Attributes:
        origin: The source's user-facing name (file path or loader).
        columns: Feature names, `label` included, in file order.
        rows: Cells as text, one list per row, in `columns` order.
        lines: Each row's line number in the source file (1 is the header).
        groups: Each row's `split.group_by` value (empty without group_by).
        dates: Each row's `split.order_by` date (empty without order_by).
        dropped_by_label: Rows removed because label_map maps their label to `drop`, by raw label.
    """

    origin: str
    columns: tuple[str, ...]
    rows: list[list[str]]
    lines: list[int]
    groups: list[str] = dataclasses.field(default_factory=list)
    dates: list[datetime.datetime] = dataclasses.field(default_factory=list)
    dropped_by_label: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What `materialize` wrote.

    Attributes:
        directory: The ExampleGen input directory (one sub-directory per split).
        digest: SHA-256 over the split files (the dataset digest tracked with each run).
        sizes: Rows per split.
        table: The canonical rows.
        assignment: Each row's split, in table order.
    """

    directory: Path
    digest: str
    sizes: dict[str, int]
    table: Table
    assignment: list[str]


@functools.lru_cache(maxsize=4)
def _sklearn_csv(name: str) -> str:
    # Cached: loading scikit-learn and the frame takes ~2 s, and a run reads the source twice (the CLI's
    # data summary, then the pipeline's input).
    import sklearn.datasets  # Deferred: scikit-learn is only needed for this source kind.

    loader = getattr(sklearn.datasets, name, None)
    if loader is None:
        raise DataError(f"source.name {name!r} is not a scikit-learn dataset loader.")
    frame = loader(as_frame=True).frame
    buffer = io.StringIO()
    # repr-exact floats: the bundled values round-trip unchanged.
    frame.to_csv(buffer, index=False, float_format="%.10g")
    return buffer.getvalue()


def _read_source(data: DatasetConfig) -> tuple[str, str]:
    """Returns (text of the source CSV, a name for messages)."""
    source = data.source
    if source.kind == "sklearn":
        return _sklearn_csv(source.name), f"sklearn.datasets.{source.name}"
    if source.kind == "package":
        try:
            resource = importlib.resources.files(source.package).joinpath(source.resource)
            return resource.read_text(encoding="utf-8-sig"), f"{source.package}/{source.resource}"
        except ModuleNotFoundError:
            raise DataError(
                f"source.package {source.package!r} is not installed; run `make setup` (it installs the "
                "data packages from requirements-data.lock)."
            ) from None
        except FileNotFoundError:
            raise DataError(
                f"source.resource {source.resource!r} is not in package {source.package}."
            ) from None
    path = Path(source.path)
    if not path.is_file():
        raise DataError(f"source.path {path} does not exist; point it at your CSV file.")
    try:
        return path.read_text(encoding="utf-8-sig"), str(path)
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text ({err.reason}); export the CSV as UTF-8.") from None


def source_name(data: DatasetConfig) -> str:
    """The data's user-facing name, as reports print it."""
    source = data.source
    if source.kind == "sklearn":
        return f"sklearn.datasets.{source.name}"
    if source.kind == "package":
        return f"{source.package}/{source.resource}"
    return source.path


def _position(name: str, key: str, header: list[str], origin: str) -> int:
    position = resolve(name, header)
    if position is None:
        shown = ", ".join(
            repr(c) if c.strip() else f"'' ({feature_name(c, i)})" for i, c in enumerate(header)
        )
        raise DataError(
            f"{key} names column {name!r}, but {origin} has no such column (columns: {shown}); a column "
            "may be written as the file spells it or by its feature name."
        )
    return position


def load_table(data: DatasetConfig) -> Table:
    """Reads the configured source into canonical rows.

    Raises:
        DataError: If the source is missing, empty or has no header; a configured column is absent; two
            columns get the same feature name; or an `order_by` cell is not a date.
    """
    text, origin = _read_source(data)
    reader = csv.reader(io.StringIO(text))
    records = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    if not records:
        raise DataError(f"{origin} is empty; a CSV with a header row and at least one data row is needed.")
    (_, header), body = records[0], records[1:]
    if not body:
        raise DataError(f"{origin} has a header but no data rows; add at least one row.")
    label = _position(data.label_column, "label_column", header, origin)
    drop = {_position(c, "drop_columns", header, origin) for c in data.drop_columns}
    blanks = {_position(c, "missing_values", header, origin): set(v) for c, v in data.missing_values.items()}
    group = _position(data.split.group_by, "split.group_by", header, origin) if data.split.group_by else None
    order = _position(data.split.order_by, "split.order_by", header, origin) if data.split.order_by else None
    if data.filter_column:
        index = _position(data.filter_column, "filter_column", header, origin)
        body = [(n, r) for n, r in body if index < len(r) and r[index].strip() == data.filter_value]
        if not body:
            raise DataError(f"no row of {origin} has {data.filter_column} == {data.filter_value!r}.")
    split_only = {p for p in (group, order) if p is not None}
    keep = [i for i in range(len(header)) if i not in drop and i not in split_only]
    names = [LABEL if i == label else feature_name(header[i], i) for i in keep]
    repeated = [n for n, count in Counter(names).items() if count > 1]
    if repeated:
        raise DataError(
            f"{origin}: columns {[header[i] for i in keep if names[keep.index(i)] in repeated]} all become "
            f"feature {repeated[0]!r}; rename one in the file or list it in drop_columns."
        )

    def cell(row: list[str], index: int) -> str:
        return row[index].strip() if index < len(row) else ""

    rows, lines, groups, raw_dates, dropped = [], [], [], [], Counter()
    for line, row in body:
        raw_label = cell(row, label)
        if data.label_map.get(raw_label) == LABEL_DROP:
            dropped[raw_label] += 1
            continue
        values = []
        for index in keep:
            value = cell(row, index)
            if index == label:
                value = str(data.label_map.get(value, value))
            elif index in blanks and value in blanks[index]:
                value = ""
            values.append(value)
        rows.append(values)
        lines.append(line)
        if group is not None:
            groups.append(cell(row, group))
        if order is not None:
            raw_dates.append(cell(row, order))
    if not rows:
        raise DataError(f"label_map drops every row of {origin}; map at least one label to 0 or 1.")
    dates = _dates(raw_dates, lines, data.split.order_by, origin) if order is not None else []
    if group is not None:
        blank = [line for line, value in zip(lines, groups, strict=True) if not value]
        if blank:
            raise DataError(
                f"split.group_by column {data.split.group_by!r} is blank on {len(blank)} row(s) of {origin} "
                f"(lines {_lines(blank)}); every row needs its patient's id."
            )
    return Table(origin, tuple(names), rows, lines, groups, dates, dict(dropped))


def _lines(lines: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(n) for n in lines[:limit])
    return shown + (f" and {len(lines) - limit} more" if len(lines) > limit else "")


def _dates(values: list[str], lines: list[int], column: str, origin: str) -> list[datetime.datetime]:
    fmt = date_format(values, min_fraction=1.0)
    if fmt is None:
        known = best_format(values)
        bad = [n for n, v in zip(lines, values, strict=True) if known is None or parse(v, known) is None]
        example = next((v for v in values if known is None or parse(v, known) is None), "")
        raise DataError(
            f"split.order_by column {column!r} of {origin} is not a date on {len(bad)} row(s) (lines "
            f"{_lines(bad)}, e.g. {example!r}); write every date as YYYY-MM-DD."
        )
    return [parse(v, fmt) for v in values]


def _bucket(key: str, total: int) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % total


def assign_splits(table: Table, split) -> list[str]:
    """Returns each row's split (`train`, `eval` or `test`), deterministically.

    Args:
        table: The canonical rows.
        split: The `SplitConfig`.
    """
    weights = [split.train, split.eval, split.test]
    total = sum(weights)
    if table.dates:
        # Temporal: rows sorted by date; the cut between splits never falls inside one date, so every
        # test row is strictly later than every training row.
        order = sorted(range(len(table.rows)), key=lambda i: (table.dates[i], table.lines[i]))
        result = [""] * len(order)
        start = 0
        for name, upto in zip(SPLITS, (split.train, split.train + split.eval, total), strict=True):
            end = round(len(order) * upto / total)
            while 0 < end < len(order) and table.dates[order[end]] == table.dates[order[end - 1]]:
                end += 1
            for i in order[start:end]:
                result[i] = name
            start = max(start, end)
        return result
    label = table.columns.index(LABEL)
    bounds = [split.train, split.train + split.eval]
    result = []
    for i, row in enumerate(table.rows):
        key = table.groups[i] if table.groups else "\x1f".join(v for j, v in enumerate(row) if j != label)
        bucket = _bucket(key, total)
        result.append(SPLITS[0] if bucket < bounds[0] else SPLITS[1] if bucket < bounds[1] else SPLITS[2])
    return result


def _csv_text(columns: tuple[str, ...], rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()


def canonical_csv(data: DatasetConfig) -> str:
    """Returns the canonical CSV text of a dataset, all rows in file order (before the split).

    Raises:
        DataError: See `load_table`.
    """
    table = load_table(data)
    return _csv_text(table.columns, table.rows)


def _write_if_changed(target: Path, data: bytes) -> None:
    # Bytes, not text: the file must be exactly the bytes that were digested and typed.
    if target.is_file() and target.read_bytes() == data:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)


def _check_eval_supports_operating_point(data: DatasetConfig, table: Table, assignment: list[str]) -> None:
    """Refuses, before anything runs, an eval split the Trainer could not choose a threshold on.

    The Trainer chooses the threshold (and fits any recalibration) on the eval split: a sensitivity target
    needs a positive there, a specificity target a negative, a recalibration both. Checked here, so the
    user gets the counts and the fixes instead of a failed Trainer.

    Raises:
        DataError: The eval split lacks the class the operating point or the calibration needs.
    """
    label = table.columns.index(LABEL)
    values = [row[label] for row, split in zip(table.rows, assignment, strict=True) if split == "eval"]
    positives, negatives = values.count("1"), values.count("0")
    spec = data.operating_point
    needs = []
    if spec.target == "sensitivity" and not positives:
        needs.append(f"operating_point target sensitivity needs a positive ({data.positive_class})")
    if spec.target == "specificity" and not negatives:
        needs.append("operating_point target specificity needs a negative")
    if data.calibration != "none" and not (positives and negatives):
        needs.append(f"calibration {data.calibration} needs both classes")
    if needs:
        raise DataError(
            f"{table.origin}: the eval split has {len(values)} rows, {positives} positive and {negatives} "
            f"negative; {'; '.join(needs)}. Add rows, give the eval split more buckets (split.eval), or "
            "use operating_point: {fixed: <threshold>} and calibration: none."
        )


def materialize(data: DatasetConfig, directory: Path) -> Prepared:
    """Writes `<directory>/<split>/data.csv` for each split, `<directory>/rows.json` and `column_types.json`.

    Args:
        data: The dataset entry.
        directory: The ExampleGen input directory.

    Returns:
        What was written, the split sizes and the dataset digest.

    Raises:
        DataError: If the data cannot be read, a split would be empty, or the directory holds other files.
    """
    table = load_table(data)
    assignment = assign_splits(table, data.split)
    sizes = {name: assignment.count(name) for name in SPLITS}
    empty = [name for name, size in sizes.items() if size == 0]
    if empty:
        raise DataError(
            f"{table.origin}: the {', '.join(empty)} split would be empty ({len(table.rows)} rows, sizes "
            f"{sizes}); add rows, or with split.group_by check that there are more than a few groups."
        )
    _check_eval_supports_operating_point(data, table, assignment)
    directory.mkdir(parents=True, exist_ok=True)
    allowed = {*SPLITS, ROWS_FILE, TYPES_FILE}
    # Ours to remove: the single CSV older versions wrote, and temporary files a killed run left behind.
    temporary = (directory / Path(name).with_suffix(".tmp") for name in (ROWS_FILE, TYPES_FILE))
    for leftover in (directory / DATA_FILE, *temporary):
        leftover.unlink(missing_ok=True)
    for stray in directory.iterdir():
        if stray.name not in allowed:
            raise DataError(
                f"{directory} holds {stray.name}; the ExampleGen input directory must hold only the "
                f"split directories ({', '.join(SPLITS)}) and {ROWS_FILE}."
            )
    digest = hashlib.sha256()
    manifest: dict = {"origin": table.origin, "splits": {}}
    column_types = {}
    for name in SPLITS:
        index = [i for i, s in enumerate(assignment) if s == name]
        text = _csv_text(table.columns, [table.rows[i] for i in index])
        # Typed from the bytes written, read back as ExampleGen reads them, so the types are the ones
        # CsvExampleGen would infer from this very file (and its digest lets ExampleGen check that).
        content = text.encode()
        column_types[f"{name}/{DATA_FILE}"] = file_types(content)
        digest.update(name.encode() + b"\0" + content)
        manifest["splits"][name] = {
            "lines": [table.lines[i] for i in index],
            "groups": [table.groups[i] for i in index] if table.groups else [],
        }
        _write_if_changed(directory / name / DATA_FILE, content)
    manifest["dropped_by_label"] = table.dropped_by_label
    manifest["group_by"] = data.split.group_by
    manifest["order_by"] = data.split.order_by
    _write_if_changed(directory / ROWS_FILE, json.dumps(manifest, sort_keys=True).encode())
    _write_if_changed(directory / TYPES_FILE, sidecar_text(column_types).encode())
    return Prepared(directory, digest.hexdigest(), sizes, table, assignment)
