"""Renders a model card's facts as Markdown and HTML, and a short summary for the reviewer. Pure.

Both formats come from one document (sections of paragraphs, lists and tables) so they cannot say
different things. Every value is escaped for its format: feature names, slice values and config text
come from users and data files, and a card is opened in browsers (the MLflow UI serves artifacts) and
in Markdown viewers that pass raw HTML through, so a feature called `<script>` must stay text in both.
"""

from __future__ import annotations

import dataclasses
import html
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

# Rows of the decision-curve table; the full curve is in the facts and in MLflow's plot.
DECISION_CURVE_ROWS = 11


@dataclasses.dataclass(frozen=True)
class Table:
    """A table: a header row and body rows of already formatted cells."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclasses.dataclass(frozen=True)
class Section:
    """A titled part of the card: paragraphs (str), bullet lists (tuple[str, ...]) and tables, in order."""

    title: str
    blocks: tuple[str | tuple[str, ...] | Table, ...]


def fmt(value: Any, digits: int = 3) -> str:
    """A number for display: ints as is, floats to `digits` decimals, missing or non-finite as an em dash."""
    if value is None or isinstance(value, bool):
        return "—" if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "—"
    return str(value)


def sig(value: Any) -> str:
    """An already rounded aggregate as it was rounded (no invented precision), missing as an em dash."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:g}"
    return "—"


def _interval(entry: Mapping[str, Any] | None) -> tuple[str, str]:
    if not isinstance(entry, Mapping):
        return "—", "—"
    lower, upper = entry.get("lower"), entry.get("upper")
    bounds = "—" if lower is None or upper is None else f"{fmt(lower)} to {fmt(upper)}"
    method = entry.get("method")
    return fmt(entry.get("value")), bounds + (f" ({method})" if method else "")


def _header(facts: Mapping[str, Any]) -> Section:
    model, gate, dataset = facts.get("model", {}), facts.get("gate", {}), facts.get("dataset", {})
    verdict = "passed" if gate.get("passed") else "failed"
    failures = tuple(gate.get("failures") or ())
    blocks: list = [
        f"Registered model '{model.get('name', '?')}' version {model.get('version', '?')}, trained on dataset "
        f"'{dataset.get('name', '?')}' to predict '{dataset.get('positive_class', '?')}' (label 1).",
        (
            f"SavedModel digest: {model.get('digest', '?')}",
            f"Registered: {model.get('registered_at', '?')} by {model.get('author', '?')}",
            f"MLflow run: {model.get('run_id', '?')}; TFX run: {model.get('tfx_run_id', '?')}",
            f"Registry gate: {verdict} (policy {gate.get('policy_digest', '?')}; compared with "
            f"{gate.get('compared_with', '?')})",
        ),
    ]
    if failures:
        blocks.append(tuple(f"Failed criterion: {f}" for f in failures))
    return Section(f"Model card: {model.get('name', '?')} version {model.get('version', '?')}", tuple(blocks))


def _intended(facts: Mapping[str, Any]) -> Section:
    intended = facts.get("intended", {})
    name = facts.get("dataset", {}).get("name", "<dataset>")
    items = []
    for key, label in (
        ("intended_use", "Intended use"),
        ("intended_users", "Intended users"),
        ("out_of_scope", "Out of scope"),
    ):
        text = str(intended.get(key) or "").strip()
        items.append(
            f"{label}: {text}" if text else f"{label}: not stated (set datasets.{name}.model_card.{key})"
        )
    return Section("Intended use", (tuple(items),))


def _limitations(facts: Mapping[str, Any]) -> Section:
    stated = [str(x) for x in facts.get("intended", {}).get("limitations", ()) or ()]
    computed = [str(x) for x in facts.get("notes", ()) or ()]
    blocks: list = []
    if stated:
        blocks.append(tuple(stated))
    else:
        blocks.append("No limitations were stated in the config (model_card.limitations).")
    if computed:
        blocks.append("Found while building this card:")
        blocks.append(tuple(computed))
    return Section("Limitations", tuple(blocks))


