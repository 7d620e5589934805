"""Runs the TFLite export (`models.tflite_export`) for a pipeline run, just before registration.

Why here and not as a TFX component after the Trainer: the export is judged on the whole test split at
the locked threshold and belongs to the registry version it is attached to, which exists only at
registration; running it there reuses the run's test split and SavedModel as registration reads them.
It is cached by content, not by TFX: the export of one SavedModel on one test split is kept under
`<workdir>/tflite/<model digest>-<test split digest>/`, so an unchanged re-run converts nothing.
Image models are not exported: their serving signature decodes PNG/JPEG bytes, which TFLite has only
through the Flex delegate.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from components.serving_pusher.core import saved_model_digest
from pipelines.mlflow_mlmd import PipelineOutputs, split_digest

# Single-row predictions timed per model during a run (the bench times more).
RUN_LATENCY_RUNS = 50


@dataclasses.dataclass(frozen=True)
class TFLiteResult:
    """The export of one run.

    Attributes:
        directory: Where the passing variants and `tflite_parity.json` are (None when nothing was tried).
        report: The parity report (`ExportReport.to_dict()`), None when the export could not run.
        problem: Why it could not run (one sentence), "" otherwise.
    """

    directory: str | None
    report: dict[str, Any] | None
    problem: str = ""


def export_for_run(outputs: PipelineOutputs, workdir: str | Path, kind: str = "table") -> TFLiteResult:
    """Exports the run's SavedModel to TFLite with the parity gate (cached by model and test split)."""
    from models import tflite_export
    from models.features import features_from_schema, load_schema
    from models.trainer import read_split
    from schemas.files import SCHEMA_ASSET

    if kind != "table":
        return TFLiteResult(None, None, "TFLite export covers tabular models only (images need Flex ops)")
    saved = outputs.saved_model_dir
    if not saved or not Path(saved, "saved_model.pb").is_file() or not outputs.examples_uri:
        return TFLiteResult(None, None, "no SavedModel or test split for a TFLite export")
    test_digest = split_digest(outputs.examples_uri, "test") or "none"
    out = Path(workdir) / "tflite" / f"{saved_model_digest(saved)[:16]}-{test_digest[:16]}"
    report_path = out / tflite_export.REPORT
    if report_path.is_file():
        return TFLiteResult(str(out), json.loads(report_path.read_text()))
    try:
        features = features_from_schema(load_schema(str(Path(saved) / SCHEMA_ASSET)))
        test_raw, _ = read_split([str(Path(outputs.examples_uri) / "Split-test" / "*")], features)
        report = tflite_export.export(saved, test_raw, out, latency_runs=RUN_LATENCY_RUNS)
    except (tflite_export.TFLiteExportError, FileNotFoundError, OSError) as exc:
        return TFLiteResult(None, None, f"TFLite export not made: {exc}")
    return TFLiteResult(str(out), report.to_dict())


def evidence_record(result: TFLiteResult, logged_files: dict[str, str]) -> dict[str, Any] | None:
    """What the version's evidence records of the export: the parity report and each file's SHA-256."""
    if result.report is None:
        return None
    return {"artifact_path": "tflite", "files": logged_files, **result.report}


def describe(result: TFLiteResult) -> list[str]:
    """Lines for `dxpipe run`'s summary."""
    if result.report is None:
        return [f"TFLite: {result.problem}"] if result.problem else []
    report = result.report
    lines = [
        f"TFLite parity on {report['rows']} test rows at threshold {report['threshold']:g} "
        f"(SavedModel single-row {report['savedmodel_latency_ms']:.2f} ms):"
    ]
    for v in report["variants"]:
        if v["passed"]:
            lines.append(
                f"  {v['name']}: exported, {v['size_bytes'] / 1024:.1f} KiB, max |diff| {v['max_abs_diff']:.1e}, "
                f"0 decision changes, single-row {v['latency_ms']:.3f} ms"
            )
        else:
            lines.append(f"  {v['name']}: BLOCKED, {v['reason']}")
    return lines
