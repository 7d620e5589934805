"""TFLite export of a tabular SavedModel for offline, low-cost devices, gated on parity with the SavedModel.

Which function is converted: the SavedModel's `serving_default` signature, by key
(`TFLiteConverter.from_saved_model(..., signature_keys=["serving_default"])`). It takes the named raw
features as [batch] tensors (float32 numbers, string categories) and computes the whole model, the
standardisation, imputation and one-hot encoding included, with ops TFLite has built in, so the device
runs exactly the function TF Serving serves and a clinic app calls it with the same feature names
(the signature and its input names survive the conversion). The other two signatures parse serialized
`tf.Example`s (`ParseExample`), which TFLite has only through the Flex delegate, a 5+ MB runtime that the
target devices should not need. Keras 3's own `model.export` would not serve either: the exported
computation is a `tf.Module` around the layers' variables (see `models.network.DiagnosticModel`).

Two variants: float16 weights (`optimizations=[DEFAULT]`, `supported_types=[float16]`; half the size,
float arithmetic) and dynamic-range int8 (`optimizations=[DEFAULT]` without a representative dataset:
weights stored as int8, activations quantised on the fly). TFLite quantises only weight tensors of at
least 1024 elements, so a small model (WDBC's logistic regression: 31 weights) keeps float32 weights
in its int8 file and is exact; larger hidden layers are quantised.

Parity, per variant, on every row of the test split: the largest absolute difference between the
SavedModel's and the TFLite model's probabilities must not exceed the variant's tolerance, and the
decisions at the locked threshold (the Trainer's `assets.extra/dxpipe_operating_point.json`, else 0.5)
must be identical for every row. A variant that fails is not written: only passing variants leave the
export, each with the report that justified it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from schemas.errors import DxpipeError

SIGNATURE = "serving_default"
OPERATING_POINT = "assets.extra/dxpipe_operating_point.json"
REPORT = "tflite_parity.json"
# Largest allowed |p_savedmodel - p_tflite| on any test row. float16 keeps ~3 significant digits (WDBC
# measured 1.5e-3); int8 weights could move a probability by ~1e-2. The decisions at the threshold must be
# identical whatever the difference, so these bounds only catch a conversion that is wrong but lucky.
TOLERANCE = {"float16": 5e-3, "int8_dynamic": 2e-2}
VARIANTS = tuple(TOLERANCE)
LATENCY_RUNS = 200


class TFLiteExportError(DxpipeError):
    """The model cannot be exported to TFLite; the message names the feature or file and the fix."""


@dataclasses.dataclass(frozen=True)
class VariantReport:
    """One variant's parity and cost.

    Attributes:
        name: "float16" or "int8_dynamic".
        passed: Whether it met the tolerance with identical decisions (only then is it written).
        file: Its file name in the export directory ("" when it failed).
        size_bytes: Size of the flatbuffer.
        sha256: SHA-256 of the flatbuffer.
        max_abs_diff: Largest absolute probability difference on the test split.
        tolerance: The allowed maximum.
        decision_mismatches: Rows whose decision at the threshold differs.
        latency_ms: Median single-row latency with the TFLite interpreter (None when it failed).
        reason: Why it failed ("" when it passed).
    """

    name: str
    passed: bool
    file: str
    size_bytes: int
    sha256: str
    max_abs_diff: float
    tolerance: float
    decision_mismatches: int
    latency_ms: float | None
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """The parity report of one export.

    Attributes:
        rows: Test rows compared.
        threshold: The locked threshold decisions were compared at.
        threshold_source: Where it came from (the operating point file, or the 0.5 default).
        savedmodel_latency_ms: Median single-row latency of the SavedModel's `serving_default` (baseline).
        variants: One report per variant.
    """

    rows: int
    threshold: float
    threshold_source: str
    savedmodel_latency_ms: float
    variants: tuple[VariantReport, ...]

    @property
    def exported(self) -> tuple[str, ...]:
        """The variants that passed and were written."""
        return tuple(v.name for v in self.variants if v.passed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {**dataclasses.asdict(self), "exported": list(self.exported)}


def locked_threshold(saved_model_dir: str | os.PathLike) -> tuple[float, str]:
    """The threshold the model decides at: its exported operating point, else 0.5 (older models)."""
    path = Path(saved_model_dir) / OPERATING_POINT
    if not path.is_file():
        return 0.5, "default 0.5 (the model has no operating point file)"
    try:
        threshold = float(json.loads(path.read_text())["threshold"])
    except (ValueError, KeyError, TypeError) as exc:
        raise TFLiteExportError(f"{path} has no readable threshold ({exc}); re-run the Trainer.") from exc
    if not 0.0 <= threshold <= 1.0:
        raise TFLiteExportError(f"{path}: threshold {threshold} is not a probability; re-run the Trainer.")
    return threshold, str(path)


def convert(saved_model_dir: str | os.PathLike, variant: str) -> bytes:
    """Converts the SavedModel's `serving_default` signature to a TFLite flatbuffer.

    Raises:
        TFLiteExportError: An op has no TFLite built-in (named in the converter's message).
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[SIGNATURE])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif variant != "int8_dynamic":
        raise TFLiteExportError(f"unknown TFLite variant {variant!r}; use one of {list(VARIANTS)}.")
    try:
        return converter.convert()
    except Exception as exc:  # The converter raises bare Exceptions (ConverterError and others).
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise TFLiteExportError(
            f"TFLite cannot convert {saved_model_dir} ({variant}): {first}. The serving signature must use "
            "TFLite built-in ops only."
        ) from exc


