"""The Keras network, its in-model preprocessing, and the SavedModel signatures it is served with.

Scaling lives inside the model (measured faster end to end than a Transform component; see
BENCHMARKS.md), so every consumer — TFMA, the Pusher, TF Serving — gets raw features in and
probabilities out, with no separate transform graph to keep in step.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from models.calibration import Calibration
from models.features import Feature, parse_examples
from models.operating_point import served_outputs, write_record

# Signature names. `serving_default` takes named raw features (plain JSON rows over REST); the other two
# take serialized tf.Examples: `from_examples` for TFMA and batch scoring, `classification` in the shape
# TF Serving's :classify API requires (input `inputs`, outputs `classes` and `scores`).
RAW_SIGNATURE = "serving_default"
EXAMPLES_SIGNATURE = "from_examples"
CLASSIFY_SIGNATURE = "classification"
PROBABILITY = "probability"
PREDICTED_LABEL = "predicted_label"


class Preprocess(keras.layers.Layer):
    """Standardises numeric features, imputes missing ones at the training mean, one-hot encodes categories.

    Statistics are computed once from the training split and stored as non-trainable weights, so the
    exported model applies exactly the training-time transformation.
    """

    def __init__(self, features: list[Feature], mean: np.ndarray, std: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self.features = features
        self.numeric = [f.name for f in features if f.numeric]
        self.categorical = [(f.name, list(f.vocabulary)) for f in features if not f.numeric]
        self.mean = self.add_weight(
            shape=(len(self.numeric),),
            initializer=keras.initializers.Constant(mean),
            trainable=False,
            name="mean",
        )
        self.std = self.add_weight(
            shape=(len(self.numeric),),
            initializer=keras.initializers.Constant(std),
            trainable=False,
            name="std",
        )

    @property
    def width(self) -> int:
        """Number of columns the layer outputs."""
        return len(self.numeric) + sum(len(v) for _, v in self.categorical)

    def call(self, inputs: dict) -> tf.Tensor:
        """Maps a dict of [batch] raw tensors to a [batch, width] float32 matrix."""
        parts = []
        if self.numeric:
            x = tf.stack([tf.cast(inputs[name], tf.float32) for name in self.numeric], axis=1)
            z = (x - self.mean) / self.std
            # A missing (NaN) measurement becomes the training mean, i.e. 0 after standardising.
            parts.append(tf.where(tf.math.is_nan(z), tf.zeros_like(z), z))
        for name, vocabulary in self.categorical:
            values = tf.expand_dims(inputs[name], 1)
            # Unknown or missing categories encode as all zeros rather than failing the request.
            parts.append(tf.cast(tf.equal(values, tf.constant(vocabulary)[tf.newaxis, :]), tf.float32))
        return tf.concat(parts, axis=1)


def fit_statistics(features: list[Feature], raw: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Returns per-numeric-feature mean and standard deviation, ignoring missing values."""
    columns = [np.asarray(raw[f.name], dtype=np.float64) for f in features if f.numeric]
    if not columns:
        return np.zeros(0, np.float32), np.ones(0, np.float32)
    matrix = np.stack(columns, axis=1)
    mean = np.nanmean(matrix, axis=0)
    std = np.nanstd(matrix, axis=0)
    # A constant column would divide by zero; scale it by 1 instead.
    std = np.where(std > 1e-12, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def build_classifier(width: int, hidden_units: tuple[int, ...], dropout: float, l2: float) -> keras.Model:
    """Returns the trainable part: dense layers on the preprocessed matrix, sigmoid output."""
    regularizer = keras.regularizers.L2(l2) if l2 else None
    layers: list[keras.layers.Layer] = [keras.Input(shape=(width,))]
    for units in hidden_units:
        layers.append(keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer))
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(1, activation="sigmoid", kernel_regularizer=regularizer))
    return keras.Sequential(layers, name="classifier")


def classification_outputs(probability: tf.Tensor) -> dict:
    """TF Serving's Classify outputs for [batch] positive-class probabilities: classes "0"/"1" and scores."""
    batch = tf.shape(probability)[0]
    return {
        "classes": tf.tile(tf.constant([["0", "1"]]), [batch, 1]),
        "scores": tf.stack([1.0 - probability, probability], axis=1),
    }


