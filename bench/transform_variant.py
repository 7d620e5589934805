"""The Transform variant of the model, for `bench.transform_vs_inmodel` only.

The production pipeline scales inside the Keras model (`models.network.Preprocess`). This module is the
alternative that benchmark measures: a TFX Transform component does the same preprocessing with
tf.Transform analyzers over the training split, and the Trainer fits the same classifier on the
materialised transformed examples. The exported model applies the transform graph (TFT's
`transform_features_layer`) in front of the classifier, so it exposes the same three signatures as the
in-model version and still takes raw features: the pipeline's Evaluator config applies unchanged.

Both entry points are referenced by dotted path (`bench.transform_variant.preprocessing_fn` and
`bench.transform_variant.run_fn`); they resolve when the pipeline is run from the repository root,
which is how the benchmark runs it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from models.features import LABEL, Feature, features_from_schema, load_schema
from models.network import (
    CLASSIFY_SIGNATURE,
    EXAMPLES_SIGNATURE,
    PREDICTED_LABEL,
    PROBABILITY,
    RAW_SIGNATURE,
    classification_outputs,
)
from models.trainer import HISTORY_FILE, fit_classifier
from pipelines.config import TrainingConfig

PREPROCESSING_FN = "bench.transform_variant.preprocessing_fn"
RUN_FN = "bench.transform_variant.run_fn"
VOCABULARIES = "vocabularies"  # custom_config key: categorical feature -> its schema vocabulary.


def _to_column(value, default) -> tf.Tensor:
    """Returns a [batch] dense tensor from a raw feature holding at most one value per example."""
    if isinstance(value, tf.SparseTensor):
        dense = tft.sparse_tensor_to_dense_with_shape(value, [None, 1], default_value=default)
        return tf.squeeze(dense, axis=1)
    if isinstance(value, tf.RaggedTensor):
        return tf.squeeze(value.to_tensor(default_value=default, shape=[None, 1]), axis=1)
    return tf.reshape(value, [-1])


def preprocessing_fn(inputs: dict, custom_config: dict) -> dict:
    """Standardises numeric features, imputes missing ones at the mean, one-hot encodes categories.

    The same transformation as `models.network.Preprocess`, written with tf.Transform so that its
    statistics come from a Beam analysis of the training split.

    Args:
        inputs: Raw features as TFX reads them from the curated schema (sparse for features without a
            fixed shape).
        custom_config: `{"vocabularies": {feature: [category, ...]}}` from the schema's string domains.

    Returns:
        One dense float feature per numeric input ([batch]) and per categorical input ([batch, k]),
        under the input's name, and the label as a dense int64 [batch].
    """
    vocabularies = custom_config.get(VOCABULARIES, {})
    outputs = {}
    for name, value in inputs.items():
        if name == LABEL:
            outputs[name] = _to_column(value, tf.constant(-1, value.dtype))
        elif name in vocabularies:
            column = _to_column(value, "")
            # Unknown or missing categories encode as all zeros, as the in-model layer does.
            outputs[name] = tf.cast(
                tf.equal(column[:, tf.newaxis], tf.constant(vocabularies[name])[tf.newaxis, :]), tf.float32
            )
        else:
            if isinstance(value, tf.SparseTensor):
                value = tf.sparse.map_values(tf.cast, value, tf.float32)
            else:
                value = tf.cast(value, tf.float32)
            # On a sparse input the analyzer sees only the values present, so the mean and variance
            # ignore missing measurements; filling the gaps with 0 afterwards imputes the training mean.
            outputs[name] = _to_column(tft.scale_to_z_score(value), 0.0)
    return outputs


def _read_transformed(
    file_patterns: list[str], tft_output: tft.TFTransformOutput, features: list[Feature]
) -> tuple[np.ndarray, np.ndarray]:
    """Reads a transformed split into a [n, width] matrix (numeric columns first) and its labels."""
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no transformed example files match {file_patterns}")
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    parsed = tf.io.parse_example(tf.constant(serialized), tft_output.transformed_feature_spec())
    # Column order as in models.network.Preprocess, so the classifier starts from the same weights.
    ordered = [f for f in features if f.numeric] + [f for f in features if not f.numeric]
    columns = [tf.reshape(parsed[f.name], [len(serialized), -1]) for f in ordered]
    return tf.concat(columns, axis=1).numpy(), parsed[LABEL].numpy()


@dataclasses.dataclass(frozen=True)
class _Held:
    """Keeps the classifier out of tf.Module's attribute tracking."""

    classifier: keras.Model


