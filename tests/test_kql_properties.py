"""Property-based tests: laws that must hold for any query, value or document."""
from __future__ import annotations

import ipaddress
import re

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gatewatch.kql import (
    And,
    Exists,
    MatchAll,
    Nested,
    Not,
    Or,
    Range,
    Term,
    Wildcard,
    compile_query,
    escape_unquoted,
    parse,
    quote,
    to_kql,
)
from gatewatch.kql.codegen import compile_program

# Derandomized and without an example database: the same examples on every run, no files left behind.
FAST = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# --- generators -------------------------------------------------------------------

FIELDS = ["a", "b", "n.c"]
WORDS = ["x", "y", "x y", "10", "true", "10.0.0.1"]
scalars = st.sampled_from(WORDS + [10, True, False, 7.5])
field_value = st.one_of(st.none(), scalars, st.lists(scalars, max_size=3))


@st.composite
def documents(draw):
    document = {"a": draw(field_value), "b": draw(field_value)}
    document["n"] = draw(st.one_of(st.none(), st.fixed_dictionaries({"c": field_value}),
                                   st.lists(st.fixed_dictionaries({"c": field_value}), max_size=2)))
    return document


def leaves(field):
    return st.one_of(
        st.builds(Term, st.just(field), st.sampled_from(WORDS)),
        st.builds(Wildcard, st.just(field), st.sampled_from([("x", ""), ("", "y"), ("", " ", ""), ("1", "")])),
        st.just(Exists(field)),
        st.builds(Range, st.just(field), st.sampled_from(["<", "<=", ">", ">="]), st.sampled_from(["5", "x", "y"])),
    )


field_nodes = st.sampled_from(FIELDS).flatmap(leaves)
free_text = st.builds(Term, st.just(None), st.sampled_from(["x", "y"]))
nested = st.builds(Nested, st.just("n"), leaves("c"))

queries = st.recursive(
    st.one_of(field_nodes, free_text, nested),
    lambda children: st.one_of(
        st.builds(Not, children),
        st.lists(children, min_size=2, max_size=3).map(lambda items: And(tuple(items))),
        st.lists(children, min_size=2, max_size=3).map(lambda items: Or(tuple(items))),
    ),
    max_leaves=6,
)


# --- boolean laws ------------------------------------------------------------------


@FAST
@given(queries, queries, documents())
def test_not_and_de_morgan(p, q, document):
    P, Q = compile_query(p), compile_query(q)
    assert compile_query(Not(p))(document) is (not P(document))
    assert compile_query(Not(Not(p)))(document) is P(document)
    assert compile_query(Not(And((p, q))))(document) is compile_query(Or((Not(p), Not(q))))(document)
    assert compile_query(Not(Or((p, q))))(document) is compile_query(And((Not(p), Not(q))))(document)


@FAST
@given(queries, documents())
def test_to_kql_round_trip_evaluates_the_same(query, document):
    text = to_kql(query)
    assert compile_query(parse(text))(document) is compile_query(query)(document), text
    assert parse(to_kql(parse(text))) == parse(text)


@FAST
@given(st.lists(st.sampled_from(["x", "y", "z"]), min_size=1, max_size=3), documents())
def test_value_list_equals_the_distributed_query(values, document):
    listed = compile_query(f"a:({' and not '.join(values)})")
    spelled = compile_query(" and not ".join(f"a:{value}" for value in values))
    assert listed(document) is spelled(document)


# --- literals ----------------------------------------------------------------------

# Any text but surrogates (not valid in a str that came from JSON/YAML).
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@FAST
@given(texts)
def test_any_string_matches_itself_quoted(value):
    assert parse(f"f:{quote(value)}") == Term("f", value)
    assert compile_query(f"f:{quote(value)}")({"f": value})


@FAST
@given(texts.filter(bool))
def test_any_string_matches_itself_as_escaped_unquoted_literal(value):
    query = f"f:{escape_unquoted(value)}"
    assert parse(query) == Term("f", value)
    assert compile_query(query)({"f": value})
    assert compile_query(f"{escape_unquoted(value)}")({"g": [value]})  # free text


