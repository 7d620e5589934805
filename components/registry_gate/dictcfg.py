"""Small helpers to read a YAML mapping into frozen dataclasses with errors that name the key and the fix.

Public: the gate policy (`core.GatePolicy.from_dict`) and the MLflow settings
(`pipelines.mlflow_store.TrackingConfig.from_dict`) read their sections with it. Kept free of project
imports other than the exception root (`schemas.errors`) so the gate core stays a leaf module.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from schemas.errors import ConfigError


def check_keys(d: Any, allowed: Iterable[str], path: str) -> Mapping[str, Any]:
    """Returns `d` after checking it is a mapping whose keys are all in `allowed`.

    Raises:
        ConfigError: naming the first unknown key, the closest allowed key and the allowed set.
    """
    allowed = list(allowed)
    if not isinstance(d, Mapping):
        raise ConfigError(
            f"{path}: expected a mapping of {', '.join(allowed)}, got {type(d).__name__} {d!r}."
        )
    for key in d:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(
                f"{path}: unknown key '{key}'; {hint}allowed keys are: {', '.join(allowed)}. Rename or "
                f"remove '{key}'."
            )
    return d


def as_float(value: Any, path: str) -> float:
    """Returns `value` as a finite float, refusing booleans, strings and NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{path}: expected a number, got {type(value).__name__} {value!r}. Write e.g. 0.9.")
    if not math.isfinite(value):
        raise ConfigError(f"{path}: expected a finite number, got {value!r}.")
    return float(value)


def as_int(value: Any, path: str, minimum: int = 0) -> int:
    """Returns `value` as an int >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{path}: expected an integer, got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise ConfigError(f"{path}: must be >= {minimum}, got {value}.")
    return value


def as_bool(value: Any, path: str) -> bool:
    """Returns `value` if it is a YAML boolean."""
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: expected true or false, got {type(value).__name__} {value!r}.")
    return value


def as_str(value: Any, path: str, *, allow_none: bool = False) -> str | None:
    """Returns `value` if it is a non-empty string (or None when allowed)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: expected a non-empty string, got {type(value).__name__} {value!r}.")
    return value


def as_list(value: Any, path: str, item_shape: str) -> list:
    """Returns `value` if it is a YAML list; `item_shape` names what each entry holds, for the message."""
    if not isinstance(value, list):
        raise ConfigError(f"{path}: expected a list of {{{item_shape}}}, got {value!r}.")
    return value
