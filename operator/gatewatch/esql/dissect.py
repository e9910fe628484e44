"""DISSECT: delimiter-based extraction, a port of Elasticsearch's ``DissectParser``.

A pattern is ``%{key}`` fields between literal delimiters. Key modifiers:
``%{key->}`` skips repeats of the following delimiter, ``%{+key}`` appends to
``key`` (``%{+key/2}`` in that order) joined with APPEND_SEPARATOR, ``%{?key}``
and ``%{}`` match without output. Reference keys (``*``, ``&``) are refused, as
ES|QL refuses them. The input must match the whole pattern, else every column
is null.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from gatewatch.esql.regex import PatternError

_LEADING = re.compile(r"^(.*?)%\{", re.DOTALL)
_FIELDS = re.compile(r"%\{([^}]*?)}(.+?(?=%\{)|.*$)", re.DOTALL)
_KEY = re.compile(r"^(?P<modifier>[+*&?])?(?P<name>.*?)(?:/(?P<position>\d+))?(?P<padding>->)?$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class DissectKey:
    name: str
    append: bool = False
    position: int = 0
    skip: bool = False
    right_padding: bool = False


@dataclass(frozen=True)
class DissectPattern:
    pattern: str
    leading: str
    pairs: tuple[tuple[DissectKey, str], ...]
    columns: tuple[str, ...]
    append_separator: str

    def parse(self, text: str) -> dict[str, str] | None:
        """Column -> value, or None when ``text`` does not match (DissectParser.parse)."""
        leading = self.leading
        if not (len(text) > len(leading) and text.startswith(leading)):
            return None
        matched: list[tuple[DissectKey, str]] = []
        pairs = iter(self.pairs)
        key, delimiter = next(pairs)
        index = value_start = len(leading)
        exhausted = False
        while index < len(text):
            if delimiter and text.startswith(delimiter, index):
                matched.append((key, text[value_start:index]))
                index += len(delimiter)
                # Consecutive delimiters: skipped by right padding, else empty values for the next keys.
                while index < len(text) and text.startswith(delimiter, index):
                    index += len(delimiter)
                    if not key.right_padding:
                        following = next(pairs, None)
                        if following is None:
                            break
                        key = following[0]
                        matched.append((key, ""))
                following = next(pairs, None)
                if following is None:
                    exhausted = True
                    break
                key, delimiter = following
                value_start = index
            else:
                index += 1
        if not exhausted and len(matched) < len(self.pairs) and not delimiter:
            matched.append((key, text[value_start:]))  # the last key takes the rest
        if len(matched) != len(self.pairs):
            return None
        return self._results(matched)

    def _results(self, matched: list[tuple[DissectKey, str]]) -> dict[str, str]:
        results: dict[str, str] = {}
        appends: dict[str, list[tuple[int, int, str]]] = {}
        for order, (key, value) in enumerate(matched):
            if key.skip:
                continue
            if key.append:
                appends.setdefault(key.name, []).append((key.position, order, value))
            else:
                results[key.name] = value
        for name, parts in appends.items():
            results[name] = self.append_separator.join(value for _, _, value in sorted(parts))
        return {column: results[column] for column in self.columns if column in results}


@lru_cache(maxsize=256)
def compile_dissect(pattern: str, append_separator: str = "") -> DissectPattern:
    """Parse a DISSECT pattern (raises PatternError)."""
    leading_match = _LEADING.match(pattern)
    if leading_match is None:
        raise PatternError(f"Unable to parse pattern: {pattern}")
    leading = leading_match.group(1)
    pairs: list[tuple[DissectKey, str]] = []
    for match in _FIELDS.finditer(pattern, len(leading)):
        key = _key(match.group(1))
        pairs.append((key, match.group(2)))
    if not pairs:
        raise PatternError(f"Unable to find any keys or delimiters in: {pattern}")
    columns: dict[str, None] = {}
    for key, _ in pairs:
        if not key.skip:
            columns.pop(key.name, None)  # only the rightmost duplicate makes a column
            columns[key.name] = None
    return DissectPattern(
        pattern=pattern, leading=leading, pairs=tuple(pairs), columns=tuple(columns), append_separator=append_separator
    )


def _key(text: str) -> DissectKey:
    match = _KEY.match(text)
    assert match is not None  # the key pattern matches any text
    modifier, name = match.group("modifier"), match.group("name")
    if modifier in ("*", "&"):
        raise PatternError(f"reference keys (%{{{text}}}) are not supported by ES|QL's DISSECT")
    position = int(match.group("position")) if match.group("position") else 0
    if position and modifier != "+":
        raise PatternError(f"an order (/{position}) needs the append modifier: %{{{text}}}")
    return DissectKey(
        name=name,
        append=modifier == "+",
        position=position,
        skip=modifier == "?" or name == "",
        right_padding=match.group("padding") is not None,
    )
