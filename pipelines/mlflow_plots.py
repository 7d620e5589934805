"""ROC, precision-recall, calibration and confusion-matrix PNGs from TFMA plot data.

Drawn with matplotlib's object API on an Agg canvas (no pyplot): no global figure state, no display
needed, safe to call from a pipeline runner thread. The candidate and, when the Evaluator re-scored one,
the baseline are drawn on the same axes so a reviewer sees the comparison the gate made.
"""

from __future__ import annotations

import math
from pathlib import Path

from pipelines.mlflow_tfma import BASELINE, CANDIDATE, ModelPlots

_STYLE = {CANDIDATE: ("candidate", "tab:blue"), BASELINE: ("baseline (champion re-scored)", "tab:gray")}


def _figure(title: str, xlabel: str, ylabel: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    # Fixed margins rather than bbox_inches="tight", which renders every figure twice.
    fig.subplots_adjust(left=0.15, bottom=0.12, right=0.96, top=0.92)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    return fig, ax


def _ratio(num: float, den: float) -> float | None:
    return None if den <= 0 else num / den


def _save(fig, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def roc_png(models: dict[str, ModelPlots], path: Path) -> Path | None:
    """Writes the ROC curve; None when there are no confusion matrices."""
    drawable = {m: p for m, p in models.items() if p.thresholds}
    if not drawable:
        return None
    fig, ax = _figure("ROC (test split)", "false positive rate", "true positive rate (sensitivity)")
    ax.plot([0, 1], [0, 1], linestyle=":", color="black", linewidth=0.8)
    for model, p in drawable.items():
        points = sorted(
            (_ratio(fp, fp + tn) or 0.0, _ratio(tp, tp + fn) or 0.0)
            for tp, fp, tn, fn in zip(p.tp, p.fp, p.tn, p.fn, strict=True)
        )
        label, color = _STYLE[model]
        ax.plot([x for x, _ in points], [y for _, y in points], label=label, color=color)
    ax.legend(loc="lower right")
    return _save(fig, path)


def pr_png(models: dict[str, ModelPlots], path: Path) -> Path | None:
    """Writes the precision-recall curve; None when there are no confusion matrices."""
    drawable = {m: p for m, p in models.items() if p.thresholds}
    if not drawable:
        return None
    fig, ax = _figure("Precision-recall (test split)", "recall (sensitivity)", "precision")
    for model, p in drawable.items():
        points = sorted(
            (_ratio(tp, tp + fn), _ratio(tp, tp + fp))
            for tp, fp, fn in zip(p.tp, p.fp, p.fn, strict=True)
            if tp + fp > 0 and tp + fn > 0
        )
        label, color = _STYLE[model]
        ax.plot([x for x, _ in points], [y for _, y in points], label=label, color=color)
    ax.legend(loc="lower left")
    return _save(fig, path)


def calibration_bins(plots: ModelPlots, bins: int = 10) -> list[tuple[float, float, float]]:
    """Aggregates TFMA's fine calibration buckets into `bins` equal-width bins.

    Returns:
        (mean predicted probability, observed positive rate, weighted examples) for each non-empty bin.
    """
    totals = [[0.0, 0.0, 0.0] for _ in range(bins)]
    for lower, _upper, n, labels, preds in plots.calibration:
        if n <= 0:
            continue
        # TFMA's first and last buckets are open-ended (-inf, 0) and [1, inf).
        index = 0 if not math.isfinite(lower) or lower < 0 else min(bins - 1, int(lower * bins))
        totals[index][0] += n
        totals[index][1] += labels
        totals[index][2] += preds
    return [(preds / n, labels / n, n) for n, labels, preds in totals if n > 0]


def calibration_png(models: dict[str, ModelPlots], path: Path) -> Path | None:
    """Writes the reliability diagram; None when there are no calibration buckets."""
    drawable = {m: p for m, p in models.items() if p.calibration}
    if not drawable:
        return None
    fig, ax = _figure("Calibration (test split)", "mean predicted probability", "observed positive rate")
    ax.plot([0, 1], [0, 1], linestyle=":", color="black", linewidth=0.8, label="perfect calibration")
    for model, p in drawable.items():
        points = calibration_bins(p)
        label, color = _STYLE[model]
        ax.plot([x for x, _, _ in points], [y for _, y, _ in points], marker="o", label=label, color=color)
    ax.legend(loc="upper left")
    return _save(fig, path)


def confusion_png(plots: ModelPlots, threshold: float, path: Path) -> Path | None:
    """Writes the candidate's confusion matrix at the threshold nearest `threshold`."""
    if not plots.thresholds:
        return None
    i = min(range(len(plots.thresholds)), key=lambda k: abs(plots.thresholds[k] - threshold))
    cells = [[plots.tn[i], plots.fp[i]], [plots.fn[i], plots.tp[i]]]
    fig, ax = _figure(f"Confusion matrix at threshold {plots.thresholds[i]:.3f}", "predicted", "actual")
    ax.set_xlim(-0.5, 1.5)
    ax.set_ylim(1.5, -0.5)
    ax.grid(False)
    ax.imshow(cells, cmap="Blues")
    ax.set_xticks([0, 1], ["negative", "positive"])
    ax.set_yticks([0, 1], ["negative", "positive"])
    peak = max(max(row) for row in cells) or 1.0
    for r in range(2):
        for c in range(2):
            ax.text(
                c,
                r,
                f"{cells[r][c]:g}",
                ha="center",
                va="center",
                color="white" if cells[r][c] > peak / 2 else "black",
            )
    return _save(fig, path)


def write_plots(models: dict[str, ModelPlots], out_dir: Path, threshold: float) -> list[Path]:
    """Writes every plot the data allows into `out_dir`; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        roc_png(models, out_dir / "roc.png"),
        pr_png(models, out_dir / "precision_recall.png"),
        calibration_png(models, out_dir / "calibration.png"),
    ]
    if CANDIDATE in models:
        written.append(confusion_png(models[CANDIDATE], threshold, out_dir / "confusion_matrix.png"))
    return [p for p in written if p is not None]
