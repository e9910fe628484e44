"""Wildcards match in linear time, with the semantics of ``.*`` between the parts.

The reference is what gatewatch compiled wildcards to before (a regex of
``.*`` between the escaped parts, fully matched, ``.`` spanning newlines): the
property tests check that the linear matcher agrees with it everywhere, for
values and for field names; the adversarial tests check that a pattern which
makes that regex backtrack costs no more than matching a harmless string of
the same length.
"""
from __future__ import annotations

import re
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatewatch.kql import compile_query
from gatewatch.kql.glob import glob_matcher

FAST = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# A small alphabet, so parts and texts overlap often (the interesting cases).
ALPHABET = "ab.\n*K"
texts = st.text(alphabet=ALPHABET, max_size=14)
parts = st.lists(st.text(alphabet="ab.\nK", max_size=3), min_size=1, max_size=5).map(tuple)


def regex_semantics(pattern_parts: tuple[str, ...], text: str, *, case_insensitive: bool = False) -> bool:
    """The former compilation: ``.*`` between the escaped parts, a full match."""
    if case_insensitive:
        pattern_parts, text = tuple(p.casefold() for p in pattern_parts), text.casefold()
    return re.fullmatch(".*".join(map(re.escape, pattern_parts)), text, re.DOTALL) is not None


@FAST
@given(pattern_parts=parts, text=texts)
def test_glob_agrees_with_the_regex_semantics(pattern_parts: tuple[str, ...], text: str) -> None:
    assert glob_matcher(pattern_parts)(text) == regex_semantics(pattern_parts, text)


@FAST
@given(pattern_parts=parts, text=texts)
def test_case_insensitive_glob_agrees_with_the_regex_semantics(pattern_parts: tuple[str, ...], text: str) -> None:
    matcher = glob_matcher(pattern_parts, case_insensitive=True)
    assert matcher(text) == regex_semantics(pattern_parts, text, case_insensitive=True)


@FAST
@given(pattern_parts=parts, text=texts)
def test_a_text_that_embeds_the_parts_in_order_matches(pattern_parts: tuple[str, ...], text: str) -> None:
    # Build a text the pattern must match: the parts with arbitrary text between them.
    filled = text.join(pattern_parts)
    assert glob_matcher(pattern_parts)(filled)


KEY_PARTS = st.text(alphabet="ab.", min_size=1, max_size=6)


@FAST
@given(
    labels=st.dictionaries(KEY_PARTS, st.sampled_from(["x", "y"]), max_size=4),
    field_parts=st.lists(st.text(alphabet="ab.", max_size=3), min_size=2, max_size=4),
)
def test_wildcard_field_names_agree_with_the_regex_semantics(labels: dict, field_parts: list[str]) -> None:
    field = "labels." + "*".join(field_parts)
    if not re.fullmatch(r"[A-Za-z0-9_@./*-]+", field) or ".." in field or field.endswith("."):
        return  # not a plain KQL field name
    document = {"labels": labels}
    expected = any(
        regex_semantics(tuple(field.split("*")), f"labels.{key}") and value == "x" for key, value in labels.items()
    )
    assert compile_query(f"{field}:x")(document) == expected


# --- adversarial inputs -------------------------------------------------------------


def best_of(runs: int, call) -> float:
    """The fastest of ``runs`` timings: the least disturbed by the rest of the machine."""
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        timings.append(time.perf_counter() - start)
    return min(timings)


def test_a_backtracking_field_name_costs_what_a_plain_miss_costs() -> None:
    # 'labels.*a*a*a*a*b' against a 317-character key of a's: 34.9 s as a regex.
    query = compile_query("labels.*a*a*a*a*b:x")
    adversarial = {"labels": {"a" * 317: "x"}}
    harmless = {"labels": {"c" * 317: "x"}}
    assert not query(adversarial) and not query(harmless)
    ratio = best_of(30, lambda: [query(adversarial) for _ in range(50)]) / best_of(
        30, lambda: [query(harmless) for _ in range(50)])
    # Linear: the same order as a key that fails on its first character. The regex took ~10^8 times longer.
    assert ratio < 50, ratio


def test_a_backtracking_value_pattern_costs_what_a_plain_miss_costs() -> None:
    query = compile_query("kubernetes.audit.requestObject.metadata.name:*a*a*a*a*a*a*b")
    adversarial = {"kubernetes": {"audit": {"requestObject": {"metadata": {"name": "a" * 10_000}}}}}
    harmless = {"kubernetes": {"audit": {"requestObject": {"metadata": {"name": "c" * 10_000}}}}}
    assert not query(adversarial) and not query(harmless)
    ratio = best_of(30, lambda: [query(adversarial) for _ in range(20)]) / best_of(
        30, lambda: [query(harmless) for _ in range(20)])
    assert ratio < 50, ratio


def test_wildcard_field_names_read_deeply_nested_documents() -> None:
    # Deeper than Python's recursion limit: walked iteratively.
    document: dict = {"leaf": "x"}
    for _ in range(5_000):
        document = {"n": document}
    assert compile_query("n.*leaf:x")({"n": document})
    assert compile_query("x")({"n": document})  # free text walks every value
