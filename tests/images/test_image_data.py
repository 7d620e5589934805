"""MedMNIST conversion: the MD5 is verified first, the official splits are kept, the bytes are the pixels."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import tensorflow as tf

from pipelines import image_data
from pipelines.config import load_config
from pipelines.errors import ConfigError, DataError


def _records(path):
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path), "GZIP")]


def test_conversion_keeps_the_official_splits_and_pixels(tmp_path, image_cfg, pneumonia_arrays):
    directory, digest = image_data.materialize(image_cfg.data, tmp_path / "in")
    assert digest == "28209eda62fecd6e6a2d98b1501bb15f"
    sizes = {}
    for split, prefix in image_data.SPLIT_KEYS.items():
        examples = _records(directory / split / image_data.EXAMPLES_FILE)
        sizes[split] = len(examples)
        first = examples[7].features.feature
        assert first["image_id"].bytes_list.value[0] == f"{prefix}-00007".encode()
        pixels = tf.io.decode_png(first["image"].bytes_list.value[0]).numpy()[:, :, 0]
        np.testing.assert_array_equal(pixels, pneumonia_arrays[f"{prefix}_images"][7])
        assert first["label"].int64_list.value[0] == pneumonia_arrays[f"{prefix}_labels"][7, 0]
    assert sizes == {"train": 4708, "eval": 524, "test": 624}


def test_a_second_conversion_leaves_the_files_untouched(tmp_path, image_cfg):
    # ImportExampleGen's cache key includes the files' modification times.
    directory, _ = image_data.materialize(image_cfg.data, tmp_path / "in")
    stamps = {p: p.stat().st_mtime_ns for p in directory.rglob("*.gz")}
    image_data.materialize(image_cfg.data, tmp_path / "in")
    assert {p: p.stat().st_mtime_ns for p in directory.rglob("*.gz")} == stamps


def test_a_file_that_is_not_the_published_one_is_refused_before_reading(tmp_path, image_cfg, medmnist):
    copy = tmp_path / "pneumoniamnist.npz"
    shutil.copyfile(medmnist / "pneumoniamnist.npz", copy)
    with copy.open("r+b") as handle:  # One flipped byte deep inside the file.
        handle.seek(100_000)
        byte = handle.read(1)
        handle.seek(100_000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    data = dataclasses.replace(
        image_cfg.data, source=dataclasses.replace(image_cfg.data.source, path=str(copy))
    )
    with pytest.raises(
        DataError, match=r"has MD5 [0-9a-f]{32}, not the published 28209eda.*Download it again"
    ):
        image_data.materialize(data, tmp_path / "in")
    assert not (tmp_path / "in").exists()


def test_a_missing_file_names_the_path_and_the_variable(tmp_path, image_cfg):
    data = dataclasses.replace(
        image_cfg.data, source=dataclasses.replace(image_cfg.data.source, path=str(tmp_path / "nope.npz"))
    )
    with pytest.raises(DataError, match=r"nope\.npz does not exist.*source\.dir_env"):
        image_data.materialize(data, tmp_path / "in")


def test_the_config_finds_the_file_by_variable_or_relative_to_the_project(monkeypatch, tmp_path):
    monkeypatch.setenv("DXPIPE_MEDMNIST_DIR", str(tmp_path))
    assert load_config(dataset="breastmnist").data.source.path == str(tmp_path / "breastmnist.npz")
    monkeypatch.delenv("DXPIPE_MEDMNIST_DIR")
    path = load_config(dataset="breastmnist").data.source.path
    assert path.endswith("shared/data/medmnist/breastmnist.npz")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "picture"}, r"kind is 'picture'; use one of \['table', 'image'\]"),
        ({"image": {"channels": 2}}, r"image\.channels is 2; use 1 \(grayscale\) or 3"),
        ({"image": {"formats": ["tiff"]}}, r"image\.formats is \['tiff'\]"),
        ({"image": {"model": {"class_weighting": "auto"}}}, r"class_weighting is 'auto'"),
        ({"image": {"model": {"filters": [8, 8, 8, 8, 8, 8]}}}, r"too many for input_size 28"),
        ({"image": {"model": {"dropuot": 0.1}}}, r"unknown key .*dropuot.*did you mean 'dropout'"),
        ({"source": {"kind": "csv", "path": "x.csv"}}, r"kind 'image' cannot read source\.kind 'csv'"),
    ],
)
def test_image_config_errors_name_the_field_and_the_fix(tmp_path, change, message):
    import yaml

    from pipelines.config import DEFAULT_CONFIG

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    entry = raw["datasets"]["pneumoniamnist"]
    for key, value in change.items():
        entry[key] = {**entry.get(key, {}), **value} if isinstance(value, dict) and key != "source" else value
    raw["dataset"] = "pneumoniamnist"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=message):
        load_config(path)