@dataclasses.dataclass(frozen=True)
class _KerasParts:
    """The Keras layers of a `DiagnosticModel`, in a holder that tf.Module's attribute tracking passes over."""

    preprocess: Preprocess
    classifier: keras.Model


@dataclasses.dataclass(frozen=True)
class _Fixed:
    """A plain Python value that tf.Module's attribute tracking passes over (it is not saved as state)."""

    value: object


class DiagnosticModel(tf.Module):
    """What is saved: preprocessing + classifier behind three serving signatures.

    The SavedModel holds the layers' plain `tf.Variable`s, not the Keras layers. A Keras 3 variable that
    tf.Module tracks is exported twice: the checkpoint restores a copy of it while the signatures' graph
    reads the original, which only the object graph of `tf.saved_model.load` reconnects. TF Serving loads
    the MetaGraph into a TF1 Session instead (restore op, then signature tensors), where that original is
    never restored: every request failed with "Could not find variable classifier/dense/bias"
    (tensorflow/tensorflow#72963). Tracking the variables themselves gives one variable each, restored
    where the graph reads it, and leaves the optimizer's slots out of the export.
    """

    def __init__(
        self,
        preprocess: Preprocess,
        classifier: keras.Model,
        features: list[Feature],
        threshold: float,
    ):
        super().__init__(name="diagnostic_model")
        self._keras = _KerasParts(preprocess, classifier)
        self.weights = [w.value for w in (*preprocess.weights, *classifier.weights)]
        self._features = features
        # Recalibration is fixed at export (constants in the graph): Python state, not a tracked variable.
        self._calibration = _Fixed(Calibration())
        self._record = _Fixed(None)
        self.threshold = tf.Variable(threshold, trainable=False, dtype=tf.float32, name="operating_threshold")

    def lock(self, calibration: Calibration, record: dict) -> None:
        """Locks what was fitted on the eval split: the recalibration, the threshold and their record.

        Call before `save`: the signatures are traced there, with the recalibration built in.
        """
        self._calibration = _Fixed(calibration)
        self.threshold.assign(record["threshold"])
        self._record = _Fixed(record)

    @property
    def features(self) -> list[Feature]:
        """The model's inputs."""
        return self._features

    @property
    def preprocess(self) -> Preprocess:
        """The preprocessing layer."""
        return self._keras.preprocess

    @property
    def classifier(self) -> keras.Model:
        """The trained dense part."""
        return self._keras.classifier

    def classifier_probability(self, raw: dict) -> tf.Tensor:
        """The classifier's own [batch] probabilities, before recalibration (what calibration is fitted on)."""
        return tf.reshape(self.classifier(self.preprocess(raw), training=False), [-1])

    def predict_raw(self, raw: dict) -> dict:
        """Returns the (recalibrated) probability, the decision at the locked threshold, and the threshold."""
        probability = self._calibration.value.apply_tf(self.classifier_probability(raw))
        return served_outputs(probability, self.threshold)

    def signatures(self) -> dict:
        """Returns the concrete functions to export as signatures."""
        raw_spec = {f.name: tf.TensorSpec([None], f.serving_dtype, name=f.name) for f in self._features}
        examples_spec = tf.TensorSpec([None], tf.string, name="examples")
        inputs_spec = tf.TensorSpec([None], tf.string, name="inputs")

        # Each signature calls the one before it, so the model is traced once (export took ~1 s longer
        # when each traced its own copy) and all three compute the same graph by construction.
        @tf.function
        def from_raw(raw):
            return self.predict_raw(raw)

        @tf.function
        def from_examples(examples):
            return from_raw(parse_examples(examples, self._features))

        @tf.function
        def classify(inputs):
            return classification_outputs(from_examples(inputs)[PROBABILITY])

        return {
            RAW_SIGNATURE: from_raw.get_concrete_function(raw_spec),
            EXAMPLES_SIGNATURE: from_examples.get_concrete_function(examples_spec),
            CLASSIFY_SIGNATURE: classify.get_concrete_function(inputs_spec),
        }

    def save(self, export_dir: str) -> None:
        """Writes the SavedModel with its three signatures, and the locked operating point if there is one.

        The record goes in first: a directory holding `saved_model.pb` never lacks its operating point.
        """
        if self._record.value is not None:
            write_record(export_dir, self._record.value)
        tf.saved_model.save(self, export_dir, signatures=self.signatures())
