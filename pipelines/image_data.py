"""Turns an official MedMNIST `.npz` file into the image pipeline's examples, keeping its splits.

The file's MD5 is checked against the published one before anything is read, so a truncated download or
an edited copy never becomes training data. Each image becomes a tf.Example holding the PNG encoding of
its pixels (`image`, bytes) and its label (`label`, int64): the same encoded bytes a clinic sends to the
served model. The official train / val / test splits become ImportExampleGen's `train` / `eval` / `test`
input splits, so test-split results compare with the MedMNIST v2 paper. Files are rewritten only when
their bytes change, because ImportExampleGen's cache key includes the input files' modification times.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from pipelines.config import DatasetConfig
from pipelines.errors import DataError

IMAGE = "image"
LABEL = "label"
# `<split>-<position in the official file>`: the gate and the error gallery name images by it, and a
# reader finds the image in the published file from it.
IMAGE_ID = "image_id"
# Pipeline split -> the MedMNIST file's key prefix: `val` picks the epoch, `test` gates.
SPLIT_KEYS = {"train": "train", "eval": "val", "test": "test"}
EXAMPLES_FILE = "examples.tfrecord.gz"


def file_md5(path: Path) -> str:
    """Returns the hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verified_arrays(path: Path, md5: str) -> dict[str, np.ndarray]:
    """Checks the file's MD5, then returns its arrays.

    Raises:
        DataError: If the file is missing, its MD5 differs from the published one, or it lacks a key.
    """
    if not path.is_file():
        raise DataError(
            f"source.path {path} does not exist; put the official MedMNIST file there or set the "
            "directory's environment variable (source.dir_env)."
        )
    found = file_md5(path)
    if found != md5.lower():
        raise DataError(
            f"{path} has MD5 {found}, not the published {md5}; the file is corrupt or not the official "
            "release. Download it again from https://zenodo.org/records/10519652."
        )
    with np.load(path, allow_pickle=False) as npz:
        missing = [
            f"{p}_{k}" for p in SPLIT_KEYS.values() for k in ("images", "labels") if f"{p}_{k}" not in npz
        ]
        if missing:
            raise DataError(f"{path} lacks {missing}; it is not a MedMNIST 2D file.")
        return {key: npz[key] for key in npz.files}


def encode_png(pixels: np.ndarray) -> bytes:
    """Returns the PNG encoding of a [h, w] (grayscale) or [h, w, 3] (RGB) uint8 image."""
    from PIL import Image  # Deferred: Pillow is only needed when converting.

    buffer = io.BytesIO()
    # compress_level fixed so the same pixels always give the same bytes (and the same cache key).
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def serialize_example(image_id: str, png: bytes, label: int) -> bytes:
    """Returns one serialized tf.Example with `image_id`, `image` (encoded bytes) and `label` (int64)."""
    from tensorflow.core.example import example_pb2  # Deferred: the proto alone, not TensorFlow's runtime.

    example = example_pb2.Example()
    example.features.feature[IMAGE_ID].bytes_list.value.append(image_id.encode())
    example.features.feature[IMAGE].bytes_list.value.append(png)
    example.features.feature[LABEL].int64_list.value.append(int(label))
    return example.SerializeToString(deterministic=True)


def split_records(arrays: dict[str, np.ndarray], split: str) -> list[bytes]:
    """Returns the serialized examples of one pipeline split, in the file's order."""
    prefix = SPLIT_KEYS[split]
    images, labels = arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"].reshape(-1)
    return [
        serialize_example(f"{prefix}-{i:05d}", encode_png(image), label)
        for i, (image, label) in enumerate(zip(images, labels, strict=True))
    ]


def materialize(data: DatasetConfig, directory: Path) -> tuple[Path, str]:
    """Writes `<directory>/<split>/examples.tfrecord.gz` for every split, from the verified file.

    Args:
        data: The image dataset's entry (source kind `medmnist`).
        directory: The ImportExampleGen input base.

    Returns:
        The directory and the dataset digest (the file's MD5, verified).

    Raises:
        DataError: If the file is missing or not the published one.
    """
    source = Path(data.source.path)
    arrays = verified_arrays(source, data.source.md5)
    directory.mkdir(parents=True, exist_ok=True)
    import tensorflow as tf  # Deferred: a config error answers without loading TensorFlow.

    for split in SPLIT_KEYS:
        target = directory / split / EXAMPLES_FILE
        target.parent.mkdir(exist_ok=True)
        # A name of this process's own: two runs converting at once never write one file; the rename is
        # atomic, so ImportExampleGen (whose pattern names the final file only) never reads a partial one.
        tmp = target.with_name(f".{EXAMPLES_FILE}.{os.getpid()}.tmp")
        # TensorFlow's GZIP writer leaves the header's time at 0, so equal examples give equal bytes.
        with tf.io.TFRecordWriter(str(tmp), options="GZIP") as writer:
            for record in split_records(arrays, split):
                writer.write(record)
        if target.is_file() and target.read_bytes() == tmp.read_bytes():
            tmp.unlink()
        else:
            tmp.replace(target)
    return directory, data.source.md5.lower()
