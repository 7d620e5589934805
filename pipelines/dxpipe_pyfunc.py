"""The pyfunc loader of dxpipe's MLflow Model: the exported SavedModel's `serving_default` signature.

MLflow ships this file inside every registered model (`code/dxpipe_pyfunc.py`) and imports it by the
top-level name `dxpipe_pyfunc`, so it must stand alone: it imports TensorFlow, NumPy and pandas only,
never `pipelines.*` (a data scientist's notebook or `mlflow models serve` has no dxpipe installed).

It calls the same signature TF Serving and `dxpipe serve` call, on the same SavedModel bytes, so the
probabilities are those of the served model. A feature left out of the input (an optional feature in
the signature) or a missing value (None/NaN) is passed as the model's own "missing" value — NaN for a
number, which the model imputes at the training mean; "" for a category, which encodes as unknown —
exactly what a TF Serving client sends for a missing value.
"""

from __future__ import annotations

from typing import Any

SIGNATURE = "serving_default"
OUTPUTS = ("probability", "predicted_label")


class SavedModelPredictor:
    """Predicts with a SavedModel's `serving_default` signature on a pandas DataFrame.

    Args:
        path: The SavedModel directory.
    """

    def __init__(self, path: str) -> None:
        import tensorflow as tf

        self._tf = tf
        self._loaded = tf.saved_model.load(path)  # kept: the signature's variables belong to it
        self._fn = self._loaded.signatures[SIGNATURE]
        self._specs = self._fn.structured_input_signature[1]

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """Returns a DataFrame with `probability` and `predicted_label`, one row per input row.

        Args:
            model_input: A pandas DataFrame (or anything `pandas.DataFrame` accepts) with one column per
                feature.
            params: Unused; MLflow passes the signature's params.

        Raises:
            ValueError: If a column has a value of the wrong kind (e.g. text in a numeric feature).
        """
        import numpy as np
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        rows = len(frame)
        tf = self._tf
        feeds = {}
        for name, spec in self._specs.items():
            column = frame[name] if name in frame.columns else pd.Series([None] * rows, dtype=object)
            if spec.dtype == tf.string:
                values = ["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in column]
                feeds[name] = tf.constant(values, dtype=tf.string, shape=[rows])
            else:
                try:
                    numbers = pd.to_numeric(column, errors="raise").to_numpy(dtype=np.float64)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"feature {name!r} must be numeric: {exc}") from exc
                feeds[name] = tf.constant(numbers.astype(np.float32), shape=[rows])
        outputs = self._fn(**feeds)
        return pd.DataFrame(
            {
                "probability": outputs["probability"].numpy().astype(np.float64),
                "predicted_label": outputs["predicted_label"].numpy().astype(np.int64),
            }
        )


def _load_pyfunc(data_path: str) -> SavedModelPredictor:
    """MLflow's entry point for a `loader_module` flavor: `data_path` is the SavedModel directory."""
    return SavedModelPredictor(data_path)