def _probability(outputs: Mapping[str, Any]) -> np.ndarray:
    for key in ("probability", "probabilities"):
        if key in outputs:
            values = np.asarray(outputs[key], dtype=np.float64)
            if values.ndim == 2:
                values = values[:, -1]  # [batch, 2] holds (negative, positive)
            return values.reshape(-1)
    raise TFLiteExportError(f"the signature has no probability output (outputs: {sorted(outputs)}).")


class SavedModelRunner:
    """Calls the SavedModel's `serving_default` on numpy inputs."""

    def __init__(self, saved_model_dir: str | os.PathLike):
        import tensorflow as tf

        self._tf = tf
        self._model = tf.saved_model.load(str(saved_model_dir))
        self._fn = self._model.signatures[SIGNATURE]
        self.inputs = dict(self._fn.structured_input_signature[1])

    def __call__(self, raw: Mapping[str, np.ndarray]) -> np.ndarray:
        """Probabilities for a batch of raw features."""
        tf = self._tf
        feed = {name: tf.constant(raw[name], dtype=spec.dtype) for name, spec in self.inputs.items()}
        return _probability({k: v.numpy() for k, v in self._fn(**feed).items()})


class TFLiteRunner:
    """Calls a TFLite flatbuffer's `serving_default` signature runner on numpy inputs."""

    def __init__(self, model: bytes):
        import tensorflow as tf

        self._interpreter = tf.lite.Interpreter(model_content=model)
        self._runner = self._interpreter.get_signature_runner(SIGNATURE)
        self._dtypes = {k: v["dtype"] for k, v in self._runner.get_input_details().items()}

    def __call__(self, raw: Mapping[str, np.ndarray]) -> np.ndarray:
        """Probabilities for a batch of raw features (the runner resizes to the batch)."""
        feed = {}
        for name, dtype in self._dtypes.items():
            values = np.asarray(raw[name])
            feed[name] = values.astype(np.bytes_ if values.dtype.kind in "OSU" else dtype)
        return _probability(self._runner(**feed))


