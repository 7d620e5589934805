"""Identifier and leakage guards: columns that must not become features, and splits that share patients.

A row index in a file sorted by class, or a patient id, classifies "perfectly" and makes a useless model
look excellent; so does a measurement taken after the outcome. Each guard returns findings with the
evidence and the fix; a column a person has reviewed and really wants as a feature carries the schema
annotation `annotation { tag: "dxpipe:allow" comment: "<why, who reviewed it>" }`, which these guards
respect (the comment is required, so the permission is visibly reviewed).
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

from components.data_checks.dates import date_format
from components.data_checks.findings import Finding, ordered_splits

ALLOW_TAG = "dxpipe:allow"
LABEL = "label"
_ID_WORDS = {
    "pid",
    "subjectid",
    "id",
    "ids",
    "mrn",
    "patient",
    "patientid",
    "record",
    "rownames",
    "rowname",
    "unnamed",
    "index",
    "idx",
    "uuid",
    "guid",
    "subject",
    "ssn",
    "nhs",
    "encounter",
}
_ID_FIX = (
    "list the column in the dataset's `drop_columns`; if it names the patient (several rows per "
    "patient), use it as `split: {{group_by: {column}}}` instead, which keeps each patient in one split and "
    "never uses the column as a feature"
)
_PATIENT_FIX = (
    "use it as `split: {{group_by: {column}}}`, which keeps each patient's rows in one split and never uses "
    "the column as a feature (or list it in `drop_columns` if the rows are independent)"
)
_ALLOW_HINT = (
    f"; if it truly is a clinical feature, annotate it in the schema after review: annotation {{ tag: "
    f'"{ALLOW_TAG}" comment: "<why, reviewed by whom>" }}'
)


def _is_int(text: str) -> bool:
    return bool(re.fullmatch(r"[+-]?\d+", text))


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return None if value != value else value  # NaN is "not measured", not a value


# Words that may accompany an identifier word without making the name a measurement ("patient_no").
_ID_FILLERS = {"no", "num", "number", "nr", "code", "key", "of", "f", "study", "hospital", "case"}


def _words(name: str) -> set[str]:
    return {w for w in name.split("_") if w and not w.isdigit()}


def id_name(name: str) -> bool:
    """True when every word of a feature name is an identifier word or a filler.

    `patient_id`, `mrn`, `unnamed_0` and `record_no` are; `patient_age` and `id_score` are not flagged by
    their names alone.
    """
    words = _words(name)
    return bool(words & _ID_WORDS) and words <= _ID_WORDS | _ID_FILLERS


# Words that name a person rather than a row: such a column with repeated values is a grouping key.
PATIENT_WORDS = {"patient", "patientid", "mrn", "subject", "ssn", "nhs", "person", "pid"}


def names_patient(name: str, values: Sequence[str]) -> bool:
    """True when a column's name names a person and some value repeats (several rows per patient)."""
    present = [v for v in values if v]
    return id_name(name) and bool(_words(name) & PATIENT_WORDS | {"id"}) and len(set(present)) < len(present)


def identifier_evidence(name: str, values: Sequence[str], max_unique_fraction: float) -> str | None:
    """Returns why a column (values in file order) behaves like an identifier, or None."""
    reasons = []
    if id_name(name):
        reasons.append(f"its name {name!r} names a record or patient")
    present = [v for v in values if v]
    discrete = present and all(_is_int(v) or _float(v) is None for v in present)
    if discrete and len(present) >= 20:
        distinct = len(set(present))
        if distinct / len(present) >= max_unique_fraction:
            reasons.append(f"{distinct} distinct values in {len(present)} rows")
        if all(_is_int(v) for v in present):
            numbers = [int(v) for v in present]
            steps = {b - a for a, b in itertools.pairwise(numbers)}
            if steps and (all(s > 0 for s in steps) or all(s < 0 for s in steps)):
                reasons.append(
                    f"it counts monotonically with the row order ({numbers[0]}, {numbers[1]}, ... {numbers[-1]})"
                )
    return "; ".join(reasons) or None


def single_feature_auc(values: Sequence[str], labels: Sequence[int]) -> float | None:
    """Returns the ROC AUC of one column used alone as the score (max of it and its reverse), or None.

    Numbers score by value; categories by their positive rate. Blank cells are left out; None when fewer
    than two classes remain.
    """
    pairs = [(v, y) for v, y in zip(values, labels, strict=True) if v]
    if not pairs or len({y for _, y in pairs}) < 2:
        return None
    numbers = [_float(v) for v, _ in pairs]
    if all(x is not None for x in numbers):
        scores = numbers
    else:
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for v, y in pairs:
            totals[v][0] += y
            totals[v][1] += 1
        scores = [totals[v][0] / totals[v][1] for v, _ in pairs]
    # Mann-Whitney U with mid-ranks for ties.
    order = sorted(range(len(scores)), key=scores.__getitem__)
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    positives = sum(y for _, y in pairs)
    negatives = len(pairs) - positives
    rank_sum = sum(r for r, (_, y) in zip(ranks, pairs, strict=True) if y)
    auc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    return max(auc, 1 - auc)


