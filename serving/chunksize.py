"""Chunk-size lines read strictly, where llhttp is lenient: their number of digits and their length.

llhttp (`httptools`) reads a chunk size with any number of hex digits as long as the value fits in 64 bits,
so `000…0154` with 60 zeros frames a 340-byte chunk. RFC 9112 allows that, but a proxy in front may not read
it the same way: a parser with a fixed budget of digits may refuse the line, stop reading it early or
overflow. Where two parsers disagree on where a body ends, a request can be smuggled past the proxy. So this
server refuses a size line with more than `max_size_digits` hex digits (and one longer than `MAX_SIZE_LINE`).

httptools exposes neither the raw size line nor the offset where a body starts, so this module follows the
connection's byte stream itself. It runs only on reads in which a chunked request's head completed, or while
a chunked body is still arriving (`HttpProtocol` calls it after llhttp has accepted the bytes and before any
request completed in that read is handled); a connection that sends no chunked request never reaches it. It
relies on what llhttp has already enforced, never on its own reading of malformed input: a head ends at the
first empty line (llhttp refuses bare LF), empty lines between requests are skipped (llhttp does too), a
body with `Content-Length: n` is n bytes, and a chunked body is size lines, data plus CRLF, the last chunk,
trailer lines and an empty line. Everything else about a size line (hex only, extension syntax, CRLF) is
llhttp's check; this module only counts digits and finds line ends, so it can be split across reads at any
byte. (The caller does not follow bytes of a request llhttp refused in the same read.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_HEX_RUN = re.compile(rb"[0-9A-Fa-f]*")

CHUNKED = -1
"""The framing of a request with `Transfer-Encoding: chunked` (otherwise the framing is its Content-Length)."""

MAX_SIZE_LINE = 4096
"""The longest chunk-size line, extensions included (bytes before its LF). llhttp streams extensions without a
bound, so without this a client could send endless extension bytes that count against no limit."""

# Chunk-size parsing states.
_SIZE, _SIZE_LINE, _DATA, _TRAILER = range(4)


def max_size_digits(max_body_bytes: int) -> int:
    """The most hex digits a chunk-size line may carry, for a given body limit.

    A chunk is never larger than the body limit, so the limit's own digit count (7 for the default 64 MiB)
    fits every chunk this server would accept; a longer size is padding or is refused as too large anyway.
    The bound is at least 8, the width a writer that zero-pads a 32-bit size prints (`%08x`): every parser a
    proxy would use reads 8 digits to the same value, so a size this server accepts cannot be read two ways.

    Args:
        max_body_bytes: The body limit (`HttpLimits.max_body_bytes`).

    Returns:
        The digit bound: `max(8, digits of the limit in hex)`.
    """
    return max(8, len(f"{max_body_bytes:x}"))


def _too_many(limit: int) -> str:
    return (
        f"A chunk size has more than {limit} hex digits: send chunk sizes without leading zeros "
        "(a chunk cannot be larger than the body limit anyway)"
    )


def _too_long() -> str:
    return (
        f"A chunk-size line is longer than {MAX_SIZE_LINE} bytes (its extensions): send chunks without "
        "extensions, which this server ignores"
    )


class ChunkSizeError(ValueError):
    """A chunk-size line has too many digits or is too long.

    Attributes:
        message: What was wrong and how to send it instead.
        completed: Requests that ended, in the read being followed, before the offending one.
    """

    def __init__(self, message: str, completed: int = 0):
        super().__init__(message)
        self.message = message
        self.completed = completed


class ChunkedBody:
    """Follows one chunked body, from its first size line to the empty line after its trailers.

    Args:
        max_digits: The most hex digits a size line may carry (`max_size_digits`).
    """

    __slots__ = ("_digits", "_left", "_line", "_max_digits", "_size", "_state")

    def __init__(self, max_digits: int):
        self._max_digits = max_digits
        self._state = _SIZE
        self._digits = 0  # hex digits of the current size line so far
        self._size = 0
        self._left = 0  # chunk data plus its CRLF still to come
        self._line = 0  # bytes of the current size or trailer line so far

    def feed(self, data: bytes, pos: int = 0) -> int:
        """Follows the body through `data[pos:]`.

        Args:
            data: The bytes of one read.
            pos: Where the body (or the rest of it) starts in `data`.

        Returns:
            The offset in `data` just after the body's end, or -1 if the body goes on past `data`.

        Raises:
            ChunkSizeError: A size line has more than `max_digits` hex digits, or is longer than
                `MAX_SIZE_LINE`.
        """
        end = len(data)
        limit = self._max_digits
        while pos < end:
            state = self._state
            if state == _SIZE and not self._digits:
                newline = data.find(b"\n", pos)
                if newline >= 0:  # the common case: a whole size line in this read
                    if newline - pos > MAX_SIZE_LINE:
                        raise ChunkSizeError(_too_long())
                    # llhttp accepted the line: hex digits, then an extension (";...") or CRLF.
                    semicolon = data.find(b";", pos, newline)
                    digits = (semicolon if semicolon >= 0 else newline - 1) - pos
                    if digits > limit:
                        raise ChunkSizeError(_too_many(limit))
                    try:
                        size = int(data[pos : pos + digits], 16) if digits > 0 else 0
                    except ValueError:  # not accepted by llhttp after all: it is failing this request
                        raise ChunkSizeError("Malformed chunk size") from None
                    pos = newline + 1
                    if not size:
                        self._state = _TRAILER
                        self._line = 0
                    elif pos + size + 2 <= end:
                        pos += size + 2  # the chunk's data and CRLF are in this read too
                    else:
                        self._state = _DATA
                        self._left = size + 2
                    continue
            if state == _DATA:
                take = min(self._left, end - pos)
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _SIZE
                    self._digits = self._size = self._line = 0
            elif state == _SIZE:
                digits = _HEX_RUN.match(data, pos, min(end, pos + limit + 1 - self._digits)).end()
                if digits > pos:
                    self._line += digits - pos
                    self._digits += digits - pos
                    if self._digits > limit:
                        raise ChunkSizeError(_too_many(limit))
                    self._size = (self._size << (4 * (digits - pos))) + int(data[pos:digits], 16)
                    pos = digits
                if pos < end:
                    self._state = _SIZE_LINE  # an extension or the line's CRLF: llhttp checks them
            elif state == _SIZE_LINE:
                newline = data.find(b"\n", pos)
                self._line += (end if newline < 0 else newline) - pos
                if self._line > MAX_SIZE_LINE:
                    raise ChunkSizeError(_too_long())
                if newline < 0:
                    return -1
                pos = newline + 1
                self._line = 0
                if self._size:
                    self._state = _DATA
                    self._left = self._size + 2
                else:
                    self._state = _TRAILER
            else:  # _TRAILER: trailer lines until an empty one ("\r\n")
                newline = data.find(b"\n", pos)
                if newline < 0:
                    self._line += end - pos
                    return -1
                length = self._line + newline - pos
                pos = newline + 1
                if length <= 1:
                    return pos
                self._line = 0
        return -1


class Start:
    """Where a connection's stream stands when a read begins.

    Build one with `between()`, `in_head(tail)`, `in_body(left)` or `in_chunked(body)`.
    """

    __slots__ = ("body", "left", "tail")

    def __init__(self, tail: bytes | None = None, left: int = 0, body: ChunkedBody | None = None):
        self.tail = tail  # in a head: its last (up to) 3 bytes so far; None otherwise
        self.left = left  # in a Content-Length body: bytes still to come
        self.body = body  # in a chunked body: its follower


def between() -> Start:
    """Between requests (possibly after some of the empty lines allowed before one)."""
    return Start()


def in_head(tail: bytes) -> Start:
    """In a request head whose last bytes so far are `tail` (up to 3 are needed)."""
    return Start(tail=tail[-3:])


def in_body(left: int) -> Start:
    """In a Content-Length body with `left` bytes still to come."""
    return Start(left=left)


def in_chunked(body: ChunkedBody) -> Start:
    """In a chunked body, followed so far by `body`."""
    return Start(body=body)


def follow(data: bytes, start: Start, heads: Sequence[int], max_digits: int) -> ChunkedBody | None:
    """Follows one read of a connection's stream that llhttp has accepted, checking its chunk-size lines.

    Args:
        data: The bytes of the read.
        start: Where the stream stood when the read began.
        heads: The framing of each request head that ended in this read, in order: `CHUNKED` or the
            Content-Length (0 without a body). llhttp parsed them; only their boundaries are found here.
        max_digits: The most hex digits a size line may carry.

    Returns:
        The follower of a chunked body still open at the end of the read (pass it to the next read through
        `in_chunked`), or None.

    Raises:
        ChunkSizeError: A size line has too many digits; `completed` counts the requests that ended in this
            read before the offending one (they are safe to answer; the rest of the stream is not).
    """
    completed = 0
    pos = 0
    body = start.body
    left = start.left
    index = 0
    end = len(data)
    try:
        if start.tail is not None:
            if not heads:
                return None
            # The head may end across the read boundary: look at its last bytes joined to the first ones.
            joined = start.tail + data[:3]
            found = joined.find(b"\r\n\r\n")
            if found >= 0:
                pos = found + 4 - len(start.tail)
            else:
                found = data.find(b"\r\n\r\n")
                if found < 0:
                    return None
                pos = found + 4
            index = 1
            framing = heads[0]
            if framing == CHUNKED:
                body = ChunkedBody(max_digits)
            elif framing > 0:
                left = framing
            else:
                completed += 1
        while True:
            if body is not None:
                pos = body.feed(data, pos)
                if pos < 0:
                    return body
                body = None
                completed += 1
            elif left:
                take = min(left, end - pos)
                pos += take
                left -= take
                if left:
                    return None
                completed += 1
            if CHUNKED not in heads[index:]:
                return None  # no chunked body ahead in this read: nothing more to check
            while pos < end and data[pos] in (13, 10):
                pos += 1  # empty lines before a request, which llhttp skips
            found = data.find(b"\r\n\r\n", pos)
            if found < 0:
                return None
            pos = found + 4
            framing = heads[index]
            index += 1
            if framing == CHUNKED:
                body = ChunkedBody(max_digits)
            elif framing > 0:
                left = framing
            else:
                completed += 1
    except ChunkSizeError as exc:
        exc.completed = completed
        raise
