"""Chunk-size lines: the follower in serving/chunksize.py, alone and inside the HTTP protocol, split anywhere.

Over real HTTP the same cases are in test_serving_http.py. Here the protocol is driven without a socket (a
recording transport stands in for asyncio's) so that hypothesis can try thousands of ways to split a
pipelined stream into reads.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving import chunksize
from serving.httpserver import HttpLimits, HttpProtocol, HttpServer, Request, Response

BOUND = 8
HEAD = b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def encode(
    parts: list[bytes], pads: list[int] | None = None, ext: bytes = b"", trailers: bytes = b""
) -> bytes:
    pads = pads or [0] * (len(parts) + 1)
    lines = [b"%0*x%s\r\n%s\r\n" % (pads[i], len(part), ext, part) for i, part in enumerate(parts)]
    return b"".join(lines) + b"%0*x%s\r\n" % (pads[-1], 0, ext) + trailers + b"\r\n"


def feed_in_pieces(body: chunksize.ChunkedBody, data: bytes, cuts: list[int]) -> int:
    """Feeds `data` cut at `cuts`; returns the body's end as an offset in `data`, or -1."""
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        piece = data[start:cut]
        end = body.feed(piece)
        if end >= 0:
            return start + end
        start = cut
    return -1


@pytest.mark.parametrize(
    ("limit", "digits"),
    [(64 * 1024 * 1024, 8), (8 * 1024 * 1024, 8), (1, 8), (2**32 - 1, 8), (2**32, 9), (2**40, 11)],
)
def test_the_digit_bound_follows_the_body_limit(limit, digits):
    assert chunksize.max_size_digits(limit) == digits


def test_a_body_ends_where_it_ends_at_every_split_point():
    body = encode(
        [b"hello", b"x" * 300, b"\r\n0\r\n\r\n"], pads=[8, 3, 0, 1], ext=b';a="b;c"', trailers=b"T: 1\r\n"
    )
    stream = body + b"GET / HTTP/1.1\r\n\r\n"
    assert chunksize.ChunkedBody(BOUND).feed(stream) == len(body)
    for cut in range(len(stream) + 1):
        assert feed_in_pieces(chunksize.ChunkedBody(BOUND), stream, [cut]) == len(body), cut
    assert feed_in_pieces(chunksize.ChunkedBody(BOUND), stream, list(range(len(stream)))) == len(body)


@pytest.mark.parametrize(
    ("line", "refused"),
    [
        (b"00000003", False),
        (b"000000003", True),
        (b"0" * 60 + b"3", True),
        (b"FFFFFFFF", False),
        (b"1" + b"0" * 8, True),
        (b"00000000", False),  # the last chunk, padded to the bound
        (b"000000000", True),
    ],
)
def test_size_lines_over_the_bound_are_refused_however_they_are_split(line, refused):
    data = line + b";e=1\r\n" + (b"abc\r\n0\r\n\r\n" if line.strip(b"0") else b"\r\n")
    for cut in range(len(data) + 1):
        body = chunksize.ChunkedBody(BOUND)
        if refused:
            with pytest.raises(chunksize.ChunkSizeError, match="more than 8 hex digits"):
                feed_in_pieces(body, data, [cut])
        else:
            expected = len(data) if not line.startswith(b"F") else -1  # 4 GiB of data would follow
            assert feed_in_pieces(body, data, [cut]) == expected


def test_follow_counts_the_requests_before_a_bad_one():
    plain = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with_body = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n0\r\n\r\n0"  # looks chunked; is not
    good = HEAD + encode([b"abc"], pads=[8, 8])
    bad = HEAD + encode([b"abc"], pads=[9, 1])
    data = b"\r\n" + plain + with_body + good + bad + plain
    heads = [0, 6, chunksize.CHUNKED, chunksize.CHUNKED, 0]
    with pytest.raises(chunksize.ChunkSizeError) as refused:
        chunksize.follow(data, chunksize.between(), heads, BOUND)
    assert refused.value.completed == 3
    # Without the bad one the read is followed to its end, and a body still open is handed on.
    assert (
        chunksize.follow(plain + good + plain, chunksize.between(), [0, chunksize.CHUNKED, 0], BOUND) is None
    )
    open_body = chunksize.follow(
        plain + HEAD + b"3\r\nab", chunksize.between(), [0, chunksize.CHUNKED], BOUND
    )
    assert open_body is not None
    with pytest.raises(chunksize.ChunkSizeError) as refused:
        chunksize.follow(b"c\r\n" + b"0" * 9 + b"\r\n\r\n", chunksize.in_chunked(open_body), [], BOUND)
    assert refused.value.completed == 0


@pytest.mark.parametrize("cut", range(1, len(HEAD)))
def test_follow_finds_a_head_that_ends_in_a_later_read(cut):
    # The read began inside the head: its end ("\r\n\r\n") may straddle the two reads.
    rest = HEAD[cut:] + b"0" * 9 + b"3\r\nabc\r\n0\r\n\r\n"
    with pytest.raises(chunksize.ChunkSizeError):
        chunksize.follow(rest, chunksize.in_head(HEAD[:cut]), [chunksize.CHUNKED], BOUND)
    ok = HEAD[cut:] + b"3\r\nabc\r\n0\r\n\r\n"
    assert chunksize.follow(ok, chunksize.in_head(HEAD[:cut]), [chunksize.CHUNKED], BOUND) is None


