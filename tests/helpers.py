"""Test helpers: CSV rows as tf.Examples the way CsvExampleGen makes them, and config files for the CLI."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import tensorflow as tf
import yaml
from tensorflow_metadata.proto.v0 import schema_pb2

from models.features import load_schema
from pipelines.config import DEFAULT_CONFIG


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


def write_config(path: Path, workdir: Path, **wdbc_changes) -> Path:
    """A copy of the packaged config (bundled schemas still found) with a workdir and wdbc changes."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["workdir"] = str(workdir)
    for section, values in wdbc_changes.items():
        current = raw["datasets"]["wdbc"].get(section)
        raw["datasets"]["wdbc"][section] = {**current, **values} if isinstance(current, dict) else values
    path.write_text(yaml.safe_dump(raw))
    return path


def config_with_out_of_range_row(cfg, tmp_path: Path):
    """`cfg` whose WDBC data is its own canonical CSV with row 5's mean_radius set to -3 (outside the schema).

    The bad-data tests of the local pipeline and of the executed Kubeflow spec use the same broken file.
    """
    import dataclasses

    from pipelines.config import SourceConfig
    from pipelines.data import canonical_csv

    text = canonical_csv(cfg.data).splitlines()
    header = text[0].split(",")
    row = text[5].split(",")
    row[header.index("mean_radius")] = "-3"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([text[0], *text[1:5], ",".join(row), *text[6:]]) + "\n")
    data = dataclasses.replace(
        cfg.data, source=SourceConfig(kind="csv", path=str(bad)), label_column="label", label_map={}
    )
    return dataclasses.replace(cfg, datasets={**cfg.datasets, "wdbc": data})
