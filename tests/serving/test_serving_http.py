"""The HTTP/1.1 layer, over raw sockets: framing, keep-alive, pipelining, limits and timeouts."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import time

import pytest

BODY = b'{"instances": [2.0]}'
PATH = "/v1/models/half_plus_two/versions/1:predict"


def connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket, buffer: bytearray | None = None) -> tuple[int, dict, bytes, bytearray]:
    """Reads one response; returns (status, headers, body, leftover bytes)."""
    buf = buffer if buffer is not None else bytearray()
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {bytes(buf)!r}")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    rest = bytearray(rest)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, bytes(rest[:length]), rest[length:]


def request(method: str, path: str, body: bytes = b"", headers: str = "") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body
    )


def is_closed(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_keep_alive_and_pipelining(server):
    with connect(server) as sock:
        # Three requests in one write: three answers, in order.
        sock.sendall(
            request("POST", PATH, BODY)
            + request("GET", "/v1/models/half_plus_two")
            + request("POST", PATH, b'{"instances": [4.0]}')
        )
        leftover = bytearray()
        first = read_response(sock, leftover)
        second = read_response(sock, first[3])
        third = read_response(sock, second[3])
        assert (first[0], json.loads(first[2])) == (200, {"predictions": [3.0]})
        assert second[0] == 200 and "model_version_status" in json.loads(second[2])
        assert json.loads(third[2]) == {"predictions": [4.0]}
        assert "connection" not in {k for k, v in first[1].items() if v == "close"}


def test_http10_and_connection_close(server):
    with connect(server) as sock:
        sock.sendall(b"GET /v1/models/half_plus_two HTTP/1.0\r\n\r\n")
        status, headers, _, _ = read_response(sock)
        assert status == 200
        assert headers["connection"] == "close"
        assert is_closed(sock)
    with connect(server) as sock:
        sock.sendall(request("GET", "/v1/models/half_plus_two", headers="Connection: close\r\n"))
        assert read_response(sock)[0] == 200
        assert is_closed(sock)


def test_chunked_body_and_expect_continue(server):
    chunks = b"".join(
        f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (BODY[:5], BODY[5:12], BODY[12:])
    )
    with connect(server) as sock:
        sock.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        interim = sock.recv(100)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(chunks + b"0\r\nX-Trailer: 1\r\n\r\n")
        status, _, body, _ = read_response(sock, bytearray(interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]))
        assert (status, json.loads(body)) == (200, {"predictions": [3.0]})


def test_body_arriving_in_pieces(server):
    raw = request("POST", PATH, BODY)
    with connect(server) as sock:
        for i in range(0, len(raw), 7):
            sock.sendall(raw[i : i + 7])
            time.sleep(0.002)
        status, _, body, _ = read_response(sock)
        assert (status, json.loads(body)) == (200, {"predictions": [3.0]})


CHUNKED = b"POST /v1/models/x:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.fixture
def handled(server, monkeypatch):
    """Every request that reaches the REST handler, in order."""
    seen = []
    inner = server.server.http.handler

    def spy(request):
        seen.append(request)
        return inner(request)

    monkeypatch.setattr(server.server.http, "handler", spy)
    return seen


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        pytest.param(b"GARBAGE\r\n\r\n", 400, id="garbage"),
        pytest.param(b"GET /v1/models/x HTTP/2.0\r\nHost: x\r\n\r\n", 505, id="http2"),
        pytest.param(b"GET /v1/models/x HTTP/0.9\r\nHost: x\r\n\r\n", 505, id="http09"),
        pytest.param(b"GET /v1/models/x HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400, id="no-colon"),
        pytest.param(
            b"POST /v1/models/x:predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, id="cl-abc"
        ),
        pytest.param(
            b"POST /v1/models/x:predict HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
            400,
            id="cl-plus",
        ),
        pytest.param(
            b"POST /v1/models/x:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            id="cl-twice",
        ),
        pytest.param(
            b"POST /v1/models/x:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            id="cl-and-te",
        ),
        pytest.param(CHUNKED + b"zz\r\n", 400, id="chunk-size-not-hex"),
        # Python's int(x, 16) took these; a proxy in front reads them differently (request smuggling).
        pytest.param(CHUNKED + b"0x3\r\nabc\r\n0\r\n\r\n", 400, id="chunk-size-0x"),
        pytest.param(CHUNKED + b"+3\r\nabc\r\n0\r\n\r\n", 400, id="chunk-size-plus"),
        pytest.param(CHUNKED + b"1_1\r\nabcdefghijklmnopq\r\n0\r\n\r\n", 400, id="chunk-size-underscore"),
        pytest.param(CHUNKED + b"3\nabc\r\n0\r\n\r\n", 400, id="chunk-size-bare-lf"),
        pytest.param(
            b"POST /v1/models/x:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            400,
            id="te-twice",
        ),
        pytest.param(
            b"POST /v1/models/x:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            400,
            id="te-gzip-chunked",
        ),
        pytest.param(
            b"POST /v1/models/x:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            400,
            id="te-identity-chunked",
        ),
        pytest.param(
            b"POST /v1/models/x:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
            400,
            id="te-gzip-only",
        ),
        pytest.param(
            b"POST /v1/models/x:predict HTTP/1.1\r\nHost: x\r\nX-A: a\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            400,
            id="bare-lf-in-header",
        ),
        pytest.param(
            b"POST /v1/models/x:predict HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
            400,
            id="nul-in-header",
        ),
        pytest.param(
            b"GET /v1/models/x HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\n\r\n", 400, id="obs-fold"
        ),
        pytest.param(b"GET /v1/models/x HTTP/1.1\r\nHost : x\r\n\r\n", 400, id="space-before-colon"),
        pytest.param(b"POST /v1/models/x:predict HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 400, id="no-host"),
        pytest.param(b"GET /v1/models/x HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400, id="host-twice"),
        pytest.param(
            b"POST /v1/models/x:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
            413,
            id="cl-over-limit",
        ),
    ],
)
def test_framing_errors_are_json_close_and_never_reach_the_handler(server, handled, raw, status):
    # A well-formed request pipelined behind the bad one must not be answered either: after a framing
    # error nothing that follows on the connection can be trusted.
    with connect(server) as sock:
        sock.sendall(raw + request("GET", "/v1/models/half_plus_two"))
        got, headers, body, leftover = read_response(sock)
        assert got == status, body
        assert headers["content-type"] == "application/json"
        assert list(json.loads(body)) == ["error"]
        assert headers["connection"] == "close"
        assert not leftover
        assert is_closed(sock)
    assert handled == []


def test_leading_zeros_in_a_chunk_size_are_read_as_their_value(server, handled):
    # RFC 9112 allows any number of hex digits; llhttp reads the value and refuses one that overflows 64
    # bits, so the size is never truncated to a different one. 60 leading zeros frame as 0x...3 here.
    body = b'{"instances": [2.0]}'
    raw = CHUNKED.replace(b"/v1/models/x:predict", PATH.encode()) + b"0" * 60 + b"%x\r\n" % len(body)
    with connect(server) as sock:
        sock.sendall(raw + body + b"\r\n0\r\n\r\n")
        status, _, answer, _ = read_response(sock)
    assert (status, json.loads(answer)) == (200, {"predictions": [3.0]})
    overflow = CHUNKED + b"1" + b"0" * 16 + b"\r\n"
    with connect(server) as sock:
        sock.sendall(overflow)
        assert read_response(sock)[0] == 400
    assert len(handled) == 1


def test_requests_before_a_framing_error_are_answered_in_order(server, handled):
    with connect(server) as sock:
        sock.sendall(request("POST", PATH, BODY) + CHUNKED + b"0x3\r\nabc\r\n0\r\n\r\n")
        first = read_response(sock)
        second = read_response(sock, first[3])
        assert (first[0], json.loads(first[2])) == (200, {"predictions": [3.0]})
        assert second[0] == 400
        assert is_closed(sock)
    assert [r.path for r in handled] == [PATH]


def test_upgrade_is_declined_and_the_request_answered(server):
    with connect(server) as sock:
        sock.sendall(
            request("GET", "/v1/models/half_plus_two", headers="Connection: Upgrade\r\nUpgrade: h2c\r\n")
        )
        status, headers, _, _ = read_response(sock)
        assert status == 200
        assert headers["connection"] == "close"
        assert is_closed(sock)


def test_body_limits(server):
    limit = server.server.options.limits.max_body_bytes
    big = b'{"instances": [' + b"1.0," * (limit // 4) + b"1.0]}"
    with connect(server) as sock:
        sock.sendall(request("POST", PATH, big)[:2000])
        status, _, body, _ = read_response(sock)
        assert status == 413
        assert "limit" in json.loads(body)["error"]
    # A gzip bomb: small on the wire, over the limit once inflated.
    bomb = gzip.compress(b" " * (limit + 10))
    with connect(server) as sock:
        sock.sendall(request("POST", PATH, bomb, headers="Content-Encoding: gzip\r\n"))
        assert read_response(sock)[0] == 413
    # Chunked bodies are limited too: by what arrives (llhttp does not report a chunk's announced size).
    with connect(server) as sock:
        sock.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{limit + 1:x}\r\n".encode()
        )
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b" " * (limit + 1))  # the server may answer and close before reading it all
        assert read_response(sock)[0] == 413


def test_header_limit(server):
    with connect(server) as sock:
        sock.sendall(b"GET /v1/models/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
        assert read_response(sock)[0] == 431


def test_slow_request_times_out_and_idle_connection_closes(server):
    with connect(server) as sock:
        sock.sendall(request("POST", PATH, BODY)[:-5])  # never completed
        status, _, body, _ = read_response(sock)
        assert status == 408
        assert json.loads(body) == {"error": "Timed out reading the request"}
    with connect(server) as sock:
        sock.sendall(request("GET", "/v1/models/half_plus_two"))
        assert read_response(sock)[0] == 200
        started = time.monotonic()
        assert is_closed(sock)  # idle keep-alive connections are closed after the idle timeout
        assert time.monotonic() - started < 8


def test_absolute_form_target(server):
    with connect(server) as sock:
        sock.sendall(request("POST", f"http://127.0.0.1:{server.port}{PATH}", BODY))
        assert read_response(sock)[0] == 200


def test_half_closed_client_still_gets_its_answer(server):
    with connect(server) as sock:
        sock.sendall(request("POST", PATH, BODY, headers="Connection: close\r\n"))
        sock.shutdown(socket.SHUT_WR)
        status, _, body, _ = read_response(sock)
        assert (status, json.loads(body)) == (200, {"predictions": [3.0]})
