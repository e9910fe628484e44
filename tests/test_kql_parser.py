"""KQL syntax: what parses to what, and the errors a user sees for bad queries."""
from __future__ import annotations

import pytest

from gatewatch.errors import KqlSyntaxError
from gatewatch.kql import (
    And,
    Exists,
    KqlRenderError,
    MatchAll,
    Nested,
    Not,
    Or,
    Range,
    Term,
    Wildcard,
    parse,
    to_kql,
)


@pytest.mark.parametrize(
    ("query", "tree"),
    [
        ("a:b", Term("a", "b")),
        ('a:"b c"', Term("a", "b c")),
        ("a : b", Term("a", "b")),
        ("message:quick brown", Term("message", "quick brown")),
        ("message:  quick   brown  ", Term("message", "quick   brown")),
        ("a:x*", Wildcard("a", ("x", ""))),
        ("a:*x*y", Wildcard("a", ("", "x", "y"))),
        ('a:"x*"', Term("a", "x*")),
        ("a:*", Exists("a")),
        ("*", MatchAll()),
        ("free", Term(None, "free")),
        ("fr*ee", Wildcard(None, ("fr", "ee"))),
        ("a:10", Term("a", "10")),
        ("a:true", Term("a", "true")),
        ("source.ip:10.0.0.0/8", Term("source.ip", "10.0.0.0/8")),
        (
            "kubernetes.audit.annotations.authorization_k8s_io/decision:allow",
            Term("kubernetes.audit.annotations.authorization_k8s_io/decision", "allow"),
        ),
        ("my-field.sub-name:x", Term("my-field.sub-name", "x")),
        ("labels.*:x", Term("labels.*", "x")),
        ('"quoted field":x', Term("quoted field", "x")),
        ("a < 10", Range("a", "<", "10")),
        ("a<=10", Range("a", "<=", "10")),
        ("a > 2020-01-01", Range("a", ">", "2020-01-01")),
        ('a >= "x y"', Range("a", ">=", "x y")),
        ("a:{ b:x and c:y }", Nested("a", And((Term("b", "x"), Term("c", "y"))))),
    ],
)
def test_parses_to(query, tree):
    assert parse(query) == tree


def test_precedence_not_over_and_over_or():
    assert parse("a:1 or b:2 and not c:3") == Or((Term("a", "1"), And((Term("b", "2"), Not(Term("c", "3"))))))


def test_grouping_overrides_precedence():
    assert parse("(a:1 or b:2) and c:3") == And((Or((Term("a", "1"), Term("b", "2"))), Term("c", "3")))


@pytest.mark.parametrize("spelling", ["and", "AND", "And", "aNd"])
def test_keywords_in_any_case(spelling):
    assert parse(f"a:1 {spelling} NOT b:2") == And((Term("a", "1"), Not(Term("b", "2"))))


def test_chains_are_flattened():
    assert parse("a:1 or b:2 or c:3") == Or((Term("a", "1"), Term("b", "2"), Term("c", "3")))


def test_value_list_distributes_the_field():
    assert parse("a:(x or y and not z)") == Or(
        (Term("a", "x"), And((Term("a", "y"), Not(Term("a", "z")))))
    )


def test_value_list_with_exists_and_wildcard():
    assert parse("a:(* and not (x or y*))") == And(
        (Exists("a"), Not(Or((Term("a", "x"), Wildcard("a", ("y", ""))))))
    )


def test_keyword_inside_words_is_not_a_keyword():
    assert parse("a:android or b:nothing") == Or((Term("a", "android"), Term("b", "nothing")))
    assert parse("a:x or not-a-keyword") == Or((Term("a", "x"), Term(None, "not-a-keyword")))


def test_unquoted_literal_ends_at_keyword_between_spaces():
    assert parse("a:rock and roll") == And((Term("a", "rock"), Term(None, "roll")))
    assert parse("a:rock and\troll") == And((Term("a", "rock"), Term(None, "roll")))


@pytest.mark.parametrize(
    ("query", "value"),
    [
        (r"a:ubuntu\:*", None),  # checked below: wildcard with an escaped colon
        (r"a:\(x\)", "(x)"),
        (r"a:\{x\}", "{x}"),
        (r"a:\<x\>", "<x>"),
        (r"a:\"x\"", '"x"'),
        (r"a:x\*", "x*"),
        (r"a:C\\Windows", "C\\Windows"),
        (r"a:x\ty\rz\n", "x\ty\rz\n"),
        (r"a:\u0041\u00e9", "Aé"),
        (r"a:\and", "and"),
        (r"a:\OR", "OR"),
        (r"a:\not", "not"),
        (r"a:x \or y", "x or y"),
        (r"a:\nothing", "\nothing"),
    ],
)
def test_unquoted_escapes(query, value):
    if value is None:
        assert parse(query) == Wildcard("a", ("ubuntu:", ""))
    else:
        assert parse(query) == Term("a", value)


