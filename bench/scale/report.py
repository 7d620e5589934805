"""Markdown tables of a `bench.scale.run` results file, for BENCHMARKS.md.

Usage: python -m bench.scale.report RESULTS.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MB = 1024 * 1024


def table(results: list[dict]) -> str:
    """One row per (step, mode, size): seconds, rows/s, marginal rows/s, peak RSS and its growth."""
    lines = [
        "| step | Beam mode | rows | seconds | rows/s | marginal rows/s | peak RSS (MB) | over the imports (MB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    by_key: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        by_key.setdefault((r["step"], r["mode"]), []).append(r)
    for (step, mode), runs in by_key.items():
        runs.sort(key=lambda r: r["processed"])
        previous = None
        for r in runs:
            marginal = ""
            if previous is not None and r["seconds"] > previous["seconds"]:
                extra_rows = r["processed"] - previous["processed"]
                marginal = f"{extra_rows / (r['seconds'] - previous['seconds']):,.0f}"
            lines.append(
                f"| {step} | {mode} | {r['processed']:,} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | {marginal} "
                f"| {r['peak_rss'] / MB:,.0f} | {(r['peak_rss'] - r['rss_before']) / MB:,.0f} |"
            )
            previous = r
    return "\n".join(lines)


def main() -> None:
    """Prints the table of one results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    print(table(json.loads(Path(parser.parse_args().results).read_text())))


if __name__ == "__main__":
    main()
