"""Recognising date columns: one format must read (nearly) every value, so 03/04/2021 is never read two ways."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

FORMATS = (
    "%Y-%m-%d",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d",
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%d.%m.%Y",
    "%d-%b-%Y",
)


def parse(text: str, fmt: str) -> datetime.datetime | None:
    """Returns the date `text` holds in format `fmt`, or None."""
    try:
        return datetime.datetime.strptime(text.strip(), fmt)
    except ValueError:
        return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def date_format(values: Sequence[str], min_fraction: float = 0.9) -> str | None:
    """Returns the first format that reads at least `min_fraction` of the non-blank values, or None.

    Plain numbers (a year, a count) are never dates. Only the first 200 values are tried for the
    recognition, which is what the guards need; `min_fraction=1.0` checks them all.
    """
    present = [v.strip() for v in values if v.strip()]
    if not present or all(_is_number(v) for v in present):
        return None
    sample = present if min_fraction >= 1.0 else present[:200]
    for fmt in FORMATS:
        if sum(parse(v, fmt) is not None for v in sample) >= min_fraction * len(sample):
            return fmt
    return None


def best_format(values: Sequence[str]) -> str | None:
    """Returns the format that reads the most values (at least one), to name the rows it cannot read."""
    counts = {fmt: sum(parse(v, fmt) is not None for v in values if v.strip()) for fmt in FORMATS}
    fmt = max(counts, key=counts.get)
    return fmt if counts[fmt] else None
