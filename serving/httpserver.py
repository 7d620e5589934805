"""A small HTTP/1.1 server on asyncio's Protocol API: the thinnest path from socket to handler.

It does what TF Serving's REST port needs and no more, but all of that properly: keep-alive and pipelining
(answers in order), `Content-Length` and chunked bodies, `Expect: 100-continue`, gzip request bodies
(decompressed with a size cap, so a zip bomb is refused), `HEAD`, limits on header and body size, a deadline
for receiving a request and an idle timeout, and back-pressure in both directions. Protocol errors are answered
with a JSON `{"error": ...}` and the connection is closed.

The handler receives a `Request` and returns a `Response` or an awaitable of one. Handlers must not raise;
if one does, the client gets a 500 and the error is logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http
import logging
import re
import time
import zlib
from collections.abc import Awaitable, Callable

from serving.jsonio import encode_text, quote

log = logging.getLogger("dxpipe.serving")

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CRLF2 = b"\r\n\r\n"


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
    """

    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 64 * 1024 * 1024
    read_timeout: float = 30.0
    idle_timeout: float = 60.0


_REASONS = {status.value: status.phrase for status in http.HTTPStatus}
_REASONS[499] = "Client Closed Request"


def _reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


class _ProtocolError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class HttpProtocol(asyncio.Protocol):
    """One connection."""

    def __init__(self, server: HttpServer):
        self._server = server
        self._limits = server.limits
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._busy = False  # a request is being handled; later pipelined ones wait in _buf
        self._closing = False
        self._write_paused = False
        self._read_paused = False
        self._head: tuple | None = None  # parsed head of a request whose body is still arriving
        self._chunk_state: _Chunked | None = None
        self.deadline = 0.0
        self._peer = ""
        self._keep_alive = True

    # -------------------------------------------------------------------------------------- asyncio API

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Registers the connection and starts its idle clock."""
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""
        self._server.connections.add(self)
        self.deadline = time.monotonic() + self._limits.idle_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        """Forgets the connection; an answer still being computed is dropped."""
        self._server.connections.discard(self)
        self._closing = True
        self._transport = None

    def pause_writing(self) -> None:
        """The client reads slowly: stop answering pipelined requests until it catches up."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """The client caught up: go on with buffered requests."""
        self._write_paused = False
        if not self._busy and self._buf:
            self._process()

    def data_received(self, data: bytes) -> None:
        """Buffers bytes and handles every complete request, one at a time and in order."""
        if self._closing:
            return
        if not self._buf and self._head is None:
            self.deadline = time.monotonic() + self._limits.read_timeout
        self._buf += data
        if self._busy or self._write_paused:
            if len(self._buf) > self._limits.max_header_bytes + 1024 * 1024 and not self._read_paused:
                self._read_paused = True
                self._transport.pause_reading()
            return
        self._process()

    def eof_received(self) -> bool | None:
        """Keeps a half-closed connection open while its request is answered."""
        return bool(self._busy)

    # -------------------------------------------------------------------------------------- parsing

    def _process(self) -> None:
        try:
            while not self._busy and not self._closing and not self._write_paused:
                request = self._next_request()
                if request is None:
                    return
                self._dispatch(request)
        except _ProtocolError as exc:
            self._fail(exc.status, exc.message)

    def _next_request(self) -> Request | None:
        if self._head is None:
            end = self._buf.find(_CRLF2)
            if end < 0:
                if len(self._buf) > self._limits.max_header_bytes:
                    raise _ProtocolError(431, "Request header fields too large")
                return None
            if end > self._limits.max_header_bytes:
                raise _ProtocolError(431, "Request header fields too large")
            head = bytes(self._buf[:end])
            del self._buf[: end + 4]
            self._head = self._parse_head(head)
        method, path, headers, keep_alive, length, chunked, received = self._head
        if chunked:
            if self._chunk_state is None:
                self._chunk_state = _Chunked(self._limits.max_body_bytes)
            body = self._chunk_state.feed(self._buf)
            if body is None:
                return None
            self._chunk_state = None
        else:
            if len(self._buf) < length:
                return None
            body = bytes(self._buf[:length])
            del self._buf[:length]
        self._head = None
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip") and body:
            body = self._gunzip(body)
        self._keep_alive = keep_alive
        return Request(method, path, headers, body, received, self._peer)

    def _parse_head(self, head: bytes) -> tuple:
        lines = head.split(b"\r\n")
        while lines and not lines[0]:  # tolerate blank lines before a request (RFC 9112 2.2)
            lines.pop(0)
        if not lines:
            raise _ProtocolError(400, "Malformed HTTP request line")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
            raise _ProtocolError(400, "Malformed HTTP request line")
        method_b, target, version = parts
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise _ProtocolError(505 if version.startswith(b"HTTP/") else 400, "Unsupported HTTP version")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not _TOKEN.fullmatch(name):
                raise _ProtocolError(400, "Malformed HTTP header line")
            key = name.decode("ascii").lower()
            text = value.strip(b" \t").decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        # Request target: origin-form (/path?query), absolute-form (http://host/path), or '*'.
        target_s = target.decode("latin-1")
        if target_s.startswith(("http://", "https://")):
            slash = target_s.find("/", target_s.index("//") + 2)
            target_s = target_s[slash:] if slash >= 0 else "/"
        path = target_s.split("?", 1)[0].split("#", 1)[0]
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection if version == b"HTTP/1.1" else "keep-alive" in connection
        chunked = False
        length = 0
        if "transfer-encoding" in headers:
            codings = [c.strip().lower() for c in headers["transfer-encoding"].split(",")]
            if codings[-1] != "chunked" or "content-length" in headers:
                raise _ProtocolError(400, "Unsupported Transfer-Encoding")
            chunked = True
        elif "content-length" in headers:
            values = {v.strip() for v in headers["content-length"].split(",")}
            if len(values) != 1 or not next(iter(values)).isdigit() or not next(iter(values)).isascii():
                raise _ProtocolError(400, "Invalid Content-Length")
            length = int(next(iter(values)))
            if length > self._limits.max_body_bytes:
                raise _ProtocolError(
                    413, f"Request body exceeds the limit of {self._limits.max_body_bytes} bytes"
                )
        if (chunked or length) and headers.get("expect", "").lower() == "100-continue":
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return (method_b.decode("ascii"), path, headers, keep_alive, length, chunked, time.perf_counter())

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

    def _dispatch(self, request: Request) -> None:
        self._busy = True
        self.deadline = float("inf")  # the handler has its own deadline
        keep_alive = self._keep_alive
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

    def _send(self, response: Response, keep_alive: bool, head_only: bool = False) -> None:
        transport = self._transport
        self._busy = False
        if transport is None or transport.is_closing():
            return
        keep_alive = keep_alive and not self._server.draining
        head = [f"HTTP/1.1 {response.status} {_reason(response.status)}\r\n"]
        if response.content_type is not None:
            head.append(f"Content-Type: {response.content_type}\r\n")
        for name, value in response.headers:
            head.append(f"{name}: {value}\r\n")
        head.append(f"Content-Length: {len(response.body)}\r\n")
        if not keep_alive:
            head.append("Connection: close\r\n")
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
        self.deadline = time.monotonic() + (
            self._limits.read_timeout if self._buf else self._limits.idle_timeout
        )
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        if self._buf:
            self._process()

    def _fail(self, status: int, message: str) -> None:
        self._head = None
        self._chunk_state = None
        self._buf.clear()
        self._busy = False
        self._send(json_error(status, message), keep_alive=False)

    def expire(self, now: float) -> None:
        """Called by the server's sweeper: answers 408 to a request that is too slow to arrive."""
        if now < self.deadline or self._transport is None:
            return
        if self._buf or self._head is not None:
            self._fail(408, "Timed out reading the request")
        else:
            self._closing = True
            self._transport.close()


