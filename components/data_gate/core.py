"""Pure core of the data gate: turn TFDV anomalies into findings a person can act on.

TFX's ExampleValidator only records anomalies; training goes on regardless. The gate reads them, and if
there is any, stops the run with one line per problem: which split and column, what the schema expects,
what the data holds, and what to do about it.
"""

from __future__ import annotations

from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2

from components.data_checks.findings import Finding, merge, without_guarded
from components.data_checks.rows import BLANK_FIX, describe_expectation
from schemas.errors import DataGateError

_Reason = anomalies_pb2.AnomalyInfo.Type

# Why a problem usually happens and what to do, by TFDV anomaly type; the default covers the rest.
_FIXES = {
    _Reason.SCHEMA_MISSING_COLUMN: "add the column to the CSV (every row) or, if it is truly gone, remove it "
    "from the schema and retrain",
    _Reason.SCHEMA_NEW_COLUMN: "if it is not a feature, list it in the dataset's `drop_columns`; otherwise add "
    "it to the schema after review",
    _Reason.UNEXPECTED_DATA_TYPE: "make every value in the column a number (no text, units or commas); a "
    'marker for "not measured" goes in the dataset\'s `missing_values`',
    _Reason.FLOAT_TYPE_STRING_NOT_FLOAT: "make every value in the column a number",
    _Reason.FLOAT_TYPE_NOT_FLOAT: "make every value in the column a number",
    _Reason.INT_TYPE_NOT_INT_STRING: "make every value in the column a whole number",
    _Reason.FLOAT_TYPE_HAS_NAN: "if NaN means not measured, list it in the dataset's `missing_values`",
    _Reason.INT_TYPE_SMALL_INT: "correct the out-of-range values; widen the schema's domain only if they "
    "are clinically valid",
    _Reason.INT_TYPE_BIG_INT: "correct the out-of-range values; widen the schema's domain only if they are "
    "clinically valid",
    _Reason.FLOAT_TYPE_SMALL_FLOAT: "correct the out-of-range values; widen the schema's domain only if they "
    "are clinically valid",
    _Reason.FLOAT_TYPE_BIG_FLOAT: "correct the out-of-range values; widen the schema's domain only if they are "
    "clinically valid",
    _Reason.ENUM_TYPE_UNEXPECTED_STRING_VALUES: "use one of the known categories, or add the new category "
    "to the schema's string domain after review",
    _Reason.FEATURE_TYPE_LOW_FRACTION_PRESENT: BLANK_FIX,
    _Reason.FEATURE_TYPE_LOW_NUMBER_PRESENT: BLANK_FIX,
    _Reason.FEATURE_TYPE_NOT_PRESENT: "no row has a value: list the column in the dataset's `drop_columns`, or "
    "fix the export",
    _Reason.FEATURE_TYPE_LOW_NUMBER_VALUES: BLANK_FIX,
    _Reason.FEATURE_TYPE_HIGH_NUMBER_VALUES: "give every row at most one value in this column",
}
_LABEL_FIX = (
    "labels must be 0 or 1: map every raw label value to 0/1 (or `drop`) with the dataset's `label_map`"
)
_DEFAULT_FIX = "correct the data, or update the curated schema after review"


def findings_from_anomalies(
    split: str, anomalies: anomalies_pb2.Anomalies, schema: schema_pb2.Schema, label: str = "label"
) -> list[Finding]:
    """Converts one split's Anomalies proto into findings, sorted by column.

    Args:
        split: Split name, for the report.
        anomalies: ExampleValidator's output for that split.
        schema: The curated schema the data was checked against.
        label: Name of the label feature, whose problems get the label-specific fix.

    Returns:
        One finding per anomalous feature (none when the split is clean).
    """
    features = {f.name: f for f in schema.feature}
    findings = []
    for column in sorted(anomalies.anomaly_info):
        info = anomalies.anomaly_info[column]
        reasons = list(info.reason) or [anomalies_pb2.AnomalyInfo.Reason(description=info.description)]
        found = "; ".join((r.description or r.short_description).rstrip(".") for r in reasons)
        fix = _LABEL_FIX if column == label else _FIXES.get(reasons[0].type, _DEFAULT_FIX)
        findings.append(
            Finding(column, (split,), describe_expectation(features.get(column), schema), found, fix)
        )
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        found = "; ".join(r.description for r in info.reason) or info.description
        findings.append(Finding("", (split,), "a dataset matching the schema", found, _DEFAULT_FIX))
    return findings


def combine(tfdv: list[Finding], rows: list[Finding], guards: list[Finding]) -> list[Finding]:
    """Returns one report: row-level evidence where there is any, TFDV's finding otherwise, then the guards.

    TFDV names a column's problem with at most its most extreme value; the row check names every
    offending row, so a column the row check reports keeps only the row check's entries.
    """
    with_rows = {f.column for f in rows}
    kept = [f for f in merge(tfdv) if f.column not in with_rows or not f.column]
    guarded = {f.column for f in guards}
    kept = [f for f in kept if f.column not in guarded]  # TFDV's "new column" for an identifier, a date
    return [*without_guarded(rows, guards), *kept, *guards]


def format_report(findings: list[Finding], source: str) -> str:
    """Returns the message the run stops with: one entry per column and problem, all splits together."""
    lines = [f"Data gate: {len(findings)} problem(s) in {source}; nothing was trained or pushed."]
    lines += [f"  - {finding}" for finding in findings]
    return "\n".join(lines)


def enforce(findings: list[Finding], source: str) -> None:
    """Raises DataGateError listing every finding, or returns when there is none."""
    if findings:
        raise DataGateError(format_report(findings, source))
