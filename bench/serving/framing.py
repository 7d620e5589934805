"""`python -m bench.serving.framing`: what following chunk-size lines costs the HTTP protocol, per request.

`HttpProtocol` (serving/httpserver.py) is fed the same requests as in the serving bench, with no socket (a
transport that discards writes) and a handler that answers at once, so only framing is measured: llhttp,
the protocol's own checks, queueing, and writing the answer. CPU time of this thread, best of interleaved
runs, so other work on the machine slows it less than wall time. Ratios are against a plain request (with
Content-Length) arriving in one read, measured in the same run. Printed as markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import time

from serving.httpserver import HttpLimits, HttpProtocol, HttpServer, Response

BODY = b'{"instances": [{"mean_radius": 17.99, "mean_texture": 10.38, "mean_perimeter": 122.8}]}'
HEAD = b"POST /v1/models/wdbc:predict HTTP/1.1\r\nHost: 127.0.0.1:8501\r\nUser-Agent: wrk\r\n"
PLAIN = HEAD + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY
PARTS = (BODY[:30], BODY[30:60], BODY[60:])
CHUNKED = (
    HEAD
    + b"Transfer-Encoding: chunked\r\n\r\n"
    + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in PARTS)
    + b"0\r\n\r\n"
)


class _Discard:
    def get_extra_info(self, name):
        return None

    def write(self, data):
        pass

    def writelines(self, parts):
        pass

    def is_closing(self):
        return False

    def close(self):
        pass

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


class _Unfollowed(HttpProtocol):
    """The protocol with the chunk-size follower switched off: what chunked requests cost without it."""

    def _check_chunk_sizes(self, data, mark, queued):
        self._watch = False


def _thirds(raw: bytes) -> list[bytes]:
    cut = len(raw) // 3
    return [raw[:cut], raw[cut : 2 * cut], raw[2 * cut :]]


CASES = [
    ("plain (Content-Length), one read (baseline)", HttpProtocol, [PLAIN]),
    ("plain, in 3 reads", HttpProtocol, _thirds(PLAIN)),
    ("chunked (3 chunks), one read, follower off", _Unfollowed, [CHUNKED]),
    ("chunked, one read", HttpProtocol, [CHUNKED]),
    ("chunked, in 3 reads", HttpProtocol, _thirds(CHUNKED)),
]


def _per_request(protocol_class: type[HttpProtocol], reads: list[bytes], requests: int) -> float:
    answer = Response(200, b'{"predictions": [[0.1]]}')
    protocol = protocol_class(HttpServer(lambda request: answer, HttpLimits()))
    protocol.connection_made(_Discard())
    started = time.thread_time()
    for _ in range(requests):
        for data in reads:
            protocol.data_received(data)
    return (time.thread_time() - started) / requests


def main(argv: list[str] | None = None) -> int:
    """Measures every case, interleaved, and prints the table."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.serving.framing", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=40, help="Interleaved rounds; the best is kept.")
    parser.add_argument("--requests", type=int, default=500, help="Requests per case and round.")
    args = parser.parse_args(argv)
    best = [float("inf")] * len(CASES)
    for _ in range(args.rounds):
        for i, (_, protocol_class, reads) in enumerate(CASES):
            best[i] = min(best[i], _per_request(protocol_class, reads, args.requests))
    print("| request | µs/request (CPU) | vs baseline |")
    print("|---|---:|---:|")
    for (name, _, _), seconds in zip(CASES, best, strict=True):
        print(f"| {name} | {seconds * 1e6:.2f} | {seconds / best[0]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
