"""Real pipeline runs on small image datasets: each kind of bad image stops the run at the data gate.

The pipeline is the one `create_pipeline` builds for the packaged `pneumoniamnist` entry, run with
LocalDagRunner on examples written the way `pipelines.image_data` writes them, with one bad example
injected. Nothing may be trained: the run stops before the Trainer with the gate's report.
"""

from __future__ import annotations

import numpy as np
import pytest
from tfx.orchestration import metadata
from tfx.orchestration.local.local_dag_runner import LocalDagRunner

from pipelines.errors import DataGateError
from pipelines.mlflow_mlmd import collect_outputs
from pipelines.pipeline import create_pipeline
from tests.images import support

pytestmark = pytest.mark.slow


def _run(tmp_path, cfg, splits):
    input_base = support.write_input_base(tmp_path / "in", splits)
    pipeline = create_pipeline(
        cfg,
        pipeline_root=str(tmp_path / "root"),
        input_base=str(input_base),
        source_name="pneumoniamnist.npz",
        metadata_connection_config=metadata.sqlite_metadata_connection_config(str(tmp_path / "m.sqlite")),
    )
    LocalDagRunner().run(pipeline)


def _with(splits, split, index, encoded=None, label=None):
    rows = [list(r) for r in splits[split]]
    if encoded is not None:
        rows[index][1] = encoded
    if label is not None:
        rows[index][2] = label
    return {**splits, split: [tuple(r) for r in rows]}


@pytest.fixture(scope="module")
def clean(pneumonia_arrays):
    return support.subset(pneumonia_arrays)


def _states(tmp_path, cfg):
    return collect_outputs(str(tmp_path / "m.sqlite"), cfg.pipeline_name).execution_states


@pytest.mark.parametrize(
    ("fault", "split", "message"),
    [
        (
            "truncated-png",
            "train",
            r"column 'image' \[train\].*PNG.* in 1 of 160 examples \(train-00005\).*replace the corrupt",
        ),
        (
            "wrong-size",
            "eval",
            r"column 'image' \[eval\].*32x32 pixels in 1 of 40 examples \(val-00005\).*resample",
        ),
        (
            "rgb",
            "test",
            r"column 'image' \[test\].*3 channel\(s\) in 1 of 40 examples \(test-00005\).*convert",
        ),
        ("jpeg", "train", r"column 'image' \[train\].*JPEG in 1 of 160 examples \(train-00005\).*re-encode"),
        ("label-2", "train", r"column 'label' \[train\].*int, between 0 and 1.*labels must be 0 or 1"),
    ],
)
def test_a_bad_image_stops_the_run_at_the_data_gate(
    tmp_path, image_cfg, clean, pneumonia_arrays, fault, split, message
):
    pixels = pneumonia_arrays["train_images"][5]
    bad = {
        "truncated-png": dict(encoded=support.png(pixels)[:120]),
        "wrong-size": dict(encoded=support.png(np.zeros((32, 32), np.uint8))),
        "rgb": dict(encoded=support.png(np.stack([pixels] * 3, axis=-1))),
        "jpeg": dict(encoded=support.jpeg(pixels)),
        "label-2": dict(label=2),
    }[fault]
    with pytest.raises(
        DataGateError,
        match=rf"(?s)Data gate: 1 problem\(s\) in pneumoniamnist\.npz; nothing was trained.*{message}",
    ):
        _run(tmp_path, image_cfg, _with(clean, split, 5, **bad))
    states = _states(tmp_path, image_cfg)
    assert "Trainer" not in states and "ServingPusher" not in states


def test_tfdv_image_statistics_catch_bytes_that_are_no_image(tmp_path, image_cfg, clean):
    # TFDV's own check, as StatisticsGen and ExampleValidator run it in the image pipeline: semantic-domain
    # statistics and the schema's image_domain (minimum_supported_image_fraction 1.0) see a value with no
    # image signature. (In a pipeline run the ImageGate, scheduled first, reports it too.)
    import tensorflow as tf
    import tensorflow_data_validation as tfdv

    from components.data_gate.core import findings_from_anomalies
    from models.features import load_schema
    from pipelines import image_data

    rows = _with(clean, "train", 5, encoded=b"<html>not an image</html>")["train"]
    path = tmp_path / "train.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image_id, encoded, label in rows:
            writer.write(image_data.serialize_example(image_id, encoded, label))
    stats = tfdv.generate_statistics_from_tfrecord(
        str(path), stats_options=tfdv.StatsOptions(enable_semantic_domain_stats=True)
    )
    schema = load_schema(f"{image_cfg.data.schema_dir}/schema.pbtxt")
    findings = findings_from_anomalies("train", tfdv.validate_statistics(stats, schema), schema)
    assert [f.column for f in findings] == ["image"]
    assert "TensorFlow supported images: 0.993750 is lower than the threshold" in findings[0].found
    # A truncated PNG keeps its signature: TFDV's statistics pass it (the ImageGate is what catches it).
    rows = _with(clean, "train", 5, encoded=clean["train"][5][1][:120])["train"]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image_id, encoded, label in rows:
            writer.write(image_data.serialize_example(image_id, encoded, label))
    stats = tfdv.generate_statistics_from_tfrecord(
        str(path), stats_options=tfdv.StatsOptions(enable_semantic_domain_stats=True)
    )
    assert findings_from_anomalies("train", tfdv.validate_statistics(stats, schema), schema) == []
