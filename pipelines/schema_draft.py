"""`dxpipe schema draft`: a first schema for the configured data, written for a person to review.

The draft is what CsvExampleGen will see (types inferred the way its CSV decoder infers them), with
presence that allows blanks where the data has blanks, closed category lists, and the observed ranges as
comments only: a range becomes a rule when a person sets clinical bounds, never from the data. Columns
that should not be features (identifier-like, dates) are left out of the schema and named in the review
checklist with the config line that fixes them.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re

from components.data_checks import guards
from components.data_checks.dates import date_format
from components.data_checks.rows import SENTINELS
from pipelines.config import DatasetConfig
from pipelines.data import Table
from schemas.naming import LABEL

_INT = re.compile(r"[+-]?\d+")
# More distinct text values than this is free text or an identifier, not a category to one-hot encode.
MAX_CATEGORIES = 50


@dataclasses.dataclass(frozen=True)
class Draft:
    """A drafted schema and what the user must review.

    Attributes:
        text: The schema in text format, with review comments.
        checklist: One line per item to review, each naming the fix.
        config_lines: YAML lines to add to the dataset's entry (e.g. drop_columns, missing_values).
    """

    text: str
    checklist: list[str]
    config_lines: list[str]


def infer_type(values: list[str]) -> str:
    """Returns INT, FLOAT or BYTES as CsvExampleGen infers a column (blank cells ignored)."""
    present = [v for v in values if v]
    if present and all(_INT.fullmatch(v) and -(2**63) <= int(v) < 2**63 for v in present):
        return "INT"
    try:
        for v in present:
            float(v)
    except ValueError:
        return "BYTES"
    return "FLOAT" if present else "BYTES"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _presence(values: list[str]) -> tuple[list[str], str]:
    blanks = sum(1 for v in values if not v)
    if not blanks:
        return ["  value_count { min: 1 max: 1 }", "  presence { min_fraction: 1.0 min_count: 1 }"], ""
    present = 1 - blanks / len(values)
    # Room for one split to be blanker than the whole file; a person tightens it after review.
    floor = max(0.0, math.floor((present - 0.1) * 100) / 100)
    note = f"{blanks} blank cell(s) ({blanks / len(values):.1%}): allowed (the model treats them as not measured)"
    return ["  value_count { max: 1 }", f"  presence {{ min_fraction: {floor} }}"], note


def draft_schema(table: Table, data: DatasetConfig, max_unique_fraction: float = 0.9) -> Draft:
    """Drafts a schema for a dataset's canonical rows.

    Args:
        table: The canonical rows (`pipelines.data.load_table`).
        data: The dataset entry (for the config keys the checklist names).
        max_unique_fraction: The identifier guard's bound (`checks.max_unique_fraction`).
    """
    stamp = datetime.date.today().isoformat()
    header = [
        f"# Drafted by `dxpipe schema draft` from {table.origin} ({len(table.rows)} rows) on {stamp}.",
        "# REVIEW every line marked REVIEW, then commit this file: it is the data gate's contract.",
        "# Observed ranges are comments: set clinical bounds (int_domain / float_domain) where they matter.",
    ]
    body, domains, checklist, drop, dates, sentinels = [], [], [], [], [], {}
    group_by = ""
    zero_columns: list[str] = []
    for index, column in enumerate(table.columns):
        values = [row[index] for row in table.rows]
        if column == LABEL:
            body += _label(values, checklist)
            continue
        if date_format(values):
            dates.append(column)
            continue
        evidence = guards.identifier_evidence(column, values, max_unique_fraction)
        if evidence:
            if guards.names_patient(column, values) and not group_by and not data.split.group_by:
                group_by = column
                checklist.append(
                    f"{column}: names the patient and repeats ({evidence}); left out of the schema and used "
                    "to keep each patient's rows in one split (`split.group_by`)."
                )
            else:
                drop.append(column)
                checklist.append(f"{column}: looks like an identifier ({evidence}); left out of the schema.")
            continue
        present = [v for v in values if v]
        markers = sorted({v for v in present if v.strip().lower() in SENTINELS and not _number(v)})
        numeric_rest = [v for v in present if v not in markers]
        # A marker such as "?" or "NA" means "not measured", in a numeric column and in a category alike:
        # read as a blank (the model imputes it) rather than as a value or a category of its own.
        if markers and numeric_rest:
            sentinels[column] = markers
            values = ["" if v in markers else v for v in values]
            present = numeric_rest
        kind = infer_type(values)
        lines = ["feature {", f"  name: {_quote(column)}", f"  type: {kind}"]
        # Presence as if a suspected "not measured" 0 were blank, so listing it in missing_values later
        # needs no new draft.
        presence, note = _presence(["" if _zero_marker(values) and v == "0" else v for v in values])
        if note:
            lines.append(f"  # {note}")
        if kind in ("INT", "FLOAT") and present:
            numbers = [float(v) for v in present]
            low, high = min(numbers), max(numbers)
            show = (lambda x: str(int(x))) if kind == "INT" else (lambda x: f"{x:g}")
            domain = "int_domain" if kind == "INT" else "float_domain"
            lines.append(
                f"  # REVIEW observed range {show(low)} .. {show(high)}: set clinical bounds, e.g. "
                f"{domain} {{ min: {show(low)} max: {show(high)} }}"
            )
            zeros = sum(1 for x in numbers if x == 0)
            if _zero_marker(values) and column not in data.missing_values:
                zero_columns.append(column)
                checklist.append(
                    f"{column}: {zeros} row(s) hold 0; if 0 means not measured, add it to `missing_values`."
                )
        elif kind == "BYTES":
            categories = sorted(set(present))
            if len(categories) > MAX_CATEGORIES:
                checklist.append(
                    f"{column}: {len(categories)} distinct text values (free text?); listed as categories, "
                    "but it probably belongs in `drop_columns`."
                )
            lines.append(f"  domain: {_quote(column)}")
            domains += [f"string_domain {{\n  name: {_quote(column)}"]
            domains += [f"  value: {_quote(v)}" for v in categories] + ["}"]
            checklist.append(f"{column}: categories {categories[:8]}{' ...' if len(categories) > 8 else ''}.")
        body += [*lines, *presence, "}"]
    config_lines = []
    for column in dates:
        if group_by or data.split.group_by:
            drop.append(column)
            checklist.append(
                f"{column}: holds dates; left out of the schema (dropped: the split is by patient)."
            )
        elif not data.split.order_by:
            checklist.append(
                f"{column}: holds dates; left out of the schema and used for a temporal split (the newest "
                "rows are tested), as clinical reporting guidelines recommend; or drop it instead."
            )
            config_lines.append(f"split: {{order_by: {column}}}")
    if group_by:
        config_lines.append(f"split: {{group_by: {group_by}}}")
    if drop:
        config_lines.append(f"drop_columns: [{', '.join(sorted(set(drop) | set(data.drop_columns)))}]")
    if sentinels:
        merged = {**{k: list(v) for k, v in data.missing_values.items()}, **sentinels}
        items = ", ".join(f"{k}: [{', '.join(_quote(x) for x in v)}]" for k, v in merged.items())
        config_lines.append(f"missing_values: {{{items}}}")
    zero_markers = [c for c in zero_columns if c not in sentinels]
    if zero_markers:
        items = ", ".join(f"{c}: [0]" for c in zero_markers)
        config_lines.append(f"# only if 0 means not measured: missing_values: {{{items}}}")
        for column, markers in sentinels.items():
            checklist.append(f"{column}: {markers} read as blanks (not measured) via `missing_values`.")
    text = "\n".join([*header, *body, *domains]) + "\n"
    return Draft(text, checklist, config_lines)


def _zero_marker(values: list[str]) -> bool:
    """True when 0 sits far below every other value of a numeric column (a glucose of 0 among 44..199)."""
    numbers = []
    for v in values:
        if v:
            try:
                numbers.append(float(v))
            except ValueError:
                return False
    positive = [x for x in numbers if x > 0]
    return 0.0 in numbers and bool(positive) and min(positive) >= 5 and all(x >= 0 for x in numbers)


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label(values: list[str], checklist: list[str]) -> list[str]:
    unknown = sorted({v for v in values if v not in ("0", "1")})
    if unknown:
        checklist.append(
            f"label: raw values {unknown[:8]} are not mapped to 0/1; map each in the dataset's `label_map`, "
            f"or to `drop` to remove those rows (e.g. `{unknown[0]}: drop` for an invalid result)."
        )
    return [
        "feature {",
        '  name: "label"',
        "  type: INT",
        "  int_domain { min: 0 max: 1 }",
        "  value_count { min: 1 max: 1 }",
        "  presence { min_fraction: 1.0 min_count: 1 }",
        "}",
    ]