class _Chunked:
    """Incremental decoder of a chunked body."""

    def __init__(self, limit: int):
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.state = "size"
        self.remaining = 0

    def feed(self, buf: bytearray) -> bytes | None:
        while True:
            if self.state == "size":
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 4096:
                        raise _ProtocolError(400, "Malformed chunk size line")
                    return None
                line = bytes(buf[:end]).split(b";", 1)[0].strip()
                del buf[: end + 2]
                try:
                    self.remaining = int(line, 16)
                except ValueError:
                    raise _ProtocolError(400, "Malformed chunk size line") from None
                if self.remaining < 0:
                    raise _ProtocolError(400, "Malformed chunk size line")
                self.size += self.remaining
                if self.size > self.limit:
                    raise _ProtocolError(413, f"Request body exceeds the limit of {self.limit} bytes")
                self.state = "data" if self.remaining else "trailer"
            elif self.state == "data":
                if len(buf) < self.remaining + 2:
                    return None
                if buf[self.remaining : self.remaining + 2] != b"\r\n":
                    raise _ProtocolError(400, "Malformed chunk")
                self.parts.append(bytes(buf[: self.remaining]))
                del buf[: self.remaining + 2]
                self.state = "size"
            else:  # trailer section, ends with an empty line
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 4096:
                        raise _ProtocolError(400, "Malformed chunk trailer")
                    return None
                del buf[: end + 2]
                if end == 0:
                    return b"".join(self.parts)


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
        self.draining = False
        self.on_response = on_response or (lambda: None)
        self.on_tick = on_tick or (lambda: None)
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task | None = None

    async def start(self, host: str, port: int) -> int:
        """Starts listening; returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpProtocol(self), host, port, reuse_address=True, backlog=1024
        )
        self._sweeper = loop.create_task(self._sweep())
        return self._server.sockets[0].getsockname()[1]

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(0.5)
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
