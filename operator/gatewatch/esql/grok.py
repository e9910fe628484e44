"""GROK: ``%{SYNTAX:SEMANTIC:type}`` patterns, expanded from the standard library and
run with Python's ``re``.

The pattern library is the ECS one ES|QL's GROK uses (``GrokBuiltinPatterns.get(true)``):
the files of logstash-plugins/logstash-patterns-core ``patterns/ecs-v1`` (Apache
License 2.0, see ``patterns/LICENSE`` and ``patterns/NOTICE.TXT``), which
Elasticsearch ships as ``libs/grok/src/main/resources/patterns/ecs-v1``. No
maintained Python package carries it (pygrok's last release is from 2016), so
the files are vendored, in the order Elasticsearch loads them.

Expansion follows ``org.elasticsearch.grok.Grok.toRegex``: ``%{NAME:field}`` becomes
a named group, ``%{NAME}`` a plain one, a ``=definition`` is ignored as there.
The resulting Oniguruma expression (Ruby syntax) is translated to Python:

- ``(?<name>...)`` groups get generated names (a field may occur twice, and
  ``[process][name]`` is no Python group name); a field captured twice is
  multi-valued, in pattern order;
- ``[[:alnum:]]`` and the other POSIX bracket classes are spelled out;
  ``\\h`` (a hex digit in Ruby) becomes ``[0-9a-fA-F]``;
- Ruby's ``(?m)`` (dot matches a line break) becomes Python's ``(?s)``, scoped to
  its group; ``^`` and ``$`` match at line breaks, as in Ruby;
- the match is a search anywhere in the text (``Matcher.search``), not anchored;
- the expression runs on RE2 (linear time in the text) when RE2 can express it,
  which covers DATA, GREEDYDATA and most of the library; patterns with
  lookbehind or atomic groups fall back to Python's backtracking ``re``.

Refused, with the reason: ``\\g<...>`` subexpression calls, ``\\p{...}``, nested
or intersected character classes. Deviation: ``\\w``, ``\\d``, ``\\s`` and
``\\b`` use Python's Unicode definitions, which for non-ASCII text may differ
from Joni's.

Typed captures (``%{NUMBER:n:int}``): int, long, float, double, boolean; a value
that does not convert makes the whole row a failed match (every column null),
as ES|QL documents.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from gatewatch.esql.regex import PatternError, compile_regex

# The order Elasticsearch's GrokBuiltinPatterns loads them; a later file's definition wins.
PATTERN_FILES = (
    "aws", "bacula", "bind", "bro", "exim", "firewalls", "grok-patterns", "haproxy", "httpd", "java",
    "junos", "linux-syslog", "maven", "mcollective", "mongodb", "nagios", "postgresql", "rails", "redis",
    "ruby", "squid", "zeek",
)
# GrokCaptureType names -> ES|QL types (ES|QL has no float: it becomes double).
TYPES = {"int": "integer", "long": "long", "float": "double", "double": "double", "boolean": "boolean",
         "string": "keyword"}
_MAX_EXPANSIONS = 100_000  # Grok.MAX_TO_REGEX_ITERATIONS

_REFERENCE = re.compile(
    r"%\{(?P<name>(?P<pattern>[A-z0-9]+)(?::(?P<subname>[a-zA-Z0-9@\[\]_:.-]+))?)"
    r"(?:=(?P<definition>(?:[^{}]+|\.+)+))?\}"
)
_POSIX_CLASSES = {
    "alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "ascii": "\\x00-\\x7f", "blank": " \\t", "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9", "graph": "\\x21-\\x7e", "lower": "a-z", "print": "\\x20-\\x7e",
    "punct": "!-/:-@\\[-`{-~", "space": " \\t\\n\\r\\f\\v", "upper": "A-Z", "word": "a-zA-Z0-9_",
    "xdigit": "0-9a-fA-F",
}


@cache
def builtin_patterns() -> dict[str, str]:
    """NAME -> definition, read as Elasticsearch reads the files (later definitions win)."""
    bank: dict[str, str] = {}
    folder = resources.files("gatewatch.esql").joinpath("patterns/ecs-v1")
    for name in PATTERN_FILES:
        for line in folder.joinpath(name).read_text(encoding="utf-8").splitlines():
            line = line.lstrip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 1)
            if len(parts) == 2:
                bank[parts[0]] = parts[1]
    return bank


@dataclass(frozen=True, slots=True)
class Capture:
    column: str
    type: str  # an ES|QL type: keyword, integer, long, double, boolean


@dataclass(frozen=True)
class GrokPattern:
    """A compiled GROK pattern: ``columns`` in the order ES|QL adds them."""

    pattern: str
    regex: Any  # an RE2 pattern, or Python's re for what RE2 cannot express (``compile_regex``)
    groups: tuple[tuple[str, Capture], ...]  # (Python group name, capture)
    columns: tuple[Capture, ...]

    def captures(self, text: str) -> dict[str, list[object]] | None:
        """Column -> values for one input string, or None when it does not match."""
        match = self.regex.search(text)
        if match is None:
            return None
        found: dict[str, list[object]] = {capture.column: [] for capture in self.columns}
        for group, capture in self.groups:
            value = match.group(group)
            if value is None:
                continue
            try:
                found[capture.column].append(_convert(value, capture.type))
            except ValueError:
                return None  # ES|QL: an unconvertible typed capture fails the whole row
        return found


def _convert(text: str, kind: str) -> object:
    if kind == "integer":
        number = _java_int(text)
        if not -(2**31) <= number < 2**31:
            raise ValueError(text)
        return number
    if kind == "long":
        number = _java_int(text)
        if not -(2**63) <= number < 2**63:
            raise ValueError(text)
        return number
    if kind == "double":
        return float(text)
    if kind == "boolean":
        return text.lower() == "true"  # Boolean.parseBoolean
    return text


def _java_int(text: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValueError(text)
    return int(text)


def expand(pattern: str, bank: dict[str, str] | None = None) -> str:
    """Grok.toRegex: replace every %{...} reference, outermost first, until none is left."""
    bank = builtin_patterns() if bank is None else bank
    done: list[str] = []
    rest = pattern
    for _ in range(_MAX_EXPANSIONS):
        match = _REFERENCE.search(rest)
        if match is None:
            return "".join(done) + rest
        name = match.group("pattern")
        body = bank.get(name)
        if body is None:
            raise PatternError(f"Unable to find pattern [{name}] in Grok's pattern dictionary", match.start())
        if f"%{{{name}}}" in body or f"%{{{name}:" in body:
            raise PatternError(f"circular reference in pattern back [{name}]", match.start())
        subname = match.group("subname")
        part = f"(?<{match.group('name')}>{body})" if subname is not None else f"(?:{body})"
        done.append(rest[:match.start()])
        rest = part + rest[match.end():]
    raise PatternError("Can not convert grok patterns to regular expression")


def _capture_of(name: str) -> Capture:
    """A named group -> its column and type, as GrokCaptureConfig splits it:
    ``NUMBER:num:int`` -> ("num", integer), ``DATA:raw`` -> ("raw", keyword),
    ``(?<queue_id>...)`` -> ("queue_id", keyword); an unknown type is a string."""
    parts = name.split(":")
    if len(parts) == 3:
        return Capture(parts[1], TYPES.get(parts[2], "keyword"))
    if len(parts) == 2:
        return Capture(parts[1], "keyword")
    return Capture(name, "keyword")


def translate(expression: str) -> tuple[str, list[tuple[str, Capture]]]:
    """An expanded (Oniguruma) expression -> Python pattern text and its named captures."""
    out: list[str] = []
    groups: list[tuple[str, Capture]] = []
    # Per open group: how many scoped-flag groups to close with it.
    pending_closes: list[int] = [0]
    index = 0
    length = len(expression)
    while index < length:
        char = expression[index]
        if char == "\\":
            if index + 1 >= length:
                raise PatternError("pattern ends with a backslash", index)
            following = expression[index + 1]
            if following == "h":
                out.append("[0-9a-fA-F]")
            elif following == "H":
                out.append("[^0-9a-fA-F]")
            elif following == "z":
                out.append(r"\Z")
            elif following == "Z":
                out.append(r"(?=\n?\Z)")
            elif following in "gpPkK":
                raise PatternError(f"\\{following} is not supported by Python's re", index)
            else:
                out.append(expression[index:index + 2])
            index += 2
            continue
        if char == "[":
            end, text = _translate_class(expression, index)
            out.append(text)
            index = end
            continue
        if char == "(":
            if expression.startswith(("(?<=", "(?<!"), index):
                out.append(expression[index:index + 4])
                pending_closes.append(0)
                index += 4
                continue
            named = re.compile(r"\(\?(?:<([^>]+)>|'([^']+)')").match(expression, index)
            if named:
                python_name = f"g{len(groups)}"
                groups.append((python_name, _capture_of(named.group(1) or named.group(2))))
                out.append(f"(?P<{python_name}>")
                pending_closes.append(0)
                index = named.end()
                continue
            flags = re.compile(r"\(\?([imx]*)(?:-([imx]*))?([:)])").match(expression, index)
            if flags and (flags.group(1) or flags.group(2)):
                on, off = _ruby_flags(flags.group(1)), _ruby_flags(flags.group(2) or "")
                spec = on + (f"-{off}" if off else "")
                if flags.group(3) == ":":
                    out.append(f"(?{spec}:")
                    pending_closes.append(0)
                else:  # (?m) to the end of the enclosing group
                    out.append(f"(?{spec}:")
                    pending_closes[-1] += 1
                index = flags.end()
                continue
            out.append("(")
            pending_closes.append(0)
            index += 1
            continue
        if char == ")":
            if len(pending_closes) == 1:
                raise PatternError("unmatched ')'", index)
            out.append(")" * pending_closes.pop())
            out.append(")")
            index += 1
            continue
        out.append(char)
        index += 1
    if len(pending_closes) != 1:
        raise PatternError("missing ')'", length)
    out.append(")" * pending_closes[0])
    return "".join(out), groups


def _ruby_flags(flags: str) -> str:
    # Ruby's m is dot-matches-newline: Python's s.
    return "".join("s" if flag == "m" else flag for flag in flags)


def _translate_class(expression: str, start: int) -> tuple[int, str]:
    out = ["["]
    index = start + 1
    if expression.startswith("^", index):
        out.append("^")
        index += 1
    first = True
    while index < len(expression):
        char = expression[index]
        if char == "]" and not first:
            out.append("]")
            return index + 1, "".join(out)
        if char == "\\":
            following = expression[index + 1:index + 2]
            out.append("0-9a-fA-F" if following == "h" else expression[index:index + 2])
            index += 2
        elif char == "[":
            posix = re.compile(r"\[:(\^?)([a-z]+):\]").match(expression, index)
            if posix and posix.group(2) in _POSIX_CLASSES and not posix.group(1):
                out.append(_POSIX_CLASSES[posix.group(2)])
                index = posix.end()
            elif expression.startswith("[^", index) or posix:
                raise PatternError("negated nested character classes are not supported by Python's re", index)
            else:  # a nested set is a union: [[[:alnum:]]_] is [a-zA-Z0-9_]
                index, nested = _translate_class(expression, index)
                out.append(nested[1:-1])
        elif expression.startswith("&&", index):
            raise PatternError("character class intersection (&&) is not supported by Python's re", index)
        else:
            out.append("\\]" if char == "]" else char)
            index += 1
        first = False
    raise PatternError("premature end of char-class", start)


@lru_cache(maxsize=256)
def compile_grok(pattern: str) -> GrokPattern:
    """Expand, translate and compile a GROK pattern (raises PatternError)."""
    expression = expand(pattern)
    text, groups = translate(expression)
    try:
        regex = compile_regex(text, multiline=True)
    except re.error as error:
        raise PatternError(f"invalid pattern for grok: {error.msg}") from None
    columns: dict[str, Capture] = {}
    for _, capture in groups:
        previous = columns.get(capture.column)
        if previous is not None and previous.type != capture.type:
            raise PatternError(
                f"Invalid GROK pattern [{pattern}]: the attribute [{capture.column}] is defined multiple times "
                "with different types"
            )
        columns[capture.column] = capture
    return GrokPattern(pattern=pattern, regex=regex, groups=tuple(groups), columns=tuple(columns.values()))
