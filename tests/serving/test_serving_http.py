"""The HTTP/1.1 layer, over raw sockets: framing, keep-alive, pipelining, limits and timeouts."""

from __future__ import annotations

import contextlib
import datetime
import email.utils
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


def test_http10_keep_alive_is_confirmed_in_the_answer(server):
    # An HTTP/1.0 client reuses the connection only if the answer says "Connection: keep-alive".
    with connect(server) as sock:
        leftover = bytearray()
        for _ in range(2):
            sock.sendall(b"GET /v1/models/half_plus_two HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, _, leftover = read_response(sock, leftover)
            assert status == 200
            assert headers["connection"] == "keep-alive"


def test_every_answer_carries_a_date(server):
    # RFC 9110 6.6.1: an origin server with a clock sends Date (TF Serving's libevent does), errors included.
    for raw in (request("GET", "/v1/models/half_plus_two"), request("GET", "/v1/nope"), b"GARBAGE\r\n\r\n"):
        with connect(server) as sock:
            sock.sendall(raw)
            _, headers, _, _ = read_response(sock)
        sent = email.utils.parsedate_to_datetime(headers["date"])
        assert sent.tzinfo is not None
        assert abs((datetime.datetime.now(datetime.timezone.utc) - sent).total_seconds()) < 5


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
            b"POST /v1/models/x:predict HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            400,
            id="te-on-http10",
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


CHUNKED_PREDICT = CHUNKED.replace(b"/v1/models/x:predict", PATH.encode())


def chunked(*parts: bytes, pad: int = 0, ext: bytes = b"", trailers: bytes = b"") -> bytes:
    """A chunked predict request: each part as a chunk (sizes zero-padded to `pad` digits), then trailers."""
    body = b"".join(b"%0*x%s\r\n%s\r\n" % (pad, len(part), ext, part) for part in parts)
    return CHUNKED_PREDICT + body + b"0" + ext + b"\r\n" + trailers + b"\r\n"


@pytest.fixture(params=["as-sent", "byte-by-byte"])
def reads(request, monkeypatch):
    """Runs a test twice: reads as the kernel delivers them, then every read fed to the server one byte at a
    time (a deterministic hook: every boundary of a size line, head or trailer falls between two reads)."""
    if request.param == "byte-by-byte":
        from serving.httpserver import HttpProtocol

        whole = HttpProtocol.data_received

        def one_byte_at_a_time(self, data):
            for i in range(len(data)):
                whole(self, data[i : i + 1])

        monkeypatch.setattr(HttpProtocol, "data_received", one_byte_at_a_time)
    return request.param


def test_chunk_sizes_with_leading_zeros_are_refused_before_the_handler(server, handled, reads):
    # llhttp reads 60 zeros then 14 as 0x14; a proxy in front may not (request smuggling). More hex digits
    # than the bound (8 here: serving/chunksize.py says why) is a 400 and a closed connection, and nothing
    # on the connection reaches the handler, not even the well-formed request pipelined behind it.
    for raw in (
        chunked(BODY, pad=62),
        chunked(BODY[:4], BODY[4:], pad=9),
        chunked(BODY, pad=2).replace(b"0\r\n\r\n", b"0" * 40 + b"\r\n\r\n"),  # the last chunk too
    ):
        with connect(server) as sock:
            sock.sendall(raw + request("GET", "/v1/models/half_plus_two"))
            status, headers, body, leftover = read_response(sock)
            assert status == 400, body
            assert "more than 8 hex digits" in json.loads(body)["error"]
            assert headers["connection"] == "close"
            assert not leftover
            assert is_closed(sock)
    with connect(server) as sock:  # a size over 64 bits: llhttp's own refusal
        sock.sendall(
            CHUNKED_PREDICT + b"1" + b"0" * 16 + b"\r\n" + request("GET", "/v1/models/half_plus_two")
        )
        assert read_response(sock)[0] == 400
        assert is_closed(sock)
    assert handled == []


def test_endless_chunk_extensions_are_refused(server, handled):
    # llhttp streams extensions without a bound; a size line over 4096 bytes is refused (serving/chunksize.py).
    with connect(server) as sock:
        sock.sendall(chunked(BODY, ext=b";x=" + b"y" * 5000) + request("GET", "/v1/models/half_plus_two"))
        status, headers, body, _ = read_response(sock)
        assert status == 400, body
        assert "longer than 4096 bytes" in json.loads(body)["error"]
        assert is_closed(sock)
    with connect(server) as sock:  # a long but bounded extension is fine
        sock.sendall(chunked(BODY, ext=b";x=" + b"y" * 4000))
        assert read_response(sock)[0] == 200
    assert len(handled) == 1


def test_many_leading_zeros_written_one_byte_at_a_time_are_refused(server, handled):
    raw = chunked(BODY, pad=200) + request("GET", "/v1/models/half_plus_two")
    with connect(server) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for i in range(len(raw)):  # one TCP segment per byte (TCP_NODELAY), as a slow client sends
                sock.send(raw[i : i + 1])
        status, _, body, _ = read_response(sock)
        assert status == 400, body
        assert is_closed(sock)
    assert handled == []


def test_chunk_sizes_up_to_the_bound_with_extensions_and_trailers_are_answered(server, handled, reads):
    # Zero padding up to 8 digits (what a writer of 32-bit sizes prints), upper-case hex, extensions with
    # quoted values, and trailers: all valid, all answered.
    body = b'{"instances": [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]}'
    raw = chunked(
        body[:3],
        body[3:30],
        body[30:],
        pad=8,
        ext=b';name=value;q="a;b\\"c"',
        trailers=b"X-Checksum: abc\r\nContent-Encoding: gzip\r\nAuthorization: Bearer smuggled\r\n",
    )
    assert b"0000001b" in raw
    with connect(server) as sock:
        sock.sendall(raw.replace(b"0000001b", b"0000001B"))
        status, _, answer, _ = read_response(sock)
    assert (status, json.loads(answer)) == (200, {"predictions": [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]})
    # Trailers are read and dropped: never merged into the headers a proxy in front checked.
    assert len(handled) == 1
    assert {"x-checksum", "content-encoding", "authorization"}.isdisjoint(handled[0].headers)


def test_pipelined_chunked_and_plain_requests_are_answered_in_order(server, handled, reads):
    raws = [
        chunked(b'{"instances": [2.0]}', ext=b";a=1", trailers=b"X-T: 1\r\n"),
        request("POST", PATH, b'{"instances": [4.0]}'),
        chunked(b'{"instances": ', b"[6.0]}", pad=4),
        request("GET", "/v1/models/half_plus_two"),
        chunked(b'{"instances": [8.0]}'),
    ]
    with connect(server) as sock:
        sock.sendall(b"\r\n".join(raws))  # empty lines between requests are allowed (RFC 9112 2.2)
        leftover = bytearray()
        answers = []
        for _ in raws:
            status, _, body, leftover = read_response(sock, leftover)
            answers.append((status, json.loads(body)))
    assert [status for status, _ in answers] == [200] * 5
    assert [answers[i][1] for i in (0, 1, 2, 4)] == [{"predictions": [x]} for x in (3.0, 4.0, 5.0, 6.0)]
    assert [r.method for r in handled] == ["POST", "POST", "POST", "GET", "POST"]


def test_a_bad_chunk_size_behind_good_requests_fails_only_what_follows(server, handled, reads):
    # The requests before it in the same write are answered; the bad one and everything after it are not.
    raw = (
        request("POST", PATH, BODY)
        + chunked(b'{"instances": [4.0]}')
        + chunked(BODY, pad=60)
        + request("POST", PATH, BODY)
    )
    with connect(server) as sock:
        sock.sendall(raw)
        first = read_response(sock)
        second = read_response(sock, first[3])
        third = read_response(sock, second[3])
        assert [first[0], second[0], third[0]] == [200, 200, 400]
        assert json.loads(second[2]) == {"predictions": [4.0]}
        assert is_closed(sock)
    assert len(handled) == 2


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
