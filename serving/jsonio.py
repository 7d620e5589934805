"""JSON in and out, with TF Serving's (rapidjson's) rules.

Reading: TF Serving parses request bodies with rapidjson in iterative mode with `kParseNanAndInfFlag` and
`kParseStopWhenDoneFlag`, so `NaN`/`Infinity` are accepted and bytes after the root value are ignored. Nesting
is limited to `MAX_DEPTH` levels here (rapidjson's iterative mode has no limit, so a body of `[`s costs
memory in proportion to its size): deep enough for any tensor TensorFlow can hold (rank 254, inside
`instances` inside the root object), and checked before the containers are built, so a hostile body costs
no more than itself. orjson agrees with rapidjson on everything else that matters here (integers above int64 become
doubles, up to uint64 they stay integers, lone surrogates and overflowing doubles are errors), so it is the fast
path; only a body orjson refuses goes to `_FallbackParser`, a small iterative parser that follows rapidjson's
grammar and error messages.

Writing: numbers are formatted the way `json_tensor.cc`'s `WriteDecimal` does (six significant digits, nine or
seventeen when six do not round-trip, always a decimal point or an exponent, bare `NaN`/`Infinity`), and the
`JSON Value: ...` fragments of error messages reproduce rapidjson's `PrettyWriter` output, truncated at 256
bytes like TF Serving's `JsonValueToDebugString`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import re
import struct

import numpy as np
import orjson

from serving.errors import invalid_argument

_MAX_DEBUG_BYTES = 256
MAX_DEPTH = 1024  # orjson's own limit; the fallback parser applies the same one
_INT64_MIN = -(1 << 63)
_UINT64_MAX = (1 << 64) - 1


# --------------------------------------------------------------------------------------------------- reading


def parse_request_body(body: bytes) -> dict:
    """Parses a request body into a dict, with TF Serving's errors.

    Args:
        body: The raw (already decompressed) request body.

    Returns:
        The root JSON object.

    Raises:
        ApiError: INVALID_ARGUMENT `JSON Parse error: ...` or `JSON Value: ... Is not object`.
    """
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "recursion limit" in str(exc):
            raise _too_deep(exc.pos) from None
        doc = _parse_refused_by_orjson(body, exc)
    if type(doc) is not dict:
        raise invalid_argument(f"JSON Value: {debug_string(doc)} Is not object")
    return doc


def _parse_refused_by_orjson(body: bytes, exc: orjson.JSONDecodeError) -> object:
    # Trailing bytes after a complete document are the common case (rapidjson stops at the root's end):
    # orjson reports where the document ended, so the prefix can still take the fast path. A wrong cut
    # can only make the prefix invalid (any proper prefix of an object is), never silently different.
    if "after document" in str(exc) and 0 < exc.pos < len(body):
        try:
            return orjson.loads(body[: exc.pos])
        except orjson.JSONDecodeError:
            pass
    # NaN and Infinity (say, missing values in a large batch) are next: the standard library's C scanner
    # reads them, stops after the root value like rapidjson, and is far faster than the fallback parser.
    # Integers beyond uint64 become doubles, as rapidjson makes them.
    try:
        text = body.decode("utf-8")
        if "\\u" in text and _LONE_SURROGATE.search(text):
            raise ValueError("rapidjson refuses lone surrogates")
        start = len(text) - len(text.lstrip(" \t\n\r"))
        return _STDLIB_DECODER.raw_decode(text, start)[0]
    except (UnicodeDecodeError, ValueError, RecursionError):
        pass
    # Everything else (deep nesting, bytes that are not UTF-8, errors to report in rapidjson's words).
    # The parser builds a tree (no cycles), so the cyclic collector has nothing to find in it; left on, it
    # would run over every object of the process again and again while a deep document is built.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _FallbackParser(body).parse()
    finally:
        if collecting:
            gc.enable()


def _too_deep(offset: int) -> Exception:
    return invalid_argument(
        f"JSON Parse error: nesting deeper than {MAX_DEPTH} levels at offset: {offset} (no tensor needs more; "
        "send each tensor as nested lists of its own rank)"
    )


def _stdlib_int(text: str) -> int | float:
    value = int(text)
    return value if _INT64_MIN <= value <= _UINT64_MAX else float(text)


def _stdlib_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("Number too big to be stored in double.")  # the fallback parser reports it
    return value


_STDLIB_DECODER = json.JSONDecoder(parse_int=_stdlib_int, parse_float=_stdlib_float)
_LONE_SURROGATE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])|(?<![0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


_WS = frozenset(b" \t\n\r")
_OPEN_RUN = re.compile(rb"(?:\[[ \t\n\r]*){1,%d}" % (MAX_DEPTH + 1))
_STR_PLAIN = re.compile(rb'[^"\\\x00-\x1f]*')
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(\.[0-9]*)?([eE][+-]?[0-9]*)?")
_ESCAPES = {
    ord('"'): b'"',
    ord("\\"): b"\\",
    ord("/"): b"/",
    ord("b"): b"\b",
    ord("f"): b"\f",
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
}
_HEX = frozenset(b"0123456789abcdefABCDEF")


class _FallbackParser:
    """An iterative JSON parser with rapidjson's grammar extensions and its error messages and offsets."""

    def __init__(self, data: bytes):
        self.s = data
        self.n = len(data)

    def fail(self, message: str, offset: int) -> None:
        raise invalid_argument(f"JSON Parse error: {message} at offset: {offset}")

    def ws(self, i: int) -> int:
        s, n = self.s, self.n
        while i < n and s[i] in _WS:
            i += 1
        return i

    def parse(self) -> object:
        s, n = self.s, self.n
        i = self.ws(0)
        if i >= n:
            self.fail("The document is empty.", i)
        # Each frame is [container, pending key]. The depth is checked before a container is pushed, so a
        # body of `[`s fails after MAX_DEPTH small lists, not after one list per byte.
        stack: list[list] = []
        while True:
            c = s[i] if i < n else 0
            if c == 0x7B:  # {
                i = self.ws(i + 1)
                if i < n and s[i] == 0x7D:
                    value: object = {}
                    i += 1
                else:
                    if len(stack) >= MAX_DEPTH:
                        raise _too_deep(i)
                    key, i = self.member_name(i)
                    stack.append([{}, key])
                    continue
            elif c == 0x5B:  # [ - runs of them (deeply nested arrays) are taken in one step
                m = _OPEN_RUN.match(s, i)
                depth = m.group().count(b"[")
                i = m.end()
                empty_innermost = i < n and s[i] == 0x5D
                if len(stack) + depth > MAX_DEPTH:
                    raise _too_deep(m.start())
                for _ in range(depth - 1 if empty_innermost else depth):
                    stack.append([[], None])
                if not empty_innermost:
                    continue
                value = []
                i += 1
            elif c == 0x22:
                value, i = self.string(i)
            elif c in (0x74, 0x66, 0x6E):  # t f n
                value, i = self.literal(i)
            else:
                value, i = self.number(i)
            while True:  # attach the finished value and close every container it completes
                if not stack:
                    return value  # kParseStopWhenDoneFlag: whatever follows the root is ignored
                frame = stack[-1]
                container = frame[0]
                i = self.ws(i)
                if type(container) is list:
                    container.append(value)
                    if i < n and s[i] == 0x2C:
                        i = self.ws(i + 1)
                        break
                    if i < n and s[i] == 0x5D:
                        i += 1
                        value = container
                        stack.pop()
                        # Close a run of arrays without going around the outer loop for each.
                        while stack and i < n and s[i] == 0x5D and type(stack[-1][0]) is list:
                            stack[-1][0].append(value)
                            value = stack.pop()[0]
                            i += 1
                        continue
                    self.fail("Missing a comma or ']' after an array element.", i)
                else:
                    # rapidjson keeps duplicate members and FindMember returns the first one.
                    container.setdefault(frame[1], value)
                    if i < n and s[i] == 0x2C:
                        frame[1], i = self.member_name(self.ws(i + 1))
                        break
                    if i < n and s[i] == 0x7D:
                        i += 1
                        value = container
                        stack.pop()
                        continue
                    self.fail("Missing a comma or '}' after an object member.", i)

    def member_name(self, i: int) -> tuple[str, int]:
        if i >= self.n or self.s[i] != 0x22:
            self.fail("Missing a name for object member.", i)
        key, i = self.string(i)
        i = self.ws(i)
        if i >= self.n or self.s[i] != 0x3A:
            self.fail("Missing a colon after a name of object member.", i)
        return key, self.ws(i + 1)

    def literal(self, i: int) -> tuple[object, int]:
        s = self.s
        for word, value in ((b"true", True), (b"false", False), (b"null", None)):
            if s[i] == word[0]:
                j = 1
                while j < len(word) and i + j < self.n and s[i + j] == word[j]:
                    j += 1
                if j < len(word):
                    self.fail("Invalid value.", i + j)
                return value, i + len(word)
        raise AssertionError("unreachable")

    def number(self, i: int) -> tuple[object, int]:
        s, n = self.s, self.n
        start = i
        negative = i < n and s[i] == 0x2D
        j = i + 1 if negative else i
        if j < n and s[j] in (0x4E, 0x49):  # NaN, Inf, Infinity (kParseNanAndInfFlag)
            if s.startswith(b"NaN", j):
                return math.nan, j + 3
            if s.startswith(b"Inf", j):
                j += 3
                if j < n and s[j] == 0x69:  # 'i' must continue as "inity"
                    if not s.startswith(b"inity", j):
                        self.fail("Invalid value.", j)
                    j += 5
                return (-math.inf if negative else math.inf), j
            self.fail("Invalid value.", j)
        m = _NUMBER.match(s, i)
        if m is None:
            self.fail("Invalid value.", j)
        frac, exp = m.group(1), m.group(2)
        if frac is not None and len(frac) == 1:
            self.fail("Miss fraction part in number.", m.start(1) + 1)
        if exp is not None and not exp[-1:].isdigit():
            self.fail("Miss exponent in number.", m.end())
        text = m.group()
        end = m.end()
        if frac is None and exp is None:
            as_int = int(text)
            if _INT64_MIN <= as_int <= _UINT64_MAX:
                return as_int, end
            # rapidjson switches to double for integers it cannot hold.
        as_float = float(text)
        if math.isinf(as_float):
            self.fail("Number too big to be stored in double.", start)
        return as_float, end

    def string(self, i: int) -> tuple[str, int]:
        s, n = self.s, self.n
        parts: list[bytes] = []
        j = i + 1
        while True:
            m = _STR_PLAIN.match(s, j)
            parts.append(m.group())
            j = m.end()
            if j >= n:
                self.fail("Missing a closing quotation mark in string.", j)
            c = s[j]
            if c == 0x22:
                break
            if c == 0x5C:
                e = s[j + 1] if j + 1 < n else 0
                if e in _ESCAPES:
                    parts.append(_ESCAPES[e])
                    j += 2
                elif e == 0x75:  # \uXXXX
                    code, j = self.unicode_escape(j)
                    parts.append(chr(code).encode("utf-8"))
                else:
                    self.fail("Invalid escape character in string.", j)
            elif c == 0:
                self.fail("Missing a closing quotation mark in string.", j)
            else:
                self.fail("Invalid encoding in string.", j)
        # Invalid UTF-8 passes through (rapidjson does not validate encoding by default); surrogateescape
        # keeps those bytes so that a string tensor receives them unchanged.
        return b"".join(parts).decode("utf-8", "surrogateescape"), j + 1

    def hex4(self, j: int) -> int:
        s = self.s
        digits = s[j : j + 4]
        if len(digits) < 4 or not all(d in _HEX for d in digits):
            self.fail("Incorrect hex digit after \\u escape in string.", j)
        return int(digits, 16)

    def unicode_escape(self, j: int) -> tuple[int, int]:
        code = self.hex4(j + 2)
        if 0xD800 <= code <= 0xDBFF:
            if not self.s.startswith(b"\\u", j + 6):
                self.fail("The surrogate pair in string is invalid.", j + 6)
            low = self.hex4(j + 8)
            if not 0xDC00 <= low <= 0xDFFF:
                self.fail("The surrogate pair in string is invalid.", j + 8)
            return 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00), j + 12
        if 0xDC00 <= code <= 0xDFFF:
            self.fail("The surrogate pair in string is invalid.", j + 2)
        return code, j + 6


