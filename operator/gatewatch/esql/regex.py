"""The regular-expression engine behind ES|QL's patterns: RE2 when it can, else ``re``.

``lucene`` (RLIKE, LIKE) and ``javaregex`` (REPLACE) translate their pattern
languages to a syntax both RE2 and Python's ``re`` read; ``grok`` expands GROK
patterns. ``compile_regex`` compiles the result with RE2 (``google-re2``),
whose matching time is linear in the text, and falls back to ``re`` for what
RE2 cannot express. ``PatternError`` is every pattern language's error.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import re2

Matcher = Callable[[str], bool]
# The empty language, valid for RE2 and Python alike ((?!) is not RE2).
NOTHING = r"[^\s\S]"
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


def compile_regex(text: str, *, dotall: bool = False, multiline: bool = False, anchored_end: bool = False) -> Any:
    """Compile a translated pattern with RE2 when RE2 can express it, else with Python's ``re``.

    The texts these patterns run on are a requester's (an exec command, a
    requestURI): RE2 matches in time linear in the text, where a backtracking
    engine can take quadratic or exponential time on a crafted one. Both give
    Perl's leftmost-first matches and groups. What RE2 lacks (lookaround, atomic
    groups, backreferences, repeats over 1000) falls back to ``re``.
    ``anchored_end``: the match must end at the end of the text.
    """
    flags = ("s" if dotall else "") + ("m" if multiline else "")
    try:
        compiled = re2.compile((f"(?{flags})" if flags else "") + text + (r"\z" if anchored_end else ""), _RE2_OPTIONS)
    except re2.error:
        pass
    else:
        return _Re2Pattern(compiled)
    python_flags = (re.DOTALL if dotall else 0) | (re.MULTILINE if multiline else 0)
    return re.compile(text + (r"\Z" if anchored_end else ""), python_flags)


_SURROGATE = re.compile("[\ud800-\udfff]")


class _Re2Pattern:
    """An RE2 pattern that also takes text with lone surrogates (JSON allows "\\ud800"):
    RE2 reads UTF-8, so they are matched as U+FFFD, at the same positions."""

    __slots__ = ("_pattern", "groups", "groupindex")

    def __init__(self, pattern: Any) -> None:
        self._pattern = pattern
        self.groups = pattern.groups
        self.groupindex = pattern.groupindex

    def search(self, text: str) -> Any:
        try:
            return self._pattern.search(text)
        except UnicodeEncodeError:
            return self._pattern.search(_without_surrogates(text))

    def match(self, text: str) -> Any:
        try:
            return self._pattern.match(text)
        except UnicodeEncodeError:
            return self._pattern.match(_without_surrogates(text))

    def fullmatch(self, text: str) -> Any:
        try:
            return self._pattern.fullmatch(text)
        except UnicodeEncodeError:
            return self._pattern.fullmatch(_without_surrogates(text))

    def sub(self, replacement: Any, text: str) -> str:
        try:
            return self._pattern.sub(replacement, text)  # type: ignore[no-any-return]
        except UnicodeEncodeError:
            return self._pattern.sub(replacement, _without_surrogates(text))  # type: ignore[no-any-return]


def _without_surrogates(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)


def is_linear(compiled: Any) -> bool:
    """True when ``compiled`` is an RE2 pattern (linear-time matching)."""
    return not isinstance(compiled, re.Pattern)


class PatternError(ValueError):
    """A pattern that does not parse, or that Python's ``re`` cannot express.

    ``position`` is the offset in the pattern; ``untranslatable`` tells the two apart.
    """

    def __init__(self, reason: str, position: int = 0, *, untranslatable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position
        self.untranslatable = untranslatable
