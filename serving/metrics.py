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

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

log = logging.getLogger("dxpipe.serving")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Histogram:
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

    def render(self, name: str, labels: str, out: list[str]) -> None:
        running = 0
        sep = "," if labels else ""
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        out.append(f"{name}_sum{{{labels}}} {self.sum}")
        out.append(f"{name}_count{{{labels}}} {self.count}")


class Metrics:
    """Request, latency, batching and model-state metrics in Prometheus text format.

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
        self._known_models = known_models
        self._has_model = has_model
        self._version_states = version_states
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], _Histogram] = {}
        self.batch_rows: dict[str, _Histogram] = {}
        self.batch_requests: dict[str, int] = {}
        self.started = time.time()

    def model_label(self, name: str) -> str:
        """The model label for a request: the name if it is a configured model, else empty."""
        return name if self._has_model(name) else ""

    def observe(self, model: str, verb: str, status: int, seconds: float) -> None:
        """Counts one finished request."""
        key = (model, verb, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get((model, verb))
        if histogram is None:
            histogram = self.latency[(model, verb)] = _Histogram(_LATENCY_BUCKETS)
        histogram.observe(seconds)

    def on_batch(self, model: str, rows: int, requests: int) -> None:
        """Counts one model call of `rows` rows serving `requests` requests."""
        histogram = self.batch_rows.get(model)
        if histogram is None:
            histogram = self.batch_rows[model] = _Histogram(_BATCH_BUCKETS)
        histogram.observe(rows)
        self.batch_requests[model] = self.batch_requests.get(model, 0) + requests

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        out = [
            "# HELP dxpipe_serving_requests_total REST requests by model, verb and HTTP status.",
            "# TYPE dxpipe_serving_requests_total counter",
        ]
        for (model, verb, status), count in sorted(self.requests.items()):
            out.append(
                f'dxpipe_serving_requests_total{{model="{_escape(model)}",verb="{verb}",code="{status}"}} {count}'
            )
        out += [
            "# HELP dxpipe_serving_request_latency_seconds REST request latency, receipt to response.",
            "# TYPE dxpipe_serving_request_latency_seconds histogram",
        ]
        for (model, verb), histogram in sorted(self.latency.items()):
            histogram.render(
                "dxpipe_serving_request_latency_seconds", f'model="{_escape(model)}",verb="{verb}"', out
            )
        out += [
            "# HELP dxpipe_serving_batch_rows Rows per model call (server-side batching).",
            "# TYPE dxpipe_serving_batch_rows histogram",
        ]
        for model, histogram in sorted(self.batch_rows.items()):
            histogram.render("dxpipe_serving_batch_rows", f'model="{_escape(model)}"', out)
        out += [
            "# HELP dxpipe_serving_batched_requests_total Requests answered by model calls.",
            "# TYPE dxpipe_serving_batched_requests_total counter",
        ]
        for model, count in sorted(self.batch_requests.items()):
            out.append(f'dxpipe_serving_batched_requests_total{{model="{_escape(model)}"}} {count}')
        out += [
            "# HELP dxpipe_serving_model_version_state 1 for the current state of each model version.",
            "# TYPE dxpipe_serving_model_version_state gauge",
        ]
        loaded: dict[str, int] = {}
        for model, version, state in self._version_states():
            out.append(
                f'dxpipe_serving_model_version_state{{model="{_escape(model)}",version="{version}",'
                f'state="{state}"}} 1'
            )
            loaded[model] = loaded.get(model, 0) + (state == "AVAILABLE")
        out += [
            "# HELP dxpipe_serving_loaded_versions Versions of each model loaded and serving.",
            "# TYPE dxpipe_serving_loaded_versions gauge",
        ]
        for model in self._known_models():
            out.append(f'dxpipe_serving_loaded_versions{{model="{_escape(model)}"}} {loaded.get(model, 0)}')
        out += [
            "# HELP dxpipe_serving_start_time_seconds When the server started (Unix time).",
            "# TYPE dxpipe_serving_start_time_seconds gauge",
            f"dxpipe_serving_start_time_seconds {self.started}",
        ]
        return ("\n".join(out) + "\n").encode()


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