def json_type_name(value: object) -> str:
    """Rapidjson's type name of a parsed value, as TF Serving prints it in type errors."""
    t = type(value)
    if t is str:
        return "String"
    if t is bool:
        return "True" if value else "False"
    if t is int or t is float:
        return "Number"
    if t is dict:
        return "Object"
    if t is list:
        return "Array"
    return "Null"


# --------------------------------------------------------------------------------------------------- writing

# rapidjson's writer escapes '"', '\\' and control characters (uppercase hex), and nothing else.
_ESCAPE_TABLE = {i: f"\\u{i:04X}" for i in range(0x20)}
_ESCAPE_TABLE.update({0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"})
_ESCAPE_TABLE.update({ord('"'): '\\"', ord("\\"): "\\\\"})


def quote(text: str) -> str:
    """Returns `text` as a JSON string literal (raw non-ASCII, escaped control characters)."""
    return '"' + text.translate(_ESCAPE_TABLE) + '"'


def quote_bytes(raw: bytes) -> str:
    """Returns bytes as a JSON string literal; bytes that are not UTF-8 pass through like rapidjson's."""
    return quote(raw.decode("utf-8", "surrogateescape"))


def encode_text(text: str) -> bytes:
    """Encodes a response text, letting surrogate-escaped (non-UTF-8) bytes through unchanged.

    Any other lone surrogate (which only a JSON escape of one can produce) is written as its three-byte form
    rather than failing the response.
    """
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _rapidjson_double(value: float) -> str:
    """Formats a double like rapidjson's `Writer::Double` (Grisu shortest digits + `Prettify`)."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    text = repr(abs(value))
    mantissa, _, exp_text = text.partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    k = (int(exp_text) if exp_text else 0) - len(frac_part)
    stripped = digits.rstrip("0")
    k += len(digits) - len(stripped)
    digits = stripped
    length = len(digits)
    kk = length + k
    if k >= 0 and kk <= 21:
        body = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        body = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        body = "0." + "0" * (-kk) + digits
    elif kk < -324:
        body = "0.0"
    elif length == 1:
        body = digits + "e" + str(kk - 1)
    else:
        body = digits[0] + "." + digits[1:] + "e" + str(kk - 1)
    return sign + body


class _DebugLimit(Exception):
    pass


def debug_string(value: object, limit: int = _MAX_DEBUG_BYTES) -> str:
    """Renders a value like TF Serving's `JsonValueToDebugString`, for error messages.

    That is rapidjson's `PrettyWriter` output (single-line arrays, 4-space indent), stopped once `limit` bytes
    are written, so the text can end mid-document.
    """
    out: list[str] = []
    size = 0

    def event(text: str) -> None:
        nonlocal size
        if size >= limit:
            raise _DebugLimit
        out.append(text)
        size += len(text)

    # levels: per open container [is_array, value_count]
    levels: list[list] = []

    def prefix() -> str:
        if not levels:
            return ""
        level = levels[-1]
        is_array, count = level
        level[1] = count + 1
        if is_array:
            return ", " if count else ""
        if count % 2:
            return ": "
        return (",\n" if count else "\n") + "    " * len(levels)

    def scalar(v: object) -> str | None:
        t = type(v)
        if t is str:
            return quote(v)
        if t is bool:
            return "true" if v else "false"
        if v is None:
            return "null"
        if t is int:
            return str(v)
        if math.isfinite(v):
            return _rapidjson_double(v)
        return None  # rapidjson's writer refuses NaN/Inf without kWriteNanAndInfFlag: writing stops.

    def walk(v: object) -> None:
        t = type(v)
        if t is dict:
            event(prefix() + "{")
            levels.append([False, 0])
            for key, item in v.items():
                event(prefix() + quote(key))
                walk(item)
            empty = levels.pop()[1] == 0
            event("}" if empty else "\n" + "    " * len(levels) + "}")
        elif t is list:
            event(prefix() + "[")
            levels.append([True, 0])
            for item in v:
                walk(item)
            levels.pop()
            event("]")
        else:
            text = scalar(v)
            if text is None:
                raise _DebugLimit
            event(prefix() + text)

    with contextlib.suppress(_DebugLimit, RecursionError):
        walk(value)
    return "".join(out)


_F32 = struct.Struct("<f")


def _roundtrips_f32(text: str, value: float) -> bool:
    return _F32.unpack(_F32.pack(float(text)))[0] == value


def decimal_tokens(flat: np.ndarray) -> list[str]:
    """Formats a 1-D float32/float64 array like TF Serving's `WriteDecimal`, one token per value."""
    values = flat.tolist()
    is_f32 = flat.dtype == np.float32
    full = "%.9g" if is_f32 else "%.17g"
    if len(values) <= 16:
        return [_decimal_token(v, is_f32, full) for v in values]
    first = values[0]
    if first == values[-1] and (flat == first).all():
        # One value repeated (a model's constant output, such as its decision threshold): format it once.
        return [_decimal_token(first, is_f32, full)] * len(values)
    # One C-level formatting call for the whole array, then split.
    tokens = ("%g\x00" * len(values) % tuple(values)).split("\x00")[:-1]
    finite = np.isfinite(flat)
    # Round-trip check for all at once: parse the six-digit forms back and compare.
    parsed = np.array(list(map(float, tokens)), dtype=np.float64)
    if is_f32:
        with np.errstate(over="ignore"):
            parsed = parsed.astype(np.float32)
    for i in np.flatnonzero((parsed != flat) & finite).tolist():
        tokens[i] = full % values[i]
    tokens = [t if ("." in t or "e" in t) else t + ".0" for t in tokens]
    if not finite.all():
        for i in np.flatnonzero(~finite).tolist():
            v = values[i]
            tokens[i] = "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    return tokens


def _decimal_token(v: float, is_f32: bool, full: str) -> str:
    if v != v:
        return "NaN"
    if v in (math.inf, -math.inf):
        return "Infinity" if v > 0 else "-Infinity"
    token = f"{v:g}"
    if not (_roundtrips_f32(token, v) if is_f32 else float(token) == v):
        token = full % v
    return token if ("." in token or "e" in token) else token + ".0"


def decimal_token(value: float, is_f32: bool = True) -> str:
    """Formats one float like `WriteDecimal` (used for classify scores and regress values)."""
    return decimal_tokens(np.array([value], dtype=np.float32 if is_f32 else np.float64))[0]
