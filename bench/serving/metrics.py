"""`python -m bench.serving.metrics`: the per-request cost of counting a request, prometheus_client vs the
hand-written counters it replaced (re-created here as the baseline: a dict counter and a bisect histogram).

Each side counts the same stream of (model, verb, status, latency) observations, cycling over a few label
combinations as a busy server does; the figure is nanoseconds per request.
"""

from __future__ import annotations

import bisect
import time

from serving.metrics import _LATENCY_BUCKETS, Metrics

KEYS = [("wdbc", "predict", 200), ("wdbc", "status", 200), ("wdbc", "predict", 400), ("", "predict", 404)]


class HandWritten:
    """What serving/metrics.py did before prometheus_client: a dict of counts and bisect buckets."""

    def __init__(self):
        self.requests: dict = {}
        self.latency: dict = {}

    def observe(self, model: str, verb: str, status: int, seconds: float) -> None:
        """Counts one request."""
        key = (model, verb, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get((model, verb))
        if histogram is None:
            histogram = self.latency[(model, verb)] = [[0] * (len(_LATENCY_BUCKETS) + 1), 0.0, 0]
        histogram[0][bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        histogram[1] += seconds
        histogram[2] += 1


def per_request_ns(observe, n: int = 400_000) -> float:
    """Nanoseconds per `observe` call, best of three runs."""
    stream = [(*KEYS[i % len(KEYS)], 0.0003 * (i % 50)) for i in range(4096)]
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter_ns()
        for i in range(n):
            observe(*stream[i & 4095])
        best = min(best, (time.perf_counter_ns() - started) / n)
    return best


def main() -> int:
    """Prints the comparison as a markdown table."""
    baseline = per_request_ns(HandWritten().observe)
    library = per_request_ns(Metrics(lambda: ["wdbc"], lambda name: True, lambda: []).observe)
    print("| counting one request | ns/request | vs hand-written |")
    print("|---|---:|---:|")
    print(f"| hand-written dict + bisect histogram (before) | {baseline:.0f} | 1.00 |")
    print(
        f"| prometheus_client Counter + Histogram, cached children (now) | {library:.0f} | {library / baseline:.2f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
