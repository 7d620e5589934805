"""HTTP/1.1 for the REST port: llhttp (through `httptools`) under a thin asyncio protocol.

Framing is llhttp's: Node.js's parser, hardened by years of request-smuggling reports (chunk sizes are strict
hex, bare LF, NUL and obs-fold are refused, `Content-Length` together with `Transfer-Encoding` or twice is
refused). On top of it this module adds only what a REST port in front of a clinic needs and llhttp leaves to
the server: `Host` is required on HTTP/1.1, `Transfer-Encoding` must be exactly `chunked` (anything else, such
as `gzip, chunked`, would be a coding nobody here decodes) and is refused on HTTP/1.0, a chunk size may have
at most 8 hex digits (`serving/chunksize.py`: llhttp reads any number of leading zeros), trailer fields are
dropped rather than merged into the headers, versions other than 1.0 and 1.1 get 505, limits on header and
body size, gzip request bodies decompressed under a size cap (so a zip bomb is refused), a deadline for
receiving a request, an idle timeout, and back-pressure in both directions. Keep-alive and pipelining (answers
in order), `Expect: 100-continue` and `HEAD` work as in any HTTP/1.1 server. Protocol errors are answered with
a JSON `{"error": ...}` and the connection is closed; a request that fails framing never reaches the handler.

httptools was measured against h11 and aiohttp's parser (`python -m bench.serving.parsers`, BENCHMARKS.md) and
is both the fastest and the strictest of the three (h11 takes a bare LF as a line end).

The handler receives a `Request` and returns a `Response` or an awaitable of one. Handlers must not raise;
if one does, the client gets a 500 and the error is logged.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import email.utils
import http
import itertools
import logging
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable

import httptools

from serving import chunksize
from serving.jsonio import encode_text, quote

log = logging.getLogger("dxpipe.serving")


@dataclasses.dataclass
class Request:
    """One parsed request.

    Attributes:
        method: The method, as sent (case-sensitive, like TF Serving's compare).
        path: The path of the request target, percent-encoding kept, query removed.
        headers: Header values by lower-case name (repeated headers joined with ", ").
        body: The body, already de-chunked and decompressed.
        received: `time.perf_counter()` when the request head was complete.
        peer: The client address, for logs.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received: float
    peer: str = ""


@dataclasses.dataclass
class Response:
    """A response; `content_type=None` sends no Content-Type header."""

    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], "Response | Awaitable[Response]"]


def json_error(status: int, message: str) -> Response:
    """A `{"error": message}` response (bytes of the message that were not UTF-8 are sent back unchanged)."""
    return Response(status, encode_text('{"error":' + quote(message) + "}"))


@dataclasses.dataclass(frozen=True)
class HttpLimits:
    """Protocol limits.

    Attributes:
        max_header_bytes: Request line plus headers.
        max_body_bytes: Body after de-chunking and decompression.
        read_timeout: Seconds to receive a whole request once it has started.
        idle_timeout: Seconds a keep-alive connection may sit idle.
        max_pipelined_bytes: Bodies of complete requests a connection may queue behind the one being
            answered before the server stops reading from it.
        max_inflight_body_bytes: Request bodies (as received, plus their decompressed size) the whole server
            holds at once, from the first body byte until the answer is sent. A request that would go over
            is answered 503 and its connection closed, so concurrent large or hostile bodies cannot take
            more memory than this (and what parsing them costs: see README, "Limits").
    """

    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 64 * 1024 * 1024
    read_timeout: float = 30.0
    idle_timeout: float = 60.0
    max_pipelined_bytes: int = 1024 * 1024
    max_inflight_body_bytes: int = 256 * 1024 * 1024


_REASONS = {status.value: status.phrase for status in http.HTTPStatus}
_REASONS[499] = "Client Closed Request"


def _reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


class _ProtocolError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _framing(headers: dict[str, str]) -> int:
    # Heads that reach the handler passed on_headers_complete: Transfer-Encoding is exactly "chunked" and
    # llhttp validated Content-Length.
    if "transfer-encoding" in headers:
        return chunksize.CHUNKED
    return int(headers.get("content-length") or 0)


