"""Bounded memory per request and for the whole server, over real HTTP on loopback."""

from __future__ import annotations

import base64
import dataclasses
import json
import socket
import time

import pytest
import requests
from test_serving_http import connect, is_closed, read_response, request

PATH = "/v1/models/half_plus_two/versions/1:predict"


def wait_until(condition, timeout: float = 5.0) -> None:
    """Polls `condition` (the server reads what a socket sent at its own pace; there is no hook to await)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def peak_rss_since_reset() -> tuple[int, int]:
    """(current RSS, peak RSS since the last reset) in bytes, from /proc/self/status."""
    fields = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


@pytest.fixture
def limits(server, monkeypatch):
    """Replaces the server's HTTP limits for connections opened during the test."""

    def set_limits(**changes):
        monkeypatch.setattr(
            server.server.http, "limits", dataclasses.replace(server.server.http.limits, **changes)
        )

    return set_limits


def test_24_mib_of_open_brackets_is_refused_without_spending_memory(server, limits):
    limits(max_body_bytes=32 * 1024 * 1024)
    body = b"[" * (24 * 1024 * 1024)
    raw = request("POST", PATH, body)
    reset_peak_rss()
    before, _ = peak_rss_since_reset()
    with connect(server) as sock:
        sock.sendall(raw)
        status, _, answer, _ = read_response(sock)
    _, peak = peak_rss_since_reset()
    assert status == 400
    assert "nesting deeper than 1024 levels" in json.loads(answer)["error"]
    # The body itself is 24 MiB; building one list per byte, as before, took ~3.7 GB.
    assert peak - before < 100 * 1024 * 1024, f"peak RSS grew by {(peak - before) / 2**20:.0f} MiB"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"instances": ' + b"[" * 1025 + b"1" + b"]" * 1025 + b"}", id="arrays"),
        pytest.param(b'{"instances": [' + b'{"a":' * 1030 + b"1" + b"}" * 1030 + b"]}", id="objects"),
        pytest.param(b'{"instances": [NaN, ' + b"[" * 5000 + b"]}", id="after-nan-fallback-parser"),
    ],
)
def test_nesting_limit_in_every_parser_path(api, body):
    response = api.post(PATH, body)
    assert response.status_code == 400
    assert "nesting deeper than 1024 levels" in response.json()["error"]


def test_nesting_at_the_limit_still_parses(api):
    # Rank-1022 tensor inside `instances` inside the root object: 1024 levels, accepted by the parser (the
    # model then refuses the shape, with TF Serving's own error).
    body = b'{"instances": ' + b"[" * 1023 + b"1" + b"]" * 1023 + b"}"
    response = api.post(PATH, body)
    assert response.status_code == 400
    assert "nesting" not in response.json()["error"]


def test_server_wide_cap_on_request_bytes_in_flight(server, limits):
    limits(max_inflight_body_bytes=1024 * 1024)
    half = b'{"instances": [' + b"1.0," * (600 * 1024 // 4) + b"1.0]}"
    with connect(server) as holder, connect(server) as second:
        # The first request sends all but its last byte: its 600 KiB stay held by the server.
        holder.sendall(request("POST", PATH, half)[:-1])
        wait_until(lambda: server.server.http.inflight_bytes >= 600 * 1024)
        second.sendall(request("POST", PATH, half))
        status, headers, answer, _ = read_response(second)
        assert status == 503
        assert "too many request bytes" in json.loads(answer)["error"]
        assert headers["connection"] == "close"
        holder.sendall(request("POST", PATH, half)[-1:])
        status, _, answer, _ = read_response(holder)
        assert status == 200
        assert len(json.loads(answer)["predictions"]) == 600 * 1024 // 4 + 1
    # Everything is released once answered or closed.
    wait_until(lambda: server.server.http.inflight_bytes == 0)


def test_pipelined_backlog_is_answered_in_order_under_the_queue_bound(server, limits):
    limits(max_pipelined_bytes=1024)
    bodies = [json.dumps({"instances": [float(i)] * 100}).encode() for i in range(20)]
    with connect(server) as sock:
        sock.sendall(b"".join(request("POST", PATH, b) for b in bodies))
        leftover = bytearray()
        for i in range(20):
            status, _, answer, leftover = read_response(sock, leftover)
            assert (status, json.loads(answer)["predictions"][0]) == (200, i / 2 + 2)


def test_junk_bytes_as_a_serialized_example_are_a_400(api):
    # TensorFlow raised UnicodeDecodeError for the kernel's message quoting these bytes: it was a 500.
    junk = base64.b64encode(b"\xff\xfe\x00\x81junk").decode()
    response = requests.post(
        api.url + "/v1/models/wdbc:predict",
        json={"signature_name": "from_examples", "instances": [{"b64": junk}]},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.content.startswith(b'{"error":"Could not parse example input')


def test_a_connection_closed_mid_body_releases_its_bytes(server):
    with connect(server) as sock:
        sock.sendall(request("POST", PATH, b"1" * 200_000)[:100_000])
        wait_until(lambda: server.server.http.inflight_bytes > 0)
    wait_until(lambda: server.server.http.inflight_bytes == 0)


def test_refused_connection_gets_nothing_more(server, limits):
    limits(max_inflight_body_bytes=10)
    with connect(server) as sock:
        sock.sendall(request("POST", PATH, b'{"instances": [1.0, 2.0]}'))
        assert read_response(sock)[0] == 503
        assert is_closed(sock)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request("GET", "/v1/models/half_plus_two"))
        assert read_response(sock)[0] == 200


def test_inflight_cap_below_the_body_limit_is_refused_at_startup():
    from serving.config import ModelConfig
    from serving.errors import ServingError
    from serving.httpserver import HttpLimits
    from serving.server import ServerOptions

    with pytest.raises(ServingError, match="--rest_api_max_inflight_body_bytes=100 is below"):
        ServerOptions(
            models=(ModelConfig(name="m", base_path="/tmp"),),
            limits=HttpLimits(max_body_bytes=1000, max_inflight_body_bytes=100),
        )
