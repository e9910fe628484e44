"""KQL wildcards (``*`` only) as linear-time string tests.

A ``*`` pattern is matched greedily, part by part: the first part must start
the text, the last must end it, and each middle part is found left to right
after the previous one. Taking the leftmost place of each middle part is never
wrong (it leaves the most room for the parts after it), so there is nothing to
backtrack: the cost is one ``str.find`` per part, linear in the text. A regex
of ``.*`` between the parts can instead backtrack polynomially in the text
(``labels.*a*a*a*a*b`` took 35 s on one 317-character label key).

Used for wildcard values (``image:*busybox*``), wildcard field names
(``labels.*``) and by ``rules lint``.
"""
from __future__ import annotations

from collections.abc import Callable

TextTest = Callable[[str], bool]


def glob_matcher(parts: tuple[str, ...], *, case_insensitive: bool = False) -> TextTest:
    """A test for ``"*".join(parts)`` on whole strings (``*`` matches any text, newlines included).

    ``parts`` is the pattern split at its ``*`` (``Wildcard.parts``): ``("", "x", "")`` is ``*x*``.
    """
    if case_insensitive:
        folded = _glob(tuple(part.casefold() for part in parts))
        return lambda text: folded(text.casefold())
    return _glob(parts)


def split_pattern(pattern: str) -> tuple[str, ...]:
    """``"a*b"`` -> ``("a", "b")``: the parts ``glob_matcher`` takes (no escapes: ``*`` is always a wildcard)."""
    return tuple(pattern.split("*"))


def _glob(parts: tuple[str, ...]) -> TextTest:
    # The common shapes are one string method each.
    if len(parts) == 1:
        (whole,) = parts
        return lambda text: text == whole
    first, *middle, last = parts
    middle = [part for part in middle if part]  # "a**b" is "a*b"
    if not middle:
        if not last:
            return lambda text: text.startswith(first)
        if not first:
            return lambda text: text.endswith(last)
    elif len(middle) == 1 and not first and not last:
        (infix,) = middle
        return lambda text: infix in text
    shortest = len(first) + len(last) + sum(map(len, middle))

    def glob(text: str) -> bool:
        if len(text) < shortest or not text.startswith(first) or not text.endswith(last):
            return False
        position, end = len(first), len(text) - len(last)
        for part in middle:
            found = text.find(part, position, end)
            if found < 0:
                return False
            position = found + len(part)
        return True

    return glob
