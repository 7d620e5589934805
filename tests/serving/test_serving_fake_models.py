"""Timing-dependent behaviour, made deterministic with a slow fake model (the server's `loader` hook)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import requests

from serving.config import BatchingOptions, ModelConfig
from serving.server import ServerOptions, ServerThread
from serving.tensors import DT_FLOAT, Signature, TensorInfo

SIGNATURE = Signature(
    key="serving_default",
    method_name="tensorflow/serving/predict",
    inputs={"x": TensorInfo("x", "x:0", DT_FLOAT, (-1,))},
    outputs={"y": TensorInfo("y", "y:0", DT_FLOAT, (-1,))},
)


class SlowModel:
    """y = x + version, after `delay` seconds; records calls and whether it was closed mid-request."""

    def __init__(self, name: str, version: int, path: str, delay: float):
        self.name, self.version, self.path, self.delay = name, version, path, delay
        self.signatures = {"serving_default": SIGNATURE}
        self.signature_def_map = {"signature_def": {}}
        self.refs = 0
        self.calls = 0
        self.closed = False
        self.running = 0
        self.closed_while_running = False

    def run(self, signature, feeds, fetches):
        self.calls += 1
        self.running += 1
        try:
            time.sleep(self.delay)
            return {"y": (feeds["x"] + self.version).astype(np.float32)}
        finally:
            self.running -= 1

    def close(self):
        self.closed_while_running = self.running > 0
        self.closed = True


@pytest.fixture
def slow_server(tmp_path):
    created: list[SlowModel] = []
    servers: list[ServerThread] = []

    def start(delay: float, **options) -> tuple[ServerThread, list[SlowModel], object]:
        base = tmp_path / "m"
        (base / "1").mkdir(parents=True)
        (base / "1" / "saved_model.pb").write_bytes(b"fake")

        def loader(name, version, path):
            model = SlowModel(name, version, path, delay)
            created.append(model)
            return model

        server = ServerThread(
            ServerOptions(
                models=(ModelConfig("m", str(base)),), port=0, file_system_poll_seconds=0.05, **options
            ),
            loader=loader,
        )
        servers.append(server)
        return server, created, base

    yield start
    for server in servers:
        server.stop()


def post(server, value: float = 1.0, timeout: float = 30):
    return requests.post(server.url + "/v1/models/m:predict", json={"instances": [value]}, timeout=timeout)


def test_deadline_exceeded_is_504(slow_server):
    server, _, _ = slow_server(delay=3.0, timeout_ms=300)
    started = time.monotonic()
    response = post(server)
    assert response.status_code == 504
    assert response.json() == {"error": "Deadline Exceeded"}
    assert time.monotonic() - started < 2.0


def test_concurrent_requests_to_a_slow_model_share_calls(slow_server):
    server, created, _ = slow_server(delay=0.2, batching=BatchingOptions(num_batch_threads=1))
    results: list[requests.Response] = []
    threads = [threading.Thread(target=lambda i=i: results.append(post(server, float(i)))) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r.json()["predictions"][0] for r in results) == [float(i) + 1 for i in range(16)]
    assert created[0].calls <= 4  # 16 requests, a call takes 0.2 s: they queue up and merge


def test_swap_waits_for_requests_holding_the_old_version(slow_server):
    server, created, base = slow_server(delay=1.0)
    answer: list[requests.Response] = []
    thread = threading.Thread(target=lambda: answer.append(post(server, 1.0)))
    thread.start()
    time.sleep(0.2)  # the request is inside version 1's model call
    (base / "2").mkdir()
    (base / "2" / "saved_model.pb").write_bytes(b"fake")
    deadline = time.monotonic() + 10
    while len(created) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    thread.join(30)
    assert answer[0].status_code == 200
    assert answer[0].json() == {"predictions": [2.0]}  # answered by version 1
    v1 = created[0]
    deadline = time.monotonic() + 10
    while not v1.closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert v1.closed and not v1.closed_while_running
    assert post(server, 1.0).json() == {"predictions": [3.0]}  # version 2 now


def test_cors_headers_when_enabled(slow_server):
    server, _, _ = slow_server(delay=0.0, enable_cors=True)
    preflight = requests.options(
        server.url + "/v1/models/m:predict", headers={"Origin": "https://app.example"}
    )
    assert preflight.status_code == 200
    for response in (preflight, post(server), requests.get(server.url + "/v1/models/nope", timeout=10)):
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.headers["Access-Control-Allow-Methods"] == "POST, GET"
        assert response.headers["Access-Control-Allow-Headers"] == "Content-Type"


def test_no_cors_headers_by_default(api):
    response = api.session.options(
        api.url + "/v1/models/half_plus_two", headers={"Origin": "https://app.example"}
    )
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
