"""Turns a configured dataset into the canonical CSV that CsvExampleGen reads.

Values are copied as text, never re-parsed: an integer column stays integer and a bad cell stays bad, so
the data gate (not this step) judges the content against the curated schema. This step only renames
columns to feature-safe names, filters rows, drops columns, maps labels and blanks "not measured"
markers, as the config says. The file is rewritten only when its bytes change, because CsvExampleGen's
cache key includes the input file's modification time.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import io
import re
from pathlib import Path

from pipelines.config import DatasetConfig
from pipelines.errors import DataError

DATA_FILE = "data.csv"


def feature_name(column: str) -> str:
    """Returns a column name usable as a TF feature and signature input: `mean radius` -> `mean_radius`."""
    name = re.sub(r"[^0-9a-zA-Z]+", "_", column.strip().lstrip("\ufeff")).strip("_").lower()
    return name if name and not name[0].isdigit() else f"f_{name}"


def _read_source(data: DatasetConfig) -> tuple[str, str]:
    """Returns (text of the source CSV, a name for messages)."""
    source = data.source
    if source.kind == "sklearn":
        import sklearn.datasets  # Deferred: scikit-learn is only needed for this source kind.

        loader = getattr(sklearn.datasets, source.name, None)
        if loader is None:
            raise DataError(f"source.name {source.name!r} is not a scikit-learn dataset loader.")
        frame = loader(as_frame=True).frame
        buffer = io.StringIO()
        # repr-exact floats: the bundled values round-trip unchanged.
        frame.to_csv(buffer, index=False, float_format="%.10g")
        return buffer.getvalue(), f"sklearn.datasets.{source.name}"
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


def canonical_csv(data: DatasetConfig) -> str:
    """Returns the canonical CSV text for a dataset.

    Raises:
        DataError: If the source is missing, empty, has no header, or lacks a configured column.
    """
    text, origin = _read_source(data)
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise DataError(f"{origin} is empty; a CSV with a header row and at least one data row is needed.")
    header, body = rows[0], rows[1:]
    if not body:
        raise DataError(f"{origin} has a header but no data rows; add at least one row.")
    columns = {c.strip().lstrip("\ufeff"): i for i, c in enumerate(header)}
    needed = [data.label_column, *data.drop_columns, *data.missing_values]
    if data.filter_column:
        needed.append(data.filter_column)
    for column in needed:
        if column not in columns:
            raise DataError(
                f"{origin} has no column {column!r} (columns: {', '.join(columns)}); "
                "fix the file or the dataset's config entry."
            )
    if data.filter_column:
        index = columns[data.filter_column]
        body = [r for r in body if index < len(r) and r[index].strip() == data.filter_value]
        if not body:
            raise DataError(f"no row of {origin} has {data.filter_column} == {data.filter_value!r}.")
    keep = [c for c in columns if c not in data.drop_columns]
    label_index = columns[data.label_column]
    blanks = {columns[c]: set(v) for c, v in data.missing_values.items()}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([feature_name(c) if c != data.label_column else "label" for c in keep])
    for row in body:
        cells = []
        for column in keep:
            index = columns[column]
            value = row[index].strip() if index < len(row) else ""
            if index == label_index and value in data.label_map:
                value = str(data.label_map[value])
            elif index in blanks and value in blanks[index]:
                value = ""
            cells.append(value)
        writer.writerow(cells)
    return out.getvalue()


def materialize(data: DatasetConfig, directory: Path) -> tuple[Path, str]:
    """Writes the canonical CSV into `directory` (alone, as CsvExampleGen reads every file there).

    Args:
        data: The dataset entry.
        directory: The ExampleGen input directory.

    Returns:
        The CSV path and the SHA-256 of its content (the dataset digest tracked with each run).
    """
    text = canonical_csv(data)
    digest = hashlib.sha256(text.encode()).hexdigest()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / DATA_FILE
    for stray in directory.iterdir():
        if stray != target:
            raise DataError(
                f"{directory} holds {stray.name}; the ExampleGen input directory must hold only {DATA_FILE}."
            )
    if not target.is_file() or target.read_bytes() != text.encode():
        tmp = target.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(target)
    return target, digest
