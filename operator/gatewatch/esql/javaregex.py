"""REPLACE: Java regular expressions (``java.util.regex``), translated (or refused).

Java regex (``java_regex``) for REPLACE, searched anywhere in the text: Java's
syntax mostly is Python's; translated are ``(?<name>``, ``\\Q...\\E``, ``\\z``,
``\\Z``, ``\\h``, ``\\R``, ``\\x{...}``, ``\\k<name>`` and ``.`` (which in Java
stops at every line terminator); refused are ``\\p{...}`` classes, class
intersections ``&&``, ``\\G`` and the other constructs Python lacks.
The replacement follows ``Matcher.replaceAll``: ``$1``, ``${name}``, ``\\$``.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from gatewatch.esql.regex import PatternError, compile_regex

# --- Java regex (REPLACE) ----------------------------------------------------------------------------

_JAVA_LINE_TERMINATORS = "\n\r\x85\u2028\u2029"  # the characters themselves: RE2 has no \\u escape
_JAVA_SIMPLE_ESCAPES = {
    "z": r"\Z",
    "Z": r"(?=(?:\r\n|[\n\r\x85\u2028\u2029])?\Z)",
    "h": r"[ \t\xa0\u1680\u180e\u2000-\u200a\u202f\u205f\u3000]",
    "H": r"[^ \t\xa0\u1680\u180e\u2000-\u200a\u202f\u205f\u3000]",
    "R": r"(?:\r\n|[\n\x0b\f\r\x85\u2028\u2029])",
    "v": r"[\n\x0b\f\r\x85\u2028\u2029]",
    "V": r"[^\n\x0b\f\r\x85\u2028\u2029]",
}
_JAVA_REFUSED_ESCAPES = {"p": "\\p{...} character classes", "P": "\\P{...} character classes", "G": "\\G",
                         "X": "\\X", "c": "\\c control characters", "N": "\\N{...} names"}


def _java_to_python(pattern: str) -> str:
    out: list[str] = []
    index = 0
    in_class = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            if index + 1 >= len(pattern):
                raise PatternError("unexpected end of pattern after \\", index)
            following = pattern[index + 1]
            if following == "Q":
                end = pattern.find("\\E", index + 2)
                quoted = pattern[index + 2:] if end < 0 else pattern[index + 2:end]
                out.append(re.escape(quoted))
                index = len(pattern) if end < 0 else end + 2
                continue
            if following in _JAVA_REFUSED_ESCAPES:
                raise PatternError(f"{_JAVA_REFUSED_ESCAPES[following]} have no Python equivalent", index,
                                   untranslatable=True)
            if following in _JAVA_SIMPLE_ESCAPES and not in_class:
                out.append(_JAVA_SIMPLE_ESCAPES[following])
                index += 2
                continue
            if following == "x" and pattern.startswith("{", index + 2):
                end = pattern.index("}", index + 3)
                out.append(f"\\U{int(pattern[index + 3:end], 16):08x}")
                index = end + 1
                continue
            if following == "k" and pattern.startswith("<", index + 2):
                end = pattern.index(">", index + 3)
                out.append(f"(?P={pattern[index + 3:end]})")
                index = end + 1
                continue
            out.append(pattern[index:index + 2])
            index += 2
            continue
        if in_class:
            if char == "[":
                raise PatternError("nested character classes (union) have no Python equivalent", index,
                                   untranslatable=True)
            if pattern.startswith("&&", index):
                raise PatternError("character class intersection (&&) has no Python equivalent", index,
                                   untranslatable=True)
            if char == "]":
                in_class = 0
            out.append(char)
            index += 1
            continue
        if char == "[":
            in_class = 1
            out.append(char)
            index += 1
            if pattern.startswith("^", index):
                out.append("^")
                index += 1
            if pattern.startswith("]", index):  # a ] right after [ or [^ is literal in Java
                out.append("\\]")
                index += 1
            continue
        if pattern.startswith("(?<", index) and not pattern.startswith(("(?<=", "(?<!"), index):
            out.append("(?P<")
            index += 3
            continue
        if char == ".":
            out.append(f"[^{_JAVA_LINE_TERMINATORS}]")
            index += 1
            continue
        out.append(char)
        index += 1
    return "".join(out)


_JAVA_METACHARACTERS = frozenset("\\^$.|?*+()[]{}")


@lru_cache(maxsize=1024)
def java_literal(pattern: str) -> str | None:
    """The text a Java regex matches when it is a plain literal (``command=``, ``\\+``), else None."""
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            following = pattern[index + 1:index + 2]
            if not following or following.isalnum():
                return None  # \d, \Q, a trailing backslash: not a literal
            out.append(following)
            index += 2
        elif char in _JAVA_METACHARACTERS:
            return None
        else:
            out.append(char)
            index += 1
    return "".join(out)


def java_literal_replacement(replacement: str) -> str | None:
    """The replacement text when it has no group reference (``$1``), with ``\\`` escapes applied."""
    if "$" in replacement.replace("\\$", ""):
        return None
    out: list[str] = []
    index = 0
    while index < len(replacement):
        if replacement[index] == "\\":
            if index + 1 >= len(replacement):
                return None
            out.append(replacement[index + 1])
            index += 2
        else:
            out.append(replacement[index])
            index += 1
    return "".join(out)


@lru_cache(maxsize=1024)
def java_regex(pattern: str) -> Any:
    """REPLACE's regex, compiled (``compile_regex``; raises PatternError)."""
    try:
        return compile_regex(_java_to_python(pattern))
    except re.error as error:
        raise PatternError(f"invalid or untranslatable regular expression: {error.msg}",
                           error.pos or 0) from None
    except ValueError as error:  # a malformed \x{...} or \k<...>
        raise PatternError(f"invalid regular expression: {error}") from None