def _data(facts: Mapping[str, Any]) -> Section:
    data = facts.get("data", {})
    blocks: list = ["Aggregates only: no row, identifier or single patient's value appears in this card."]
    splits = data.get("splits") or {}
    if splits:
        rows = []
        order = {"train": 0, "eval": 1, "test": 2}
        for split, entry in sorted(splits.items(), key=lambda item: (order.get(item[0], 3), item[0])):
            n, positives = entry.get("examples"), entry.get("positives")
            prevalence = positives / n if isinstance(positives, int) and n else None
            rows.append((split, fmt(n), fmt(positives), fmt(prevalence)))
        blocks.append(Table(("split", "examples", "positives", "prevalence"), tuple(rows)))
    if data.get("method"):
        blocks.append(f"Split: {data['method']}.")
    leakage = data.get("leakage")
    if isinstance(leakage, Mapping):
        text = f"Leakage check: {fmt(leakage.get('identical_rows_across_splits'))} identical feature row(s) across splits"
        if leakage.get("shared_groups") is not None:
            text += f", {fmt(leakage.get('shared_groups'))} patient group(s) in more than one split"
        blocks.append(text + ".")
    else:
        blocks.append("Leakage check: not available for this run.")
    removed = data.get("removed_by_label_map") or {}
    if removed:
        blocks.append(
            "Removed by label_map `drop`: "
            + ", ".join(f"{n} row(s) labelled {k}" for k, n in removed.items())
            + "."
        )
    features = data.get("features") or []
    if features:
        blocks.append(f"Features on the {data.get('features_split', 'train')} split:")
        rows = []
        for f in features:
            if f.get("top_values") is not None or f.get("unique") is not None:
                shown = ", ".join(
                    f"{v.get('value')} ({v.get('frequency')})" for v in f.get("top_values") or ()
                )
                detail = f"{fmt(f.get('unique'))} values; common: {shown or '—'}"
                rows.append(
                    (str(f.get("name")), str(f.get("type")), fmt(f.get("missing")), detail, "", "", "")
                )
            else:
                rows.append(
                    (
                        str(f.get("name")),
                        str(f.get("type")),
                        fmt(f.get("missing")),
                        f"{sig(f.get('mean'))} ± {sig(f.get('std_dev'))}",
                        sig(f.get("p10")),
                        sig(f.get("median")),
                        sig(f.get("p90")),
                    )
                )
        blocks.append(
            Table(("feature", "type", "missing", "mean ± sd / values", "p10", "median", "p90"), tuple(rows))
        )
    anomalies = facts.get("anomalies")
    if isinstance(anomalies, Mapping):
        total = sum(int(v) for v in anomalies.values())
        blocks.append(
            f"Data validation (TFDV ExampleValidator): {total} anomal{'y' if total == 1 else 'ies'} "
            + "("
            + ", ".join(f"{k} {v}" for k, v in anomalies.items())
            + ")."
        )
    return Section("Data", tuple(blocks))


def _schema(facts: Mapping[str, Any]) -> Section:
    schema = facts.get("schema") or []
    if not schema:
        return Section("Schema", ("No schema artifact was found for this run.",))
    rows = tuple(
        (
            str(f.get("name")),
            str(f.get("type")),
            "required" if f.get("required") else "optional",
            str(f.get("domain") or "—"),
        )
        for f in schema
    )
    return Section("Schema", (Table(("feature", "type", "presence", "domain"), rows),))


