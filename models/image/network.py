"""The CNN, the in-model image decoding it shares with serving, and the SavedModel it is exported as.

Decoding and resizing live inside the model, so a clinic sends the encoded file it has (PNG or JPEG,
grayscale or colour, any size) and TFMA, TF Serving and `dxpipe serve` all apply exactly the decoding
the network was trained through. A request that is not an image the model can read fails inside the
graph with INVALID_ARGUMENT, which both servers answer with HTTP 400, never a prediction.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from models.calibration import Calibration
from models.image.hparams import CnnConfig
from models.operating_point import served_outputs, write_record

IMAGE = "image"
LABEL = "label"
# Signature names and keys, the same as the tabular model's so TFMA, the gate and the Pusher need nothing
# new: `serving_default` takes encoded images, `from_examples` serialized tf.Examples (TFMA, batch
# scoring), `classification` tf.Examples in TF Serving's :classify shape.
RAW_SIGNATURE = "serving_default"
EXAMPLES_SIGNATURE = "from_examples"
CLASSIFY_SIGNATURE = "classification"
IMAGES_INPUT = "images"
PROBABILITY = "probability"
PREDICTED_LABEL = "predicted_label"
# Smallest side accepted: below this a "picture" holds too little to read, whatever the resize makes of it.
MIN_SIDE = 8

# Leading bytes of each accepted encoding (the same signatures TFDV's image statistics use).
_MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff"}


def _check_format(encoded: tf.Tensor, formats: tuple[str, ...]) -> tf.Tensor:
    matches = [tf.strings.substr(encoded, 0, len(_MAGIC[f])) == _MAGIC[f] for f in formats]
    names = " or ".join(f.upper() for f in formats)
    return tf.debugging.Assert(
        tf.reduce_any(tf.stack(matches)),
        [f"image is not {names} (its first bytes are not a {names} signature)"],
        name="image_format",
    )


def decode_image(encoded: tf.Tensor, size: int, formats: tuple[str, ...] = ("png", "jpeg")) -> tf.Tensor:
    """Decodes one encoded image into a [size, size, 1] float32 grayscale image in [0, 1].

    Colour images become luminance (ITU-R 601, as `tf.image.rgb_to_grayscale`), an alpha channel is
    dropped, and the image is resized by area averaging (a large photo is averaged down, not aliased).

    Raises:
        tf.errors.InvalidArgumentError: (when run) for bytes that are not an accepted encoding, a
            corrupt image, or an image smaller than `MIN_SIDE` pixels a side.
    """
    with tf.control_dependencies([_check_format(encoded, formats)]):
        pixels = tf.io.decode_image(encoded, channels=0, expand_animations=False)
    shape = tf.shape(pixels)
    big_enough = tf.debugging.assert_greater_equal(
        tf.reduce_min(shape[:2]),
        MIN_SIDE,
        message=f"image is smaller than {MIN_SIDE}x{MIN_SIDE} pixels",
    )
    with tf.control_dependencies([big_enough]):
        values = tf.cast(pixels, tf.float32)
    gray = tf.cond(
        shape[2] >= 3,
        lambda: tf.image.rgb_to_grayscale(values[:, :, :3]),
        lambda: values[:, :, :1],
    )
    gray = tf.ensure_shape(gray, [None, None, 1])
    return tf.image.resize(gray, [size, size], method="area") / 255.0


def decode_images(encoded: tf.Tensor, size: int) -> tf.Tensor:
    """Decodes a [batch] string tensor of encoded images into [batch, size, size, 1] float32."""
    return tf.map_fn(
        lambda e: decode_image(e, size),
        encoded,
        fn_output_signature=tf.TensorSpec([size, size, 1], tf.float32),
    )


def parse_examples(serialized: tf.Tensor, with_label: bool = False) -> dict[str, tf.Tensor]:
    """Parses [batch] serialized tf.Examples into `image` bytes (and `label` int64)."""
    spec = {IMAGE: tf.io.FixedLenFeature([], tf.string)}
    if with_label:
        spec[LABEL] = tf.io.FixedLenFeature([], tf.int64)
    return tf.io.parse_example(serialized, spec)


def build_cnn(cfg: CnnConfig) -> keras.Model:
    """Returns the network on [batch, size, size, 1] images in [0, 1]: probability of the positive class.

    Each stage is two 3x3 convolutions with batch norm and ReLU, then 2x2 max pooling; global average
    pooling and dropout feed one sigmoid unit. Batch norm's momentum is 0.9 (Keras' 0.99 needs more steps
    than a small dataset's epoch gives before its moving averages are usable for early stopping).
    """
    inputs = keras.Input((cfg.input_size, cfg.input_size, 1), name=IMAGES_INPUT)
    x = inputs
    for filters in cfg.filters:
        for _ in range(2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = keras.layers.BatchNormalization(momentum=0.9)(x)
            x = keras.layers.Activation("relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if cfg.dropout:
        x = keras.layers.Dropout(cfg.dropout)(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name="cnn")


def build_augmenter(seed: int) -> keras.Sequential:
    """Random transformations applied to the training split only (never eval, test or serving).

    Shifts (up to 15 % of a side), rotations (up to 0.08 of a full turn, about 29 degrees, either way) and
    zoom (up to 15 %) stand in for how a patient or probe is placed; contrast for the exposure differences
    between devices. No flips: anatomy is not left-right symmetric.
    """
    return keras.Sequential(
        [
            keras.layers.RandomTranslation(0.15, 0.15, fill_mode="nearest", seed=seed),
            keras.layers.RandomRotation(0.08, fill_mode="nearest", seed=seed + 1),
            keras.layers.RandomZoom(0.15, fill_mode="nearest", seed=seed + 2),
            keras.layers.RandomContrast(0.2, seed=seed + 3),
        ],
        name="augment",
    )


def classification_outputs(probability: tf.Tensor) -> dict:
    """TF Serving's Classify outputs for [batch] positive-class probabilities: classes "0"/"1" and scores."""
    batch = tf.shape(probability)[0]
    return {
        "classes": tf.tile(tf.constant([["0", "1"]]), [batch, 1]),
        "scores": tf.stack([1.0 - probability, probability], axis=1),
    }


