"""The reviewer's report on a registry version's page, generated from the evidence (pure: no MLflow).

`describe_version(evidence)` renders Markdown for the version's description: the verdict, each gate
criterion with its measured value, bound and margin, the champion comparison, the data checks, the
test metrics per slice and links to the plots. The page is for reading only: approval re-derives the
verdict from the recorded evidence (digest-anchored), never from this text or from tags, and the
report says so in its first lines.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from components.registry_gate.core import OVERALL, GateVerdict

DISPLAY_ONLY = (
    "*This page is for reading only. Promotion does not trust it, nor any tag or alias set here: "
    "`dxpipe approve` re-derives the verdict from the recorded evidence (model digest, test-split "
    "digest, metrics) before anything is served.*"
)
# MLflow stores at most 5000 characters of a version description.
MAX_CHARS = 5000
# The metrics shown per slice, in this order, when present.
SHOWN = ("auc", "recall", "precision", "specificity", "accuracy", "mean_squared_error", "example_count")


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What a reviewer needs to decide, as recorded at registration.

    Attributes:
        model_name: Registered model name.
        verdict: The gate verdict (every criterion).
        compared_with: What non-inferiority compared against.
        candidate: Test-split metrics per slice (OVERALL for the whole split).
        champion: The champion's overall metrics on the same test split, when it was re-scored.
        digest: SHA-256 of the SavedModel.
        test_digest: Digest of the test split ("<count>:<hex>").
        splits: Examples per split.
        anomalies: Data-validation anomalies per split (feature -> descriptions).
        plots: Plot name -> link (artifacts of the logged model).
        run_id: The MLflow run.
        tfx_run_id: The TFX run.
    """

    model_name: str
    verdict: GateVerdict
    compared_with: str
    candidate: Mapping[str, Mapping[str, float]]
    champion: Mapping[str, float] | None = None
    digest: str = ""
    test_digest: str | None = None
    splits: Mapping[str, int] = dataclasses.field(default_factory=dict)
    anomalies: Mapping[str, Mapping[str, Sequence[str]]] = dataclasses.field(default_factory=dict)
    plots: Mapping[str, str] = dataclasses.field(default_factory=dict)
    run_id: str = ""
    tfx_run_id: str = ""


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.4f}"


def margin(criterion: str, observed: float | None, bound: float | None) -> float | None:
    """How far inside its bound a value is (negative: outside). None when either is missing.

    A maximum (e.g. `maximum:mean_squared_error`) is met below the bound; a minimum and a non-inferiority
    floor above it.
    """
    if observed is None or bound is None:
        return None
    is_maximum = criterion.startswith("maximum:") or ":maximum:" in criterion
    return bound - observed if is_maximum else observed - bound


def _cell(text: str) -> str:
    # A table cell must not break the table: pipes are escaped, newlines flattened.
    return text.replace("|", "\\|").replace("\n", " ")


def _criteria_table(verdict: GateVerdict) -> list[str]:
    lines = [
        "| criterion | result | measured | bound | margin |",
        "|---|---|---|---|---|",
    ]
    for r in verdict.results:
        m = margin(r.criterion, r.observed, r.threshold)
        lines.append(
            f"| `{_cell(r.criterion)}` | {'pass' if r.passed else '**FAIL**'} | {_num(r.observed)} | "
            f"{_num(r.threshold)} | {_num(m) if m is None else f'{m:+.4f}'} |"
        )
    return lines


def _metrics_table(candidate: Mapping[str, Mapping[str, float]]) -> list[str]:
    slices = [OVERALL, *sorted(s for s in candidate if s != OVERALL)]
    slices = [s for s in slices if s in candidate]
    names = [n for n in SHOWN if any(n in candidate[s] for s in slices)]
    names += sorted({n for s in slices for n in candidate[s]} - set(names))
    if not slices or not names:
        return ["No test metrics were recorded (the Evaluator produced none)."]
    lines = ["| metric | " + " | ".join(_cell(s) for s in slices) + " |", "|---" * (len(slices) + 1) + "|"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(_num(candidate[s].get(name)) for s in slices) + " |")
    return lines


