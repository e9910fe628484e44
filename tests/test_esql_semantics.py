"""ES|QL semantics, case by case from Elastic's ES|QL reference (docs/reference/query-languages/esql
in elastic/elasticsearch): each test runs the documentation's query and expects the documented result."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from gatewatch.errors import EsqlSyntaxError
from gatewatch.esql import compile_esql, execute, parse

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


def rows(query: str, documents=()) -> list[dict]:
    return execute(query, documents, now=NOW)


def one(query: str, column: str, documents=()):
    (row,) = rows(query, documents)
    return row[column]


# --- operators: LIKE and RLIKE (operators/detailedDescription/like.md, rlike.md) ------------------


def test_like_escapes_the_wildcard_with_a_backslash_in_both_string_forms():
    assert rows('ROW message = "foo * bar" | WHERE message LIKE "foo \\\\* bar"')
    assert rows('ROW message = "foo * bar" | WHERE message LIKE """foo \\* bar"""')
    assert not rows('ROW message = "foo x bar" | WHERE message LIKE """foo \\* bar"""')


def test_like_with_a_list_of_patterns_is_true_when_any_matches():
    assert rows('ROW message = "foobar" | WHERE message like ("foo*", "bar?")')
    assert not rows('ROW message = "xfoobar" | WHERE message like ("foo*", "bar?")')


def test_rlike_escapes_special_characters_and_matches_the_whole_string():
    assert rows('ROW message = "foo ( bar" | WHERE message RLIKE "foo \\\\( bar"')
    assert rows('ROW message = "foo ( bar" | WHERE message RLIKE """foo \\( bar"""')
    assert not rows('ROW message = "xfoo ( bar" | WHERE message RLIKE """foo \\( bar"""')  # anchored


def test_rlike_with_a_list_of_patterns():
    assert rows('ROW message = "foobar" | WHERE message RLIKE ("foo.*", "bar.")')


def test_not_like_and_not_rlike():
    assert rows('ROW m = "abc" | WHERE m NOT LIKE "x*" AND m NOT RLIKE "x.*"')
    assert not rows('ROW m = "abc" | WHERE m NOT LIKE "a*"')


# --- null and multi-values (esql-multivalued-fields.md) --------------------------------------------

MV = [{"a": 1, "b": [2, 1]}, {"a": 2, "b": 3}]


def test_functions_and_operators_on_a_multivalued_field_give_null():
    assert rows("FROM mv | EVAL b + 2, a + b", MV) == [{"b + 2": None, "a + b": None}, {"b + 2": 5, "a + b": 5}]


def test_mv_min_makes_a_multivalued_field_single_valued():
    assert rows("FROM mv | EVAL b=MV_MIN(b) | EVAL b + 2, a + b", MV) == [
        {"b": 1, "b + 2": 3, "a + b": 2}, {"b": 3, "b + 2": 5, "a + b": 5}]


def test_to_string_converts_each_value_and_keeps_duplicates():
    assert rows("FROM mv | EVAL b=TO_STRING(b)", [{"a": 1, "b": [2, 2, 1]}]) == [{"b": ("2", "2", "1")}]


def test_null_in_a_list_is_not_stored():
    assert rows("FROM mv | EVAL n = MV_COUNT(a)", [{"a": [2, None, 1]}]) == [{"n": 2}]


def test_comparisons_and_patterns_on_a_multivalued_field_are_null_so_where_drops_the_row():
    documents = [{"b": [2, 1], "s": ["x", "y"]}]
    assert not rows("FROM mv | WHERE b == 2", documents)
    assert not rows("FROM mv | WHERE NOT b == 2", documents)  # NOT null is null
    assert not rows('FROM mv | WHERE s LIKE "*"', documents)
    assert not rows('FROM mv | WHERE s IN ("x", "z")', documents)
    assert not rows('FROM mv | WHERE STARTS_WITH(s, "x")', documents)
    assert rows("FROM mv | WHERE b IS NOT NULL", documents)  # a multi-value is not null
    assert rows("FROM mv | WHERE MV_COUNT(b) == 2", documents)


def test_three_valued_logic():
    assert rows("ROW a = null | WHERE a == 1 OR true")
    assert not rows("ROW a = null | WHERE a == 1 OR false")
    assert not rows("ROW a = null | WHERE a == 1 AND true")
    assert rows("ROW a = null | WHERE NOT (a == 1 AND false)")
    assert rows("ROW a = null | WHERE a IS NULL")


def test_in_with_a_null_in_the_list_is_null_unless_a_value_matches():
    assert rows("ROW a = 1 | WHERE a IN (1, null)")
    assert not rows("ROW a = 1 | WHERE a IN (2, null)")
    assert not rows("ROW a = 1 | WHERE a NOT IN (2, null)")
    assert rows("ROW a = 1 | WHERE a NOT IN (2, 3)")


# --- functions (functions/description/*.md, kibana/definition/functions/*.json) --------------------


def test_case_returns_the_value_of_the_first_true_condition_or_the_default():
    query = 'ROW x = {x} | EVAL type = CASE(x < 10, "small", x < 100, "medium", "large")'
    assert [one(query.format(x=x), "type") for x in (5, 50, 500)] == ["small", "medium", "large"]
    assert one('ROW x = 5 | EVAL t = CASE(x > 10, "big")', "t") is None  # even arguments, no match: null


def test_coalesce_returns_the_first_non_null_argument():
    assert one('ROW a=null, b="b" | EVAL c = COALESCE(a, b)', "c") == "b"


def test_url_decode_example():
    assert one('ROW u = "https%3A%2F%2Fexample.com%2F%3Fx%3Dfoo%20bar%26y%3Dbaz" | EVAL u = URL_DECODE(u)',
               "u") == "https://example.com/?x=foo bar&y=baz"


def test_url_decode_of_a_malformed_escape_is_null_and_plus_is_a_space():
    assert one('ROW u = "100%" | EVAL d = URL_DECODE(u)', "d") is None
    assert one('ROW u = "a+b" | EVAL d = URL_DECODE(u)', "d") == "a b"


def test_replace_examples():
    assert one('ROW str = "Hello World" | EVAL str = REPLACE(str, "World", "Universe")', "str") == "Hello Universe"
    assert one('ROW str = "Hello World" | EVAL str = REPLACE(str, "\\\\s+", "")', "str") == "HelloWorld"
    assert one('ROW s = "a-b" | EVAL s = REPLACE(s, "(a)-(b)", "$2-$1")', "s") == "b-a"


def test_to_lower_and_to_upper_accept_multivalues():
    assert one('ROW v = TO_LOWER(["Some", "Text"])', "v") == ("some", "text")
    assert one('ROW message = "Some Text" | EVAL u = TO_UPPER(message)', "u") == "SOME TEXT"


def test_starts_with_ends_with_length():
    assert rows('ROW s = "kubectl" | WHERE STARTS_WITH(s, "kube") AND ENDS_WITH(s, "ctl") AND LENGTH(s) == 7')


def test_mv_functions():
    row = rows('ROW a = ["b", "a", "b"] | EVAL c = MV_COUNT(a), d = MV_DEDUPE(a), j = MV_CONCAT(a, ","), '
               'f = MV_FIRST(a), l = MV_LAST(a), mn = MV_MIN(a), mx = MV_MAX(a)')[0]
    assert row["c"] == 3 and row["d"] == ("b", "a") and row["j"] == "b,a,b"
    assert (row["f"], row["l"], row["mn"], row["mx"]) == ("b", "b", "a", "b")


def test_integer_division_truncates_and_division_by_zero_is_null():
    assert one("ROW a = 7 | EVAL q = a / 2, r = a % 2, n = -7 / 2, z = a / 0", "q") == 3
    row = rows("ROW a = 7 | EVAL q = a / 2, r = a % 2, n = -7 / 2, z = a / 0")[0]
    assert (row["r"], row["n"], row["z"]) == (1, -3, None)


def test_dates_move_by_durations_and_now_is_the_query_time():
    assert one("ROW t = NOW() - 9 minutes", "t") == datetime(2026, 3, 4, 4, 57, 7, tzinfo=timezone.utc)
    assert rows('FROM logs | WHERE @timestamp >= NOW() - 1 hour',
                [{"@timestamp": "2026-03-04T04:30:00.000Z"}])
    assert one('FROM logs | EVAL m = DATE_TRUNC(1 minute, @timestamp)', "m",
               [{"@timestamp": "2026-03-04T04:30:59.999Z"}]) == datetime(2026, 3, 4, 4, 30, tzinfo=timezone.utc)


def test_ip_fields_compare_with_strings_and_print_canonically():
    documents = [{"source": {"ip": "0:0:0:0:0:0:0:1"}}]
    assert rows('FROM logs | WHERE source.ip == "::1"', documents)
    assert rows('FROM logs | WHERE TO_STRING(source.ip) IN ("127.0.0.1", "::1")', documents)


def test_kql_function_reads_the_document():
    documents = [{"kubernetes": {"audit": {"requestObject": {"rules": [{"verbs": ["get"]}, {"verbs": ["*"]}]}}}}]
    assert rows('FROM logs | WHERE KQL("""kubernetes.audit.requestObject.rules.verbs:"*" """)', documents)
    assert not rows('FROM logs | WHERE KQL("kubernetes.audit.requestObject.rules.verbs:list")', documents)


# --- GROK and DISSECT (esql-process-data-with-dissect-grok.md) ------------------------------------


def test_grok_extracts_columns_and_converts_typed_captures():
    row = rows('ROW a = "2023-01-23T12:15:00.000Z 127.0.0.1 some.email@foo.com 42" '
               '| GROK a """%{TIMESTAMP_ISO8601:date} %{IP:ip} %{EMAILADDRESS:email} %{NUMBER:num:int}""" '
               '| KEEP date, ip, email, num')[0]
    assert row == {"date": "2023-01-23T12:15:00.000Z", "ip": "127.0.0.1", "email": "some.email@foo.com", "num": 42}


def test_grok_duplicate_names_make_a_multivalue_and_no_match_gives_nulls():
    documents = [{"zip_code": "1016 ED"}, {"zip_code": "100-7014"}]
    result = rows('FROM addresses | GROK zip_code """%{WORD:zip_parts} %{WORD:zip_parts}"""', documents)
    assert [row["zip_parts"] for row in result] == [("1016", "ED"), None]


def test_grok_uses_the_backslash_escapes_of_an_esql_string():
    assert one('ROW a = "1.2.3.4 [2023-01-23T12:15:00.000Z] Connected" '
               '| GROK a "%{IP:ip} \\\\[%{TIMESTAMP_ISO8601:@timestamp}\\\\] %{GREEDYDATA:status}"', "status") \
        == "Connected"


def test_dissect_examples():
    assert rows('ROW a = "2023-01-23T12:15:00.000Z - some text - 127.0.0.1" '
                '| DISSECT a """%{date} - %{msg} - %{ip}""" | KEEP date, msg, ip') == [
        {"date": "2023-01-23T12:15:00.000Z", "msg": "some text", "ip": "127.0.0.1"}]
    assert one('ROW message="john jacob jingleheimer schmidt" '
               '| DISSECT message """%{+name/2} %{+name/4} %{+name/3} %{+name/1}""" APPEND_SEPARATOR=","',
               "name") == "schmidt,john,jingleheimer,jacob"
    assert one('ROW message="1998-08-10T17:15:42          WARN" | DISSECT message """%{ts->} %{level}"""',
               "level") == "WARN"


# --- columns: KEEP, DROP, RENAME, unknown names -------------------------------------------------------


def test_keep_drop_rename_and_eval_order():
    assert rows("ROW a = 1, b = 2, c = 3 | DROP b | RENAME a AS x | EVAL c = c + 1 | KEEP c, x") == [
        {"c": 4, "x": 1}]
    assert rows("ROW a = 1, b = 2 | EVAL a = 5") == [{"b": 2, "a": 5}]  # a redefined column moves last
    assert rows("ROW a.x = 1, a.y = 2, b = 3 | KEEP a.*") == [{"a.x": 1, "a.y": 2}]


@pytest.mark.parametrize("query, message", [
    ("ROW a = 1 | DROP a | EVAL b = a", "Unknown column [a]"),
    ("ROW a = 1 | KEEP b | EVAL c = a", "Unknown column [a]"),
    ("ROW a = 1 | EVAL b = MATCH(a, \"x\")", "full-text search"),
    ("ROW a = 1 | EVAL b = NO_SUCH_FUNCTION(a)", "unknown or unsupported function NO_SUCH_FUNCTION()"),
    ("ROW a = 1 | EVAL b = LENGTH(a, a)", "LENGTH() takes 1 argument, got 2"),
    ("ROW a = 1 | EVAL b = COUNT(a)", "only allowed in STATS"),
    ('ROW a = "x" | WHERE a RLIKE "a~bc"', "RLIKE pattern cannot be translated"),
    ('ROW a = "x" | WHERE a RLIKE "a\\\\qb"', "RLIKE pattern is invalid: invalid character class \\q"),
    ('ROW a = "x" | GROK a "%{NOPE:x}"', "Unable to find pattern [NOPE]"),
    ('ROW a = "x" | WHERE a == ?p', "query parameters"),
])
def test_what_is_refused_names_the_reason_and_position(query, message):
    with pytest.raises(EsqlSyntaxError) as caught:
        rows(query)
    assert message in caught.value.reason and caught.value.unsupported


@pytest.mark.parametrize("query, message, column", [
    ("FROM logs | WHERE a == ", "unexpected end of query", 24),
    ("FROM logs | WHERE a == 'x'", "single-quoted strings are not ES|QL", 24),
    ("FROM logs | FROB x", "unknown or unsupported command 'FROB'", 13),
    ("WHERE a == 1", "a query starts with FROM or ROW", 1),
    ('FROM logs | WHERE a == "\\q"', "unterminated string", 24),
])
def test_syntax_errors_point_at_the_token(query, message, column):
    with pytest.raises(EsqlSyntaxError) as caught:
        parse(query)
    assert message in caught.value.reason and caught.value.column == column and not caught.value.unsupported


def test_keywords_are_case_insensitive_and_comments_are_ignored():
    query = 'from logs /* block */ | where Verb == "get" // line\n| KEEP verb'
    assert compile_esql(query)({"Verb": "get"})
    assert not compile_esql(query)({"Verb": "list"})


def test_a_command_keyword_names_a_column_inside_an_expression():
    assert one("ROW limit = 3 | EVAL sort = limit + 1", "sort") == 4


# --- STATS (commands/stats-by.md, functions count, count_distinct, values) --------------------------


def test_stats_by_counts_and_lists_per_group():
    documents = [{"user": "a", "ip": "1.1.1.1", "res": "pods"}, {"user": "a", "ip": "1.1.1.1", "res": "nodes"},
                 {"user": "a", "ip": "1.1.1.1", "res": "pods"}, {"user": "b", "ip": "2.2.2.2", "res": "pods"}]
    result = rows("FROM logs | STATS n = COUNT(*), d = COUNT_DISTINCT(res), v = VALUES(res) BY user "
                  "| WHERE d >= 2", documents)
    assert result == [{"n": 3, "d": 2, "v": ("nodes", "pods"), "user": "a"}]


def test_stats_without_by_gives_one_row_even_for_no_input():
    assert rows("FROM logs | STATS n = COUNT(*), m = MAX(x)", []) == [{"n": 0, "m": None}]


def test_stats_by_a_multivalued_key_counts_the_row_in_each_group():
    result = rows("FROM logs | STATS n = COUNT(*) BY g", [{"g": ["x", "y"]}, {"g": "x"}])
    assert sorted((row["g"], row["n"]) for row in result) == [("x", 2), ("y", 1)]


def test_stats_aggregate_filter_and_expression_argument():
    documents = [{"code": 403}, {"code": 200}, {"code": 404}]
    row = rows("FROM logs | STATS fails = SUM(CASE(code >= 400, 1, 0)), forbidden = COUNT(*) WHERE code == 403",
               documents)[0]
    assert row == {"fails": 2, "forbidden": 1}


def test_a_document_field_is_gone_after_stats():
    with pytest.raises(EsqlSyntaxError, match=r"Unknown column \[x\]"):
        rows("FROM logs | STATS n = COUNT(*) | EVAL y = x", [])
