"""JSON from an untrusted body, with the work and memory it may cost bounded before parsing.

A webhook body is read whole and then parsed; parsing is where a small body
becomes a lot of memory (``[{},{},...]``: 3 bytes of JSON, about 72 bytes of
Python each) or deep recursion (``[[[[...]]]]``). So before anything is built,
one linear pass over the bytes, in C (``bytes.count``, ``re.subn`` with a
match limit, ``bytes.translate``, ``itertools.accumulate``), measures the
body's values and nesting; only a body within ``JsonLimits`` is parsed, by
orjson, which works on the bytes (no decoded copy) and checks UTF-8.

Values are counted as array elements plus object members plus one (``1 +
commas + opening brackets``, outside strings): a close upper bound of the
Python objects a parse creates, strings apart (their bytes are the body's).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import accumulate
from operator import sub
from typing import Any, NamedTuple

import orjson

from gatewatch.errors import InputError

# A JSON string: quote, then runs of plain bytes or escapes, then quote (unrolled: no backtracking).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
# Everything but brackets, deleted by bytes.translate; opening brackets become 2, closing 0, so
# that the running sum of (byte - 1) is the nesting depth at each bracket.
_NOT_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


class UnreadableJson(InputError):
    """A body that is not JSON gatewatch reads; ``reason`` says what is wrong with it."""


@dataclass(frozen=True)
class JsonLimits:
    """What one body may contain (``server.limits`` in the settings)."""

    max_depth: int = 100
    max_values: int = 100_000


class JsonShape(NamedTuple):
    """A body's measure: values (upper bound, see the module docstring) and nesting depth."""

    values: int
    depth: int


def measure(body: bytes, *, limits: JsonLimits) -> JsonShape:
    """The body's values and depth, or UnreadableJson when it exceeds ``limits``.

    Work is linear in the body's size and stops early on a body with more
    strings than the limits allow. Not a validator: what is not JSON is left
    to the parser.
    """
    # Fast bound first: brackets and commas inside strings only over-count.
    opens = body.count(b"{") + body.count(b"[")
    values = 1 + opens + body.count(b",")
    if opens <= limits.max_depth and values <= limits.max_values:
        return JsonShape(values=values, depth=opens)
    # Values are at least the strings that are no keys: quotes not escaped, halved, less the colons
    # (every key is followed by one). Refused here, the string-aware pass below never runs.
    escaped = body.count(b'\\"') if b"\\" in body else 0
    at_least = (body.count(b'"') - escaped) // 2 - body.count(b":")
    if at_least > limits.max_values:
        raise UnreadableJson(f"too many JSON values (at least {at_least:,}, at most {limits.max_values:,})")
    # Strings out (each at most one key and one value per member: twice the values), then count.
    skeleton, strings = _STRING.subn(b"", body, count=2 * limits.max_values + 1)
    if strings > 2 * limits.max_values:
        raise UnreadableJson(f"too many JSON values (more than {limits.max_values:,})")
    values = 1 + skeleton.count(b",") + skeleton.count(b"{") + skeleton.count(b"[")
    # Depth over at most 2 x max_values brackets (a body within the limits has no more): a
    # longer body is refused either way, as too deep if its first part already is.
    steps = skeleton.translate(_BRACKET_STEPS, _NOT_BRACKETS)[: 2 * limits.max_values]
    depth = max(map(sub, accumulate(steps), range(1, len(steps) + 1)), default=0)
    if depth > limits.max_depth:
        deeper = "at least " if values > limits.max_values else ""
        raise UnreadableJson(f"nested too deeply ({deeper}{depth:,} levels, at most {limits.max_depth})")
    if values > limits.max_values:
        raise UnreadableJson(f"too many JSON values ({values:,}, at most {limits.max_values:,})")
    return JsonShape(values=values, depth=depth)


def load(body: bytes, *, limits: JsonLimits) -> Any:
    """The JSON value of ``body`` after ``measure`` has admitted it; UnreadableJson says why not."""
    if not body.strip():
        raise UnreadableJson("body is empty")
    measure(body, limits=limits)
    return parse(body)


def parse(body: bytes) -> Any:
    """orjson's parse, its errors as UnreadableJson ("body is not UTF-8", "body is not JSON: ...")."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        detail = str(error)
        bad_byte = _first_bad_utf8(body) if "not valid UTF-8" in detail else None
        if bad_byte is not None:
            raise UnreadableJson(f"body is not UTF-8: {bad_byte}") from None
        if "depth limit" in detail:  # orjson's own limit (1024), below measure()'s only if configured so
            raise UnreadableJson("nested too deeply") from None
        raise UnreadableJson(f"body is not JSON: {detail}") from None


def _first_bad_utf8(body: bytes) -> str | None:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"invalid byte 0x{body[error.start]:02x} at offset {error.start}"
    return None


__all__ = ["JsonLimits", "JsonShape", "UnreadableJson", "load", "measure", "parse"]