def _rows(raw: Mapping[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[index : index + 1] for k, v in raw.items()}


def single_row_latency_ms(
    predict: Callable[[Mapping[str, np.ndarray]], np.ndarray],
    raw: Mapping[str, np.ndarray],
    runs: int = LATENCY_RUNS,
) -> float:
    """Median wall time of one-row predictions, cycling through the rows (after one warm-up call)."""
    n = len(next(iter(raw.values())))
    predict(_rows(raw, 0))
    times = []
    for i in range(runs):
        row = _rows(raw, i % n)
        start = time.perf_counter()
        predict(row)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def parity(
    reference: np.ndarray, candidate: np.ndarray, threshold: float, tolerance: float
) -> tuple[float, int, str]:
    """Compares two probability vectors: (largest absolute difference, decision mismatches, reason or "")."""
    if reference.shape != candidate.shape:
        return float("inf"), len(reference), f"{candidate.shape[0]} predictions for {reference.shape[0]} rows"
    if not np.all(np.isfinite(candidate)):
        bad = int(np.sum(~np.isfinite(candidate)))
        return float("inf"), bad, f"{bad} non-finite probabilities"
    diff = float(np.max(np.abs(reference - candidate))) if len(reference) else 0.0
    mismatches = int(np.sum((reference >= threshold) != (candidate >= threshold)))
    reasons = []
    if diff > tolerance:
        worst = int(np.argmax(np.abs(reference - candidate)))
        reasons.append(
            f"largest probability difference {diff:.2e} exceeds {tolerance:.0e} (test row {worst}: SavedModel "
            f"{reference[worst]:.6f}, TFLite {candidate[worst]:.6f})"
        )
    if mismatches:
        reasons.append(f"{mismatches} test row(s) get a different decision at threshold {threshold:g}")
    return diff, mismatches, "; ".join(reasons)


def export(
    saved_model_dir: str | os.PathLike,
    test_raw: Mapping[str, np.ndarray],
    out_dir: str | os.PathLike,
    *,
    variants: tuple[str, ...] = VARIANTS,
    converter: Callable[[str | os.PathLike, str], bytes] = convert,
    latency_runs: int = LATENCY_RUNS,
) -> ExportReport:
    """Converts, checks parity on the test split and writes the passing variants and the report.

    Args:
        saved_model_dir: The Trainer's serving SavedModel.
        test_raw: The whole test split as raw feature arrays (feature name -> [n]).
        out_dir: Where `<variant>.tflite` files and `tflite_parity.json` go (created; must not exist).
        variants: Which variants to build.
        converter: The conversion (tests inject a broken one to prove that parity blocks it).
        latency_runs: Single-row predictions timed per model.

    Returns:
        The report; `exported` lists the variants written.

    Raises:
        TFLiteExportError: The test split is empty or a conversion is impossible.
    """
    n = len(next(iter(test_raw.values()), ()))
    if n == 0:
        raise TFLiteExportError(
            "the test split is empty: TFLite parity needs every test row; nothing exported."
        )
    threshold, source = locked_threshold(saved_model_dir)
    reference_model = SavedModelRunner(saved_model_dir)
    missing = sorted(set(reference_model.inputs) - set(test_raw))
    if missing:
        raise TFLiteExportError(f"the test split lacks the model's inputs {missing}; nothing exported.")
    reference = reference_model(test_raw)
    baseline_ms = single_row_latency_ms(reference_model, test_raw, latency_runs)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name and renamed when complete: a reader never sees a half export.
    staging = Path(tempfile.mkdtemp(prefix=".tflite-", dir=out.parent))
    try:
        report = _export_into(
            staging, saved_model_dir, test_raw, reference, variants, converter, latency_runs
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report = dataclasses.replace(
        report, threshold=threshold, threshold_source=source, savedmodel_latency_ms=baseline_ms
    )
    (staging / REPORT).write_text(json.dumps(report.to_dict(), indent=1, sort_keys=True, default=str))
    os.replace(staging, out)
    return report


def _export_into(
    staging: Path,
    saved_model_dir: str | os.PathLike,
    test_raw: Mapping[str, np.ndarray],
    reference: np.ndarray,
    variants: tuple[str, ...],
    converter: Callable[[str | os.PathLike, str], bytes],
    latency_runs: int,
) -> ExportReport:
    import hashlib

    threshold, _ = locked_threshold(saved_model_dir)
    reports = []
    for variant in variants:
        model = converter(saved_model_dir, variant)
        runner = TFLiteRunner(model)
        diff, mismatches, reason = parity(reference, runner(test_raw), threshold, TOLERANCE[variant])
        passed = not reason
        file = f"{variant}.tflite" if passed else ""
        if passed:
            (staging / file).write_bytes(model)
        reports.append(
            VariantReport(
                name=variant,
                passed=passed,
                file=file,
                size_bytes=len(model),
                sha256=hashlib.sha256(model).hexdigest(),
                max_abs_diff=diff,
                tolerance=TOLERANCE[variant],
                decision_mismatches=mismatches,
                latency_ms=single_row_latency_ms(runner, test_raw, latency_runs) if passed else None,
                reason=reason,
            )
        )
    return ExportReport(len(reference), threshold, "", 0.0, tuple(reports))
