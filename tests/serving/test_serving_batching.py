"""Server-side batching: merging, splitting, isolation of bad requests, limits; then end to end over HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import numpy as np
import pytest

from serving.batching import Batcher
from serving.config import BatchingOptions
from serving.errors import ApiError, Code, invalid_argument
from serving.tensors import DT_FLOAT, Signature, TensorInfo

SIGNATURE = Signature(
    key="serving_default",
    method_name="tensorflow/serving/predict",
    inputs={"x": TensorInfo("x", "x:0", DT_FLOAT, (-1,))},
    outputs={"y": TensorInfo("y", "y:0", DT_FLOAT, (-1,))},
)


class FakeModel:
    """Doubles x; fails on negative values like a model rejecting bad data; records every call."""

    name = "fake"
    version = 1

    def __init__(self, batch_major: bool = True):
        self.calls: list[int] = []
        self.batch_major = batch_major
        self.lock = threading.Lock()

    def run(self, signature, feeds, fetches):
        x = feeds["x"]
        with self.lock:
            self.calls.append(len(x))
        if (x < 0).any():
            raise invalid_argument("negative input")
        if not self.batch_major:
            return {"y": np.array([x.sum()])}
        return {"y": x * 2}


def run_submissions(
    options: BatchingOptions, model: FakeModel, inputs: list[np.ndarray], stagger: float = 0.0
):
    async def main():
        batcher = Batcher(options)
        futures = []
        for x in inputs:
            futures.append(batcher.submit(model, SIGNATURE, {"x": x}, ("y",)))
            if stagger:
                await asyncio.sleep(stagger)
        results = await asyncio.gather(*futures, return_exceptions=True)
        batcher.close()
        return results

    return asyncio.run(main())


def test_requests_of_one_turn_share_one_call():
    model = FakeModel()
    inputs = [np.array([float(i), float(i) + 0.5], np.float32) for i in range(10)]
    results = run_submissions(BatchingOptions(max_batch_size=64), model, inputs)
    assert model.calls == [20]
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result["y"], x * 2)


def test_max_batch_size_splits_batches_and_big_requests_run_alone():
    model = FakeModel()
    inputs = [np.ones(1, np.float32)] * 10 + [np.ones(9, np.float32)]
    results = run_submissions(BatchingOptions(max_batch_size=4, num_batch_threads=1), model, inputs)
    assert sorted(model.calls) == [2, 4, 4, 9]
    assert all(r["y"].shape in ((1,), (9,)) for r in results)


def test_one_bad_request_does_not_fail_its_batch():
    model = FakeModel()
    inputs = [np.array([1.0], np.float32), np.array([-1.0], np.float32), np.array([3.0], np.float32)]
    results = run_submissions(BatchingOptions(), model, inputs)
    assert model.calls[0] == 3  # tried together first
    assert sorted(model.calls[1:]) == [1, 1, 1]  # then alone
    assert results[0]["y"].tolist() == [2.0]
    assert isinstance(results[1], ApiError) and results[1].message == "negative input"
    assert results[2]["y"].tolist() == [6.0]


def test_outputs_that_are_not_batch_major_fall_back_to_single_calls():
    model = FakeModel(batch_major=False)
    inputs = [np.array([1.0, 2.0], np.float32), np.array([5.0], np.float32)]
    results = run_submissions(BatchingOptions(), model, inputs)
    assert results[0]["y"].tolist() == [3.0]
    assert results[1]["y"].tolist() == [5.0]


def test_shapes_that_cannot_be_concatenated_use_separate_queues():
    model = FakeModel()
    inputs = [np.ones((1,), np.float32), np.ones((1, 2), np.float32), np.ones((2,), np.float32)]
    run_submissions(BatchingOptions(), model, inputs)
    assert sorted(model.calls) == [1, 3]


def test_batching_disabled_means_one_call_per_request():
    model = FakeModel()
    run_submissions(BatchingOptions(enabled=False), model, [np.ones(1, np.float32)] * 5)
    assert model.calls == [1] * 5


def test_timeout_gathers_requests_from_later_turns():
    model = FakeModel()
    inputs = [np.ones(1, np.float32)] * 5
    run_submissions(BatchingOptions(batch_timeout_micros=200_000), model, inputs, stagger=0.005)
    assert model.calls == [5]
    model = FakeModel()
    run_submissions(
        BatchingOptions(batch_timeout_micros=0, num_batch_threads=1), model, inputs, stagger=0.005
    )
    assert len(model.calls) > 1


def test_full_queue_is_unavailable():
    model = FakeModel()
    options = BatchingOptions(max_batch_size=2, max_enqueued_batches=2, num_batch_threads=1)
    results = run_submissions(options, model, [np.ones(1, np.float32)] * 8)
    refused = [r for r in results if isinstance(r, ApiError)]
    assert refused and all(r.code == Code.UNAVAILABLE and r.http_status == 503 for r in refused)
    assert len(results) - len(refused) == 4


@pytest.mark.parametrize("clients", [32])
def test_concurrent_http_requests_are_merged(server, clients):
    """32 connections each send one request at once: fewer model calls than requests, every answer right."""
    model = server.server.manager.lookup("half_plus_two", 1)
    before = model.calls
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(clients)]
    try:
        payloads = []
        for i in range(clients):
            body = json.dumps({"instances": [float(i), float(i) + 1]}).encode()
            payloads.append(
                b"POST /v1/models/half_plus_two/versions/1:predict HTTP/1.1\r\nHost: x\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
        for sock, payload in zip(sockets, payloads, strict=True):
            sock.sendall(payload)
        for i, sock in enumerate(sockets):
            data = b""
            while not data.endswith(b"}"):
                data += sock.recv(4096)
            body = json.loads(data.split(b"\r\n\r\n", 1)[1])
            assert body == {"predictions": [0.5 * i + 2, 0.5 * (i + 1) + 2]}
    finally:
        for sock in sockets:
            sock.close()
    calls = model.calls - before
    assert 1 <= calls < clients
