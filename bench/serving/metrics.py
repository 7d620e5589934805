"""`python -m bench.serving.metrics`: the per-request cost of counting a request three ways.

1. baseline: a dict counter and a bisect histogram (what serving/metrics.py counted with before);
2. prometheus_client's Counter and Histogram, label children cached (the library's instrumentation API);
3. serving.metrics.Metrics as it is: plain counts on the hot path, rendered by a prometheus_client custom
   collector at scrape time.

Each side counts the same stream of (model, verb, status, latency) observations, cycling over a few label
combinations as a busy server does; the figure is nanoseconds per request.
"""

from __future__ import annotations

import bisect
import time

from prometheus_client import CollectorRegistry, Counter, Histogram

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


class LibraryInstruments:
    """prometheus_client's Counter + Histogram with cached label children."""

    def __init__(self):
        registry = CollectorRegistry()
        self.counter = Counter("r", "r", ["model", "verb", "code"], registry=registry)
        self.histogram = Histogram("l", "l", ["model", "verb"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.children: dict = {}

    def observe(self, model: str, verb: str, status: int, seconds: float) -> None:
        """Counts one request."""
        key = (model, verb, status)
        children = self.children.get(key)
        if children is None:
            children = self.children[key] = (
                self.counter.labels(model, verb, str(status)),
                self.histogram.labels(model, verb),
            )
        children[0].inc()
        children[1].observe(seconds)


def per_request_ns(observe, n: int = 100_000) -> float:
    """Nanoseconds per `observe` call over one run of `n` calls."""
    stream = [(*KEYS[i % len(KEYS)], 0.0003 * (i % 50)) for i in range(4096)]
    started = time.perf_counter_ns()
    for i in range(n):
        observe(*stream[i & 4095])
    return (time.perf_counter_ns() - started) / n


def best_of(observers: dict, rounds: int = 7) -> dict:
    """The fastest run of each, rounds interleaved so a busy machine slows them alike."""
    best = dict.fromkeys(observers, float("inf"))
    for _ in range(rounds):
        for name, observe in observers.items():
            best[name] = min(best[name], per_request_ns(observe))
    return best


def main() -> int:
    """Prints the comparison as a markdown table."""
    best = best_of(
        {
            "baseline": HandWritten().observe,
            "library": LibraryInstruments().observe,
            "now": Metrics(lambda: ["wdbc"], lambda name: True, lambda: []).observe,
        }
    )
    baseline, library, now = best["baseline"], best["library"], best["now"]
    print("| counting one request | ns/request | vs baseline |")
    print("|---|---:|---:|")
    print(f"| dict counter + bisect histogram (baseline) | {baseline:.0f} | 1.00 |")
    print(
        f"| prometheus_client Counter + Histogram, cached children | {library:.0f} | {library / baseline:.2f} |"
    )
    print(
        f"| serving.metrics.Metrics: plain counts + custom collector (kept) | {now:.0f} | {now / baseline:.2f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
