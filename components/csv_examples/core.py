"""CSV records to tf.Examples in one pass, with the column types decided before the examples are made.

TFX's CsvExampleGen infers each split's column types with a global combine and feeds them as a side input
to the step that makes the examples, so a runner must hold every parsed row until the inference is done
(its memory grows with the rows). Here the types are computed once, where the canonical split files are
written (`pipelines/data.py`, from the bytes it writes), and stored beside them in `column_types.json`
with each file's SHA-256; the executor turns each record into an example as it reads it, and checks the
digest as the bytes stream by, so types recorded for other content never apply silently.

Everything here follows tfx_bsl's CSV decoder (`ColumnTypeInferrer`, `_InferValueType`) and
CsvExampleGen's executor (its line buffer and cell handlers) in TFX 1.16, so the examples are the ones
CsvExampleGen would make:

- A cell's type is INT if Python's `int()` reads its bytes within int64 (a longer integer is STRING),
  else FLOAT if `float()` reads them, else STRING; a blank cell says nothing (UNKNOWN). A column takes the
  widest type of its cells (UNKNOWN < INT < FLOAT < STRING), per split.
- A blank cell becomes an empty list of the column's type; a column blank in every row of its split (UNKNOWN)
  becomes a feature with no list at all.
- A record may span lines: physical lines are joined until the count of `"` is even. Blank records are
  skipped. The header is the first line split on commas, as TFX reads it.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence

TYPES_FILE = "column_types.json"
_FORMAT = 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# An integer written in at most this many characters (sign, digits, `_`, spaces) fits in int64, so the
# out-of-range check, which parses the cell as an integer, is needed only for longer cells.
_SURELY_INT64 = 18


class CsvExamplesError(ValueError):
    """The input of the CSV ExampleGen is unusable; the message names the file, the line and the fix."""


class ColumnType(enum.IntEnum):
    """A column's type, ordered as tfx_bsl orders them: a column takes the largest type of its cells."""

    UNKNOWN = -1
    INT = 0
    FLOAT = 1
    STRING = 2


def cell_type(cell: bytes) -> ColumnType:
    """Returns the type tfx_bsl's CSV decoder infers for one cell (its UTF-8 bytes)."""
    if not cell:
        return ColumnType.UNKNOWN
    try:
        value = int(cell)
    except ValueError:
        try:
            float(cell)
        except ValueError:
            return ColumnType.STRING
        return ColumnType.FLOAT
    # tfx_bsl reads an integer beyond int64 as text rather than losing it.
    return ColumnType.INT if _INT64_MIN <= value <= _INT64_MAX else ColumnType.STRING


class TypeInference:
    """Accumulates the column types of one split, row by row.

    Once a column is FLOAT only a cell that is not a number, or an integer beyond int64, can widen it, so
    most cells of a float column cost one `float()` call instead of a failed `int()` first.
    """

    def __init__(self, columns: Sequence[str]):
        """Starts with every column UNKNOWN.

        Args:
            columns: The header's column names, in file order.
        """
        self.columns = tuple(columns)
        self._types = [ColumnType.UNKNOWN] * len(self.columns)

    def add(self, cells: Sequence[bytes]) -> None:
        """Widens the types by one record's cells (a blank record, no cells, is skipped as TFX skips it).

        Raises:
            CsvExamplesError: The record has another number of cells than the header has columns.
        """
        if not cells:
            return
        if len(cells) != len(self.columns):
            raise CsvExamplesError(f"a record has {len(cells)} cells for {len(self.columns)} columns")
        types = self._types
        for i, cell in enumerate(cells):
            current = types[i]
            if current is ColumnType.STRING or not cell:
                continue
            if current is ColumnType.FLOAT and len(cell) <= _SURELY_INT64:
                try:
                    float(cell)
                except ValueError:
                    types[i] = ColumnType.STRING
                continue
            found = cell_type(cell)
            if found > current:
                types[i] = found

    def types(self) -> list[ColumnType]:
        """The columns' types so far, in column order."""
        return list(self._types)


def widest(first: Sequence[ColumnType], second: Sequence[ColumnType]) -> list[ColumnType]:
    """Merges two files' types of the same columns (a split's files are typed together, as TFX does)."""
    return [max(a, b) for a, b in zip(first, second, strict=True)]


