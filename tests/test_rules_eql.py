"""EQL ``any where`` conditions keep EQL's semantics once translated."""
from __future__ import annotations

import pytest

from gatewatch.errors import EqlSyntaxError
from gatewatch.kql import compile_query
from gatewatch.rules.eql import eql_to_ast


def eql_matches(query: str, document: dict) -> bool:
    return compile_query(eql_to_ast(query))(document)


ALICE_EXEC = {
    "user": {"name": "Alice"},
    "kubernetes": {"audit": {
        "verb": "create",
        "objectRef": {"resource": "pods", "subresource": "exec", "namespace": "payments"},
        "annotations": {"authorization_k8s_io/decision": "allow"},
    }},
}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        # `:` is case-insensitive, with * wildcards
        ('user.name : "alice"', True),
        ('user.name : "AL*"', True),
        ('user.name : ("bob", "ali*")', True),
        # `==` is exact and case-sensitive
        ('user.name == "alice"', False),
        ('user.name == "Alice"', True),
        # like: case-sensitive wildcards; like~: case-insensitive
        ('user.name like "al*"', False),
        ('user.name like "Al*"', True),
        ('user.name like~ "al*"', True),
        # in: exact, case-sensitive; in~: case-insensitive; not in
        ('kubernetes.audit.verb in ("get", "create")', True),
        ('kubernetes.audit.verb in ("GET", "CREATE")', False),
        ('kubernetes.audit.verb in~ ("GET", "CREATE")', True),
        ('kubernetes.audit.verb not in ("get", "create")', False),
        # != is true when the value differs, and when the field is absent
        ('kubernetes.audit.objectRef.namespace != "kube-system"', True),
        ('kubernetes.audit.objectRef.namespace != "payments"', False),
        ('kubernetes.audit.objectRef.name != "web-1"', True),
        # null checks
        ("kubernetes.audit.objectRef.name == null", True),
        ("kubernetes.audit.objectRef.name != null", False),
        ("user.name != null", True),
        # backticked field names with characters EQL would read as operators
        ('`kubernetes.audit.annotations.authorization_k8s_io/decision` == "allow"', True),
        # boolean logic and grouping
        ('user.name : "bob" or (kubernetes.audit.verb == "create" and not user.name : "eve")', True),
        ('not (user.name : "alice")', False),
    ],
)
def test_eql_semantics(condition, expected):
    assert eql_matches(f"any where {condition}", ALICE_EXEC) is expected


def test_wildcards_in_in_are_literal():
    assert not eql_matches('any where user.name in ("Al*")', ALICE_EXEC)
    assert eql_matches('any where user.name in ("Al*")', {"user": {"name": "Al*"}})


def test_numbers_and_ranges():
    document = {"http": {"response": {"status_code": 403}}}
    assert eql_matches("any where http.response.status_code == 403", document)
    assert eql_matches("any where http.response.status_code >= 400", document)
    assert not eql_matches("any where http.response.status_code < 400", document)


def test_string_escapes_and_raw_strings():
    document = {"process": {"args": 'say "hi"\n', "path": "C:\\tmp\\new", "name": "A"}}
    assert eql_matches(r'any where process.args == "say \"hi\"\n"', document)
    assert eql_matches(r'any where process.name == "\u{41}"', document)
    # """...""" is a raw string: backslashes are kept as written
    assert eql_matches(r'any where process.path == """C:\tmp\new"""', document)
    assert not eql_matches(r'any where process.path == "C:\\tmp\new"', document)


@pytest.mark.parametrize("query", [r'any where process.path == ?"C:\tmp"', "any where process.path == 'C:'"])
def test_string_forms_elasticsearch_refuses_are_refused(query):
    # Elasticsearch removed EQL's single-quoted and ?"..." strings (elastic/elasticsearch#61659)
    with pytest.raises(EqlSyntaxError) as caught:
        eql_to_ast(query)
    assert 'Use " or """ based strings' in caught.value.reason and not caught.value.unsupported


@pytest.mark.parametrize(
    ("query", "reason", "column"),
    [
        ('process where process.name == "sh"', "only 'any where'", 1),
        ('any where user.name == "x" | head 5', "pipes", 28),
        ('sequence by user.name [any where true]', "sequence queries", 1),
        ('any where startsWith(user.name, "a")', "function startsWith()", 11),
        ('any where user.name : "al?ce"', "'?' wildcard", 23),
        ('any where user.name regex "a.*"', "'regex' is not supported", 21),
        ('any where length(user.name) > 3', "function length()", 11),
        ('any where user.uid + 1 == 5', "arithmetic", 11),
        ('any where user.names[0] == "a"', "array indexes", 11),
    ],
)
def test_unsupported_eql_is_refused_with_reason_and_position(query, reason, column):
    with pytest.raises(EqlSyntaxError) as caught:
        eql_to_ast(query)
    assert caught.value.unsupported
    assert reason in caught.value.reason
    assert (caught.value.line, caught.value.column) == (1, column)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ('any where user.name == "x" and', "unexpected end of query"),
        ("any where user.name == process.name", "Comparisons against fields are not (currently) supported"),
        ("any where user.name = \"x\"", "Compare with == instead of ="),
        ('any where user.name == "x', "unterminated string"),
        ('any where (user.name == "x"', "unexpected end of query"),
        ("", "empty EQL query"),
    ],
)
def test_eql_syntax_errors(query, reason):
    with pytest.raises(EqlSyntaxError) as caught:
        eql_to_ast(query)
    assert not caught.value.unsupported
    assert reason in caught.value.reason


def test_syntax_error_on_a_later_line_has_line_column_and_caret():
    query = 'any where user.name == "x"\n  and kubernetes.audit.verb === "get"'
    with pytest.raises(EqlSyntaxError) as caught:
        eql_to_ast(query)
    assert caught.value.line == 2
    message = str(caught.value)
    assert 'and kubernetes.audit.verb === "get"' in message and "^" in message
