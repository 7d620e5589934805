"""The exported SavedModel's contract, on real rows: signature names, dtypes, shapes and behaviour."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from models.features import LABEL, features_from_schema, load_schema, parse_examples
from models.network import CLASSIFY_SIGNATURE, EXAMPLES_SIGNATURE, RAW_SIGNATURE
from models.trainer import train
from pipelines.data import canonical_csv
from tests.helpers import rows_to_examples, split


def _train_and_export(cfg, dataset, export_dir):
    data = cfg.datasets[dataset]
    schema_path = str(Path(data.schema_dir) / "schema.pbtxt")
    features = features_from_schema(load_schema(schema_path))
    examples = rows_to_examples(canonical_csv(data), schema_path)
    train_ex, test_ex = split(examples, 0.7)
    parsed = parse_examples(tf.constant(train_ex), features, with_label=True)
    labels = parsed.pop(LABEL).numpy()
    raw = {k: v.numpy() for k, v in parsed.items()}
    result = train(features, raw, labels, raw, labels, data.training)
    result.model.save(str(export_dir))
    return features, test_ex, result


@pytest.fixture(scope="module", params=["wdbc", "heart"])
def exported(request, tmp_path_factory, default_cfg):
    export_dir = tmp_path_factory.mktemp(request.param) / "model"
    features, test_ex, result = _train_and_export(default_cfg, request.param, export_dir)
    return request.param, features, test_ex, result, tf.saved_model.load(str(export_dir)), export_dir


def test_signature_names_dtypes_and_shapes(exported):
    _, features, _, _, loaded, _ = exported
    assert set(loaded.signatures) == {RAW_SIGNATURE, EXAMPLES_SIGNATURE, CLASSIFY_SIGNATURE}
    raw_inputs = loaded.signatures[RAW_SIGNATURE].structured_input_signature[1]
    assert set(raw_inputs) == {f.name for f in features}
    for f in features:
        spec = raw_inputs[f.name]
        assert spec.dtype == (tf.float32 if f.numeric else tf.string)
        assert spec.shape.as_list() == [None]
    assert set(loaded.signatures[EXAMPLES_SIGNATURE].structured_input_signature[1]) == {"examples"}
    assert set(loaded.signatures[CLASSIFY_SIGNATURE].structured_input_signature[1]) == {"inputs"}
    outputs = loaded.signatures[RAW_SIGNATURE].structured_outputs
    assert outputs["probability"].dtype == tf.float32 and outputs["predicted_label"].dtype == tf.int64
    classify_out = loaded.signatures[CLASSIFY_SIGNATURE].structured_outputs
    assert classify_out["classes"].dtype == tf.string and classify_out["scores"].shape.as_list() == [None, 2]


def test_predictions_on_held_out_rows(exported):
    dataset, features, test_ex, _, loaded, _ = exported
    out = loaded.signatures[EXAMPLES_SIGNATURE](examples=tf.constant(test_ex))
    probability = out["probability"].numpy()
    assert probability.shape == (len(test_ex),)
    assert np.all((probability >= 0) & (probability <= 1))
    labels = parse_examples(tf.constant(test_ex), features, with_label=True)[LABEL].numpy()
    # A real signal, not a constant: well above chance on rows the model never saw.
    assert roc_auc_score(labels, probability) > {"wdbc": 0.97, "heart": 0.8}[dataset]
    np.testing.assert_array_equal(out["predicted_label"].numpy(), (probability >= 0.5).astype(np.int64))


def test_raw_and_example_signatures_agree(exported):
    _, features, test_ex, _, loaded, _ = exported
    raw = parse_examples(tf.constant(test_ex[:20]), features)
    from_raw = loaded.signatures[RAW_SIGNATURE](**raw)["probability"].numpy()
    from_examples = loaded.signatures[EXAMPLES_SIGNATURE](examples=tf.constant(test_ex[:20]))[
        "probability"
    ].numpy()
    np.testing.assert_allclose(from_raw, from_examples, rtol=1e-6)


def test_export_runs_in_a_tf1_session_as_tf_serving_runs_it(exported):
    # TF Serving restores variables with the MetaGraph's saver and runs signature tensors by name; Keras 3
    # variables tracked through a tf.Module once exported a graph that this path left uninitialized.
    _, _, test_ex, _, loaded, export_dir = exported
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(export_dir))
        signature = meta_graph.signature_def[EXAMPLES_SIGNATURE]
        probability = session.run(
            signature.outputs["probability"].name, {signature.inputs["examples"].name: test_ex[:20]}
        )
    expected = loaded.signatures[EXAMPLES_SIGNATURE](examples=tf.constant(test_ex[:20]))["probability"]
    np.testing.assert_allclose(probability, expected.numpy(), rtol=1e-6)


def test_classification_signature_scores_sum_to_one(exported):
    _, _, test_ex, _, loaded, _ = exported
    out = loaded.signatures[CLASSIFY_SIGNATURE](inputs=tf.constant(test_ex[:10]))
    np.testing.assert_allclose(out["scores"].numpy().sum(axis=1), 1.0, rtol=1e-6)
    assert out["classes"].numpy()[0].tolist() == [b"0", b"1"]


def test_missing_values_and_unknown_categories_still_predict(exported):
    dataset, features, test_ex, _, loaded, _ = exported
    raw = {k: v.numpy() for k, v in parse_examples(tf.constant(test_ex[:3]), features).items()}
    for f in features:
        raw[f.name] = raw[f.name].copy()
        raw[f.name][0] = np.nan if f.numeric else b"never-seen"
    probability = loaded.signatures[RAW_SIGNATURE](**{k: tf.constant(v) for k, v in raw.items()})[
        "probability"
    ]
    assert np.all(np.isfinite(probability.numpy()))


def test_history_records_every_epoch(exported):
    _, _, _, result, _, _ = exported
    epochs = len(result.history["loss"])
    assert epochs >= result.best_epoch >= 1
    assert len(result.history["val_auc"]) == epochs
    json.dumps(result.history)  # plain floats, ready for tracking


def test_shuffled_labels_make_a_useless_model(default_cfg, tmp_path):
    import dataclasses

    cfg = dataclasses.replace(default_cfg)
    data = dataclasses.replace(cfg.data, training=dataclasses.replace(cfg.data.training, shuffle_labels=True))
    cfg = dataclasses.replace(cfg, datasets={**cfg.datasets, "wdbc": data})
    features, test_ex, _ = _train_and_export(cfg, "wdbc", tmp_path / "m")
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    probability = loaded.signatures[EXAMPLES_SIGNATURE](examples=tf.constant(test_ex))["probability"].numpy()
    labels = parse_examples(tf.constant(test_ex), features, with_label=True)[LABEL].numpy()
    assert roc_auc_score(labels, probability) < 0.75
