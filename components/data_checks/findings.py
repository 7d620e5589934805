"""One problem with the data, as a report shows it: one entry per column, every split named together."""

from __future__ import annotations

import dataclasses

SPLIT_ORDER = ("train", "eval", "test")
NOT_IN_SCHEMA = "a column the model was not reviewed for"


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem with one column (or the whole dataset).

    Attributes:
        column: The feature name (empty for dataset-wide problems).
        splits: The splits it was found in (all of them for a column-wide problem).
        expected: What the curated schema or the guard requires.
        found: What the data holds.
        fix: What the user should do, naming the config key or schema field when that is the fix.
        rows: (source line, value) of offending rows, up to the report limit.
        count: How many rows are affected in all (may exceed len(rows)).
    """

    column: str
    splits: tuple[str, ...]
    expected: str
    found: str
    fix: str
    rows: tuple[tuple[int, str], ...] = ()
    count: int = 0

    def __str__(self) -> str:
        where = f"column {self.column!r}" if self.column else "the dataset"
        splits = f" [{', '.join(self.splits)}]" if self.splits else ""
        text = f"{where}{splits}: expected {self.expected}; found {self.found}."
        if self.rows:
            shown = ", ".join(f"line {line}: {value!r}" for line, value in self.rows)
            more = f" (and {self.count - len(self.rows)} more)" if self.count > len(self.rows) else ""
            text += f" Rows ({self.count}): {shown}{more}."
        return f"{text} Fix: {self.fix}."


def ordered_splits(splits) -> tuple[str, ...]:
    """Returns split names in train, eval, test order."""
    return tuple(sorted(set(splits), key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 9, s)))


def merge(findings: list[Finding], limit: int = 20) -> list[Finding]:
    """Merges findings about the same column and problem found in several splits into one entry.

    Args:
        findings: Per-split findings.
        limit: Most offending rows kept per merged finding (by source line).
    """
    merged: dict[tuple, Finding] = {}
    for finding in findings:
        key = (finding.column, finding.expected, finding.fix)
        if key not in merged:
            merged[key] = finding
            continue
        old = merged[key]
        merged[key] = dataclasses.replace(
            old,
            splits=ordered_splits(old.splits + finding.splits),
            found=old.found if finding.found in old.found else f"{old.found}; {finding.found}",
            rows=tuple(sorted(old.rows + finding.rows))[:limit],
            count=old.count + finding.count,
        )
    return sorted(merged.values(), key=lambda f: (f.column == "", f.column))


def without_guarded(row_findings: list[Finding], guard_findings: list[Finding]) -> list[Finding]:
    """Drops the schema's "column not in the schema" entry for a column a guard explains better.

    An identifier or a date is also absent from a reviewed schema; the guard's entry carries the
    evidence and the specific fix (`drop_columns`, `group_by`, `order_by`), so one entry per column is kept.

    Returns:
        The row findings to report beside the guard findings.
    """
    guarded = {f.column for f in guard_findings}
    return [f for f in row_findings if not (f.column in guarded and f.found == NOT_IN_SCHEMA)]
