"""Turns pydantic's validation errors on the config into one `ConfigError` a user can act on.

pydantic checks the types, the keys, the choices and the ranges that the config model declares; this
module only words its findings the way every dxpipe error is worded: the field (as a dotted path), the
value received, and the fix, with a "did you mean" hint for a misspelt key or choice.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from schemas.errors import ConfigError


def did_you_mean(value: object, choices: Iterable[object]) -> str:
    """Returns ` (did you mean 'x'?)` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unwrap(tp: Any) -> Any:
    """Strips `Annotated[...]` (the strictness and range metadata) down to the declared type."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp):
            # An optional section (`X | None`) lists the keys of X.
            rest = [arg for arg in typing.get_args(tp) if arg is not type(None)]
            if len(rest) != 1:
                return tp
            tp = rest[0]
        else:
            return tp


def type_at(root: type, loc: tuple) -> Any:
    """The declared type at `loc` inside the dataclass `root` (None where the path leaves the model)."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp, include_extras=True)
            if part not in hints:
                return None
            tp = hints[part]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        elif origin is tuple:
            tp = typing.get_args(tp)[0]
        else:
            return None
    return _unwrap(tp)


def _expected(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) or origin is dict or tp is dict:
        return "a mapping"
    if origin is tuple or tp is tuple:
        return "a list"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(list(value) if isinstance(value, tuple) else value)


def _message(error: Mapping[str, Any], root: type) -> str:
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    path = _path(loc)
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        parent = type_at(root, loc[:-1])
        fields = [f.name for f in dataclasses.fields(parent)] if dataclasses.is_dataclass(parent) else []
        return f"unknown key {path!r}{did_you_mean(loc[-1], fields)}; valid keys here: {', '.join(sorted(fields))}."
    if kind in ("missing", "missing_argument"):
        return f"{path!r} is required."
    if kind == "literal_error":
        choices = list(typing.get_args(type_at(root, loc)))
        return f"{path} is {value!r}; use one of {choices}{did_you_mean(value, choices)}."
    if kind in ("value_error", "assertion_error"):
        reason = str(error.get("ctx", {}).get("error", error["msg"]))
        if not path:
            return reason
        if isinstance(value, Mapping) or type(value).__name__ == "ArgsKwargs":
            return f"{path}: {reason}"
        return f"{path} is {_show(value)}; {reason}."
    where = path or "the config"
    return f"{where} is {value!r} ({type(value).__name__}); expected {_expected(type_at(root, loc))}."


def config_error(err: ValidationError, root: type) -> ConfigError:
    """The `ConfigError` for pydantic's findings on a mapping validated as `root`.

    The error with the shortest path comes first: a typo in a top-level section is also reported in each
    dataset that inherits it, and the user should see the section where it was written.
    """
    errors = sorted(err.errors(), key=lambda e: len(e["loc"]))

    def finding(error: Mapping[str, Any]) -> tuple:
        # A dataset inherits the top-level sections: its copy of a top-level finding is the same finding.
        loc = tuple(error["loc"])
        return (loc[2:] if loc[:1] == ("datasets",) else loc, error["type"])

    text = _message(errors[0], root)
    others = len({finding(e) for e in errors} - {finding(errors[0])})
    if others:
        text += f" ({others} more problem(s) in this config; they are reported once this one is fixed.)"
    return ConfigError(text)