@FAST
@given(texts, texts)
def test_different_strings_do_not_match(value, other):
    assume(value != other and not (_is_ip(value) and _is_ip(other)))
    assert not compile_query(f"f:{quote(value)}")({"f": other})


@FAST
@given(texts.filter(bool), texts)
def test_prefix_wildcard_is_startswith(prefix, value):
    query = compile_query(f"f:{escape_unquoted(prefix)}*")
    assert query({"f": value}) is value.startswith(prefix)
    assert query({"f": prefix + value})


small_texts = st.text("ab\n", max_size=4)  # a small alphabet, so that patterns often match


@FAST
@given(st.lists(st.one_of(texts, small_texts), min_size=1, max_size=5), st.one_of(texts, st.text("ab\n", max_size=12)))
def test_wildcard_pattern_is_fnmatch_like(parts, value):
    expected = re.fullmatch(".*".join(map(re.escape, parts)), value, re.DOTALL) is not None
    assert compile_query(Wildcard("f", tuple(parts)))({"f": value}) is expected
    if len(parts) > 1 and any(parts):  # as KQL text (a lone `*` is "exists", "" is not a value)
        pattern = "*".join(escape_unquoted(part) if part else "" for part in parts)
        assert compile_query(f"f:{pattern}")({"f": value}) is expected
    if value.isascii() and all(part.isascii() for part in parts):
        folded = compile_query(Wildcard("f", tuple(part.upper() for part in parts), case_insensitive=True))
        expected = re.fullmatch(".*".join(map(re.escape, parts)), value, re.DOTALL | re.IGNORECASE) is not None
        assert folded({"f": value}) is expected


# --- ranges ------------------------------------------------------------------------

OPERATORS = {"<": lambda x, y: x < y, "<=": lambda x, y: x <= y, ">": lambda x, y: x > y, ">=": lambda x, y: x >= y}
numbers = st.one_of(st.integers(-10**6, 10**6), st.floats(-1e6, 1e6, allow_nan=False).map(lambda f: round(f, 3)))


@FAST
@given(st.sampled_from(sorted(OPERATORS)), numbers, numbers)
def test_numeric_ranges_follow_python_comparison(operator, bound, value):
    expected = OPERATORS[operator](value, bound)
    assert compile_query(f"f {operator} {bound}")({"f": value}) is expected
    assert compile_query(f"f {operator} {bound}")({"f": str(value)}) is expected


@FAST
@given(st.sampled_from(sorted(OPERATORS)), st.text("abcXYZ_", min_size=1, max_size=6), st.text("abcXYZ_", max_size=6))
def test_string_ranges_follow_python_comparison(operator, bound, value):
    assert compile_query(f"f {operator} {quote(bound)}")({"f": value}) is OPERATORS[operator](value, bound)


# --- where a match is (kql.explain) -----------------------------------------------------

from gatewatch.kql.explain import matched_locations  # noqa: E402
from gatewatch.kql.fields import field_values, located_values  # noqa: E402


def _at(document, location):
    for part in location:
        document = document[part]
    return document


@FAST
@given(st.sampled_from(FIELDS + ["n", "n.c.d", "missing"]), documents())
def test_located_values_are_field_values_with_where_they_are(field, document):
    located = located_values(document, field)
    assert [value for _, value in located] == field_values(document, field)
    assert all(_at(document, location) == value for location, value in located)


@FAST
@given(queries, documents())
def test_a_query_that_matches_is_explained_by_locations_in_the_document(query, document):
    locations = matched_locations(query, document)
    if not compile_query(query)(document):
        assert locations == []
    # Each location under a positive condition holds a value (one under `not` may name an absent field).
    for location in locations:
        try:
            _at(document, location)
        except (KeyError, IndexError, TypeError):
            assert any(isinstance(n, Not) for n in _walk(query))


def _walk(node):
    yield node
    for child in getattr(node, "items", ()) or ():
        yield from _walk(child)
    for attribute in ("item", "query"):
        if hasattr(node, attribute):
            yield from _walk(getattr(node, attribute))


