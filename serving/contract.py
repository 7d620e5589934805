"""The serving contract of dxpipe's diagnostic models, a check for it, and a reference model that meets it.

The Trainer exports, and `dxpipe serve` / TF Serving serve, SavedModels with three signatures:

* `serving_default`: one input per feature, named by the feature (numeric DT_FLOAT [-1], categorical
  DT_STRING [-1]) -> `probability` DT_FLOAT [-1] and `predicted_label` DT_INT64 [-1];
* `from_examples`: `examples` DT_STRING [-1] (serialized tf.Example) -> the same two outputs;
* an export with a locked operating point (`assets.extra/dxpipe_operating_point.json`, written by the
  Trainer) adds `decision` DT_INT64 [-1] and `threshold` DT_FLOAT [-1] to both;
* `classification`: `inputs` DT_STRING [-1] -> `classes` DT_STRING [-1, 2] and `scores` DT_FLOAT [-1, 2]
  (usable with `:classify`).

`contract_problems` checks signature metadata against that contract (all problems at once), and
`build_reference_model` writes a small logistic model with exactly that contract, for tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from serving import tensors

SERVING_DEFAULT = "serving_default"
FROM_EXAMPLES = "from_examples"
CLASSIFICATION = "classification"
PROBABILITY = "probability"
PREDICTED_LABEL = "predicted_label"
DECISION = "decision"
THRESHOLD = "threshold"
DEFAULT_CLASS_NAMES = ("benign", "malignant")


def expected_signatures(
    numeric: Sequence[str], categorical: Sequence[str], operating_point: bool = False
) -> dict[str, tuple[dict[str, tuple[int, tuple[int, ...]]], dict[str, tuple[int, tuple[int, ...]]]]]:
    """The contract as {signature: (inputs, outputs)}, each {alias: (dtype, shape)}.

    `operating_point` adds the outputs of an export with a locked operating point.
    """
    features = {n: (tensors.DT_FLOAT, (-1,)) for n in numeric}
    features.update({c: (tensors.DT_STRING, (-1,)) for c in categorical})
    outputs = {PROBABILITY: (tensors.DT_FLOAT, (-1,)), PREDICTED_LABEL: (tensors.DT_INT64, (-1,))}
    if operating_point:
        outputs.update({DECISION: (tensors.DT_INT64, (-1,)), THRESHOLD: (tensors.DT_FLOAT, (-1,))})
    return {
        SERVING_DEFAULT: (features, outputs),
        FROM_EXAMPLES: ({"examples": (tensors.DT_STRING, (-1,))}, outputs),
        CLASSIFICATION: (
            {"inputs": (tensors.DT_STRING, (-1,))},
            {"classes": (tensors.DT_STRING, (-1, 2)), "scores": (tensors.DT_FLOAT, (-1, 2))},
        ),
    }


def contract_problems(
    signatures: Mapping[str, tensors.Signature],
    numeric: Sequence[str],
    categorical: Sequence[str],
    operating_point: bool = False,
) -> list[str]:
    """Every way the signatures differ from the contract (an empty list means they meet it).

    `operating_point` checks the contract of an export with a locked operating point (`decision`,
    `threshold`).
    """
    problems = []
    for key, (inputs, outputs) in expected_signatures(numeric, categorical, operating_point).items():
        signature = signatures.get(key)
        if signature is None:
            problems.append(f"signature {key!r} is missing")
            continue
        for kind, want, have in (("input", inputs, signature.inputs), ("output", outputs, signature.outputs)):
            for alias in sorted(set(want) - set(have)):
                problems.append(f"signature {key!r} lacks {kind} {alias!r}")
            for alias in sorted(set(have) - set(want)):
                problems.append(f"signature {key!r} has unexpected {kind} {alias!r}")
            for alias in sorted(set(want) & set(have)):
                dtype, shape = want[alias]
                info = have[alias]
                if info.dtype != dtype:
                    problems.append(
                        f"signature {key!r} {kind} {alias!r} is {tensors.dtype_name(info.dtype)}, "
                        f"expected {tensors.dtype_name(dtype)}"
                    )
                if info.shape != shape:
                    problems.append(
                        f"signature {key!r} {kind} {alias!r} has shape {info.shape}, expected {shape}"
                    )
    return problems


def build_reference_model(
    export_dir: str,
    numeric: Sequence[str],
    categorical: Mapping[str, Sequence[str]] | None = None,
    *,
    bias: float = 0.0,
    seed: int = 0,
    class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
) -> str:
    """Writes a logistic-regression SavedModel that meets the contract.

    Args:
        export_dir: Where to write the SavedModel (e.g. `<base_path>/<version>`).
        numeric: Numeric feature names.
        categorical: Categorical feature names with their vocabularies; each known value adds a weight.
        bias: Added to the logit, so two versions can be told apart by their outputs.
        seed: Seed of the weights.
        class_names: The two labels of the `classification` signature.

    Returns:
        `export_dir`.
    """
    import numpy as np
    import tensorflow as tf

    categorical = dict(categorical or {})
    rng = np.random.default_rng(seed)
    numeric = list(numeric)

    class ReferenceModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.weights = tf.Variable(rng.normal(0.0, 0.5, size=len(numeric)).astype("float32"))
            self.bias = tf.Variable(np.float32(bias))
            self.vocab_weights = {
                name: tf.Variable(rng.normal(0.0, 0.5, size=len(vocab)).astype("float32"))
                for name, vocab in categorical.items()
            }

        def _score(self, features):
            logit = self.bias + tf.zeros_like(features[(numeric or list(categorical))[0]], dtype=tf.float32)
            if numeric:
                stacked = tf.stack([tf.cast(features[n], tf.float32) for n in numeric], axis=1)
                # Missing values (NaN) are imputed as 0, as dxpipe's models impute them (with the mean).
                stacked = tf.where(tf.math.is_nan(stacked), tf.zeros_like(stacked), stacked)
                logit += tf.linalg.matvec(stacked, self.weights)
            for name, vocab in categorical.items():
                hits = tf.cast(
                    tf.equal(tf.expand_dims(features[name], 1), tf.constant(list(vocab))), tf.float32
                )
                logit += tf.linalg.matvec(hits, self.vocab_weights[name])
            probability = tf.sigmoid(logit)
            return probability, tf.cast(probability > 0.5, tf.int64)

        def _parse(self, serialized):
            spec = {n: tf.io.FixedLenFeature([], tf.float32, default_value=float("nan")) for n in numeric}
            spec.update({c: tf.io.FixedLenFeature([], tf.string, default_value="") for c in categorical})
            return tf.io.parse_example(serialized, spec)

    model = ReferenceModel()
    feature_specs = {n: tf.TensorSpec([None], tf.float32, name=n) for n in numeric}
    feature_specs.update({c: tf.TensorSpec([None], tf.string, name=c) for c in categorical})

    @tf.function(input_signature=[feature_specs])
    def serving_default(features):
        probability, label = model._score(features)
        return {PROBABILITY: probability, PREDICTED_LABEL: label}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def from_examples(examples):
        probability, label = model._score(model._parse(examples))
        return {PROBABILITY: probability, PREDICTED_LABEL: label}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classification(inputs):
        probability, _ = model._score(model._parse(inputs))
        scores = tf.stack([1.0 - probability, probability], axis=1)
        classes = tf.tile(tf.constant([list(class_names)]), [tf.shape(inputs)[0], 1])
        return {"classes": classes, "scores": scores}

    tf.saved_model.save(
        model,
        export_dir,
        signatures={
            SERVING_DEFAULT: serving_default,
            FROM_EXAMPLES: from_examples,
            CLASSIFICATION: classification.get_concrete_function(),
        },
    )
    return export_dir
