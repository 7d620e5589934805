"""`python -m bench.serving.parsers`: the HTTP/1.1 parser candidates for `dxpipe serve`, compared.

Two questions, answered in one run and printed as markdown for BENCHMARKS.md:

1. Speed: each parser frames the same stream of keep-alive requests (the serving bench's batch-1 predict
   request, 64 of them per `feed`), doing what a server must do with each request: method, target, headers
   and the whole body in hand. Reported as requests parsed per second and per-request microseconds; the ratio
   is against the fastest.
2. Strictness: the request-smuggling vectors of issue 10 fed to the bare parser (before any check of
   dxpipe's own). "refused" is what a strict server needs; "accepted" means the server would have to add the
   check itself.

The candidates are the ones in the lock: httptools (llhttp), h11, and aiohttp's low-level parser (llhttp too,
behind aiohttp's stream machinery).
"""

from __future__ import annotations

import asyncio
import time

import h11
import httptools
from aiohttp import http_parser as aiohttp_parser
from aiohttp.base_protocol import BaseProtocol

BODY = b'{"instances": [{"mean_radius": 17.99, "mean_texture": 10.38, "mean_perimeter": 122.8}]}'
REQUEST = (
    b"POST /v1/models/wdbc:predict HTTP/1.1\r\nHost: 127.0.0.1:8501\r\nUser-Agent: wrk\r\n"
    b"Content-Type: application/json\r\nContent-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)
PER_FEED = 64

_CHUNKED = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
VECTORS = {
    "chunk size `0x3`": _CHUNKED + b"0x3\r\nabc\r\n0\r\n\r\n",
    "chunk size `+3`": _CHUNKED + b"+3\r\nabc\r\n0\r\n\r\n",
    "chunk size `1_1`": _CHUNKED + b"1_1\r\n" + b"a" * 17 + b"\r\n0\r\n\r\n",
    "chunk size with 60 leading zeros": _CHUNKED + b"0" * 60 + b"3\r\nabc\r\n0\r\n\r\n",
    "`Transfer-Encoding: chunked` twice": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
    ),
    "`gzip, chunked`": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "`identity, chunked`": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    "bare LF inside the headers": (
        b"POST / HTTP/1.1\r\nHost: a\r\nX-A: a\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    "NUL in a header value": b"POST / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\nContent-Length: 3\r\n\r\nabc",
    "HTTP/1.1 without Host": b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    "Content-Length and Transfer-Encoding": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
}


class _HttptoolsSink:
    def __init__(self):
        self.count = 0
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.count += 1
        self.headers = []
        self.body = []


def httptools_parse(stream: bytes, feeds: int) -> int:
    """Parses `feeds` copies of `stream` with httptools; returns the requests seen."""
    sink = _HttptoolsSink()
    parser = httptools.HttpRequestParser(sink)
    for _ in range(feeds):
        parser.feed_data(stream)
    return sink.count


def h11_parse(stream: bytes, feeds: int) -> int:
    """The same with h11 (a connection is recycled after each answered request, as a server does)."""
    conn = h11.Connection(h11.SERVER)
    count = 0
    for _ in range(feeds):
        conn.receive_data(stream)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.EndOfMessage):
                count += 1
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
    return count


def aiohttp_parse(stream: bytes, feeds: int) -> int:
    """The same with aiohttp's C parser (messages and body streams, as its server gets them)."""
    loop = asyncio.new_event_loop()
    try:
        protocol = BaseProtocol(loop)
        parser = aiohttp_parser.HttpRequestParser(protocol, loop, 2**16, max_field_size=65536)
        count = 0
        for _ in range(feeds):
            messages, _, _ = parser.feed_data(stream)
            for _message, payload in messages:
                payload.read_nowait()
                count += 1
        return count
    finally:
        loop.close()


CANDIDATES = {"httptools (llhttp)": httptools_parse, "h11": h11_parse, "aiohttp (llhttp)": aiohttp_parse}


def refuses(name: str, raw: bytes) -> bool:
    """Whether the bare parser refuses `raw` (an exception, or no complete request)."""
    try:
        return CANDIDATES[name](raw, 1) == 0
    except Exception:  # noqa: BLE001 - any refusal counts, whatever the library calls it
        return True


def main(seconds: float = 2.0) -> int:
    """Prints the two tables."""
    stream = REQUEST * PER_FEED
    rates = {}
    for name, parse in CANDIDATES.items():
        assert parse(stream, 2) == 2 * PER_FEED, name
        feeds, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            parse(stream, 50)
            feeds += 50
        rates[name] = feeds * PER_FEED / (time.perf_counter() - started)
    best = max(rates.values())
    print(
        f"Parsing {len(REQUEST)}-byte keep-alive predict requests, {PER_FEED} per read, {seconds:.0f} s each:\n"
    )
    print("| parser | requests/s | µs/request | vs fastest |")
    print("|---|---:|---:|---:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {1e6 / rate:.2f} | {rate / best:.2f} |")
    print("\nThe bare parsers on issue 10's framing vectors (before dxpipe's own checks):\n")
    print("| vector | " + " | ".join(CANDIDATES) + " |")
    print("|---|" + "---|" * len(CANDIDATES))
    for vector, raw in VECTORS.items():
        cells = ["refused" if refuses(name, raw) else "accepted" for name in CANDIDATES]
        print(f"| {vector} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