@pytest.mark.parametrize(
    ("query", "value"),
    [
        (r'a:"say \"hi\""', 'say "hi"'),
        (r'a:"C:\\Windows"', "C:\\Windows"),
        (r'a:"C:\Windows\System32"', "C:\\Windows\\System32"),  # unknown escapes stay as written
        (r'a:"tab\there"', "tab\there"),
        (r'a:"\u0041"', "A"),
        ('a:"a or b and not c"', "a or b and not c"),
        ('a:"(x):{y}<z>"', "(x):{y}<z>"),
    ],
)
def test_quoted_escapes(query, value):
    assert parse(query) == Term("a", value)


def test_multiline_query():
    assert parse("a:x and\n  (\n b:y\n  or c:z\n)\n") == And(
        (Term("a", "x"), Or((Term("b", "y"), Term("c", "z"))))
    )


# --- errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "reason", "offset"),
    [
        ("a:", "expected a value after ':'", 2),
        ("a:x and", "expected a condition after 'and'", 7),
        ("a:x or ", "expected a condition after 'or'", 7),
        ("not ", "expected a condition after 'not'", 4),
        (":x", "expected a field or value", 0),
        ("a:(x or y", "missing ')' to close the '(' at column 3", 9),
        ("a:{ b:x", "missing '}' to close the '{' at column 3", 7),
        ("a:{ b:x)", "missing '}' to close the '{' at column 3", 7),
        ("a:x)", "unexpected ')' with no matching '('", 3),
        ('a:"abc', "unterminated quoted string", 2),
        (r"a:\q", "invalid escape sequence", 2),
        ("a:x y:z", "unexpected ':'", 5),
        ("a:x not b:y", "expected 'and', 'or' or the end of the query", 4),
        ("a >= ", "expected a value after '>='", 5),
        ("a:()", "expected a condition after '('", 3),
        ('"":x', "empty field name", 0),
        ("a*:{ b:x }", "a nested query needs a field name without wildcards", 0),
        ("   ", "empty query", 0),
        ("", "empty query", 0),
    ],
)
def test_syntax_errors_name_the_reason_and_position(query, reason, offset):
    with pytest.raises(KqlSyntaxError) as caught:
        parse(query)
    assert caught.value.reason.startswith(reason)
    assert caught.value.offset == offset
    assert caught.value.query == query


def test_absurdly_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(KqlSyntaxError, match="nested more than"):
        parse("not " * 5000 + "a:x")
    with pytest.raises(KqlSyntaxError, match="nested more than"):
        parse("a:x and (b:y or " * 3000 + "c:z" + ")" * 3000)
    assert parse("(" * 500 + "a:x" + ")" * 500) == Term("a", "x")  # plain grouping adds no depth


def test_error_message_shows_caret_under_the_problem():
    with pytest.raises(KqlSyntaxError) as caught:
        parse("event.dataset:kubernetes.audit_logs and kubernetes.audit.verb:")
    lines = str(caught.value).splitlines()
    assert lines[0] == "expected a value after ':', found end of query at line 1, column 63"
    assert lines[1].strip() == "event.dataset:kubernetes.audit_logs and kubernetes.audit.verb:"
    assert lines[2].index("^") == lines[1].index("event") + 62


def test_error_position_on_a_later_line():
    with pytest.raises(KqlSyntaxError) as caught:
        parse('a:x and\n  b:"y')
    assert (caught.value.line, caught.value.column) == (2, 5)
    assert caught.value.reason == "unterminated quoted string"


# --- rendering ------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "a:x",
        "a:(x or y) and not b:(* and not z*)",
        "not (a:1 or b:2) and c:3",
        "(a:1 and b:2) or not c:3",
        "a:{ b:x and c:{ d:* } }",
        "a >= 10 and b < now-5m",
        r"a:ubuntu\:* or b:*\(x\)*",
        'a:"C:\\\\Windows" or "free text"',
        "labels.*:x*",
        "*",
        r"a:* \or * or b:\u0020x*",
    ],
)
def test_to_kql_parses_back_to_the_same_tree(query):
    tree = parse(query)
    assert parse(to_kql(tree)) == tree


def test_to_kql_folds_value_lists():
    assert to_kql(parse("a:(x or y*) and b:1")) == 'a:("x" or y*) and b:"1"'


def test_to_kql_keeps_inner_spaces_of_a_wildcard_as_written():
    # Elastic's own KQL grammar (detection-rules lib/kql) has no \u escape in unquoted values
    assert to_kql(parse("process.args:(* curl* or *wget *)")) == "process.args:(* curl* or *wget *)"


def test_to_kql_escapes_wildcard_text():
    tree = Wildcard("f", (" a or b(", ""))
    assert parse(to_kql(tree)) == tree


def test_to_kql_refuses_case_insensitive_matches():
    with pytest.raises(KqlRenderError):
        to_kql(And((Term("a", "x"), Term("b", "y", case_insensitive=True))))
    assert to_kql(Term("b", "y", case_insensitive=True), strict=False) == 'b:"y"'