def test_follow_skips_the_rest_of_a_content_length_body():
    data = (
        b"0\r\n\r\n\r\n" + HEAD + b"0" * 9 + b"\r\n\r\n"
    )  # a body that looks like chunks, then the real one
    with pytest.raises(chunksize.ChunkSizeError) as refused:
        chunksize.follow(data, chunksize.in_body(7), [chunksize.CHUNKED], BOUND)
    assert refused.value.completed == 1


# --------------------------------------------------------------------------------------------- the protocol


class RecordingTransport:
    """Stands in for an asyncio transport: records what the server writes and whether it closed."""

    def __init__(self):
        self.out = bytearray()
        self.closed = False

    def get_extra_info(self, name):
        return ("127.0.0.1", 1) if name == "peername" else None

    def write(self, data):
        self.out += data

    def writelines(self, parts):
        for part in parts:
            self.out += part

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def statuses_of(out: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", out)]  # bodies here are "{}"


def protocol_run(reads: list[bytes]) -> tuple[list[bytes], list[int], bool]:
    handled: list[Request] = []

    def handler(request: Request) -> Response:
        handled.append(request)
        return Response(200, b"{}")

    protocol = HttpProtocol(HttpServer(handler, HttpLimits(max_body_bytes=8 * 1024 * 1024)))
    transport = RecordingTransport()
    protocol.connection_made(transport)
    for data in reads:
        protocol.data_received(data)
    return [r.body for r in handled], statuses_of(bytes(transport.out)), transport.closed


chunk_data = st.binary(min_size=1, max_size=40)
message = st.one_of(
    st.tuples(st.just("plain"), st.binary(max_size=30)),
    st.tuples(
        st.just("chunked"),
        st.lists(chunk_data, max_size=4),
        st.lists(st.integers(0, 11), min_size=5, max_size=5),
        st.sampled_from([b"", b";a=b", b';q="x;\\"y"']),
        st.sampled_from([b"", b"T: 1\r\n", b"T: 1\r\nU: \r\n"]),
    ),
)


def build(msg) -> tuple[bytes, bytes, bool]:
    """Returns (wire bytes, the body the handler must see, whether a size line is over the bound)."""
    if msg[0] == "plain":
        body = msg[1]
        return b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body, body, False
    _, parts, pads, ext, trailers = msg
    pads = pads[: len(parts) + 1]
    wire = HEAD + encode(parts, pads, ext, trailers)
    sizes = [len(p) for p in parts] + [0]
    over = any(max(pad, len(f"{size:x}")) > BOUND for pad, size in zip(pads, sizes, strict=True))
    return wire, b"".join(parts), over


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(message, min_size=1, max_size=4), st.data())
def test_the_protocol_refuses_exactly_from_the_first_bad_size_line_however_the_stream_is_split(
    messages, data
):
    built = [build(m) for m in messages]
    stream = b"".join(wire for wire, _, _ in built)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    if data.draw(st.booleans()):
        cuts = list(range(len(stream)))  # byte by byte
    reads = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    bodies, statuses, closed = protocol_run([r for r in reads if r])
    first_bad = next((i for i, (_, _, over) in enumerate(built) if over), None)
    good = built if first_bad is None else built[:first_bad]
    assert bodies == [body for _, body, _ in good]
    if first_bad is None:
        assert statuses == [200] * len(built) and not closed
    else:
        assert statuses == [200] * first_bad + [400] and closed


def plain(body: bytes) -> bytes:
    return b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body


STREAM = [
    (HEAD + encode([b"first", b"0\r\n\r\n"], ext=b";x=1", trailers=b"T: 1\r\n"), b"first0\r\n\r\n"),
    (plain(b"3\r\nabc\r\n0\r\n\r\n"), b"3\r\nabc\r\n0\r\n\r\n"),  # a body that looks like chunks
    (HEAD + encode([b"second"], pads=[8, 8]), b"second"),
    (plain(b""), b""),
]
BAD = HEAD + encode([b"third"], pads=[12, 1])


@pytest.mark.parametrize("bad", [False, True])
def test_the_protocol_follows_a_stream_cut_once_anywhere(bad):
    # Every single cut: the second read begins in a head, a body, a size line, data, a trailer or between.
    stream = b"".join(wire for wire, _ in STREAM) + (BAD + plain(b"after") if bad else b"")
    expected = [body for _, body in STREAM]
    for cut in range(1, len(stream)):
        bodies, statuses, closed = protocol_run([stream[:cut], stream[cut:]])
        assert bodies == expected, cut
        assert statuses == [200] * len(expected) + ([400] if bad else []), cut
        assert closed == bad


@pytest.mark.parametrize(
    ("length", "refused"), [(chunksize.MAX_SIZE_LINE, False), (chunksize.MAX_SIZE_LINE + 1, True)]
)
def test_size_lines_longer_than_the_bound_are_refused_however_they_are_split(length, refused):
    # "3;x=" plus padding so that the bytes before the LF number `length` (CR included).
    line = b"3;x=" + b"y" * (length - 5) + b"\r"
    assert len(line) == length
    data = line + b"\nabc\r\n0\r\n\r\n"
    for cuts in (
        [],
        [2],
        [len(line) - 1],
        [len(line) + 1],
        list(range(0, len(data), 97)),
        list(range(len(data))),
    ):
        body = chunksize.ChunkedBody(BOUND)
        if refused:
            with pytest.raises(chunksize.ChunkSizeError, match="longer than 4096 bytes"):
                feed_in_pieces(body, data, cuts)
        else:
            assert feed_in_pieces(body, data, cuts) == len(data), cuts
