"""Prometheus metrics and the structured access log.

Label values are bounded: a model label is only ever a configured model's name (anything else is reported as
`""`), verbs and codes come from fixed sets. A client cannot grow the number of series, and so the memory, by
inventing model names.

The access log is one JSON object per line and per request: method, path (no query string), status,
latency, model, version, verb, byte counts and peer. It never contains a request or response body: bodies are
patient data.
"""

from __future__ import annotations

import bisect
import logging
import sys
import time
from collections.abc import Callable
from typing import BinaryIO

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.utils import floatToGoString

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

log = logging.getLogger("dxpipe.serving")


class _Buckets:
    """One histogram's counts, kept as plain numbers on the hot path (prometheus_client renders them)."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """prometheus_client's bucket list: (upper bound, cumulative count), `+Inf` last."""
        out, running = [], 0
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class _Collector:
    """Builds the metric families from the server's counts at scrape time.

    prometheus_client's own Counter and Histogram take locks per observation, which measured several times
    the cost of a dict increment per request (`python -m bench.serving.metrics`, BENCHMARKS.md); a custom
    collector is the library's way to expose numbers kept elsewhere, and the text format, escaping and
    content type stay the library's.
    """

    def __init__(self, metrics: Metrics, known_models, version_states):
        self._metrics = metrics
        self._known_models = known_models
        self._version_states = version_states

    def collect(self):
        """Yields every family (called by prometheus_client for each scrape)."""
        m = self._metrics
        requests = CounterMetricFamily(
            "dxpipe_serving_requests",
            "REST requests by model, verb and HTTP status.",
            labels=["model", "verb", "code"],
        )
        for (model, verb, status), count in sorted(m.requests.items()):
            requests.add_metric([model, verb, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(
            "dxpipe_serving_request_latency_seconds",
            "REST request latency, receipt to response.",
            labels=["model", "verb"],
        )
        for (model, verb), buckets in sorted(m.latency.items()):
            latency.add_metric([model, verb], buckets.cumulative(), buckets.sum)
        yield latency
        rows = HistogramMetricFamily(
            "dxpipe_serving_batch_rows", "Rows per model call (server-side batching).", labels=["model"]
        )
        for model, buckets in sorted(m.batch_rows.items()):
            rows.add_metric([model], buckets.cumulative(), buckets.sum)
        yield rows
        batched = CounterMetricFamily(
            "dxpipe_serving_batched_requests", "Requests answered by model calls.", labels=["model"]
        )
        for model, count in sorted(m.batch_requests.items()):
            batched.add_metric([model], count)
        yield batched
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
            "dxpipe_serving_start_time_seconds", "When the server started (Unix time).", value=m.started
        )


class Metrics:
    """Request, latency, batching and model-state metrics, exposed through prometheus_client.

    The hot path only adds to plain numbers (two dict operations per request); each server has its own
    registry with one custom collector that turns them into prometheus_client metric families when scraped
    (several servers can live in one process, as in the tests).

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
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], _Buckets] = {}
        self.batch_rows: dict[str, _Buckets] = {}
        self.batch_requests: dict[str, int] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self, known_models, version_states))

    def model_label(self, name: str) -> str:
        """The model label for a request: the name if it is a configured model, else empty."""
        return name if self._has_model(name) else ""

    def observe(self, model: str, verb: str, status: int, seconds: float) -> None:
        """Counts one finished request."""
        key = (model, verb, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        buckets = self.latency.get((model, verb))
        if buckets is None:
            buckets = self.latency[(model, verb)] = _Buckets(_LATENCY_BUCKETS)
        buckets.observe(seconds)

    def on_batch(self, model: str, rows: int, requests: int) -> None:
        """Counts one model call of `rows` rows serving `requests` requests (called from model threads)."""
        buckets = self.batch_rows.get(model)
        if buckets is None:
            buckets = self.batch_rows.setdefault(model, _Buckets(_BATCH_BUCKETS))
        buckets.observe(rows)
        self.batch_requests[model] = self.batch_requests.get(model, 0) + requests

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4), written by prometheus_client."""
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
