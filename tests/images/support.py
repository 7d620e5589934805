"""Small image datasets for tests, made from the official file's first images (nothing is checked in)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipelines import image_data

SIZES = {"train": 160, "eval": 40, "test": 40}


def png(pixels: np.ndarray) -> bytes:
    return image_data.encode_png(pixels)


def jpeg(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def subset(
    arrays: dict[str, np.ndarray], sizes: dict[str, int] = SIZES
) -> dict[str, list[tuple[str, bytes, int]]]:
    """Returns {split: [(image_id, png bytes, label)]} from the first images of each official split."""
    out = {}
    for split, n in sizes.items():
        prefix = image_data.SPLIT_KEYS[split]
        images, labels = arrays[f"{prefix}_images"][:n], arrays[f"{prefix}_labels"][:n, 0]
        out[split] = [
            (f"{prefix}-{i:05d}", png(im), int(lb))
            for i, (im, lb) in enumerate(zip(images, labels, strict=True))
        ]
    return out


def write_input_base(directory: Path, splits: dict[str, list[tuple[str, bytes, int]]]) -> Path:
    """Writes `<directory>/<split>/examples.tfrecord.gz` as `pipelines.image_data.materialize` does."""
    for split, rows in splits.items():
        (directory / split).mkdir(parents=True, exist_ok=True)
        with tf.io.TFRecordWriter(
            str(directory / split / image_data.EXAMPLES_FILE), options="GZIP"
        ) as writer:
            for image_id, encoded, label in rows:
                writer.write(image_data.serialize_example(image_id, encoded, label))
    return directory