def check_columns(
    columns: Sequence[str],
    splits: Mapping[str, tuple[Sequence[Sequence[str]], Sequence[int]]],
    allowed: Mapping[str, str],
    max_unique_fraction: float = 0.9,
    max_single_feature_auc: float = 0.99,
    limit: int = 20,
) -> list[Finding]:
    """Returns identifier, date and target-leakage findings.

    Args:
        columns: The canonical CSV header (`label` included).
        splits: Split name -> (rows, source lines).
        allowed: Column -> the review comment of its `dxpipe:allow` annotation ("" when the annotation
            has no comment, which does not count as reviewed).
        max_unique_fraction: See `DataChecksConfig`.
        max_single_feature_auc: See `DataChecksConfig`.
        limit: Most example rows listed per finding.
    """
    every = sorted(
        ((line, row) for rows, lines in splits.values() for row, line in zip(rows, lines, strict=True)),
        key=lambda pair: pair[0],
    )
    all_splits = ordered_splits(splits)
    findings = []
    for column, comment in allowed.items():
        if not comment:
            findings.append(
                Finding(
                    column,
                    all_splits,
                    f"a reviewed `{ALLOW_TAG}` annotation",
                    "the annotation has no comment",
                    'say in the annotation why the column is a feature and who reviewed it: comment: "..."',
                )
            )
    label_index = columns.index(LABEL) if LABEL in columns else None
    train_rows = splits.get("train", ((), ()))[0]
    train_labels = (
        [int(r[label_index]) if r[label_index] in ("0", "1") else -1 for r in train_rows]
        if (label_index is not None)
        else []
    )
    for index, column in enumerate(columns):
        if column == LABEL or allowed.get(column):
            continue
        values = [row[index] for _, row in every]
        # A few values show what the column holds; every row of an identifier would only be noise.
        examples = tuple((line, row[index]) for line, row in every[: min(limit, 5)] if row[index])
        fmt = date_format(values)
        if fmt:
            findings.append(
                Finding(
                    column,
                    all_splits,
                    "a clinical measurement, not a calendar date",
                    f"dates (format {fmt})",
                    f"use it for a temporal split with `split: {{order_by: {column}}}` (validation on "
                    "the most recent patients), or list it in the dataset's `drop_columns`",
                    examples,
                    len(values),
                )
            )
            continue
        evidence = identifier_evidence(column, values, max_unique_fraction)
        if evidence:
            patient = names_patient(column, values)
            if patient:
                repeated = len(values) - len(set(values))
                evidence += f"; {repeated} row(s) repeat an earlier value (one patient, several rows)"
            findings.append(
                Finding(
                    column,
                    all_splits,
                    "a feature that describes the patient, not the row",
                    f"an identifier-like column: {evidence}",
                    (_PATIENT_FIX if patient else _ID_FIX).format(column=column) + _ALLOW_HINT,
                    examples,
                    len(values),
                )
            )
            continue
        if not train_labels or -1 in train_labels:
            continue  # A bad label is reported by the schema check; leakage needs 0/1 labels.
        auc = single_feature_auc([r[index] for r in train_rows], train_labels)
        if auc is not None and auc >= max_single_feature_auc:
            findings.append(
                Finding(
                    column,
                    ("train",),
                    f"no single column predicting the label with AUC >= {max_single_feature_auc}",
                    f"on its own it separates the classes with AUC {auc:.3f} "
                    "on the training split (a measurement derived from or taken after the outcome?)",
                    "list it in the dataset's `drop_columns` if it is recorded after the diagnosis or "
                    "derived from it" + _ALLOW_HINT + "; `checks.max_single_feature_auc` sets the bound",
                )
            )
    return findings


def split_leakage(
    columns: Sequence[str], splits: Mapping[str, tuple[Sequence[Sequence[str]], Sequence[str]]]
) -> dict[str, int]:
    """Counts what the splits share: identical feature rows and groups (patients).

    Args:
        columns: The canonical CSV header (`label` included).
        splits: Split name -> (rows, group values; empty without `group_by`).

    Returns:
        `identical_rows_across_splits` (feature rows present in more than one split) and
        `shared_groups` (groups with rows in more than one split).
    """
    label_index = columns.index(LABEL) if LABEL in columns else -1
    rows_in: dict[tuple, set[str]] = defaultdict(set)
    groups_in: dict[str, set[str]] = defaultdict(set)
    for split, (rows, groups) in splits.items():
        for row in rows:
            rows_in[tuple(v for i, v in enumerate(row) if i != label_index)].add(split)
        for group in groups:
            groups_in[group].add(split)
    return {
        "identical_rows_across_splits": sum(len(s) > 1 for s in rows_in.values()),
        "shared_groups": sum(len(s) > 1 for s in groups_in.values()),
    }


def allowed_columns(schema) -> dict[str, str]:
    """Returns column -> review comment for schema features annotated `dxpipe:allow`."""
    return {
        f.name: " ".join(f.annotation.comment).strip()
        for f in schema.feature
        if ALLOW_TAG in f.annotation.tag
    }