def test_a_nested_match_names_the_element_and_the_field_inside_it():
    document = {"c": [{"s": {"p": False}}, {"s": {"p": True}, "n": "b"}, {"n": "c"}]}
    assert matched_locations(parse("c:{ s.p:true }"), document) == [("c", 1, "s", "p")]
    # Under `not` inside an element, the field it names, set or not.
    assert matched_locations(parse("c:{ not s.p:false }"), document) == [("c", 1, "s", "p"), ("c", 2, "s", "p")]
    # Only the branch of an `or` that holds; a top-level `not` is a condition, not a location.
    assert matched_locations(parse("(c.n:b or c.n:z) and not x:1"), document) == [("c", 1, "n")]
    assert matched_locations(parse("c:{ s.p:false } and c.n:nope"), document) == []

# --- generated code (kql.codegen) gives the closures' verdicts ---------------------------------

# Odd field names too: quotes, backslashes, newlines and code must stay data in the generated source.
ODD_FIELDS = ["a", "n.c", "x')\nimport os  #", 'q"\\', "labels.*", None]
odd_leaves = st.sampled_from(ODD_FIELDS).flatmap(
    lambda field: st.builds(Term, st.just(field), st.sampled_from(WORDS)) if field is None or "*" in field
    else leaves(field))
generated_queries = st.recursive(
    st.one_of(field_nodes, free_text, nested, odd_leaves, st.just(MatchAll()),
              st.builds(Term, st.sampled_from(FIELDS), st.sampled_from(WORDS), st.booleans()),
              st.builds(Wildcard, st.sampled_from(FIELDS), st.sampled_from([("X", ""), ("", "y")]), st.booleans())),
    lambda children: st.one_of(
        st.builds(Not, children),
        st.lists(children, min_size=1, max_size=4).map(lambda items: And(tuple(items))),
        st.lists(children, min_size=1, max_size=4).map(lambda items: Or(tuple(items))),
    ),
    max_leaves=10,
)


# Values close to the queries' literals, so that matches are common and every kind of test is hit.
dense_scalars = st.sampled_from(["x", "y", "X", "x y", "xy", "10", "true", "10.0.0.1", "10.0.0.7", "", 10, 7.5,
                                 True, False, {}, {"c": "x"}])
dense_value = st.one_of(dense_scalars, st.lists(dense_scalars, max_size=3), st.none())


@st.composite
def odd_documents(draw):
    document = {field: draw(dense_value) for field in ("a", "b", "x')\nimport os  #", 'q"\\')}
    document["n"] = draw(st.one_of(st.fixed_dictionaries({"c": dense_value}),
                                   st.lists(st.fixed_dictionaries({"c": dense_value}), max_size=2)))
    document["labels"] = draw(st.one_of(st.none(), st.fixed_dictionaries({"app": dense_value, "tier": dense_value})))
    if draw(st.booleans()):
        document["n.c"] = draw(dense_value)  # a flat dotted key
    return document


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(generated_queries, min_size=1, max_size=10), st.lists(odd_documents(), min_size=1, max_size=4))
def test_generated_code_gives_the_closures_verdicts(nodes, documents_):
    program = compile_program(nodes)
    for document in documents_:
        values = program.values(document)  # shared by every query, as the engine shares it
        for node, function in zip(nodes, program.functions):
            assert function(values) is compile_query(node)(document), to_kql(node, strict=False)


def test_generated_code_survives_nesting_deeper_than_pythons_parser():
    node = Term("a", "x")
    for depth in range(400):
        node = Not(node) if depth % 2 else And((node, Exists("b")))
    program = compile_program([node])
    for document in ({"a": "x", "b": 1}, {"a": "y", "b": 1}, {}):
        assert program.matcher(0)(document) is compile_query(node)(document)


def test_generated_literal_sets_look_past_objects_among_the_values():
    program = compile_program([parse("a:(x or y)"), parse("a:(x or y) and b:*")])
    for document, expected in [({"a": [{"k": 1}, "x"]}, True), ({"a": [{}, 10, "z"]}, False), ({"a": {"x": 1}}, False)]:
        assert program.matcher(0)(document) is compile_query("a:(x or y)")(document) is expected