@dataclasses.dataclass(frozen=True)
class FileTypes:
    """What `column_types.json` records for one split file.

    Attributes:
        columns: The header's column names.
        types: Their types, in column order.
        sha256: The file's SHA-256: the executor checks it as it reads, so types written for other
            content (a file edited or replaced after its types were recorded) never type it silently.
    """

    columns: tuple[str, ...]
    types: tuple[ColumnType, ...]
    sha256: str


def sidecar_text(files: dict[str, FileTypes]) -> str:
    """Returns `column_types.json`'s text.

    Args:
        files: Each split file's path relative to the input directory -> what is recorded for it.
    """
    entries = {
        path: {"columns": list(entry.columns), "types": [t.name for t in entry.types], "sha256": entry.sha256}
        for path, entry in sorted(files.items())
    }
    return json.dumps({"format": _FORMAT, "files": entries}, indent=1, sort_keys=True) + "\n"


def parse_sidecar(text: str, origin: str) -> dict[str, FileTypes]:
    """Reads `column_types.json`: relative file path -> what is recorded for it.

    Raises:
        CsvExamplesError: The file is not the format `sidecar_text` writes.
    """
    try:
        document = json.loads(text)
        if document.get("format") != _FORMAT:
            raise CsvExamplesError(f"{origin} has format {document.get('format')!r}, expected {_FORMAT}")
        files = {}
        for path, entry in document["files"].items():
            columns, types = tuple(entry["columns"]), tuple(ColumnType[name] for name in entry["types"])
            if len(columns) != len(types):
                raise CsvExamplesError(f"{origin}: {path} has {len(columns)} columns but {len(types)} types")
            files[path] = FileTypes(columns, types, str(entry["sha256"]))
        return files
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise CsvExamplesError(
            f"{origin} is not a column-types file ({type(err).__name__}: {err}); write the input "
            "directory again with `dxpipe prepare-data` or `dxpipe run`."
        ) from None


def file_types(text: bytes) -> FileTypes:
    """Types a whole split file (its bytes) as CsvExampleGen would: header, records, widest types, digest."""
    first, *rest = text.splitlines(keepends=True) or [b""]
    inference = TypeInference(header_columns(first))
    for _, cells in records(rest, "the file"):
        inference.add(cells)
    return FileTypes(inference.columns, tuple(inference.types()), hashlib.sha256(text).hexdigest())


def header_columns(first_line: bytes) -> list[str]:
    """The column names as TFX reads a header: the first line, stripped and split on commas."""
    return first_line.decode("utf-8").strip().split(",")


class _OneRecord:
    """Feeds `csv.reader` one record at a time, so one reader parses every record of a file."""

    def __init__(self):
        self.record = ""

    def __iter__(self):
        return self

    def __next__(self) -> str:
        return self.record


def records(lines: Iterable[bytes], origin: str, first_line: int = 2) -> Iterator[tuple[int, list[bytes]]]:
    """Yields (line number of the record's first line, its cells as UTF-8 bytes) for each CSV record.

    Physical lines are joined until the record's count of `"` is even, as CsvExampleGen joins them, so a
    quoted cell may hold line breaks. Blank records come out with no cells (the caller skips them).

    Args:
        lines: The file's lines after the header, as bytes with their line ends.
        origin: The file's name, for errors.
        first_line: The line number of the first of `lines` (2: the line after the header).

    Raises:
        CsvExamplesError: A line is not UTF-8, or the file ends inside a quoted cell.
    """
    feeder = _OneRecord()
    reader = csv.reader(feeder)
    parts: list[str] = []
    quotes = 0
    start = number = first_line
    for number, line in enumerate(lines, first_line):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise CsvExamplesError(
                f"{origin} line {number} is not UTF-8 ({err.reason} at byte {err.start}); export the CSV as "
                "UTF-8."
            ) from None
        if not parts:
            start = number
        parts.append(text)
        quotes += text.count('"')
        if quotes % 2:
            continue
        feeder.record = parts[0] if len(parts) == 1 else "".join(parts)
        parts.clear()
        quotes = 0
        try:
            cells = next(reader)
        except csv.Error as err:
            raise CsvExamplesError(f"{origin} line {start} is not a CSV record ({err}).") from None
        yield start, [cell.encode() for cell in cells]
    if parts:
        raise CsvExamplesError(
            f"{origin}: the record starting at line {start} has an unclosed quote (the file ends at line "
            f"{number}); close the quoted cell or remove the stray '\"'."
        )