def _path_of(target: str) -> str:
    # Request target: origin-form (/path?query), absolute-form (http://host/path), or '*'.
    if target.startswith(("http://", "https://")):
        slash = target.find("/", target.index("//") + 2)
        target = target[slash:] if slash >= 0 else "/"
    return target.split("?", 1)[0].split("#", 1)[0]


class HttpProtocol(asyncio.Protocol):
    """One connection: llhttp frames requests, which are answered one at a time and in order."""

    def __init__(self, server: HttpServer):
        self._server = server
        self._limits = server.limits
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: collections.deque[tuple[Request, bool, int]] = collections.deque()
        self._held = 0  # body bytes this connection counts in the server's in-flight total
        self._answering_bytes = 0  # of which the request being answered holds this many
        self._queued_bytes = 0
        self._busy = False  # a request is being handled; later pipelined ones wait in _queue
        self._closing = False
        self._write_paused = False
        self._read_paused = False
        self._failure: _ProtocolError | None = None  # answered once the requests before it are
        self._peer = ""
        self._idle_since = 0.0
        self._max_size_digits = chunksize.max_size_digits(self._limits.max_body_bytes)
        # Chunk-size lines are followed (serving/chunksize.py) only on reads where a chunked head ended or a
        # chunked body is open: `_watch` says so, `_chunked` holds the open body's follower, `_tail` the last
        # bytes of a head that spans reads.
        self._watch = False
        self._chunked: chunksize.ChunkedBody | None = None
        self._tail = b""
        self._reset_message()

    def _reset_message(self) -> None:
        self._in_message = False
        self._started = 0.0
        self._head_bytes = 0  # bytes received while the current head is incomplete
        self._target = bytearray()
        self._head_size = 0  # request target plus header lines, as parsed
        self._headers: dict[str, str] = {}
        self._host_count = 0
        self._te_count = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._received = 0.0
        self._http10 = False

    # -------------------------------------------------------------------------------------- asyncio API

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Registers the connection and starts its idle clock."""
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""
        self._server.connections.add(self)
        self._idle_since = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forgets the connection; an answer still being computed is dropped."""
        self._server.connections.discard(self)
        self._closing = True
        self._transport = None
        self._queue.clear()
        self._release(self._held)

    def pause_writing(self) -> None:
        """The client reads slowly: stop answering pipelined requests until it catches up."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """The client caught up: go on with queued requests."""
        self._write_paused = False
        self._next()

    def data_received(self, data: bytes) -> None:
        """Feeds llhttp; every complete request is queued and answered in order."""
        if self._closing or self._failure is not None:
            return
        if not self._received:
            # The head is incomplete: llhttp buffers a header line until it ends, so its size is bounded here.
            self._head_bytes += len(data)
        # Where the stream stood before this read, for the chunk-size check (nothing to note between requests).
        mark = self._in_message and (self._received, self._body_bytes, self._headers)
        queued = len(self._queue)
        try:
            self._parser.feed_data(data)
            if not self._received and self._head_bytes > self._limits.max_header_bytes:
                raise _ProtocolError(431, "Request header fields too large")
        except _ProtocolError as exc:
            self._failure = exc
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._failure = (
                cause if isinstance(cause, _ProtocolError) else _ProtocolError(400, f"Bad request: {exc}")
            )
        except httptools.HttpParserUpgrade:
            # llhttp stops at a protocol upgrade; this server speaks HTTP/1.1 only, so the request it
            # completed is answered as usual and the connection then closed (the upgrade is declined).
            if self._queue:
                self._queue[-1] = (self._queue[-1][0], False, self._queue[-1][2])
            self._failure = _ProtocolError(0, "")
        except httptools.HttpParserError as exc:
            self._failure = _ProtocolError(400, f"Malformed HTTP request: {exc}")
        if self._watch:
            self._check_chunk_sizes(data, mark, queued)
        if self._in_message and not self._received:
            self._tail = (self._tail + data)[-3:]
        if self._failure is not None or (
            self._queue and (self._queued_bytes > self._limits.max_pipelined_bytes or len(self._queue) > 64)
        ):
            self._pause_reading()
        self._next()

    def _check_chunk_sizes(self, data: bytes, mark: tuple | bool, queued: int) -> None:
        """Follows this read's chunk-size lines; a bad one fails the connection before its request is handled.

        Runs after llhttp accepted the read and before `_next` hands any request to the handler, so a request
        that llhttp completed behind a bad size line is taken back off the queue.
        """
        if self._failure is not None and len(self._queue) == queued:
            return  # llhttp refused the request this read was part of: its own error stands
        heads = [_framing(request.headers) for request, _, _ in itertools.islice(self._queue, queued, None)]
        if self._in_message and self._received and self._failure is None:
            heads.append(_framing(self._headers))  # the head of a request whose body is still arriving
        if not mark:
            start = chunksize.between()
        elif not mark[0]:
            start = chunksize.in_head(self._tail)
        else:
            # The read began in a body: that request's head ended in an earlier read.
            heads = heads[1:] if len(self._queue) > queued else []
            if self._chunked is not None:
                start = chunksize.in_chunked(self._chunked)
            else:
                start = chunksize.in_body(max(0, int(mark[2].get("content-length") or 0) - mark[1]))
        try:
            self._chunked = chunksize.follow(data, start, heads, self._max_size_digits)
        except chunksize.ChunkSizeError as exc:
            self._chunked = None
            keep = queued + exc.completed
            while len(self._queue) > keep:
                request, _, held = self._queue.pop()
                self._queued_bytes -= len(request.body)
                self._release(held)
            self._failure = _ProtocolError(400, exc.message)
        self._watch = self._chunked is not None

    def eof_received(self) -> bool | None:
        """Keeps a half-closed connection open while its requests are answered."""
        return bool(self._busy or self._queue)

    # -------------------------------------------------------------------------------------- llhttp callbacks

    def on_message_begin(self) -> None:
        """A request starts: its read deadline starts too."""
        self._in_message = True
        self._started = time.monotonic()

    def on_url(self, url: bytes) -> None:
        """Part of the request target."""
        self._target += url
        self._head_size += len(url)
        if self._head_size > self._limits.max_header_bytes:
            raise _ProtocolError(431, "Request header fields too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header line (or trailer line of a chunked body), already split and validated by llhttp."""
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self._limits.max_header_bytes:
            raise _ProtocolError(431, "Request header fields too large")
        if self._received:
            # A trailer: counted against the header limit, never merged into the headers (RFC 9110 6.5.1),
            # or a trailer could set what a proxy in front checked in the head (Authorization,
            # Content-Encoding).
            return
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key == "host":
            self._host_count += 1
        elif key == "transfer-encoding":
            self._te_count += 1
        headers = self._headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        """Checks what llhttp leaves to the server, before any of the body is read."""
        self._received = time.perf_counter()
        version = self._parser.get_http_version()
        self._http10 = version == "1.0"
        if version not in ("1.1", "1.0"):
            raise _ProtocolError(505, f"HTTP version {version} is not supported; use HTTP/1.1")
        headers = self._headers
        if version == "1.1" and self._host_count != 1:
            raise _ProtocolError(
                400,
                "HTTP/1.1 requests need exactly one Host header"
                + ("" if self._host_count else " (none sent)"),
            )
        if self._te_count:
            self._watch = True  # follow this body's chunk-size lines (`_check_chunk_sizes`)
            if self._http10:
                # RFC 9112 6.1: HTTP/1.0 has no Transfer-Encoding, so its framing is faulty; a proxy that frames
                # it by Content-Length or by the connection's end would read a different body.
                raise _ProtocolError(
                    400,
                    "Transfer-Encoding is not allowed in an HTTP/1.0 request: send Content-Length, or use HTTP/1.1",
                )
        if self._te_count and (
            self._te_count > 1 or headers["transfer-encoding"].strip().lower() != "chunked"
        ):
            raise _ProtocolError(
                400,
                f"Unsupported Transfer-Encoding {headers['transfer-encoding']!r}: only 'chunked' is accepted",
            )
        length = headers.get("content-length")
        if length is not None and int(length) > self._limits.max_body_bytes:
            raise _ProtocolError(
                413, f"Request body exceeds the limit of {self._limits.max_body_bytes} bytes"
            )
        if (
            (self._te_count or (length is not None and length != "0"))
            and headers.get("expect", "").lower() == "100-continue"
            and not self._busy
            and not self._queue
            and self._transport is not None
        ):
            # Only when nothing else is being answered on this connection: an interim response must not
            # land in the middle of another request's answer. A client that waits in vain sends anyway.
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        """A piece of the (de-chunked) body."""
        self._body_bytes += len(body)
        if self._body_bytes > self._limits.max_body_bytes:
            raise _ProtocolError(
                413, f"Request body exceeds the limit of {self._limits.max_body_bytes} bytes"
            )
        self._hold(len(body))
        self._body.append(bytes(body))

    def _hold(self, size: int) -> None:
        server = self._server
        if server.inflight_bytes + size > self._limits.max_inflight_body_bytes:
            raise _ProtocolError(
                503,
                "The server holds too many request bytes at once "
                f"(limit {self._limits.max_inflight_body_bytes}); retry later or send smaller requests",
            )
        server.inflight_bytes += size
        self._held += size

    def _release(self, size: int) -> None:
        self._held -= size
        self._server.inflight_bytes -= size

    def on_message_complete(self) -> None:
        """Queues the complete request."""
        headers = self._headers
        body = b"".join(self._body)
        encoding = headers.get("content-encoding", "").strip().lower()
        held = self._body_bytes
        if encoding in ("gzip", "x-gzip") and body:
            body = self._gunzip(body)
            self._hold(len(body))
            held += len(body)
        request = Request(
            self._parser.get_method().decode("ascii"),
            _path_of(self._target.decode("latin-1")),
            headers,
            body,
            self._received,
            self._peer,
        )
        keep_alive = self._parser.should_keep_alive()
        # An HTTP/1.0 client keeps the connection only if the answer says so (as libevent, under TF Serving,
        # does): 2 marks that case for `_send`.
        self._queue.append((request, 2 if keep_alive and self._http10 else keep_alive, held))
        self._queued_bytes += len(body)
        self._reset_message()

    def _gunzip(self, body: bytes) -> bytes:
        limit = self._limits.max_body_bytes
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error:
            raise _ProtocolError(
                400, "Content-Encoding is gzip but the body is not valid gzip data"
            ) from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise _ProtocolError(413, f"Decompressed request body exceeds the limit of {limit} bytes")
        return out

    # -------------------------------------------------------------------------------------- answering

    def _pause_reading(self) -> None:
        if not self._read_paused and self._transport is not None:
            self._read_paused = True
            self._transport.pause_reading()

    def _next(self) -> None:
        if self._busy or self._write_paused or self._closing:
            return
        if self._queue:
            request, keep_alive, held = self._queue.popleft()
            self._queued_bytes -= len(request.body)
            self._answering_bytes = held
            self._dispatch(request, keep_alive)
            return
        failure = self._failure
        if failure is not None:
            if failure.status:
                self._send(json_error(failure.status, failure.message), keep_alive=False)
            elif self._transport is not None:
                self._closing = True
                self._transport.close()
            return
        if self._read_paused and self._transport is not None:
            self._read_paused = False
            self._transport.resume_reading()

    def _dispatch(self, request: Request, keep_alive: bool) -> None:
        self._busy = True
        head_only = request.method == "HEAD"
        try:
            result = self._server.handler(request)
        except Exception:
            log.exception("request handler failed for %s %s", request.method, request.path)
            result = json_error(500, "Internal error")
        if isinstance(result, Response):
            self._send(result, keep_alive, head_only)
            return
        future = asyncio.ensure_future(result)
        future.add_done_callback(lambda f: self._send_future(f, keep_alive, head_only, request))

    def _send_future(
        self, future: asyncio.Future, keep_alive: bool, head_only: bool, request: Request
    ) -> None:
        try:
            response = future.result()
        except Exception:
            log.exception("request handler failed for %s %s", request.method, request.path)
            response = json_error(500, "Internal error")
        self._send(response, keep_alive, head_only)

    def _send(self, response: Response, keep_alive: bool | int, head_only: bool = False) -> None:
        transport = self._transport
        self._busy = False
        self._release(self._answering_bytes)
        self._answering_bytes = 0
        if transport is None or transport.is_closing():
            return
        if self._server.draining:
            keep_alive = False
        # Date: RFC 9110 6.6.1 (a server with a clock sends it; TF Serving's libevent does), from the sweeper's
        # clock, so no response formats a date.
        head = [f"HTTP/1.1 {response.status} {_reason(response.status)}\r\nDate: {self._server.date}\r\n"]
        if response.content_type is not None:
            head.append(f"Content-Type: {response.content_type}\r\n")
        for name, value in response.headers:
            head.append(f"{name}: {value}\r\n")
        head.append(f"Content-Length: {len(response.body)}\r\n")
        if not keep_alive:
            head.append("Connection: close\r\n")
        elif keep_alive == 2:
            head.append("Connection: keep-alive\r\n")
        head.append("\r\n")
        data = "".join(head).encode("latin-1")
        if head_only or not response.body:
            transport.write(data)
        elif len(response.body) < 65536:
            transport.write(data + response.body)
        else:
            transport.writelines((data, response.body))
        self._server.on_response()
        if not keep_alive:
            self._closing = True
            transport.close()
            return
        self._idle_since = time.monotonic()
        self._next()

    def expire(self, now: float) -> None:
        """Called by the server's sweeper: answers 408 to a request too slow to arrive; closes idle ones."""
        if self._transport is None or self._busy or self._queue or self._failure is not None:
            return
        if self._in_message:
            if now - self._started > self._limits.read_timeout:
                self._failure = _ProtocolError(408, "Timed out reading the request")
                self._next()
        elif now - self._idle_since > self._limits.idle_timeout:
            self._closing = True
            self._transport.close()


