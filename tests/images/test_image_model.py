"""The image model's export: its signature contract, what it accepts, and the same answer over REST.

A CNN is trained for a few epochs on the official file's first images (enough for a real signal, checked
below), exported as the Trainer exports it, and served by `dxpipe serve` over real HTTP. What a client
gets for a PNG sent as b64 must be what the model computes in process on the same bytes.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import requests
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from models.image.hparams import CnnConfig
from models.image.network import (
    CLASSIFY_SIGNATURE,
    EXAMPLES_SIGNATURE,
    MIN_SIDE,
    RAW_SIGNATURE,
    decode_images,
)
from models.image.trainer import class_weights, train
from serving import cli
from serving.client import ServingClient
from serving.config import single_model_config
from serving.server import ServerOptions, ServerThread
from tests.images import support

MODEL = "pneumonia"
N_TRAIN, N_HELD_OUT = 1200, 200
# float32 on both sides; the server prints floats in shortest round-trip form.
ATOL = 1e-6


@pytest.fixture(scope="module")
def exported(tmp_path_factory, pneumonia_arrays):
    a = pneumonia_arrays
    cfg = CnnConfig(epochs=4, early_stopping_patience=4)
    pngs = lambda images: tf.constant([support.png(im) for im in images])  # noqa: E731
    x_train = decode_images(pngs(a["train_images"][:N_TRAIN]), cfg.input_size).numpy()
    x_eval = decode_images(pngs(a["val_images"]), cfg.input_size).numpy()
    result = train(x_train, a["train_labels"][:N_TRAIN, 0], x_eval, a["val_labels"][:, 0], cfg, seed=1)
    base_path = tmp_path_factory.mktemp("image_models") / MODEL
    result.model.save(str(base_path / "1"))
    loaded = tf.saved_model.load(str(base_path / "1"))
    held_out = [support.png(im) for im in a["test_images"][:N_HELD_OUT]]
    probability = loaded.signatures[RAW_SIGNATURE](images=tf.constant(held_out))["probability"].numpy()
    return base_path, loaded, held_out, a["test_labels"][:N_HELD_OUT, 0], probability


@pytest.fixture(scope="module")
def served(exported):
    options = ServerOptions(
        models=(single_model_config(MODEL, str(exported[0])),),
        port=0,
        file_system_poll_seconds=0,
        access_log="off",
    )
    running = ServerThread(options)
    yield running
    running.stop()


def _b64(encoded: bytes) -> dict:
    return {"b64": base64.b64encode(encoded).decode("ascii")}


def _predict(served, body) -> requests.Response:
    return requests.post(f"{served.url}/v1/models/{MODEL}:predict", data=json.dumps(body), timeout=60)


def test_the_held_out_images_are_a_real_check(exported):
    _, _, held_out, labels, probability = exported
    assert set(labels) == {0, 1}
    assert roc_auc_score(labels, probability) > 0.85
    assert np.all((probability >= 0) & (probability <= 1))


def test_balanced_class_weights_make_each_class_half_the_loss():
    weights = class_weights(np.array([1, 1, 1, 0]), "balanced")
    assert weights == pytest.approx({0: 2.0, 1: 2 / 3})
    assert class_weights(np.array([1, 0]), "none") is None
    with pytest.raises(ValueError, match="one class only"):
        class_weights(np.array([1, 1]), "balanced")


def test_the_signature_contract(exported):
    base_path = exported[0]
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(base_path / "1"))
        signatures = meta_graph.signature_def

    def io(name, side):
        return {
            k: (tf.dtypes.as_dtype(v.dtype).name, [d.size for d in v.tensor_shape.dim])
            for k, v in getattr(signatures[name], side).items()
        }

    assert io(RAW_SIGNATURE, "inputs") == {"images": ("string", [-1])}
    assert io(RAW_SIGNATURE, "outputs") == {
        "probability": ("float32", [-1]),
        "predicted_label": ("int64", [-1]),
        "decision": ("int64", [-1]),
        "threshold": ("float32", [-1]),
    }
    assert io(EXAMPLES_SIGNATURE, "inputs") == {"examples": ("string", [-1])}
    assert io(EXAMPLES_SIGNATURE, "outputs") == io(RAW_SIGNATURE, "outputs")
    assert io(CLASSIFY_SIGNATURE, "inputs") == {"inputs": ("string", [-1])}
    assert io(CLASSIFY_SIGNATURE, "outputs") == {
        "classes": ("string", [-1, 2]),
        "scores": ("float32", [-1, 2]),
    }


def test_the_export_runs_in_a_tf1_session_as_tf_serving_runs_it(exported):
    base_path, _, held_out, _, probability = exported
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(base_path / "1"))
        signature = meta_graph.signature_def[RAW_SIGNATURE]
        out = session.run(
            signature.outputs["probability"].name, {signature.inputs["images"].name: held_out[:20]}
        )
    np.testing.assert_allclose(out, probability[:20], rtol=0, atol=ATOL)


def test_accepted_formats_gray_or_rgb_png_or_jpeg_any_size(exported, pneumonia_arrays):
    _, loaded, held_out, _, probability = exported
    pixels = pneumonia_arrays["test_images"][0]
    from PIL import Image

    big = np.asarray(Image.fromarray(pixels).resize((280, 280), Image.NEAREST))
    variants = {
        "png-gray": support.png(pixels),
        "png-rgb": support.png(np.stack([pixels] * 3, -1)),
        "png-rgba": support.png(
            np.concatenate([np.stack([pixels] * 3, -1), np.full((28, 28, 1), 255, np.uint8)], -1)
        ),
        "png-gray-280px": support.png(big),
        "jpeg-gray": support.jpeg(pixels),
        "jpeg-rgb-280px": support.jpeg(np.stack([big] * 3, -1)),
    }
    out = loaded.signatures[RAW_SIGNATURE](images=tf.constant(list(variants.values())))["probability"].numpy()
    reference = probability[0]
    # Gray, RGB and RGBA PNGs of the same pixels are the same image to the model.
    np.testing.assert_allclose(out[:3], reference, atol=1e-3)
    # A 10x nearest-neighbour enlargement averages back to the same 28x28 pixels.
    np.testing.assert_allclose(out[3], reference, atol=1e-3)
    # JPEG is lossy: close, not equal.
    np.testing.assert_allclose(out[4:], reference, atol=0.1)


def test_a_png_sent_as_b64_over_rest_gets_the_in_process_probability(exported, served):
    _, _, held_out, _, probability = exported
    response = _predict(served, {"instances": [_b64(e) for e in held_out]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    np.testing.assert_allclose([p["probability"] for p in predictions], probability, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(
        [p["predicted_label"] for p in predictions], (probability >= 0.5).astype(int)
    )
    # The image export carries its operating point too (fixed at 0.5 by default), so the answer names
    # the decision, the threshold and the version.
    np.testing.assert_array_equal([p["decision"] for p in predictions], (probability >= 0.5).astype(int))
    assert {p["threshold"] for p in predictions} == {0.5}
    assert response.json()["model_version"] == "1"


def test_a_tf_example_with_the_image_classifies_the_same(exported, served):
    _, _, held_out, _, probability = exported
    client = ServingClient(served.url)
    scores = client.classify(
        MODEL,
        [{"image": _b64(e)} for e in held_out[:10]],
        signature_name=CLASSIFY_SIGNATURE,
    )
    np.testing.assert_allclose([s[1][1] for s in scores], probability[:10], rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    ("encoded", "fragment"),
    [
        (b"this is not an image", "image is not PNG or JPEG"),
        (b"GIF89a" + b"\0" * 40, "image is not PNG or JPEG"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "PNG"),
        ("truncated", "PNG"),
        ("tiny", f"smaller than {MIN_SIDE}x{MIN_SIDE}"),
    ],
    ids=["text", "gif", "broken-png", "truncated-png", "too-small"],
)
def test_a_bad_image_gets_400_naming_the_problem(exported, served, pneumonia_arrays, encoded, fragment):
    if encoded == "truncated":
        encoded = support.png(pneumonia_arrays["test_images"][0])[:100]
    elif encoded == "tiny":
        encoded = support.png(np.zeros((4, 4), np.uint8))
    good = exported[2][0]
    # One bad image in a batch fails the request: no prediction is made from garbage.
    response = _predict(served, {"instances": [_b64(good), _b64(encoded)]})
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]
    # The server still answers afterwards.
    assert _predict(served, {"instances": [_b64(good)]}).status_code == 200


def test_dxpipe_predict_image_files(exported, served, tmp_path, capsys):
    _, _, held_out, _, probability = exported
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"xray{i}.png")
        paths[-1].write_bytes(held_out[i])
    code = cli.main(["predict", MODEL, "--server", served.url, "--image", *map(str, paths)])
    captured = capsys.readouterr()
    assert (code, captured.err) == (0, "")
    got = [json.loads(line)["probability"] for line in captured.out.splitlines()]
    np.testing.assert_allclose(got, probability[:3], rtol=0, atol=ATOL)
    code = cli.main(["predict", MODEL, "--server", served.url, "--image", str(tmp_path / "missing.png")])
    assert code == 2
    assert "cannot read --image" in capsys.readouterr().err
