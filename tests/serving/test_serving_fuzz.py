"""Hostile input: malformed and adversarial bodies, paths and raw bytes never get a 5xx, never stop the server,
and do not grow its memory."""

from __future__ import annotations

import base64
import contextlib
import ctypes
import gc
import json
import math
import os
import random
import socket

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MODELS = ["half_plus_two", "multi", "dtypes", "examples", "wdbc", "clinic", "nope", "broken"]
SIGNATURES = [
    "", "serving_default", "float", "int64", "uint8", "bool", "string", "matrix", "any_shape", "scalar_out",
    "fixed_out", "no_inputs", "regress_x_to_y", "classify_classes", "from_examples", "classification", "nope",
]  # fmt: skip
KEYS = [
    "x",
    "a",
    "b",
    "n",
    "tag",
    "flag",
    "b64",
    "inputs",
    "examples",
    "radius_mean",
    "texture_mean",
    "site",
    "zz",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.builds(lambda s: {"b64": s}, st.text(alphabet="ABCDab+/=!", max_size=8)),
    # Valid base64 of arbitrary bytes: junk where a serialized tf.Example is expected.
    st.builds(lambda b: {"b64": base64.b64encode(b).decode()}, st.binary(max_size=40)),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.sampled_from(KEYS), children, max_size=5),
    ),
    max_leaves=30,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "signature_name": st.one_of(st.sampled_from(SIGNATURES), values),
        "instances": values,
        "inputs": values,
        "examples": values,
        "context": values,
    },
)


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def settled_rss_bytes() -> int:
    # Collect garbage and hand freed arenas back to the OS so the figure reflects live memory, not glibc's
    # willingness to return pages.
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_bytes()


def dumps(body) -> bytes:
    # json.dumps writes NaN/Infinity tokens, which the server must accept.
    return json.dumps(body).encode()


def check(response) -> None:
    if response.status_code == 501:  # UNIMPLEMENTED: a dtype without a JSON conversion, as in TF Serving
        assert "to type:" in response.json()["error"]
        return
    assert response.status_code < 500, response.text
    if response.status_code != 200 and response.headers.get("Content-Type") == "application/json":
        assert list(response.json()) == ["error"]
    elif response.status_code == 200:
        json.loads(response.content.decode("utf-8", "surrogateescape"))


SESSION = requests.Session()


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    model=st.sampled_from(MODELS),
    verb=st.sampled_from(["predict", "classify", "regress"]),
    body=bodies,
)
def test_fuzz_json_bodies(server, model, verb, body):
    check(SESSION.post(f"{server.url}/v1/models/{model}:{verb}", data=dumps(body), timeout=30))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(raw=st.binary(max_size=300), model=st.sampled_from(MODELS))
def test_fuzz_raw_bodies(server, raw, model):
    check(SESSION.post(f"{server.url}/v1/models/{model}:predict", data=raw, timeout=30))
    check(
        SESSION.post(
            f"{server.url}/v1/models/{model}:classify", data=b'{"examples": [' + raw + b"]}", timeout=30
        )
    )


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH"]),
    path=st.lists(
        st.sampled_from(
            [
                "v1",
                "models",
                "half_plus_two",
                "versions",
                "labels",
                "1",
                "stable",
                "metadata",
                ":predict",
                "%2F",
                "%",
                "ü",
                "..",
                "",
                "9" * 25,
                ":classify",
                "x:regress",
            ]
        ),
        max_size=7,
    ),
)
def test_fuzz_paths_and_methods(server, method, path):
    url = f"{server.url}/{'/'.join(path)}"
    response = SESSION.request(method, url, data=b'{"instances": [1.0]}', timeout=30)
    assert response.status_code < 500 or response.status_code == 501, response.text


def test_fuzz_raw_protocol_bytes(server):
    rng = random.Random(7)
    pieces = [b"GET ", b"POST ", b"/v1/models/half_plus_two", b":predict", b" HTTP/1.1\r\n", b"\r\n",
              b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n", b"0\r\n\r\n",
              b"\x00\xff", b"{", b"Expect: 100-continue\r\n", b"Content-Encoding: gzip\r\n"]  # fmt: skip
    for _ in range(150):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            try:
                while chunk := sock.recv(65536):
                    reply += chunk
            except (ConnectionResetError, TimeoutError):
                pass
        for line in reply.split(b"\r\n"):
            if line.startswith(b"HTTP/1.1 "):
                assert int(line.split(b" ")[1]) < 500 or line.startswith(b"HTTP/1.1 505"), reply
    assert SESSION.get(f"{server.url}/v1/models/half_plus_two", timeout=10).status_code == 200


def test_hostile_bodies_keep_memory_flat(server):
    """Big, deep, numerous and weird bodies; the process's RSS must not keep growing."""
    url = f"{server.url}/v1/models"
    deep = b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b', "instances": [1.0]}'
    wide = json.dumps({"instances": [[1.0] * 1000] * 200}).encode()
    bad_nan = b'{"instances": [' + b"NaN," * 20000 + b"1]} garbage"

    def round_of_abuse(i: int) -> None:
        for body, path in (
            (deep, "/half_plus_two:predict"),
            (wide, "/half_plus_two:predict"),
            (bad_nan, "/half_plus_two:predict"),
            (b'{"instances": [' + b'"x",' * 5000 + b"1]}", "/dtypes:predict"),
            (json.dumps({"examples": [{"x": [1.5] * 50}] * 200}).encode(), "/examples:classify"),
            (b"\xff" * 10000, "/half_plus_two:predict"),
        ):
            check(SESSION.post(url + path, data=body, timeout=60))
        # Unknown model names must not create metric series or any other per-name state.
        check(
            SESSION.post(f"{url}/random-name-{i}-{math.pi}:predict", data=b'{"instances": [1]}', timeout=10)
        )

    # The first rounds grow the allocator's arenas to their working size. After that a leak shows up in
    # every window of rounds (each round sends ~2 MiB of bodies), while allocator noise from whatever
    # else ran in this process shows up in one window at most, so the quietest window is what we judge.
    for i in range(6):
        round_of_abuse(i)
    window_growth = []
    for window in range(3):
        before = settled_rss_bytes()
        for i in range(10):
            round_of_abuse(6 + 10 * window + i)
        window_growth.append(settled_rss_bytes() - before)
    quietest = min(window_growth)
    assert quietest < 12 * 1024 * 1024, f"RSS grew in every window: {[g / 2**20 for g in window_growth]} MiB"
    metrics = SESSION.get(server.url + "/monitoring/prometheus/metrics", timeout=10).text
    assert "random-name" not in metrics
    assert SESSION.post(
        url + "/half_plus_two/versions/1:predict", json={"instances": [2.0]}, timeout=10
    ).json() == {"predictions": [3.0]}
