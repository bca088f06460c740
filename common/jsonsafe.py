"""JSON from outside (API bodies, partner webhooks), refused early when it is hostile.

The standard parser recurses once per nesting level (a deep body is a RecursionError, not a
ValueError), turns `1e999` into infinity, accepts `NaN`, and keeps NUL characters that
PostgreSQL text and jsonb cannot store. `json_loads_bounded` raises ValueError for each of
them, so every caller's existing "not JSON" path answers 400.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 32
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]")


def json_loads_bounded(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """json.loads, but ValueError for nesting deeper than max_depth, NaN/Infinity, numbers
    too large for a float, and NUL characters in any string or key."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data  # UnicodeDecodeError is a ValueError
    depth = json_depth(text)
    if depth > max_depth:
        raise ValueError(f"JSON is nested {depth} levels deep; at most {max_depth} are accepted")
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError as error:  # unreachable below max_depth; kept as a backstop
        raise ValueError("JSON is nested too deeply") from error
    if _has_nul(value):
        raise ValueError("JSON strings must not contain NUL characters")
    return value


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects, brackets inside strings not counted."""
    brackets = _NOT_A_BRACKET.sub("", _STRING.sub('""', text))
    depth = deepest = 0
    for bracket in brackets:
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError("a JSON number is too large")
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False
