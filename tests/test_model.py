"""The exported SavedModel's contract, on real rows: signature names, dtypes, shapes and behaviour."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from models.features import LABEL, features_from_schema, load_schema, parse_examples
from models.network import CLASSIFY_SIGNATURE, EXAMPLES_SIGNATURE, RAW_SIGNATURE
from models.operating_point import OPERATING_POINT_ASSET
from models.trainer import train
from pipelines.data import canonical_csv
from tests.helpers import rows_to_examples, split


def _raw(examples, features):
    parsed = parse_examples(tf.constant(examples), features, with_label=True)
    labels = parsed.pop(LABEL).numpy()
    return {k: v.numpy() for k, v in parsed.items()}, labels


def _train_and_export(cfg, dataset, export_dir, calibration="none", separate_eval=True):
    data = cfg.datasets[dataset]
    schema_path = str(Path(data.schema_dir) / "schema.pbtxt")
    features = features_from_schema(load_schema(schema_path))
    examples = rows_to_examples(canonical_csv(data), schema_path)
    seen_ex, test_ex = split(examples, 0.7)
    # As in the pipeline: train fits, eval picks the epoch, the recalibration and the threshold, test checks.
    # (Without `separate_eval` the training rows also steer, as a shuffled-label model needs: real eval
    # labels would let early stopping pick the epoch that happens to fit them.)
    train_ex, eval_ex = split(seen_ex, 0.75) if separate_eval else (seen_ex, seen_ex)
    raw, labels = _raw(train_ex, features)
    eval_raw, eval_labels = _raw(eval_ex, features)
    result = train(
        features, raw, labels, eval_raw, eval_labels, data.training, data.operating_point, calibration
    )
    result.model.save(str(export_dir))
    return features, test_ex, result, eval_ex


# The eval split of each exported model, by dataset (the fixture's tuple is shared by every test).
EVAL_EXAMPLES: dict[str, list[bytes]] = {}


# wdbc as configured (sensitivity 0.95, no recalibration); heart with Platt scaling and categorical inputs.
@pytest.fixture(scope="module", params=[("wdbc", "none"), ("heart", "platt")], ids=["wdbc", "heart-platt"])
def exported(request, tmp_path_factory, default_cfg):
    dataset, calibration = request.param
    export_dir = tmp_path_factory.mktemp(dataset) / "model"
    features, test_ex, result, eval_ex = _train_and_export(default_cfg, dataset, export_dir, calibration)
    EVAL_EXAMPLES[dataset] = eval_ex
    return dataset, features, test_ex, result, tf.saved_model.load(str(export_dir)), export_dir


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
    assert outputs["decision"].dtype == tf.int64 and outputs["threshold"].dtype == tf.float32
    assert all(outputs[k].shape.as_list() == [None] for k in outputs)
    classify_out = loaded.signatures[CLASSIFY_SIGNATURE].structured_outputs
    assert classify_out["classes"].dtype == tf.string and classify_out["scores"].shape.as_list() == [None, 2]


def test_predictions_on_held_out_rows(exported):
    dataset, features, test_ex, _, loaded, export_dir = exported
    out = loaded.signatures[EXAMPLES_SIGNATURE](examples=tf.constant(test_ex))
    probability = out["probability"].numpy()
    assert probability.shape == (len(test_ex),)
    assert np.all((probability >= 0) & (probability <= 1))
    labels = parse_examples(tf.constant(test_ex), features, with_label=True)[LABEL].numpy()
    # A real signal, not a constant: well above chance on rows the model never saw.
    assert roc_auc_score(labels, probability) > {"wdbc": 0.97, "heart": 0.8}[dataset]
    threshold = np.float32(json.loads((export_dir / OPERATING_POINT_ASSET).read_text())["threshold"])
    np.testing.assert_array_equal(out["threshold"].numpy(), np.full(len(test_ex), threshold))
    expected = (probability >= threshold).astype(np.int64)
    np.testing.assert_array_equal(out["decision"].numpy(), expected)
    np.testing.assert_array_equal(out["predicted_label"].numpy(), expected)


def test_the_locked_threshold_reaches_its_target_on_the_eval_split(exported):
    dataset, features, _, result, loaded, export_dir = exported
    record = json.loads((export_dir / OPERATING_POINT_ASSET).read_text())
    assert record == result.operating_point
    assert record["target"] == {"metric": "sensitivity", "value": 0.95}
    assert record["chosen_on"] == "eval"
    assert record["calibration"]["method"] == {"wdbc": "none", "heart": "platt"}[dataset]
    # Recomputed with the exported signature on the eval rows: the served decisions reach the target.
    eval_ex = EVAL_EXAMPLES[dataset]
    out = loaded.signatures[EXAMPLES_SIGNATURE](examples=tf.constant(eval_ex))
    labels = parse_examples(tf.constant(eval_ex), features, with_label=True)[LABEL].numpy()
    decision = out["decision"].numpy().astype(bool)
    sensitivity = decision[labels == 1].mean()
    assert sensitivity >= 0.95
    assert record["eval"]["n"] == len(labels) and record["eval"]["positives"] == int(labels.sum())
    assert record["eval"]["sensitivity"] == pytest.approx(sensitivity)
    assert record["eval"]["specificity"] == pytest.approx((~decision[labels == 0]).mean())
    # Highest such threshold: the lowest-scoring positive it must catch sits within the rounding guard.
    positives = np.sort(out["probability"].numpy()[labels == 1])[::-1]
    pivot = positives[int(np.ceil(0.95 * len(positives) - 1e-9)) - 1]
    assert pivot - 2e-6 <= record["threshold"] <= pivot


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
        names = ("probability", "decision", "threshold")
        fetched = session.run(
            {k: signature.outputs[k].name for k in names}, {signature.inputs["examples"].name: test_ex[:20]}
        )
    expected = loaded.signatures[EXAMPLES_SIGNATURE](examples=tf.constant(test_ex[:20]))
    np.testing.assert_allclose(fetched["probability"], expected["probability"].numpy(), rtol=1e-6)
    np.testing.assert_array_equal(fetched["decision"], expected["decision"].numpy())
    np.testing.assert_array_equal(fetched["threshold"], expected["threshold"].numpy())


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
    features, test_ex, _, _ = _train_and_export(cfg, "wdbc", tmp_path / "m", separate_eval=False)
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    probability = loaded.signatures[EXAMPLES_SIGNATURE](examples=tf.constant(test_ex))["probability"].numpy()
    labels = parse_examples(tf.constant(test_ex), features, with_label=True)[LABEL].numpy()
    assert roc_auc_score(labels, probability) < 0.75
