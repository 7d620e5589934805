"""Reading the ClinicalEvaluator's report and showing it in MLflow: metrics, the JSON and two plots.

The report is read from the artifact directory the run's ML Metadata names (never from a tag). The plots
are drawn from the report itself, so what a reviewer sees is what the gate read:
- reliability: observed event rate (with its Wilson interval) against the mean prediction per bin, and
  the fitted calibration slope and intercept;
- decision curve: net benefit of the model across thresholds against treat-all and treat-none, with the
  locked threshold marked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.errors import DxpipeError

REPORT_FILE = "clinical_evaluation.json"
PLOTS = ("reliability", "decision_curve")


class ClinicalReportError(DxpipeError):
    """The clinical evaluation's report is missing or unreadable."""


def load_clinical(uri: str | None) -> dict[str, Any] | None:
    """The report in a ClinicalEvaluation artifact directory; None when the run has no such artifact.

    Raises:
        ClinicalReportError: The artifact exists but its report is missing or not JSON.
    """
    if not uri:
        return None
    path = Path(uri) / REPORT_FILE
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ClinicalReportError(
            f"the clinical evaluation {path} cannot be read ({exc}); re-run the pipeline."
        ) from exc
    if not isinstance(report, dict):
        raise ClinicalReportError(
            f"the clinical evaluation {path} is not a JSON object; re-run the pipeline."
        )
    return report


def for_gate(report: Mapping[str, Any] | None, paired_with_champion: bool) -> dict[str, Any] | None:
    """The report the gate reads: its paired comparison kept only when it was made against the champion.

    A comparison with the latest blessed model (or any model that is not the champion being replaced)
    says nothing about non-inferiority to the champion; dropping it makes those criteria fail with a
    reason rather than pass on the wrong comparison.
    """
    if report is None:
        return None
    gated = dict(report)
    if not paired_with_champion:
        gated["noninferiority"] = None
    return gated


def summary_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The headline figures as MLflow metrics (`clinical/...`)."""
    out: dict[str, float] = {"clinical/n": report.get("n"), "clinical/positives": report.get("positives")}
    out["clinical/threshold"] = report.get("threshold")
    for bound in ("value", "lower", "upper"):
        out[f"clinical/auc_{bound}"] = (report.get("auc") or {}).get(bound)
    for metric, entry in (report.get("at_threshold") or {}).items():
        if isinstance(entry, Mapping) and "value" in entry:
            for bound in ("value", "lower", "upper"):
                out[f"clinical/{metric}_{bound}"] = entry.get(bound)
    for key in ("slope", "intercept", "ece", "ici"):
        out[f"clinical/calibration_{key}"] = (report.get("calibration") or {}).get(key)
    paired = (report.get("noninferiority") or {}).get("metrics") or {}
    for metric, entry in paired.items():
        for key in ("difference", "lower", "upper"):
            out[f"clinical/paired_{metric}_{key}"] = entry.get(key)
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def write_plots(report: Mapping[str, Any], directory: Path) -> list[Path]:
    """Draws the reliability diagram and the decision curve as PNGs in `directory`."""
    from pipelines.mlflow_plots import _figure, _save

    written = []
    bins = (report.get("calibration") or {}).get("bins") or []
    if bins:
        calibration = report["calibration"]
        fig, ax = _figure("Reliability (test split)", "mean predicted probability", "observed event rate")
        ax.plot([0, 1], [0, 1], linestyle=":", color="black", linewidth=0.8, label="perfect calibration")
        xs = [b["mean_predicted"] for b in bins]
        ys = [b["observed"] for b in bins]
        errors = [
            [y - (b["observed_lower"] or 0) for y, b in zip(ys, bins, strict=True)],
            [(b["observed_upper"] or 0) - y for y, b in zip(ys, bins, strict=True)],
        ]
        ax.errorbar(xs, ys, yerr=errors, fmt="o-", color="tab:blue", capsize=3, label="bins (95 % CI)")
        for x, y, b in zip(xs, ys, bins, strict=True):
            ax.annotate(str(b["n"]), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
        slope, intercept = calibration.get("slope"), calibration.get("intercept")
        fit = "slope undefined" if slope is None else f"slope {slope:.2f}, intercept {intercept:.2f}"
        ax.legend(loc="lower right", title=f"{fit}; ECE {calibration.get('ece') or 0:.3f}", fontsize=8)
        written.append(_save(fig, directory / "reliability.png"))
    curve = report.get("decision_curve") or []
    if curve:
        fig, ax = _figure("Decision curve (test split)", "threshold probability", "net benefit")
        xs = [r["threshold"] for r in curve]
        model = [r["net_benefit"] for r in curve]
        ax.plot(xs, model, color="tab:blue", label="model")
        ax.plot(xs, [r["treat_all"] for r in curve], color="tab:gray", linestyle="--", label="treat all")
        ax.plot(xs, [0.0] * len(xs), color="black", linewidth=0.8, label="treat none")
        top = max(max(model), 0.05)
        ax.set_ylim(-0.05, top * 1.1)
        ax.axvline(report.get("threshold", 0.5), color="tab:red", linestyle=":", label="locked threshold")
        ax.legend(loc="upper right", fontsize=8)
        written.append(_save(fig, directory / "decision_curve.png"))
    return written


def _interval(entry: Mapping[str, Any]) -> str:
    lower, upper = entry.get("lower"), entry.get("upper")
    if lower is None or upper is None or entry.get("value") is None:
        return "undefined"
    return f"{entry['value']:.4f} ({lower:.4f}-{upper:.4f})"


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """What `dxpipe run` prints of the clinical evaluation: intervals, calibration, slices, comparison."""
    level = f"{float(report.get('confidence', 0.95)):.0%}"
    lines = [
        f"Clinical evaluation ({level} intervals; n = {report.get('n')}, {report.get('positives')} positive; "
        f"locked threshold {report.get('threshold')}):"
    ]
    parts = [f"AUC {_interval(report.get('auc') or {})}"]
    at = report.get("at_threshold") or {}
    for metric in ("sensitivity", "specificity", "ppv", "npv"):
        entry = at.get(metric)
        if not isinstance(entry, Mapping):
            continue
        parts.append(f"{metric} {entry.get('successes')}/{entry.get('n')} {_interval(entry)}")
    lines.append("  " + "; ".join(parts[:3]))
    if len(parts) > 3:
        lines.append("  " + "; ".join(parts[3:]))
    cal = report.get("calibration") or {}
    slope = "undefined" if cal.get("slope") is None else f"{cal['slope']:.2f}"
    intercept = "undefined" if cal.get("intercept") is None else f"{cal['intercept']:.2f}"
    ece = "n/a" if cal.get("ece") is None else f"{cal['ece']:.3f}"
    ici = "n/a" if cal.get("ici") is None else f"{cal['ici']:.3f}"
    lines.append(f"  calibration: slope {slope}, intercept {intercept}, ECE {ece}, ICI {ici}")
    for s in report.get("slices") or []:
        if s.get("status") == "ok":
            metrics = s.get("metrics") or {}
            sens = _interval(metrics.get("sensitivity") or {})
            lines.append(f"  slice {s['feature']}={s['value']} (n = {s['n']}): sensitivity {sens}")
        else:
            lines.append(f"  slice {s['feature']}={s['value']}: {s.get('reason', 'insufficient evidence')}")
    paired = (report.get("noninferiority") or {}).get("metrics") or {}
    for metric, entry in paired.items():
        lines.append(
            f"  vs baseline, same rows: {metric} {entry['difference']:+.4f} "
            f"({entry['lower']:+.4f} to {entry['upper']:+.4f})"
        )
    return lines
