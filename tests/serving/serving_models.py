"""Small SavedModels for the serving tests, written with plain TensorFlow (tf.Module + tf.saved_model.save).

Each builder writes one version directory. The models are chosen to reach every branch of the REST layer:
one input, several inputs of several dtypes, tf.Example classify/regress signatures, a `*_bytes` output,
outputs that break the row format, a signature without inputs, and the project's diagnostic contract
(`serving.contract.build_reference_model`).
"""

from __future__ import annotations

import tensorflow as tf

DTYPES = {
    "float": tf.float32,
    "double": tf.float64,
    "int32": tf.int32,
    "int16": tf.int16,
    "int8": tf.int8,
    "uint8": tf.uint8,
    "int64": tf.int64,
    "uint32": tf.uint32,
    "uint64": tf.uint64,
    "bool": tf.bool,
    "string": tf.string,
    "half": tf.float16,
}
WDBC_NUMERIC = ["radius_mean", "texture_mean", "perimeter_mean", "area_mean", "smoothness_mean"]
WDBC_CATEGORICAL = {"site": ["left", "right"]}


def _save(module: tf.Module, path: str, signatures: dict) -> str:
    tf.saved_model.save(module, path, signatures=signatures)
    return path


def half_plus(path: str, offset: float) -> str:
    """`y = 0.5 * x + offset`, x and y DT_FLOAT [-1] (TF Serving's half_plus_two with offset 2)."""

    class HalfPlus(tf.Module):
        def __init__(self):
            super().__init__()
            self.a = tf.Variable(0.5)
            self.b = tf.Variable(offset)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            return {"y": self.a * x + self.b}

    module = HalfPlus()
    return _save(module, path, {"serving_default": module.serve})


def multi_input(path: str) -> str:
    """Several inputs of several dtypes and shapes; outputs of every JSON kind, one named `*_bytes`."""

    class Multi(tf.Module):
        @tf.function(
            input_signature=[
                {
                    "a": tf.TensorSpec([None], tf.float32, name="a"),
                    "b": tf.TensorSpec([None, 2], tf.float32, name="b"),
                    "n": tf.TensorSpec([None], tf.int64, name="n"),
                    "tag": tf.TensorSpec([None], tf.string, name="tag"),
                    "flag": tf.TensorSpec([None], tf.bool, name="flag"),
                }
            ]
        )
        def serve(self, f):
            return {
                "total": f["a"] + tf.reduce_sum(f["b"], axis=1) + tf.cast(f["n"], tf.float32),
                "n2": f["n"] * 2,
                "tag_bytes": f["tag"],
                "tag_upper": tf.strings.upper(f["tag"]),
                "not_flag": tf.logical_not(f["flag"]),
                "pair": tf.stack([f["a"], f["a"] * 10.0], axis=1),
            }

    module = Multi()
    return _save(module, path, {"serving_default": module.serve})


def dtypes_model(path: str) -> str:
    """One identity signature per dtype (input `x` [-1] -> output `y`), plus signatures that break rules."""
    module = tf.Module()
    signatures = {}
    for name, dtype in DTYPES.items():
        fn = tf.function(
            lambda x: {"y": tf.identity(x)}, input_signature=[tf.TensorSpec([None], dtype, name="x")]
        )
        signatures[name] = fn.get_concrete_function()
    signatures["serving_default"] = signatures["float"]
    signatures["matrix"] = tf.function(
        lambda x: {"y": x * 2.0}, input_signature=[tf.TensorSpec([None, 2, 3], tf.float32, name="x")]
    ).get_concrete_function()
    signatures["any_shape"] = tf.function(
        lambda x: {"y": x + 1.0}, input_signature=[tf.TensorSpec(None, tf.float32, name="x")]
    ).get_concrete_function()
    signatures["scalar_out"] = tf.function(
        lambda x: {"total": tf.reduce_sum(x), "y": x},
        input_signature=[tf.TensorSpec([None], tf.float32, name="x")],
    ).get_concrete_function()
    signatures["fixed_out"] = tf.function(
        lambda x: {"y": x, "z": tf.constant([1.0, 2.0, 3.0])},
        input_signature=[tf.TensorSpec([None], tf.float32, name="x")],
    ).get_concrete_function()
    signatures["single_fixed"] = tf.function(
        lambda x: {"z": tf.constant([7.0, 8.0, 9.0]) + 0.0 * tf.reduce_sum(x)},
        input_signature=[tf.TensorSpec([None], tf.float32, name="x")],
    ).get_concrete_function()
    signatures["no_inputs"] = tf.function(
        lambda: {"z": tf.constant([1.0])}, input_signature=[]
    ).get_concrete_function()
    signatures["floats"] = tf.function(
        lambda x: {"y": x, "d": tf.cast(x, tf.float64)},
        input_signature=[tf.TensorSpec([None], tf.float32, name="x")],
    ).get_concrete_function()
    return _save(module, path, signatures)


