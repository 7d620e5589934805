"""The one-template renderer of row answers writes the same bytes as the general, nested renderer.

`tensors.row_response` takes `_scalar_rows_response` whenever every output has one value per instance (a
classifier's probability, decision, threshold and label): it is the served hot path, so it is checked
against `_nested_rows_response`, the path every other output shape takes, over every dtype TF Serving can
write and aliases that could break a %-template or JSON quoting.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving import tensors

_FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)
_DTYPES = {
    "float32": (np.float32, _FLOATS),
    "float64": (np.float64, st.floats(allow_nan=True, allow_infinity=True)),
    "int8": (np.int8, st.integers(-128, 127)),
    "int32": (np.int32, st.integers(-(2**31), 2**31 - 1)),
    "int64": (np.int64, st.integers(-(2**63), 2**63 - 1)),
    "uint64": (np.uint64, st.integers(0, 2**64 - 1)),
    "bool": (np.bool_, st.booleans()),
    "bytes": (object, st.binary(max_size=8)),
}
_ALIASES = st.lists(st.sampled_from([*'ab%s_d"\\\n é{}', "_bytes", "%d", "%%"]), min_size=1, max_size=6).map(
    "".join
)


@st.composite
def _outputs(draw) -> dict[str, np.ndarray]:
    rows = draw(st.integers(0, 20))
    aliases = draw(st.lists(_ALIASES, min_size=2, max_size=5, unique=True))
    outputs = {}
    for alias in aliases:
        dtype, values = _DTYPES[draw(st.sampled_from(sorted(_DTYPES)))]
        column = draw(st.lists(values, min_size=rows, max_size=rows))
        if draw(st.booleans()) and rows:
            column = [column[0]] * rows  # a constant column takes decimal_tokens' repeat path
        outputs[alias] = np.array(column, dtype=dtype)
    return outputs


@settings(max_examples=300, deadline=None)
@given(_outputs())
def test_template_rows_equal_nested_rows(outputs):
    batch = next(iter(outputs.values())).shape[0]
    assert tensors._scalar_rows_response(outputs, batch) == tensors._nested_rows_response(outputs)


def test_row_response_takes_the_template_for_scalar_outputs(monkeypatch):
    calls = []
    real = tensors._scalar_rows_response
    monkeypatch.setattr(tensors, "_scalar_rows_response", lambda o, b: calls.append(b) or real(o, b))
    outputs = {
        "probability": np.array([0.25, 0.999920964], np.float32),
        "decision": np.array([0, 1], np.int64),
        "threshold": np.array([0.6567, 0.6567], np.float32),
    }
    body = tensors.row_response(outputs)
    assert calls == [2]
    assert json.loads(body) == {
        "predictions": [
            {"probability": 0.25, "decision": 0, "threshold": pytest.approx(0.6567, abs=1e-7)},
            {
                "probability": pytest.approx(0.999920964),
                "decision": 1,
                "threshold": pytest.approx(0.6567, abs=1e-7),
            },
        ]
    }
    # A column with a second dimension takes the nested path.
    calls.clear()
    outputs["scores"] = np.array([[0.1, 0.9], [0.2, 0.8]], np.float32)
    assert json.loads(tensors.row_response(outputs))["predictions"][1]["scores"] == [
        pytest.approx(0.2),
        pytest.approx(0.8),
    ]
    assert calls == []


@pytest.mark.parametrize("value", [0.6567, 0.5, 3.0, 1e-7, -0.0, math.inf])
def test_constant_float_column_formats_like_each_value(value):
    column = np.full(40, value, np.float32)
    tokens = tensors.decimal_tokens(column)
    assert tokens == [tensors.decimal_tokens(np.array([value, 0.0] * 9, np.float32))[0]] * 40
