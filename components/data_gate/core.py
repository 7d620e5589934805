"""Pure core of the data gate: turn TFDV anomalies into findings a person can act on.

TFX's ExampleValidator only records anomalies; training goes on regardless. The gate reads them, and if
there is any, stops the run with one line per problem: which split and column, what the schema expects,
what the data holds, and what to do about it.
"""

from __future__ import annotations

import dataclasses

from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2

from pipelines.errors import DataGateError

_Reason = anomalies_pb2.AnomalyInfo.Type

# Why a problem usually happens and what to do, by TFDV anomaly type; the default covers the rest.
_FIXES = {
    _Reason.SCHEMA_MISSING_COLUMN: "add the column to the CSV (every row) or, if it is truly gone, remove it "
    "from the schema and retrain",
    _Reason.SCHEMA_NEW_COLUMN: "remove the column from the CSV, or add it to the schema after review",
    _Reason.UNEXPECTED_DATA_TYPE: "make every value in the column a number (no text, units or commas); "
    "leave a cell empty if it was not measured",
    _Reason.FLOAT_TYPE_STRING_NOT_FLOAT: "make every value in the column a number",
    _Reason.FLOAT_TYPE_NOT_FLOAT: "make every value in the column a number",
    _Reason.INT_TYPE_NOT_INT_STRING: "make every value in the column a whole number",
    _Reason.FLOAT_TYPE_HAS_NAN: "replace NaN cells with an empty cell (not measured) or a real value",
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
    _Reason.FEATURE_TYPE_LOW_FRACTION_PRESENT: "fill in the missing values (too many rows leave it empty)",
    _Reason.FEATURE_TYPE_LOW_NUMBER_PRESENT: "fill in the missing values",
    _Reason.FEATURE_TYPE_NOT_PRESENT: "fill in the column; no row has a value",
    _Reason.FEATURE_TYPE_LOW_NUMBER_VALUES: "give every row exactly one value in this column",
    _Reason.FEATURE_TYPE_HIGH_NUMBER_VALUES: "give every row exactly one value in this column",
}
_LABEL_FIX = "labels must be 0 or 1: map every raw label value to 0/1 with the dataset's `label_map`"
_DEFAULT_FIX = "correct the data, or update the curated schema after review"


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem with the data.

    Attributes:
        split: The ExampleGen split it was found in.
        column: The CSV column (empty for dataset-wide problems).
        expected: What the curated schema requires.
        found: What the data holds, in TFDV's words.
        fix: What the user should do.
    """

    split: str
    column: str
    expected: str
    found: str
    fix: str

    def __str__(self) -> str:
        where = f"column {self.column!r}" if self.column else "the dataset"
        return f"[{self.split}] {where}: expected {self.expected}; found {self.found}. Fix: {self.fix}."


def describe_expectation(feature: schema_pb2.Feature | None, schema: schema_pb2.Schema) -> str:
    """Returns what the schema requires of a feature, in words."""
    if feature is None:
        return "no such column in the schema"
    parts = [schema_pb2.FeatureType.Name(feature.type).lower()]
    if feature.HasField("float_domain"):
        parts.append(f"between {feature.float_domain.min:g} and {feature.float_domain.max:g}")
    elif feature.HasField("int_domain"):
        parts.append(f"between {feature.int_domain.min} and {feature.int_domain.max}")
    elif feature.domain or feature.HasField("string_domain"):
        name = feature.domain or feature.name
        values = next((list(d.value) for d in schema.string_domain if d.name == name), None)
        if values is None and feature.HasField("string_domain"):
            values = list(feature.string_domain.value)
        if values:
            parts.append(f"one of {values}")
    if feature.presence.min_fraction >= 1.0:
        parts.append("present in every row")
    elif feature.presence.min_fraction > 0:
        parts.append(f"present in at least {feature.presence.min_fraction:.0%} of rows")
    return ", ".join(parts)


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
            Finding(split, column, describe_expectation(features.get(column), schema), found, fix)
        )
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        found = "; ".join(r.description for r in info.reason) or info.description
        findings.append(Finding(split, "", "a dataset matching the schema", found, _DEFAULT_FIX))
    return findings


def format_report(findings: list[Finding], source: str) -> str:
    """Returns the message the run stops with."""
    lines = [f"Data gate: {len(findings)} problem(s) in {source}; nothing was trained or pushed."]
    lines += [f"  - {finding}" for finding in findings]
    return "\n".join(lines)


def enforce(findings: list[Finding], source: str) -> None:
    """Raises DataGateError listing every finding, or returns when there is none."""
    if findings:
        raise DataGateError(format_report(findings, source))
