"""The KQL syntax tree: small frozen dataclasses, one per kind of condition.

A field of ``None`` means free text: the condition holds when any leaf value of
the document satisfies it. Field names are kept as written; a ``*`` in a field
name is a wildcard over flattened field paths.

Value lists never appear here: the parser distributes the field over them, as
Elasticsearch does, so ``a:(x or not y)`` is ``Or((Term("a", "x"), Not(Term("a", "y"))))``.
``gatewatch.kql.to_kql`` folds them back into value lists when rendering.

``Term`` and ``Wildcard`` carry ``case_insensitive``; KQL has no syntax for it
(keyword fields match case-sensitively) but the compiler honours it, for rules
imported from EQL.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

RangeOperator: TypeAlias = Literal["<", "<=", ">", ">="]


@dataclass(frozen=True, slots=True)
class Or:
    """True when any item is true."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class And:
    """True when every item is true."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """True when the item is false (including when its field is absent)."""

    item: Node


@dataclass(frozen=True, slots=True)
class Term:
    """``field:value`` with no wildcard: one value of the field equals ``value``.

    ``value`` is the unescaped text. ``10`` also matches the number 10, ``true``
    the boolean, an IP address any equal address, a CIDR block the addresses in it.
    """

    field: str | None
    value: str
    case_insensitive: bool = False


@dataclass(frozen=True, slots=True)
class Wildcard:
    """``field:a*b``: a value of the field matches the pattern.

    ``parts`` are the literal pieces between the ``*`` wildcards (so the pattern
    is ``"*".join(parts)`` and there are at least two parts): ``alpine*`` is
    ``("alpine", "")``, ``*netshoot:*`` is ``("", "netshoot:", "")``.
    """

    field: str | None
    parts: tuple[str, ...]
    case_insensitive: bool = False

    @classmethod
    def from_pattern(cls, field: str | None, pattern: str, *, case_insensitive: bool = False) -> Wildcard:
        """Build from a pattern where every ``*`` is a wildcard (no escapes)."""
        return cls(field, tuple(pattern.split("*")), case_insensitive)


@dataclass(frozen=True, slots=True)
class Exists:
    """``field:*``: the field has at least one value (null and [] are absent)."""

    field: str


@dataclass(frozen=True, slots=True)
class Range:
    """``field < value`` (also ``<=``, ``>``, ``>=``) on numbers, dates, IPs or strings."""

    field: str
    operator: RangeOperator
    value: str


@dataclass(frozen=True, slots=True)
class Nested:
    """``field:{ query }``: one element of the field (a list of objects) satisfies
    the whole inner query, whose field names are relative to the element."""

    field: str
    query: Node


@dataclass(frozen=True, slots=True)
class MatchAll:
    """``*`` on its own: every document."""


Node: TypeAlias = Or | And | Not | Term | Wildcard | Exists | Range | Nested | MatchAll
FieldMatch: TypeAlias = Term | Wildcard