@dataclasses.dataclass(frozen=True)
class _KerasParts:
    """The Keras network, in a holder that tf.Module's attribute tracking passes over."""

    cnn: keras.Model


@dataclasses.dataclass(frozen=True)
class _Fixed:
    """A plain Python value that tf.Module's attribute tracking passes over (it is not saved as state)."""

    value: object


class ImageModel(tf.Module):
    """What is saved: in-model decoding + the CNN behind three serving signatures.

    Like the tabular `models.network.DiagnosticModel`, the module tracks the network's plain
    `tf.Variable`s, not the Keras model, so the export restores in TF Serving's TF1 Session.
    """

    def __init__(self, cnn: keras.Model, input_size: int, threshold: float):
        super().__init__(name="image_model")
        self._keras = _KerasParts(cnn)
        self.weights = [w.value for w in cnn.weights]
        self.input_size = input_size
        # As in the tabular model: the recalibration is built in at export, the record written with it.
        self._calibration = _Fixed(Calibration())
        self._record = _Fixed(None)
        self.threshold = tf.Variable(threshold, trainable=False, dtype=tf.float32, name="operating_threshold")

    def lock(self, calibration: Calibration, record: dict) -> None:
        """Locks what was fitted on the eval split: recalibration, threshold and their record (before `save`)."""
        self._calibration = _Fixed(calibration)
        self.threshold.assign(record["threshold"])
        self._record = _Fixed(record)

    @property
    def cnn(self) -> keras.Model:
        """The trained network."""
        return self._keras.cnn

    def cnn_probability(self, pixels) -> tf.Tensor:
        """The CNN's own [batch] probabilities for decoded pixels, before recalibration."""
        return tf.reshape(self.cnn(pixels, training=False), [-1])

    def predict_images(self, images: tf.Tensor) -> dict:
        """Returns the (recalibrated) probability, the decision at the locked threshold, and the threshold."""
        pixels = decode_images(images, self.input_size)
        probability = self._calibration.value.apply_tf(self.cnn_probability(pixels))
        return served_outputs(probability, self.threshold)

    def signatures(self) -> dict:
        """Returns the concrete functions to export as signatures."""

        # Each signature calls the one before it: the network is traced once and all three agree.
        @tf.function
        def from_images(images):
            return self.predict_images(images)

        @tf.function
        def from_examples(examples):
            return from_images(parse_examples(examples)[IMAGE])

        @tf.function
        def classify(inputs):
            return classification_outputs(from_examples(inputs)[PROBABILITY])

        return {
            RAW_SIGNATURE: from_images.get_concrete_function(
                tf.TensorSpec([None], tf.string, name=IMAGES_INPUT)
            ),
            EXAMPLES_SIGNATURE: from_examples.get_concrete_function(
                tf.TensorSpec([None], tf.string, name="examples")
            ),
            CLASSIFY_SIGNATURE: classify.get_concrete_function(
                tf.TensorSpec([None], tf.string, name="inputs")
            ),
        }

    def save(self, export_dir: str) -> None:
        """Writes the SavedModel with its three signatures, the locked operating point's record first."""
        if self._record.value is not None:
            write_record(export_dir, self._record.value)
        tf.saved_model.save(self, export_dir, signatures=self.signatures())
