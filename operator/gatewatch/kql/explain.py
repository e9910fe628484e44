"""Why a query matched a document: the locations of the values that made it true.

For an alert to say *which* container broke a rule
(``spec.initContainers[0].securityContext.privileged``), not only that one
did. Walks the syntax tree of a query that matched and collects:

- for a field match, range or exists that holds (outside ``not``): the
  locations of the values of the field that satisfy it, list indexes
  included (an exists on objects, ``gatewatch.containers:*``, says that
  there are some, not which one offends: it adds nothing);
- for a nested query ``list:{ q }``: each element of the list that satisfies
  ``q``, extended by what ``q`` looked at inside it, where conditions under
  ``not`` count too (``list:{ not allowPrivilegeEscalation:false }`` names
  the element's ``allowPrivilegeEscalation``, set or not);
- for ``or``, only the branches that hold; for ``and``, all of them.

Outside a nested query a ``not`` adds nothing: "the Pod is not a Windows
Pod" is a condition of the rule, not an offending field. Free-text matches
and wildcard field names add nothing either. Evaluation reuses the compiler,
one sub-query at a time: meant for alerts and reports, not the hot path.
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Callable

from gatewatch.kql.ast import And, Exists, MatchAll, Nested, Node, Not, Or, Range, Term, Wildcard
from gatewatch.kql.compiler import CompiledQuery, compile_query, referenced_fields
from gatewatch.kql.fields import Location, located_values

__all__ = ["Location", "matched_locations"]

# The one field of the one-value documents a leaf is tested on.
_VALUE = "value"


def matched_locations(query: CompiledQuery | Node, document: Mapping[str, Any]) -> list[Location]:
    """Where the values are that made ``query`` match ``document`` (empty when it does not match)."""
    node = query.node if isinstance(query, CompiledQuery) else query
    if not _predicate(node)(document):
        return []
    found: dict[Location, None] = {}
    _explain(node, document, (), found, in_element=False)
    return list(found)


@lru_cache(maxsize=4096)
def _predicate(node: Node) -> Callable[[Any], bool]:
    return compile_query(node)


@lru_cache(maxsize=4096)
def _value_test(node: Term | Wildcard | Range | Exists) -> Callable[[Any], bool]:
    """The leaf's condition on one value (the leaf moved onto the field ``value``)."""
    if isinstance(node, Term):
        moved: Node = Term(_VALUE, node.value, node.case_insensitive)
    elif isinstance(node, Wildcard):
        moved = Wildcard(_VALUE, node.parts, node.case_insensitive)
    elif isinstance(node, Range):
        moved = Range(_VALUE, node.operator, node.value)
    else:
        moved = Exists(_VALUE)
    return compile_query(moved)


def _explain(node: Node, document: Any, prefix: Location, found: dict[Location, None], *, in_element: bool) -> None:
    if isinstance(node, Or):
        for item in node.items:
            if _predicate(item)(document):
                _explain(item, document, prefix, found, in_element=in_element)
    elif isinstance(node, And):
        for item in node.items:
            _explain(item, document, prefix, found, in_element=in_element)
    elif isinstance(node, Not):
        if in_element:
            for field in sorted(referenced_fields(node.item)):
                if "*" not in field:
                    found[(*prefix, *field.split("."))] = None
    elif isinstance(node, Nested):
        for location, element in located_values(document, node.field):
            if isinstance(element, Mapping) and _predicate(node.query)(element):
                inner: dict[Location, None] = {}
                _explain(node.query, element, (), inner, in_element=True)
                for below in inner or [()]:
                    found[(*prefix, *location, *below)] = None
    elif isinstance(node, (Term, Wildcard, Range, Exists)) and node.field is not None and "*" not in node.field:
        test = _value_test(node)
        for location, value in located_values(document, node.field):
            if isinstance(node, Exists) and isinstance(value, Mapping):
                continue
            if test({_VALUE: value}):
                found[(*prefix, *location)] = None
    # MatchAll and free text name no field.
    elif not isinstance(node, (MatchAll, Term, Wildcard, Range, Exists)):
        raise TypeError(f"not a KQL node: {node!r}")