@lru_cache(maxsize=1024)
def java_replacement(replacement: str, groups: int, names: frozenset[str]) -> Callable[[re.Match[str]], str]:
    """``Matcher.replaceAll``'s replacement text as a function of the match (raises PatternError)."""
    pieces: list[str | int] = []  # str: literal, int/str in tuple: group reference
    refs: list[tuple[int, str | int]] = []
    buffer: list[str] = []
    index = 0
    while index < len(replacement):
        char = replacement[index]
        if char == "\\":
            index += 1
            if index >= len(replacement):
                raise PatternError("character to be escaped is missing", index)
            buffer.append(replacement[index])
            index += 1
        elif char == "$":
            index += 1
            if index >= len(replacement):
                raise PatternError("Illegal group reference: group index is missing", index)
            if replacement[index] == "{":
                end = replacement.find("}", index)
                if end < 0:
                    raise PatternError("named capturing group is missing trailing '}'", index)
                name = replacement[index + 1:end]
                if name not in names:
                    raise PatternError(f"No group with name {{{name}}}", index)
                reference: str | int = name
                index = end + 1
            else:
                if not replacement[index].isdigit():
                    raise PatternError("Illegal group reference", index)
                number = int(replacement[index])
                if number > groups:
                    raise PatternError(f"No group {number}", index)
                index += 1
                # Java takes more digits while the group number stays valid.
                while index < len(replacement) and replacement[index].isdigit():
                    longer = number * 10 + int(replacement[index])
                    if longer > groups:
                        break
                    number = longer
                    index += 1
                reference = number
            pieces.append("".join(buffer))
            buffer = []
            refs.append((len(pieces), reference))
            pieces.append(0)
        else:
            buffer.append(char)
            index += 1
    pieces.append("".join(buffer))
    if not refs:
        text = "".join(piece for piece in pieces if isinstance(piece, str))
        return lambda _match: text

    def replace(match: re.Match[str]) -> str:
        out = list(pieces)
        for position, reference in refs:
            out[position] = match.group(reference) or ""
        return "".join(str(piece) for piece in out)

    return replace