class HttpServer:
    """Owns the listening socket, the live connections and the timeout sweeper.

    Args:
        handler: Called with each request.
        limits: Protocol limits.
        on_response: Called after every response (cheap bookkeeping only).
        on_tick: Called every half second (periodic flushing).
    """

    def __init__(
        self,
        handler: Handler,
        limits: HttpLimits,
        on_response: Callable[[], None] | None = None,
        on_tick: Callable[[], None] | None = None,
    ):
        self.handler = handler
        self.limits = limits
        self.connections: set[HttpProtocol] = set()
        self.inflight_bytes = 0  # request-body bytes held by all connections (max_inflight_body_bytes)
        self.draining = False
        self.date = email.utils.formatdate(usegmt=True)  # refreshed every half second by the sweeper
        self.on_response = on_response or (lambda: None)
        self.on_tick = on_tick or (lambda: None)
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task | None = None

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """Starts listening (HTTPS with `ssl_context`); returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        # Not the date of construction: loading the models may have taken a while.
        self.date = email.utils.formatdate(usegmt=True)
        self._server = await loop.create_server(
            lambda: HttpProtocol(self), host, port, reuse_address=True, backlog=1024, ssl=ssl_context
        )
        self._sweeper = loop.create_task(self._sweep())
        return self._server.sockets[0].getsockname()[1]

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.date = email.utils.formatdate(usegmt=True)
            now = time.monotonic()
            for connection in list(self.connections):
                connection.expire(now)
            self.on_tick()

    async def stop(self, grace: float = 5.0) -> None:
        """Stops accepting, lets requests in progress finish (up to `grace` seconds), then closes all."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace
        while any(c._busy for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            if connection._transport is not None:
                connection._transport.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            await self._server.wait_closed()
