"""Every row that violates the curated schema, with its source line and value (pure Python, no TFDV).

TFDV's anomalies say *that* a column is wrong and name at most the most extreme value; a user fixing a
file needs every offending row. This check reads the canonical rows, knows each row's line in the source
file, and reports per column the rows that break the schema's type, presence, range or category rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from tensorflow_metadata.proto.v0 import schema_pb2

from components.data_checks.findings import NOT_IN_SCHEMA, Finding, merge, ordered_splits

LABEL = "label"
# Values that clinical exports commonly use for "not measured"; an out-of-range or unknown one of these
# is much more likely a missing marker than a measurement, so the fix points at `missing_values`.
SENTINELS = {"0", "-1", "-9", "-99", "-999", "9", "99", "999", "9999", "?", "na", "n/a", "nan", "none", "null",
             "unknown", "missing", "-", "."}  # fmt: skip
BLANK_FIX = (
    'if a blank means "not measured", allow blanks for this column in the schema (lower '
    "presence.min_fraction and drop value_count.min); the model imputes them. dxpipe never invents values"
)


def _domain_values(feature: schema_pb2.Feature, schema: schema_pb2.Schema) -> set[str] | None:
    if feature.HasField("string_domain"):
        return set(feature.string_domain.value)
    if feature.domain:
        for domain in schema.string_domain:
            if domain.name == feature.domain:
                return set(domain.value)
    return None


def _number(text: str, integer: bool) -> float | None:
    try:
        return float(int(text)) if integer else float(text)
    except ValueError:
        return None


def _sentinel_fix(column: str, values: list[str]) -> str | None:
    markers = sorted({v for v in values if v.strip().lower() in SENTINELS})
    if not markers:
        return None
    return (
        f'if {", ".join(repr(v) for v in markers)} means "not measured", list it in the dataset\'s '
        f"`missing_values: {{{column}: [{', '.join(markers)}]}}`; otherwise correct those rows in the file"
    )


def check_split(
    split: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    lines: Sequence[int],
    schema: schema_pb2.Schema,
    limit: int = 20,
) -> list[Finding]:
    """Returns one finding per column and problem for one split's canonical rows.

    Args:
        split: The split's name, for the report.
        columns: The canonical CSV header (feature names, `label` included).
        rows: The split's cells as text.
        lines: Each row's line in the source file.
        schema: The curated schema.
        limit: Most offending rows listed per finding.
    """
    features = {f.name: f for f in schema.feature}
    findings = []
    for column in columns:
        if column not in features:
            findings.append(
                Finding(
                    column,
                    (split,),
                    "no such column (the schema does not list it)",
                    NOT_IN_SCHEMA,
                    f"if {column!r} is not a feature (an id, a date, provenance), list it in the dataset's "
                    "`drop_columns`; otherwise add it to the schema after review (`dxpipe schema draft` "
                    "prints a starting point)",
                    count=len(rows),
                )
            )
    for name, feature in features.items():
        if name not in columns:
            findings.append(
                Finding(
                    name,
                    (split,),
                    "a column the schema requires",
                    "no such column in the data",
                    "add the column to the CSV, or remove the feature from the schema after review "
                    "(a model trained without it cannot use it)",
                )
            )
            continue
        index = columns.index(name)
        findings.extend(_check_column(split, name, feature, schema, [r[index] for r in rows], lines, limit))
    return findings


def _check_column(split, name, feature, schema, values, lines, limit) -> list[Finding]:
    out: list[Finding] = []
    expected = describe_expectation(feature, schema)

    def report(found: str, bad: list[int], fix: str) -> None:
        shown = tuple((lines[i], values[i]) for i in bad[:limit])
        out.append(Finding(name, (split,), expected, found, fix, shown, len(bad)))

    blank = [i for i, v in enumerate(values) if not v]
    required = feature.value_count.min >= 1 or feature.presence.min_fraction >= 1.0
    if blank and required:
        fix = BLANK_FIX
        if name == LABEL:
            fix = "every row needs a label: remove those rows, or map the blank label to `drop` in the dataset's `label_map` (`'': drop`)"
        report("blank cells", blank, fix)
    elif (
        values
        and feature.presence.min_fraction
        and 1 - len(blank) / len(values) < feature.presence.min_fraction
    ):
        report(
            f"{len(blank) / len(values):.0%} blank cells",
            blank,
            "check why the column is so often blank; if that is expected, lower presence.min_fraction "
            "in the schema after review",
        )
    present = [i for i, v in enumerate(values) if v]
    if feature.type in (schema_pb2.INT, schema_pb2.FLOAT):
        integer = feature.type == schema_pb2.INT
        parsed = {i: _number(values[i], integer) for i in present}
        not_numbers = [i for i, x in parsed.items() if x is None or math.isnan(x)]
        if not_numbers:
            kind = "whole numbers" if integer else "numbers"
            fix = _sentinel_fix(name, [values[i] for i in not_numbers]) or (
                f"make every value in the column one of the {kind} (no text, units or commas)"
            )
            if name == LABEL:
                fix = "map every raw label value to 0 or 1 (or `drop`) with the dataset's `label_map`"
            report(f"values that are not {kind}", not_numbers, fix)
        low = high = None
        if feature.HasField("int_domain"):
            d = feature.int_domain
            low, high = (d.min if d.HasField("min") else None), (d.max if d.HasField("max") else None)
        elif feature.HasField("float_domain"):
            d = feature.float_domain
            low, high = (d.min if d.HasField("min") else None), (d.max if d.HasField("max") else None)
        outside = [
            i
            for i, x in parsed.items()
            if x is not None and ((low is not None and x < low) or (high is not None and x > high))
        ]
        if outside:
            fix = _sentinel_fix(name, [values[i] for i in outside]) or (
                "correct those rows in the file; widen the schema's domain only if the values are "
                "clinically valid"
            )
            if name == LABEL:
                fix = "map every raw label value to 0 or 1 (or `drop`) with the dataset's `label_map`"
            report("values out of range", outside, fix)
    elif feature.type == schema_pb2.BYTES:
        domain = _domain_values(feature, schema)
        if domain is not None:
            unknown = [i for i in present if values[i] not in domain]
            if unknown:
                fix = _sentinel_fix(name, [values[i] for i in unknown]) or (
                    "correct those rows, or add the new categories to the schema's string_domain after "
                    "review (the model one-hot encodes exactly the listed values)"
                )
                report("unknown categories", unknown, fix)
    return out


def describe_expectation(feature: schema_pb2.Feature | None, schema: schema_pb2.Schema) -> str:
    """Returns what the schema requires of a feature, in words."""
    if feature is None:
        return "no such column in the schema"
    parts = [schema_pb2.FeatureType.Name(feature.type).lower()]
    if feature.HasField("float_domain"):
        parts.append(f"between {feature.float_domain.min:g} and {feature.float_domain.max:g}")
    elif feature.HasField("int_domain"):
        parts.append(f"between {feature.int_domain.min} and {feature.int_domain.max}")
    else:
        values = _domain_values(feature, schema)
        if values:
            parts.append(f"one of {sorted(values)}")
    if feature.presence.min_fraction >= 1.0:
        parts.append("present in every row")
    elif feature.presence.min_fraction > 0:
        parts.append(f"present in at least {feature.presence.min_fraction:.0%} of rows")
    return ", ".join(parts)


def check_rows(
    columns: Sequence[str],
    splits: Mapping[str, tuple[Sequence[Sequence[str]], Sequence[int]]],
    schema: schema_pb2.Schema,
    limit: int = 20,
) -> list[Finding]:
    """Checks every split and merges the findings: one entry per column and problem, splits named together.

    Args:
        columns: The canonical CSV header.
        splits: Split name -> (rows, source lines).
        schema: The curated schema.
        limit: Most offending rows listed per finding.
    """
    findings = []
    for split in ordered_splits(splits):
        rows, lines = splits[split]
        findings.extend(check_split(split, columns, rows, lines, schema, limit))
    return merge(findings, limit)
