"""Prometheus metrics and the structured access log.

Label values are bounded: a model label is only ever a configured model's name (anything else is reported as
`""`), verbs and codes come from fixed sets. A client cannot grow the number of series, and so the memory, by
inventing model names.

The access log is one JSON object per line and per request: method, path (no query string), status,
latency, model, version, verb, byte counts and peer. It never contains a request or response body: bodies are
patient data.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import BinaryIO

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

log = logging.getLogger("dxpipe.serving")


class _VersionCollector:
    """Model-version gauges, read from the manager at scrape time (nothing to keep in step)."""

    def __init__(
        self,
        known_models: Callable[[], list[str]],
        version_states: Callable[[], list[tuple[str, int, str]]],
        started: float,
    ):
        self._known_models = known_models
        self._version_states = version_states
        self._started = started

    def collect(self):
        """Yields the gauges (called by prometheus_client for each scrape)."""
        states = GaugeMetricFamily(
            "dxpipe_serving_model_version_state",
            "1 for the current state of each model version.",
            labels=["model", "version", "state"],
        )
        loaded: dict[str, int] = {}
        for model, version, state in self._version_states():
            states.add_metric([model, str(version), state], 1)
            loaded[model] = loaded.get(model, 0) + (state == "AVAILABLE")
        yield states
        versions = GaugeMetricFamily(
            "dxpipe_serving_loaded_versions", "Versions of each model loaded and serving.", labels=["model"]
        )
        for model in self._known_models():
            versions.add_metric([model], loaded.get(model, 0))
        yield versions
        yield GaugeMetricFamily(
            "dxpipe_serving_start_time_seconds", "When the server started (Unix time).", value=self._started
        )


class Metrics:
    """Request, latency, batching and model-state metrics, exposed by prometheus_client.

    Each server has its own registry (several servers can live in one process, as in the tests). The
    per-request work is two calls on cached label children: `python -m bench.serving.metrics` measured it
    against the hand-written counters this replaced (BENCHMARKS.md).

    Args:
        known_models: Returns the configured model names.
        has_model: Whether a name is a configured model (label values are limited to those).
        version_states: Returns (model, version, state) for every known version.
    """

    def __init__(
        self,
        known_models: Callable[[], list[str]],
        has_model: Callable[[str], bool],
        version_states: Callable[[], list[tuple[str, int, str]]],
    ):
        self._has_model = has_model
        self.started = time.time()
        self.registry = CollectorRegistry(auto_describe=False)
        self._requests = Counter(
            "dxpipe_serving_requests",
            "REST requests by model, verb and HTTP status.",
            ["model", "verb", "code"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "dxpipe_serving_request_latency_seconds",
            "REST request latency, receipt to response.",
            ["model", "verb"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batch_rows = Histogram(
            "dxpipe_serving_batch_rows",
            "Rows per model call (server-side batching).",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self._batched = Counter(
            "dxpipe_serving_batched_requests",
            "Requests answered by model calls.",
            ["model"],
            registry=self.registry,
        )
        self.registry.register(_VersionCollector(known_models, version_states, self.started))
        # Label children by key: looking them up through .labels() on every request costs a lock and a
        # tuple build; label values are bounded (see the module docstring), so the cache is too.
        self._request_children: dict[tuple[str, str, int], tuple] = {}
        self._batch_children: dict[str, tuple] = {}

    def model_label(self, name: str) -> str:
        """The model label for a request: the name if it is a configured model, else empty."""
        return name if self._has_model(name) else ""

    def observe(self, model: str, verb: str, status: int, seconds: float) -> None:
        """Counts one finished request."""
        key = (model, verb, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self._requests.labels(model, verb, str(status)),
                self._latency.labels(model, verb),
            )
        children[0].inc()
        children[1].observe(seconds)

    def on_batch(self, model: str, rows: int, requests: int) -> None:
        """Counts one model call of `rows` rows serving `requests` requests."""
        children = self._batch_children.get(model)
        if children is None:
            children = self._batch_children[model] = (
                self._batch_rows.labels(model),
                self._batched.labels(model),
            )
        children[0].observe(rows)
        children[1].inc(requests)

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4)."""
        return generate_latest(self.registry)


class AccessLog:
    """Writes one JSON line per request, in batches.

    Lines are written when `max_lines` are waiting and by the server every half second, not one write and
    flush per request.

    Args:
        sink: A binary stream (a file, `sys.stderr.buffer`), or None for no access log.
        max_lines: Lines buffered before a write.
    """

    def __init__(self, sink: BinaryIO | None, max_lines: int = 256):
        self.sink = sink
        self.max_lines = max_lines
        self._lines: list[bytes] = []

    @classmethod
    def open(cls, destination: str) -> AccessLog:
        """`-` for stderr, `off` for none, else a file path (appended to)."""
        if destination == "off":
            return cls(None)
        if destination == "-":
            return cls(sys.stderr.buffer)
        # Open for the server's lifetime; close() closes it.
        return cls(open(destination, "ab"))

    def record(
        self,
        method: str,
        path: str,
        status: int,
        latency_ms: float,
        model: str | None,
        version: int | None,
        verb: str,
        bytes_in: int,
        bytes_out: int,
        peer: str,
    ) -> None:
        """Queues one line (request metadata only: never a body)."""
        if self.sink is None:
            return
        self._lines.append(
            orjson.dumps(
                {
                    "ts": round(time.time(), 6),
                    "method": method[:16],
                    "path": path[:256],
                    "status": status,
                    "latency_ms": round(latency_ms, 3),
                    "model": model,
                    "version": version,
                    "verb": verb,
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                    "peer": peer,
                },
                option=orjson.OPT_APPEND_NEWLINE,
            )
        )
        if len(self._lines) >= self.max_lines:
            self.flush()

    def flush(self) -> None:
        """Writes the waiting lines."""
        if not self._lines or self.sink is None:
            return
        data = b"".join(self._lines)
        self._lines.clear()
        try:
            self.sink.write(data)
            self.sink.flush()
        except (OSError, ValueError):
            log.exception("cannot write the access log")

    def close(self) -> None:
        """Flushes, and closes a file sink."""
        self.flush()
        if self.sink is not None and self.sink not in (sys.stderr.buffer, sys.stdout.buffer):
            self.sink.close()