def _champion_lines(evidence: Evidence) -> list[str]:
    lines = [f"Compared with: {evidence.compared_with}."]
    if evidence.champion:
        overall = evidence.candidate.get(OVERALL, {})
        lines += ["", "| metric | this version | champion | difference |", "|---|---|---|---|"]
        for name in [n for n in SHOWN if n in evidence.champion] or sorted(evidence.champion):
            mine, theirs = overall.get(name), evidence.champion.get(name)
            diff = None if mine is None or theirs is None else mine - theirs
            lines.append(
                f"| {name} | {_num(mine)} | {_num(theirs)} | {'—' if diff is None else f'{diff:+.4f}'} |"
            )
    return lines


def _data_lines(evidence: Evidence) -> list[str]:
    lines = []
    if evidence.splits:
        sizes = ", ".join(f"{split} {count}" for split, count in sorted(evidence.splits.items()))
        lines.append(f"Examples per split: {sizes} (digests on the run's datasets; no rows are logged).")
    if evidence.test_digest:
        lines.append(f"Test split digest: `{evidence.test_digest}`.")
    if not evidence.anomalies:
        lines.append("Data validation: no anomalies report recorded.")
    for split, features in sorted(evidence.anomalies.items()):
        if not features:
            lines.append(f"Data validation, {split}: no anomalies.")
            continue
        found = "; ".join(f"{_cell(name)}: {', '.join(why)}" for name, why in sorted(features.items()))
        lines.append(f"Data validation, {split}: {len(features)} anomalous feature(s) — {found}.")
    return [f"- {line}" for line in lines]


def describe_version(evidence: Evidence) -> str:
    """Renders the reviewer's report as Markdown of at most `MAX_CHARS` characters.

    Args:
        evidence: What was recorded at registration.

    Returns:
        The Markdown; when it would be longer than MLflow accepts, the per-slice metrics and then the
        criteria table are shortened and the report says where the full record is.
    """
    verdict = evidence.verdict
    failed = len(verdict.failures)
    # The first line is what lists of versions show: the verdict.
    headline = (
        f"Gate passed ({len(verdict.results)} criteria met)."
        if verdict.passed
        else f"Gate FAILED: {failed} of {len(verdict.results)} criteria failed; this version cannot be "
        "approved."
    )
    head = [headline, "", f"## {evidence.model_name}: reviewer's report", "", DISPLAY_ONLY]
    criteria = ["### Gate criteria", "", *_criteria_table(verdict)]
    if verdict.notes:
        criteria += ["", *[f"- Note: {_cell(n)}" for n in verdict.notes]]
    champion = ["### Champion comparison", "", *_champion_lines(evidence)]
    data = ["### Data checks", "", *_data_lines(evidence)]
    metrics = ["### Test metrics (test split, per slice)", "", *_metrics_table(evidence.candidate)]
    plots = ["### Plots", ""]
    plots += [f"- [{name}]({url})" for name, url in evidence.plots.items()] or ["- No plots were recorded."]
    record = [
        "### Record",
        "",
        f"- SavedModel digest: `{evidence.digest}`",
        f"- MLflow run: `{evidence.run_id}`; TFX run: `{evidence.tfx_run_id}`",
        "- Full verdict: tag `gate.verdict` and the run's `gate/verdict.json`.",
    ]
    sections: list[list[str]] = [head, criteria, champion, data, metrics, plots, record]
    text = _join(sections)
    if len(text) > MAX_CHARS:
        sections[4] = [
            "### Test metrics",
            "",
            "Too many slices to show here: see the logged model's metrics.",
        ]
        text = _join(sections)
    if len(text) > MAX_CHARS:
        sections[1] = [
            "### Gate criteria",
            "",
            *[f"- FAIL `{_cell(f.criterion)}`: {_cell(f.message)}" for f in verdict.failures[:20]],
            "- Too many criteria to show here: see the tag `gate.verdict`.",
        ]
        text = _join(sections)
    return text[:MAX_CHARS]


def _join(sections: Sequence[Sequence[str]]) -> str:
    return "\n".join(line for section in sections for line in [*section, ""]).rstrip() + "\n"


def evidence_dict(evidence: Evidence) -> dict[str, Any]:
    """The evidence as JSON (logged next to the report as `report/evidence.json`)."""
    out = dataclasses.asdict(evidence)
    out["verdict"] = evidence.verdict.to_dict()
    return out
