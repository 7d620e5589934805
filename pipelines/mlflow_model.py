"""The exported SavedModel as an MLflow Model: pyfunc flavor, signature from the schema, pinned requirements.

The MLflow Model directory holds the SavedModel's bytes unchanged under `data/<export dir name>/` (the
bytes TF Serving loads; their digest is the registered `model.digest`), an `MLmodel` whose pyfunc flavor
loads them with `dxpipe_pyfunc` (shipped in `code/`), the input/output signature derived from the
curated schema, an input example and exact requirement pins.

The input example is never a patient's row: by default it is synthetic, each feature at its training
split mean (numbers) or most frequent value (categories), read from the run's aggregated statistics
(`example_source="aggregate"`); without statistics the schema's domain midpoints stand in.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.serving_pusher.core import saved_model_digest
from pipelines.errors import DxpipeError

if TYPE_CHECKING:
    from mlflow.models import ModelSignature
    from tensorflow_metadata.proto.v0 import schema_pb2

LOADER_MODULE = "dxpipe_pyfunc"
# The packages the loader imports, pinned to the versions that produced and checked the model.
PINNED = ("mlflow", "tensorflow", "numpy", "pandas")
LABEL = "label"


class NativeModelError(DxpipeError):
    """The MLflow Model cannot be built from this export or schema; the message names the fix."""


def _schema(schema_path: str | Path) -> schema_pb2.Schema:
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = schema_pb2.Schema()
    try:
        text_format.Parse(Path(schema_path).read_text(), schema)
    except (OSError, text_format.ParseError) as exc:
        raise NativeModelError(f"cannot read the schema {schema_path}: {exc}") from exc
    return schema


def input_features(schema_path: str | Path) -> list[tuple[str, str, bool]]:
    """The model's inputs from the curated schema: (name, MLflow type, required), in schema order.

    Numbers (FLOAT and INT) are "double": the model casts them to float32 itself, and pandas and JSON
    carry float64. A feature whose schema presence allows it to be absent (`min_fraction` < 1) is an
    optional input; the loader passes it to the model as missing.

    Raises:
        NativeModelError: If the schema has a feature type the model cannot take.
    """
    from tensorflow_metadata.proto.v0 import schema_pb2

    out = []
    for feature in _schema(schema_path).feature:
        if feature.name == LABEL:
            continue
        if feature.type in (schema_pb2.FLOAT, schema_pb2.INT):
            kind = "double"
        elif feature.type == schema_pb2.BYTES:
            kind = "string"
        else:
            raise NativeModelError(
                f"schema feature {feature.name!r} has type {feature.type}; the model takes FLOAT, INT or BYTES."
            )
        presence = feature.presence.min_fraction if feature.HasField("presence") else 0.0
        out.append((feature.name, kind, presence >= 1.0))
    return out


def model_signature(schema_path: str | Path) -> ModelSignature:
    """The pyfunc signature: one column per schema feature in, `probability` and `predicted_label` out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema(
        [ColSpec(kind, name, required=required) for name, kind, required in input_features(schema_path)]
    )
    outputs = Schema([ColSpec("double", "probability"), ColSpec("long", "predicted_label")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def synthetic_example(
    schema_path: str | Path, statistics: Mapping[str, Any] | None = None, split: str = "train"
) -> dict[str, list[Any]]:
    """One synthetic input row: no patient's values, only aggregates.

    Args:
        schema_path: The curated schema.
        statistics: The run's statistics summary (`mlflow_summaries.statistics_summary`), whose `split`
            gives each numeric feature's mean and each category's most frequent value.
        split: The split whose aggregates are used.

    Returns:
        {feature: [value]}, every schema input present.
    """
    schema = _schema(schema_path)
    by_name = {f.name: f for f in schema.feature}
    domains = {d.name: list(d.value) for d in schema.string_domain}
    stats = ((statistics or {}).get(split) or {}).get("features", {})
    row: dict[str, list[Any]] = {}
    for name, kind, _ in input_features(schema_path):
        entry = stats.get(name, {})
        feature = by_name[name]
        if kind == "double":
            mean = entry.get("mean")
            if isinstance(mean, (int, float)) and math.isfinite(mean):
                value = float(mean)
            elif feature.HasField("float_domain"):
                value = (feature.float_domain.min + feature.float_domain.max) / 2
            elif feature.HasField("int_domain"):
                value = float((feature.int_domain.min + feature.int_domain.max) // 2)
            else:
                value = 0.0
            row[name] = [round(value, 4)]
        else:
            top = entry.get("top_values") or []
            vocabulary = domains.get(feature.domain or name) or [""]
            row[name] = [str(top[0]["value"]) if top else vocabulary[0]]
    return row


def pinned_requirements() -> list[str]:
    """Exact pins of what the loader imports, from this environment."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in PINNED]


def save_native_model(
    export_dir: str | Path,
    dest: str | Path,
    schema_path: str | Path | None,
    statistics: Mapping[str, Any] | None = None,
    *,
    expected_digest: str | None = None,
) -> tuple[Path, str]:
    """Writes the MLflow Model directory for a SavedModel export.

    Args:
        export_dir: The exported SavedModel (`<Model artifact>/Format-Serving`).
        dest: A directory that does not exist yet.
        schema_path: The curated schema the model was trained on; without one (a run that recorded
            none) the model has no signature and no input example.
        statistics: The run's statistics summary, for the synthetic input example.
        expected_digest: The SavedModel's digest as registered (default: computed from `export_dir`).

    Returns:
        The directory and the path of the SavedModel inside it, relative to it (e.g.
        "data/Format-Serving").

    Raises:
        NativeModelError: If the copied SavedModel's digest differs from the export's (the registered
            digest must describe the bytes the MLflow Model holds).
    """
    import mlflow.pyfunc

    export_dir, dest = Path(export_dir), Path(dest)
    mlflow.pyfunc.save_model(
        path=str(dest),
        loader_module=LOADER_MODULE,
        data_path=str(export_dir),
        code_paths=[str(Path(__file__).with_name(f"{LOADER_MODULE}.py"))],
        pip_requirements=pinned_requirements(),
        signature=None if schema_path is None else model_signature(schema_path),
        input_example=None if schema_path is None else synthetic_example(schema_path, statistics),
        metadata={"dxpipe.example_source": "aggregate" if statistics else "schema"},
    )
    inner = f"data/{export_dir.name}"
    expected = expected_digest or saved_model_digest(export_dir)
    if saved_model_digest(dest / inner) != expected:
        raise NativeModelError(
            f"the SavedModel copied into the MLflow Model ({dest / inner}) differs from {export_dir} "
            f"(digest {expected[:12]}); nothing was registered. Check the disk and re-run."
        )
    return dest, inner
