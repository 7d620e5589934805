"""The MLflow peer of the benchmark: the same SavedModel as an MLflow pyfunc, called the usual MLflow way
(DataFrame in, DataFrame out, the restored TF2 signature function in between)."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd


class SavedModelPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import tensorflow as tf

        self._tf = tf
        self._signature = tf.saved_model.load(context.artifacts["saved_model"]).signatures["serving_default"]

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        tf = self._tf
        feeds = {
            name: tf.constant(model_input[name].to_numpy(dtype=np.float32)) for name in model_input.columns
        }
        outputs = self._signature(**feeds)
        return pd.DataFrame({name: value.numpy() for name, value in outputs.items()})