def _operating_point(facts: Mapping[str, Any]) -> Section:
    op = facts.get("operating_point")
    if not isinstance(op, Mapping):
        return Section(
            "Operating point",
            ("Not recorded with this model (an older export): threshold 0.5, no recalibration.",),
        )
    target = op.get("target") or {}
    if "fixed" in target:
        how = f"fixed at {fmt(target.get('fixed'))}"
    elif target:
        how = f"chosen for {target.get('metric')} ≥ {fmt(target.get('value'))}"
    else:
        how = "target not recorded"
    items = [f"Threshold: {fmt(op.get('threshold'), 4)} ({how}, on the {op.get('chosen_on', '?')} split)"]
    evaluation = op.get("eval") or {}
    if evaluation:
        items.append(
            f"On the eval split: n = {fmt(evaluation.get('n'))}, positives {fmt(evaluation.get('positives'))}, "
            f"sensitivity {fmt(evaluation.get('sensitivity'))}, specificity {fmt(evaluation.get('specificity'))}"
        )
    calibration = op.get("calibration") or {}
    items.append(f"Recalibration: {calibration.get('method', 'none')}")
    return Section("Operating point", (tuple(items),))


def _performance(facts: Mapping[str, Any]) -> Section:
    clinical = facts.get("clinical")
    metrics = (facts.get("metrics") or {}).get("Overall", {})
    blocks: list = []
    if isinstance(clinical, Mapping):
        blocks.append(
            f"Test split: n = {fmt(clinical.get('n'))}, positives {fmt(clinical.get('positives'))}, at threshold "
            f"{fmt(clinical.get('threshold'), 4)}; 95 % intervals."
        )
        rows = [("AUC", *_interval(clinical.get("auc")))]
        for name, entry in (clinical.get("at_threshold") or {}).items():
            rows.append((str(name), *_interval(entry)))
        boot = clinical.get("bootstrap") or {}
        blocks.append(Table(("metric", "value", "95 % interval"), tuple(rows)))
        if boot:
            blocks.append(f"Bootstrap: {fmt(boot.get('resamples'))} resamples, seed {fmt(boot.get('seed'))}.")
        ni = clinical.get("noninferiority")
        if isinstance(ni, Mapping):
            blocks.append(
                "Non-inferiority against the champion: "
                + "; ".join(f"{k}: {v}" for k, v in sorted(ni.items()) if not isinstance(v, Mapping | list))
            )
    if metrics:
        blocks.append("Evaluator (TFMA) metrics on the test split, point estimates:")
        rows = tuple(
            (name, fmt(int(value)) if name.endswith("count") and float(value).is_integer() else fmt(value))
            for name, value in sorted(metrics.items())
        )
        blocks.append(Table(("metric", "value"), rows))
    if not blocks:
        blocks.append("No evaluation was recorded for this run: there are no test-split metrics.")
    return Section("Performance on the test split", tuple(blocks))


def _slices(facts: Mapping[str, Any]) -> Section:
    clinical = facts.get("clinical")
    blocks: list = []
    if isinstance(clinical, Mapping) and clinical.get("slices"):
        rows = []
        for s in clinical["slices"]:
            shown = "; ".join(
                f"{k} {_interval(v)[0]} ({_interval(v)[1]})" if isinstance(v, Mapping) else f"{k} {fmt(v)}"
                for k, v in (s.get("metrics") or {}).items()
            )
            status = s.get("status", "?")
            rows.append(
                (
                    str(s.get("feature")),
                    str(s.get("value")),
                    fmt(s.get("n")),
                    fmt(s.get("positives")),
                    "insufficient evidence" if status == "insufficient_evidence" else str(status),
                    shown or "—",
                )
            )
        blocks.append(Table(("feature", "value", "n", "positives", "status", "metrics"), tuple(rows)))
    else:
        per_slice = {k: v for k, v in (facts.get("metrics") or {}).items() if k != "Overall"}
        if per_slice:
            blocks.append("Per slice (TFMA point estimates; no intervals were computed for this run):")
            names = ("auc", "recall", "specificity", "example_count")
            rows = tuple(
                (name, *(fmt(values.get(m)) for m in names)) for name, values in sorted(per_slice.items())
            )
            blocks.append(Table(("slice", *names), rows))
        else:
            blocks.append("No subgroups were configured (slice_features).")
    return Section("Subgroups", tuple(blocks))


