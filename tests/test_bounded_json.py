"""Bodies measured before they are parsed: depth and values bounded, errors that say what is wrong."""
from __future__ import annotations

import json
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.bounded_json import JsonLimits, UnreadableJson, load, measure

LIMITS = JsonLimits(max_depth=20, max_values=1_000)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5),
    max_leaves=40,
)


def elements(value: object) -> int:
    """Array elements and object members, all levels: the Python objects a parse builds, besides the top."""
    if isinstance(value, list):
        return len(value) + sum(elements(item) for item in value)
    if isinstance(value, dict):
        return len(value) + sum(elements(item) for item in value.values())
    return 0


def exact_depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((exact_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((exact_depth(item) for item in value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from([None, 2]))
def test_measure_bounds_what_a_parse_builds(value, indent):
    body = json.dumps(value, indent=indent).encode()
    roomy = JsonLimits(max_depth=500, max_values=10**6)
    shape = measure(body, limits=roomy)
    # An upper bound, never under: brackets and commas inside strings may only add.
    assert shape.values >= 1 + elements(value)
    assert shape.depth >= exact_depth(value)
    assert load(body, limits=roomy) == value


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_the_string_aware_pass_is_exact_about_depth(value):
    # A string of JSON punctuation defeats the quick bound: the string-aware pass decides.
    document = {"s": '[{,\\"' * 30, "v": value}
    shape = measure(json.dumps(document).encode(), limits=JsonLimits(max_depth=30, max_values=1_000))
    assert shape.depth == exact_depth(document)
    assert shape.values >= 1 + elements(document)


def test_too_deep_is_refused_before_anything_is_built():
    with pytest.raises(UnreadableJson, match=r"nested too deeply \(21 levels, at most 20\)"):
        load(b"[" * 21 + b"]" * 21, limits=LIMITS)
    assert load(b"[" * 20 + b"]" * 20, limits=LIMITS) == eval("[" * 20 + "]" * 20)


def test_brackets_inside_strings_are_not_nesting():
    body = json.dumps({"regex": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "quoted": "\\\"[[[[[[[[[[[[[[[[[[[[[[[[["}).encode()
    assert measure(body, limits=LIMITS).depth == 1


def test_too_many_values_is_refused_before_anything_is_built():
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableJson, match=r"too many JSON values"):
            load(b"[" + b"{}," * 2_000_000 + b"{}]", limits=LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Parsed, this would be 2 million dicts (about 140 MB); measured, a copy of the bytes at most.
    assert peak < 3 * 6_000_003


def test_many_strings_are_refused_without_looking_at_each():
    with pytest.raises(UnreadableJson, match=r"too many JSON values \(at least 100,001, at most 1,000\)"):
        measure(b"[" + b'"a",' * 100_000 + b'"a"]', limits=LIMITS)
    # Colons inside strings defeat that count; the string-aware pass stops after 2 x max_values strings.
    with pytest.raises(UnreadableJson, match=r"too many JSON values \(more than 1,000\)"):
        measure(b"[" + b'"a:b",' * 100_000 + b'"a"]', limits=LIMITS)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "body is empty"),
        (b"  \n ", "body is empty"),
        (b"{not json", "body is not JSON: unexpected character"),
        (b'{"a": 1} trailing', "body is not JSON"),
        (b'{"a": "\xff"}', "body is not UTF-8: invalid byte 0xff at offset 7"),
        (b"\xef\xbb\xbf{}", "body is not JSON"),  # a byte order mark: UTF-8, but not what the API server sends
    ],
)
def test_unreadable_bodies_say_what_is_wrong(body, message):
    with pytest.raises(UnreadableJson, match=message.replace("(", r"\(")):
        load(body, limits=LIMITS)