def examples_model(path: str) -> str:
    """tf.Example signatures in TF Serving's classify/regress shapes, and some that break their rules."""

    spec = {"x": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}

    def parse(inputs):
        return tf.io.parse_example(inputs, spec)["x"]  # [N, 1]

    string_in = [tf.TensorSpec([None], tf.string, name="inputs")]

    def sig(fn, inputs=string_in):
        return tf.function(fn, input_signature=inputs).get_concrete_function()

    signatures = {
        "serving_default": sig(lambda x: {"y": 0.5 * x + 2.0}, [tf.TensorSpec([None], tf.float32, name="x")]),
        "regress_x_to_y": sig(lambda inputs: {"outputs": tf.reshape(0.5 * parse(inputs) + 2.0, [-1])}),
        "regress_x_to_y2": sig(lambda inputs: {"outputs": 0.5 * parse(inputs) + 3.0}),
        "regress_bad_shape": sig(lambda inputs: {"outputs": tf.concat([parse(inputs)] * 2, axis=1)}),
        "regress_int": sig(lambda inputs: {"outputs": tf.cast(tf.reshape(parse(inputs), [-1]), tf.int64)}),
        "classify_x_to_y": sig(lambda inputs: {"scores": 0.5 * parse(inputs) + 2.0}),
        "classify_classes": sig(
            lambda inputs: {
                "classes": tf.tile(tf.constant([["no", "yes"]]), [tf.shape(inputs)[0], 1]),
                "scores": tf.concat([1.0 - parse(inputs), parse(inputs)], axis=1),
            }
        ),
        "classify_classes_only": sig(
            lambda inputs: {"classes": tf.tile(tf.constant([["a", "b", "c"]]), [tf.shape(inputs)[0], 1])}
        ),
        "classify_three_outputs": sig(
            lambda inputs: {
                "scores": parse(inputs),
                "classes": tf.as_string(parse(inputs)),
                "x": parse(inputs),
            }
        ),
        "classify_other_output": sig(lambda inputs: {"probabilities": parse(inputs)}),
        "classify_1d_scores": sig(lambda inputs: {"scores": tf.reshape(parse(inputs), [-1])}),
        "two_inputs": sig(
            lambda inputs, more: {"outputs": parse(inputs)},
            [tf.TensorSpec([None], tf.string, name="inputs"), tf.TensorSpec([None], tf.string, name="more")],
        ),
    }
    return _save(tf.Module(), path, signatures)


def wdbc(path: str, bias: float = 0.0) -> str:
    """The project's diagnostic contract (see serving/contract.py)."""
    from serving.contract import build_reference_model

    return build_reference_model(path, WDBC_NUMERIC, WDBC_CATEGORICAL, bias=bias, seed=1)


def clinic_schema_text() -> str:
    """A curated schema for the reference model's features: domains like the real WDBC schema's."""
    parts = [
        f'feature {{ name: "{name}" type: FLOAT float_domain {{ min: 0.0 max: 100.0 }} '
        "presence { min_fraction: 1.0 } }"
        for name in WDBC_NUMERIC
    ]
    for name, vocabulary in WDBC_CATEGORICAL.items():
        values = " ".join(f'value: "{v}"' for v in vocabulary)
        parts.append(f'feature {{ name: "{name}" type: BYTES domain: "{name}" }}')
        parts.append(f'string_domain {{ name: "{name}" {values} }}')
    parts.append('feature { name: "label" type: INT int_domain { min: 0 max: 1 } }')
    return "\n".join(parts) + "\n"


def clinic(path: str) -> str:
    """The reference model carrying its schema: the input contract applies (serving/input_contract.py)."""
    from serving.input_contract import write_schema_asset

    wdbc(path)
    write_schema_asset(path, clinic_schema_text())
    return path
