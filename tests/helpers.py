"""Test helpers: turn canonical CSV rows into tf.Examples the way CsvExampleGen does."""

from __future__ import annotations

import csv
import io

import numpy as np
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2

from models.features import load_schema


def rows_to_examples(text: str, schema_path: str) -> list[bytes]:
    """Serialises CSV rows as tf.Examples typed by the schema; empty cells are left out, as ExampleGen does."""
    types = {f.name: f.type for f in load_schema(schema_path).feature}
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        feature = {}
        for name, value in row.items():
            if value == "":
                continue
            if types[name] == schema_pb2.INT:
                feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
            elif types[name] == schema_pb2.FLOAT:
                feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
            else:
                feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        out.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return out


def split(values, fraction: float, seed: int = 0):
    """Deterministically splits a list into two parts."""
    order = np.random.default_rng(seed).permutation(len(values))
    cut = int(len(values) * fraction)
    return [values[i] for i in order[:cut]], [values[i] for i in order[cut:]]
