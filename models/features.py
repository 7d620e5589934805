"""Feature specifications from the curated schema, and tf.Example parsing shared by training and serving.

The schema is the single source of truth: FLOAT and INT features are numeric inputs; BYTES features are
categorical with the vocabulary of their string domain. `label` is the target.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2

LABEL = "label"


@dataclasses.dataclass(frozen=True)
class Feature:
    """One model input.

    Attributes:
        name: Feature name (also the serving signature's input name).
        numeric: True for FLOAT/INT features, False for categorical BYTES features.
        stored_int: True when tf.Examples store the value as int64 (schema type INT).
        vocabulary: Known values of a categorical feature, from the schema's string domain.
    """

    name: str
    numeric: bool
    stored_int: bool = False
    vocabulary: tuple[str, ...] = ()

    @property
    def serving_dtype(self) -> tf.DType:
        """The dtype clients send: float32 for numbers, string for categories."""
        return tf.float32 if self.numeric else tf.string


def load_schema(path: str) -> schema_pb2.Schema:
    """Reads a text-format Schema proto."""
    from google.protobuf import text_format  # Deferred: protobuf is always there, this keeps imports lean.

    schema = schema_pb2.Schema()
    with tf.io.gfile.GFile(path) as handle:
        text_format.Parse(handle.read(), schema)
    return schema


def features_from_schema(schema: schema_pb2.Schema) -> list[Feature]:
    """Returns the model's input features (everything but the label), in schema order.

    Raises:
        ValueError: If the schema has no label, or a BYTES feature without a string domain.
    """
    domains = {d.name: tuple(d.value) for d in schema.string_domain}
    features, has_label = [], False
    for feature in schema.feature:
        if feature.name == LABEL:
            has_label = True
            continue
        if feature.type in (schema_pb2.FLOAT, schema_pb2.INT):
            features.append(Feature(feature.name, True, stored_int=feature.type == schema_pb2.INT))
        elif feature.type == schema_pb2.BYTES:
            vocabulary = domains.get(feature.domain or feature.name)
            if not vocabulary:
                raise ValueError(
                    f"schema feature {feature.name!r} is BYTES without a string domain; add one listing "
                    "its categories so the model has a fixed vocabulary."
                )
            features.append(Feature(feature.name, False, vocabulary=vocabulary))
        else:
            raise ValueError(f"schema feature {feature.name!r} has unsupported type {feature.type}.")
    if not has_label:
        raise ValueError(
            f"the schema has no {LABEL!r} feature; the canonical CSV names the target {LABEL!r}."
        )
    return features


def _dense(sparse: tf.SparseTensor, batch: tf.Tensor, missing, dtype) -> tf.Tensor:
    # Each feature has at most one value (schema value_count max 1); absent values get `missing`.
    rows = sparse.indices[:, :1]
    values = tf.cast(sparse.values, dtype)
    dense = tf.scatter_nd(rows, values, tf.reshape(batch, [1]))
    present = tf.scatter_nd(rows, tf.ones_like(sparse.values, dtype=tf.int32), tf.reshape(batch, [1]))
    return tf.where(present > 0, dense, tf.fill(tf.reshape(batch, [1]), tf.constant(missing, dtype)))


def parse_examples(serialized: tf.Tensor, features: list[Feature], with_label: bool = False) -> dict:
    """Parses serialized tf.Examples into the raw inputs the model takes.

    Missing numeric values become NaN (the model imputes them) and missing categories become "".

    Args:
        serialized: A [batch] string tensor of serialized tf.Example protos.
        features: The model features.
        with_label: Also parse the int64 label (required in every example).

    Returns:
        A dict of [batch] tensors: float32 for numeric features, string for categorical ones.
    """
    spec = {
        f.name: tf.io.VarLenFeature((tf.int64 if f.stored_int else tf.float32) if f.numeric else tf.string)
        for f in features
    }
    if with_label:
        spec[LABEL] = tf.io.FixedLenFeature([], tf.int64)
    parsed = tf.io.parse_example(serialized, spec)
    batch = tf.shape(serialized, out_type=tf.int64)[0]
    out = {
        f.name: _dense(parsed[f.name], batch, float("nan"), tf.float32)
        if f.numeric
        else _dense(parsed[f.name], batch, "", tf.string)
        for f in features
    }
    if with_label:
        out[LABEL] = parsed[LABEL]
    return out