def _calibration(facts: Mapping[str, Any]) -> Section:
    clinical = facts.get("clinical")
    calibration = clinical.get("calibration") if isinstance(clinical, Mapping) else None
    if isinstance(calibration, Mapping):
        items = tuple(
            f"{label}: {fmt(calibration.get(key))}"
            for key, label in (
                ("slope", "Calibration slope (1 is ideal)"),
                ("intercept", "Calibration intercept (0 is ideal)"),
                ("ece", "Expected calibration error"),
                ("ici", "Integrated calibration index"),
            )
        )
        return Section("Calibration", (items,))
    tfma = (facts.get("metrics") or {}).get("Overall", {}).get("calibration")
    text = "No calibration analysis was recorded for this run."
    if tfma is not None:
        text += f" TFMA's mean prediction / mean label: {fmt(tfma)} (1 is ideal)."
    return Section("Calibration", (text,))


def _decision_curve(facts: Mapping[str, Any]) -> Section:
    clinical = facts.get("clinical")
    curve = clinical.get("decision_curve") if isinstance(clinical, Mapping) else None
    if not curve:
        return Section("Clinical utility (decision curve)", ("No decision curve was recorded for this run.",))
    step = max(1, math.ceil(len(curve) / DECISION_CURVE_ROWS))
    rows = tuple(
        (
            fmt(p.get("threshold"), 2),
            fmt(p.get("net_benefit"), 4),
            fmt(p.get("treat_all"), 4),
            fmt(p.get("treat_none"), 4),
        )
        for p in curve[::step]
    )
    return Section(
        "Clinical utility (decision curve)",
        (
            "Net benefit of acting on the model at each threshold probability, against treating everyone and "
            "treating no one:",
            Table(("threshold", "model", "treat all", "treat none"), rows),
        ),
    )


def _tflite(facts: Mapping[str, Any]) -> Section:
    report = facts.get("tflite")
    title = "Offline export (TFLite)"
    if not isinstance(report, Mapping):
        return Section(title, ("No TFLite export was made for this version.",))
    rows = tuple(
        (
            str(v.get("name")),
            "exported" if v.get("passed") else "blocked: " + str(v.get("reason")),
            fmt(v.get("size_bytes")),
            f"{v['max_abs_diff']:.1e}" if isinstance(v.get("max_abs_diff"), float) else "—",
            fmt(v.get("decision_mismatches")),
            fmt(v.get("latency_ms"), 3),
        )
        for v in report.get("variants") or ()
    )
    return Section(
        title,
        (
            f"Parity with the SavedModel on all {fmt(report.get('rows'))} test rows at threshold "
            f"{fmt(report.get('threshold'), 4)}; a variant whose decisions differ on any row is not exported.",
            Table(("variant", "status", "bytes", "max |Δp|", "decision changes", "single-row ms"), rows),
        ),
    )


def document(facts: Mapping[str, Any]) -> tuple[Section, ...]:
    """The card's sections, in reading order."""
    return (
        _header(facts),
        _intended(facts),
        _limitations(facts),
        _data(facts),
        _schema(facts),
        _operating_point(facts),
        _performance(facts),
        _slices(facts),
        _calibration(facts),
        _decision_curve(facts),
        _tflite(facts),
    )


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def md_escape(text: str) -> str:
    """Text that Markdown shows literally: HTML-significant characters as entities, markup backslashed."""
    text = " ".join(str(text).split())  # a newline would end a table row or start a block
    text = html.escape(text, quote=False)
    return _MD_SPECIAL.sub(r"\\\1", text)


def to_markdown(sections: Sequence[Section]) -> str:
    """The card as Markdown."""
    out: list[str] = []
    for level, section in enumerate(sections):
        out.append(("# " if level == 0 else "## ") + md_escape(section.title))
        out.append("")
        for block in section.blocks:
            if isinstance(block, Table):
                out.append("| " + " | ".join(md_escape(h) for h in block.headers) + " |")
                out.append("|" + "---|" * len(block.headers))
                out.extend("| " + " | ".join(md_escape(c) for c in row) + " |" for row in block.rows)
            elif isinstance(block, tuple):
                out.extend(f"- {md_escape(item)}" for item in block)
            else:
                out.append(md_escape(block))
            out.append("")
    return "\n".join(out)


_STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.2em .5em;text-align:left}"
    "th{background:#eee}"
)


def to_html(sections: Sequence[Section]) -> str:
    """The card as a standalone HTML page (no scripts, no external resources)."""
    e = html.escape
    title = e(sections[0].title) if sections else "Model card"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # The card is data, never code: a browser that opens it must not run or fetch anything.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>{title}</title><style>{_STYLE}</style></head><body>",
    ]
    for level, section in enumerate(sections):
        tag = "h1" if level == 0 else "h2"
        out.append(f"<{tag}>{e(section.title)}</{tag}>")
        for block in section.blocks:
            if isinstance(block, Table):
                out.append(
                    "<table><thead><tr>"
                    + "".join(f"<th>{e(h)}</th>" for h in block.headers)
                    + "</tr></thead><tbody>"
                )
                out.extend("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in block.rows)
                out.append("</tbody></table>")
            elif isinstance(block, tuple):
                out.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in block) + "</ul>")
            else:
                out.append(f"<p>{e(block)}</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def summary(facts: Mapping[str, Any]) -> tuple[str, ...]:
    """A few lines a reviewer reads before approving: what, on what evidence, at which threshold, for whom."""
    dataset = facts.get("dataset", {})
    lines = []
    clinical = facts.get("clinical")
    overall = (facts.get("metrics") or {}).get("Overall", {})
    if isinstance(clinical, Mapping):
        auc, auc_ci = _interval(clinical.get("auc"))
        lines.append(
            f"test split n = {fmt(clinical.get('n'))} ({fmt(clinical.get('positives'))} {dataset.get('positive_class', 'positive')}); "
            f"AUC {auc} [{auc_ci}]"
        )
        at = clinical.get("at_threshold") or {}
        shown = [
            f"{k} {_interval(at[k])[0]} [{_interval(at[k])[1]}]"
            for k in ("sensitivity", "specificity")
            if k in at
        ]
        if shown:
            lines.append(f"at threshold {fmt(clinical.get('threshold'), 4)}: " + ", ".join(shown))
        insufficient = [
            f"{s.get('feature')}={s.get('value')}"
            for s in clinical.get("slices") or ()
            if s.get("status") == "insufficient_evidence"
        ]
        if insufficient:
            lines.append("insufficient evidence for subgroup(s): " + ", ".join(insufficient))
        calibration = clinical.get("calibration") or {}
        if calibration:
            lines.append(
                f"calibration slope {fmt(calibration.get('slope'))}, intercept {fmt(calibration.get('intercept'))}, "
                f"ECE {fmt(calibration.get('ece'))}"
            )
    elif overall:
        shown = ", ".join(f"{k} {fmt(overall[k])}" for k in ("auc", "recall", "specificity") if k in overall)
        n = overall.get("example_count")
        lines.append(
            f"test split n = {fmt(int(n) if isinstance(n, float) else n)}: {shown} (point estimates, no intervals)"
        )
    op = facts.get("operating_point")
    if isinstance(op, Mapping):
        lines.append(
            f"operating point {fmt(op.get('threshold'), 4)}, recalibration {(op.get('calibration') or {}).get('method', 'none')}"
        )
    else:
        lines.append("operating point not recorded: threshold 0.5")
    use = str(facts.get("intended", {}).get("intended_use") or "").strip()
    lines.append("intended use: " + (" ".join(use.split())[:160] if use else "NOT STATED in the config"))
    limits = facts.get("intended", {}).get("limitations") or ()
    lines.append(
        f"{len(limits)} stated limitation(s), {len(facts.get('notes') or ())} found while building the card"
    )
    return tuple(lines)
