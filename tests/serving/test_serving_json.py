"""The JSON layer on its own: rapidjson's grammar and messages, debug strings, number formatting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serving.errors import ApiError
from serving.jsonio import MAX_DEPTH, debug_string, decimal_tokens, parse_request_body


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"a": NaN}', {"a": math.nan}),
        (
            b'{"a": [Infinity, -Infinity, Inf, -Inf, -NaN]}',
            {"a": [math.inf, -math.inf, math.inf, -math.inf, math.nan]},
        ),
        (b'{"a": 1} trailing {', {"a": 1}),
        (b'  \n{"a": 1}\n\n', {"a": 1}),
        (
            b'{"a": 18446744073709551615, "b": 18446744073709551616, "c": -9223372036854775809}',
            {"a": 2**64 - 1, "b": 1.8446744073709552e19, "c": -9.223372036854776e18},
        ),
        (b'{"a": 1, "a": 2}', None),  # duplicate keys parse (which one wins is rapidjson's business)
        (b'{"s": "\\u00e9\\ud83d\\ude00\\n"}', {"s": "\u00e9\U0001f600\n"}),
        (b'{"s": "a\xffb"}', {"s": "a\udcffb"}),  # bytes that are not UTF-8 pass through
        (b'{"a": NaN, "big": 18446744073709551616}', {"a": math.nan, "big": 1.8446744073709552e19}),
    ],
)
def test_accepted_documents(body, expected):
    doc = parse_request_body(body)
    if expected is not None:
        assert repr(doc) == repr(expected)


@pytest.mark.parametrize("tail", [b"", b', "n": NaN'], ids=["orjson", "fallback-parser"])
def test_nesting_is_limited_to_max_depth(tail):
    # The root object is level 1: 1023 arrays inside it are 1024 levels, the limit.
    depth = MAX_DEPTH - 1
    doc = parse_request_body(b'{"x": ' + b"[" * depth + b"]" * depth + tail + b', "y": [[[1]], {"z": [[]]}]}')
    assert doc["y"] == [[[1]], {"z": [[]]}]
    node, levels = doc["x"], 1
    while node:
        node, levels = node[0], levels + 1
    assert levels == depth
    with pytest.raises(ApiError, match=f"nesting deeper than {MAX_DEPTH} levels"):
        parse_request_body(b'{"x": ' + b"[" * (depth + 1) + b"]" * (depth + 1) + tail + b"}")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b" \t", "JSON Parse error: The document is empty. at offset: 2"),
        (b"{", "JSON Parse error: Missing a name for object member. at offset: 1"),
        (b'{"a" 1}', "JSON Parse error: Missing a colon after a name of object member. at offset: 5"),
        (b'{"a": 1 "b": 2}', "JSON Parse error: Missing a comma or '}' after an object member. at offset: 8"),
        (b'{"a": [1 2]}', "JSON Parse error: Missing a comma or ']' after an array element. at offset: 9"),
        (b'{"a": [1,]}', "JSON Parse error: Invalid value. at offset: 9"),
        (b'{"a": tru}', "JSON Parse error: Invalid value. at offset: 9"),
        (b'{"a": 01}', "JSON Parse error: Missing a comma or '}' after an object member. at offset: 7"),
        (b'{"a": 1.}', "JSON Parse error: Miss fraction part in number. at offset: 8"),
        (b'{"a": 1e+}', "JSON Parse error: Miss exponent in number. at offset: 9"),
        (b'{"a": 1e400}', "JSON Parse error: Number too big to be stored in double. at offset: 6"),
        (b'{"a": "\\x"}', "JSON Parse error: Invalid escape character in string. at offset: 7"),
        (
            b'{"a": "\\u12G4"}',
            "JSON Parse error: Incorrect hex digit after \\u escape in string. at offset: 9",
        ),
        (b'{"a": "\\ud800"}', "JSON Parse error: The surrogate pair in string is invalid. at offset: 13"),
        (b'{"a": "x', "JSON Parse error: Missing a closing quotation mark in string. at offset: 8"),
        (b'{"a": "\x01"}', "JSON Parse error: Invalid encoding in string. at offset: 7"),
        (b"[1, 2]", "JSON Value: [1, 2] Is not object"),
        (b"null", "JSON Value: null Is not object"),
        (
            b"-Infinity",
            "JSON Value:  Is not object",
        ),  # rapidjson's writer refuses to print non-finite numbers
    ],
)
def test_errors(body, message):
    with pytest.raises(ApiError) as info:
        parse_request_body(body)
    assert info.value.message == message
    assert info.value.http_status == 400


def test_debug_string_is_rapidjson_pretty_writer_output():
    doc = {"instances": [{"a": 1, "b": [1.5, "x\n"]}], "z": {}, "q": [], "t": True, "n": None}
    assert debug_string(doc) == (
        '{\n    "instances": [{\n            "a": 1,\n            "b": [1.5, "x\\n"]\n        }],\n'
        '    "z": {},\n    "q": [],\n    "t": true,\n    "n": null\n}'
    )
    assert debug_string([1.0, 100.0, 1e21, 1e-7, 0.001, 123456789.125, -0.0]) == (
        "[1.0, 100.0, 1e21, 1e-7, 0.001, 123456789.125, -0.0]"
    )
    long = debug_string(list(range(1000)))
    assert 256 <= len(long) < 270 and not long.endswith("]")


@pytest.mark.parametrize(
    ("values", "dtype", "tokens"),
    [
        ([3.0, 999999.0, 9e6, 3e-5, 0.5], np.float32, ["3.0", "999999.0", "9e+06", "3e-05", "0.5"]),
        ([0.1, 0.123456789, 1 / 3], np.float32, ["0.1", "0.123456791", "0.333333343"]),
        ([math.nan, math.inf, -math.inf, -0.0], np.float32, ["NaN", "Infinity", "-Infinity", "-0.0"]),
        ([0.1, 1 / 3, 2.5, 1e300], np.float64, ["0.1", "0.33333333333333331", "2.5", "1e+300"]),
        (
            [1.0, 2.0, 3.0, 4.0, 5.0, 0.1234567],
            np.float32,
            ["1.0", "2.0", "3.0", "4.0", "5.0", "0.123456702"],
        ),
    ],
)
def test_decimal_tokens(values, dtype, tokens):
    assert decimal_tokens(np.array(values, dtype=dtype)) == tokens
