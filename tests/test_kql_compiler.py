"""Evaluating compiled queries on small documents: what matches and what does not."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from gatewatch.errors import KqlSyntaxError
from gatewatch.kql import And, Not, Term, Wildcard, compile_query


def matches(query: str, document: dict) -> bool:
    return compile_query(query)(document)


# --- basic field:value ------------------------------------------------------------


def test_exact_value_is_case_sensitive():
    assert matches("a:Pods", {"a": "Pods"})
    assert not matches("a:Pods", {"a": "pods"})
    assert not matches("a:Pods", {"a": "Pods2"})


def test_quoted_and_unquoted_values_with_spaces():
    document = {"message": "quick brown"}
    assert matches('message:"quick brown"', document)
    assert matches("message:quick brown", document)
    assert not matches("message:quick", document)


def test_boolean_operators():
    document = {"a": "1", "b": "2"}
    assert matches("a:1 and b:2", document)
    assert not matches("a:1 and b:3", document)
    assert matches("a:9 or b:2", document)
    assert matches("not a:9", document)
    assert not matches("not (a:1 or b:9)", document)
    assert matches("a:9 or b:2 and not a:9", document)  # not > and > or


def test_missing_field():
    assert not matches("a:x", {})
    assert matches("not a:x", {})
    assert matches("not a:x", {"a": None})


# --- wildcards --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("alpine*", "alpine:3.19", True),
        ("alpine*", "my-alpine", False),
        ("*netshoot\\:*", "nicolaka/netshoot:latest", True),
        ("*netshoot\\:*", "nicolaka/netshoot", False),
        ("*.exe", "cmd.exe", True),
        ("*.exe", "cmd.exe.txt", False),
        ("a*b*c", "aXXbYYc", True),
        ("a*b*c", "aXXcYYb", False),
        ("a*c", "ac", True),
        ("a*c", "a", False),
        ("*", "", True),
        ("x\\*", "x*", True),
        ("x\\*", "xy", False),
        ("*mid*", "a mid b", True),
        ("*line*", "multi\nline\ntext", True),
    ],
)
def test_wildcard_values(pattern, value, expected):
    assert matches(f"a:{pattern}", {"a": value}) is expected


def test_quoted_star_is_a_literal_star():
    assert matches('a:"x*"', {"a": "x*"})
    assert not matches('a:"x*"', {"a": "xy"})


def test_wildcard_matches_numbers_and_booleans_as_text():
    assert matches("port:44*", {"port": 443})
    assert matches("flag:tr*", {"flag": True})


def test_wildcard_on_free_text_and_wildcard_field_names():
    document = {"labels": {"app": "web-frontend", "tier": "db"}, "other": "web-x"}
    assert matches("labels.*:web*", document)
    assert not matches("labels.*:x*", document)
    assert matches("*:db", document)
    assert matches("lab*:db", document)


def test_wildcard_field_names_span_dotted_keys():
    document = {"kubernetes": {"audit": {"annotations": {"authorization.k8s.io/decision": "allow"}}}}
    assert matches("kubernetes.audit.annotations.*decision:allow", document)


# --- exists -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"a": "x"}, True),
        ({"a": ""}, True),
        ({"a": 0}, True),
        ({"a": False}, True),
        ({"a": ["x"]}, True),
        ({"a": {"b": 1}}, True),
        ({"a": None}, False),
        ({"a": []}, False),
        ({"a": [None]}, False),
        ({"a": {}}, False),
        ({}, False),
    ],
)
def test_exists(document, expected):
    assert matches("a:*", document) is expected


# --- lists: any element, distribution of value lists -------------------------------


def test_path_through_list_matches_any_element():
    document = {"spec": {"containers": [{"image": "nginx"}, {"image": "busybox:1.36"}]}}
    assert matches("spec.containers.image:busybox*", document)
    assert matches("spec.containers.image:nginx", document)
    assert not matches("spec.containers.image:alpine*", document)


def test_value_list_or():
    assert matches("a:(x or y)", {"a": "y"})
    assert not matches("a:(x or y)", {"a": "z"})


def test_value_list_and_needs_both_values_in_the_list():
    assert matches("a:(x and y)", {"a": ["x", "y", "z"]})
    assert not matches("a:(x and y)", {"a": ["x", "z"]})


def test_value_list_star_and_not():
    assert matches("a:(* and not x)", {"a": ["y"]})
    assert not matches("a:(* and not x)", {"a": ["y", "x"]})
    assert not matches("a:(* and not x)", {})


def test_not_is_false_when_any_element_matches():
    assert not matches("not a:x", {"a": ["y", "x"]})
    assert matches("not a:x", {"a": ["y", "z"]})
    assert matches("not a:x", {"a": []})


def test_large_value_list_mixing_kinds():
    query = 'process.name:(bash or "sh" or *python* or zsh or 10 or true or 10.0.0.0/8)'
    compiled = compile_query(query)
    for value in ["bash", "sh", "python3", "/usr/bin/python", "zsh", 10, "10", True, "true", "10.2.3.4"]:
        assert compiled({"process": {"name": value}}), value
    for value in ["BASH", "fish", 11, False, "11.0.0.1", None]:
        assert not compiled({"process": {"name": value}}), value


def test_elastic_style_method_list():
    query = "http.response.status_code:405 and http.request.method:(* and not (GET or HEAD or OPTIONS or POST))"
    assert matches(query, {"http": {"response": {"status_code": 405}, "request": {"method": "DELETE"}}})
    assert not matches(query, {"http": {"response": {"status_code": 405}, "request": {"method": "GET"}}})
    assert not matches(query, {"http": {"response": {"status_code": 405}}})


# --- numbers, booleans, IPs -----------------------------------------------------------


def test_numbers_match_numbers_and_strings():
    assert matches("a:10", {"a": 10})
    assert matches("a:10", {"a": 10.0})
    assert matches("a:10", {"a": "10"})
    assert matches('a:"10"', {"a": 10})
    assert not matches("a:10", {"a": "10.0"})
    assert not matches("a:10", {"a": 11})
    assert not matches("a:1", {"a": True})
    assert matches("a:1.5", {"a": 1.5})


def test_booleans_match_booleans_and_strings():
    assert matches("a:true", {"a": True})
    assert matches("a:true", {"a": "true"})
    assert not matches("a:true", {"a": False})
    assert not matches("a:true", {"a": 1})
    assert not matches("a:true", {"a": "True"})
    assert matches("a:false", {"a": False})


@pytest.mark.parametrize(
    ("query", "address", "expected"),
    [
        ("source.ip:10.0.0.0/8", "10.1.2.3", True),
        ("source.ip:10.0.0.0/8", "11.1.2.3", False),
        ("source.ip:10.0.0.0/8", "::ffff:10.1.2.3", True),
        ("source.ip:10.0.0.0/8", "not an ip", False),
        ("source.ip:192.168.1.7", "192.168.1.7", True),
        ("source.ip:192.168.1.7", "192.168.1.8", False),
        ('source.ip:"2001:db8::/32"', "2001:0db8:0000:0000:0000:0000:0000:0001", True),
        ('source.ip:"2001:db8::/32"', "2001:db9::1", False),
        (r"source.ip:2001\:db8\:\:1", "2001:0db8:0:0:0:0:0:1", True),
        ('source.ip:"2001:db8::1"', "2001:db8::2", False),
        ("source.ip:10.0.0.1", "::ffff:10.0.0.1", True),
        ('source.ip:"::ffff:10.0.0.1"', "10.0.0.1", True),
    ],
)
def test_ip_and_cidr_values(query, address, expected):
    assert matches(query, {"source": {"ip": address}}) is expected


# --- ranges --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "value", "expected"),
    [
        ("a < 10", 9, True),
        ("a < 10", 10, False),
        ("a <= 10", 10, True),
        ("a > 10", 10.5, True),
        ("a >= 10", "10", True),
        ("a > 9", "10", True),  # numerically, not as text
        ("a > 10", "abc", False),
        ("a > 0", True, False),
        ("a < 1.5e3", 1499, True),
        ("a >= -3", -3, True),
        ("a > m", "n", True),
        ("a > m", "l", False),
        ("a <= abc", "abc", True),
        ('a < "b c"', "b b", True),
        ("a > 2020-01-01", "2020-01-02T00:00:00Z", True),
        ("a > 2020-01-01", "2019-12-31T23:59:59.999999Z", False),
        ('a >= "2026-11-22T05:00:00Z"', "2026-11-22T05:00:00.000000Z", True),
        ('a < "2020-01-01T00:00:00+02:00"', "2019-12-31T22:30:00Z", False),
        ('a < "2020-01-01T00:00:00+02:00"', "2019-12-31T21:30:00Z", True),
        ("a > 2020-01-01", "garbage", False),
        ("a > 10.0.0.1", "10.0.0.2", True),
        ("a > 10.0.0.1", "9.255.255.255", False),
    ],
)
def test_ranges(query, value, expected):
    assert matches(query, {"a": value}) is expected


def test_range_on_list_matches_any_element():
    assert matches("a > 5", {"a": [1, 2, 7]})
    assert not matches("a > 5", {"a": [1, 2]})


def test_range_relative_to_now():
    recent = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    old = (datetime.now(timezone.utc) - timedelta(days=2)).isoformat()
    assert matches("@timestamp > now-5m", {"@timestamp": recent})
    assert not matches("@timestamp > now-5m", {"@timestamp": old})
    assert matches("@timestamp < now-1d/d", {"@timestamp": old})
    assert not matches("@timestamp < now-1d/d", {"@timestamp": recent})
    assert matches("@timestamp >= now-1M and @timestamp < now+1y", {"@timestamp": recent})


# --- nested -------------------------------------------------------------------------


def test_nested_needs_one_element_to_satisfy_the_whole_inner_query():
    document = {"containers": [{"name": "a", "privileged": True}, {"name": "b", "privileged": False}]}
    assert matches("containers:{ name:a and privileged:true }", document)
    assert not matches("containers:{ name:b and privileged:true }", document)
    # Without nesting, the conditions can be met by different elements:
    assert matches("containers.name:b and containers.privileged:true", document)


def test_nested_with_not_and_deeper_nesting():
    document = {"a": [{"b": [{"c": "x"}], "d": "1"}, {"b": [{"c": "y"}], "d": "2"}]}
    assert matches("a:{ b:{ c:y } and d:2 }", document)
    assert not matches("a:{ b:{ c:y } and d:1 }", document)
    assert matches("a:{ not d:1 }", document)
    assert not matches("a:{ d:* and not d:(1 or 2) }", document)
    assert not matches("a:{ d:1 }", {"a": ["scalar"]})


# --- free text ----------------------------------------------------------------------


def test_free_text_matches_any_leaf_value():
    document = {"a": {"b": ["x", {"c": "needle"}]}, "n": 5}
    assert matches("needle", document)
    assert matches('"needle"', document)
    assert matches("need*", document)
    assert matches("5", document)
    assert not matches("hay", document)
    assert matches("*", {})


# --- field names -----------------------------------------------------------------


def test_field_with_slash_and_dotted_keys():
    document = {"kubernetes": {"audit": {"annotations": {"authorization_k8s_io/decision": "allow"}}},
                "labels": {"app.kubernetes.io/name": "web"}}
    assert matches("kubernetes.audit.annotations.authorization_k8s_io/decision:allow", document)
    assert matches("labels.app.kubernetes.io/name:web", document)


# --- compiled query object ----------------------------------------------------------


def test_compiled_query_attributes():
    text = "a:1 and (b.c:x or labels.*:y) and n:{ m:1 and o < 3 }"
    compiled = compile_query(text)
    assert compiled.query == text
    assert compiled.fields == frozenset({"a", "b.c", "labels.*", "n", "n.m", "n.o"})


def test_compiling_a_tree_directly():
    compiled = compile_query(And((Term("a", "x"), Not(Wildcard.from_pattern("b", "y*")))))
    assert compiled.query == 'a:"x" and not b:y*'
    assert compiled({"a": "x", "b": "z"})
    assert not compiled({"a": "x", "b": "yes"})


def test_case_insensitive_nodes():
    compiled = compile_query(Term("a", "PowerShell.EXE", case_insensitive=True), source='a : "powershell.exe"')
    assert compiled.query == 'a : "powershell.exe"'
    assert compiled({"a": "powershell.exe"})
    assert compiled({"a": "POWERSHELL.exe"})
    assert not compiled({"a": "powershell.ex"})
    wildcard = compile_query(Wildcard.from_pattern("a", "*\\CMD.exe", case_insensitive=True))
    assert wildcard({"a": "C:\\Windows\\cmd.EXE"})
    assert not wildcard({"a": "C:\\Windows\\cmd.com"})


def test_case_insensitive_and_sensitive_terms_on_one_field():
    from gatewatch.kql import Or

    compiled = compile_query(Or((Term("a", "X", case_insensitive=True), Term("a", "Y"), Wildcard.from_pattern("a", "z*"))))
    assert compiled({"a": "x"})
    assert compiled({"a": "Y"})
    assert not compiled({"a": "y"})
    assert compiled({"a": "zed"})
    assert not compiled({"a": "Zed"})


def test_compile_reports_syntax_errors():
    with pytest.raises(KqlSyntaxError):
        compile_query("a:(x or")


def test_wildcard_node_without_star_is_an_exact_match():
    compiled = compile_query(Wildcard.from_pattern("a", "abc"))
    assert compiled({"a": "abc"})
    assert not compiled({"a": "abcd"})


def test_long_values_with_many_wildcards():
    compiled = compile_query("a:*x*y*z*")
    assert not compiled({"a": "x" * 50_000 + "y" * 50_000})
    assert compiled({"a": "x" * 50_000 + "y" * 50_000 + "z"})