class TransformedModel(tf.Module):
    """What is saved: the transform graph + the classifier behind the in-model version's signatures."""

    def __init__(
        self,
        tft_output: tft.TFTransformOutput,
        classifier: keras.Model,
        features: list[Feature],
        threshold: float,
    ):
        super().__init__(name="transformed_model")
        # An attribute, so tf.saved_model tracks the transform graph's assets.
        self.tft_layer = tft_output.transform_features_layer()
        # The Keras 3 classifier's plain variables are tracked, not the model (see models.network's
        # DiagnosticModel: a tracked Keras 3 model is exported twice and fails under TF Serving).
        self._held = _Held(classifier)
        self.weights = [w.value for w in classifier.weights]
        self._features = features
        self._ordered = [f.name for f in features if f.numeric] + [f.name for f in features if not f.numeric]
        self._raw_spec = {k: v for k, v in tft_output.raw_feature_spec().items() if k != LABEL}
        self.threshold = tf.Variable(threshold, trainable=False, dtype=tf.float32, name="operating_threshold")

    def _predict_parsed(self, parsed: dict) -> dict:
        transformed = self.tft_layer(parsed)
        batch = tf.shape(transformed[self._ordered[0]])[0]
        x = tf.concat([tf.reshape(transformed[name], [batch, -1]) for name in self._ordered], axis=1)
        probability = tf.reshape(self._held.classifier(x, training=False), [-1])
        return {
            PROBABILITY: probability,
            PREDICTED_LABEL: tf.cast(probability >= self.threshold, tf.int64),
        }

    def _from_dense(self, raw: dict) -> dict:
        """Turns [batch] serving tensors into what the transform graph takes; NaN and "" mean missing."""
        parsed = {}
        for f in self._features:
            value = raw[f.name]
            spec = self._raw_spec[f.name]
            present = tf.math.logical_not(tf.math.is_nan(value)) if f.numeric else tf.not_equal(value, "")
            value = tf.cast(value, spec.dtype)
            if isinstance(spec, tf.io.VarLenFeature):
                rows = tf.where(present)
                parsed[f.name] = tf.SparseTensor(
                    indices=tf.concat([rows, tf.zeros_like(rows)], axis=1),
                    values=tf.gather_nd(value, rows),
                    dense_shape=tf.stack([tf.shape(value, out_type=tf.int64)[0], 1]),
                )
            else:
                parsed[f.name] = tf.reshape(value, [-1, *spec.shape])
        return parsed

    def signatures(self) -> dict:
        """Returns the concrete functions to export, named and shaped as in `models.network`."""
        raw_spec = {f.name: tf.TensorSpec([None], f.serving_dtype, name=f.name) for f in self._features}

        @tf.function
        def from_raw(raw):
            return self._predict_parsed(self._from_dense(raw))

        @tf.function
        def from_examples(examples):
            return self._predict_parsed(tf.io.parse_example(examples, self._raw_spec))

        # As in models.network: one signature calls another, so the graph is traced once less.
        @tf.function
        def classify(inputs):
            return classification_outputs(from_examples(inputs)[PROBABILITY])

        return {
            RAW_SIGNATURE: from_raw.get_concrete_function(raw_spec),
            EXAMPLES_SIGNATURE: from_examples.get_concrete_function(
                tf.TensorSpec([None], tf.string, name="examples")
            ),
            CLASSIFY_SIGNATURE: classify.get_concrete_function(
                tf.TensorSpec([None], tf.string, name="inputs")
            ),
        }

    def save(self, export_dir: str) -> None:
        """Writes the SavedModel with its three signatures."""
        tf.saved_model.save(self, export_dir, signatures=self.signatures())


def run_fn(fn_args: Any) -> None:
    """TFX Trainer entry point for the Transform variant.

    Trains exactly as `models.trainer.train` does (same seed, optimiser, early stopping on the eval
    split), only on features the Transform component already scaled.

    Args:
        fn_args: TFX FnArgs: transformed `train_files` and `eval_files`, `transform_graph_path`,
            `schema_path` (the raw schema), `serving_model_dir` and `custom_config`
            (`{"training": {...TrainingConfig fields...}}`).
    """
    training = dict(fn_args.custom_config["training"])
    training["hidden_units"] = tuple(training.get("hidden_units", ()))
    cfg = TrainingConfig(**training)
    features = features_from_schema(load_schema(fn_args.schema_path))
    tft_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    x_train, y_train = _read_transformed(fn_args.train_files, tft_output, features)
    x_eval, y_eval = _read_transformed(fn_args.eval_files, tft_output, features)

    keras.utils.set_random_seed(cfg.seed)
    if cfg.shuffle_labels:
        y_train = np.random.default_rng(cfg.seed).permutation(y_train)
    classifier, history = fit_classifier(x_train, y_train, x_eval, y_eval, cfg)
    TransformedModel(tft_output, classifier, features, cfg.operating_threshold).save(
        fn_args.serving_model_dir
    )
    summary = {
        "history": history,
        "best_epoch": int(np.argmin(history["val_loss"])) + 1,
        "train_examples": len(y_train),
        "eval_examples": len(y_eval),
    }
    with tf.io.gfile.GFile(os.path.join(os.path.dirname(fn_args.serving_model_dir), HISTORY_FILE), "w") as f:
        json.dump(summary, f)
