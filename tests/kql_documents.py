"""Documents made from KQL queries: ones that match, and near misses.

For tests and benchmarks that need documents a query set actually matches
(the public corpus holds queries, not events). Deterministic for a given
``random.Random``. A matching document is built on top of a base document
(e.g. one of examples/): each field match of the query is written into it,
one branch of each ``or`` chosen at random; near misses then change one
value, drop one field, or add a second value.
"""
from __future__ import annotations

import copy
import random
from typing import Any

from gatewatch.kql import And, Exists, MatchAll, Nested, Node, Not, Or, Range, Term, Wildcard


def matching_document(node: Node, *, base: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    document = copy.deepcopy(base)
    _satisfy(node, document, rng)
    return document


def near_miss(document: dict[str, Any], node: Node, *, rng: random.Random) -> dict[str, Any]:
    """``document`` with one field the query names changed, removed or given a second value."""
    changed = copy.deepcopy(document)
    fields = sorted(_fields(node))
    if not fields:
        return changed
    field = rng.choice(fields)
    how = rng.randrange(3)
    current = _get(changed, field)
    if how == 0:
        _put(changed, field, f"other-{rng.randrange(100)}")
    elif how == 1:
        _remove(changed, field)
    elif current is not None:
        _put(changed, field, [current, "other"] if not isinstance(current, list) else [*current, "other"])
    return changed


def _satisfy(node: Node, document: dict[str, Any], rng: random.Random) -> None:
    if isinstance(node, And):
        for item in node.items:
            _satisfy(item, document, rng)
    elif isinstance(node, Or):
        _satisfy(rng.choice(node.items), document, rng)
    elif isinstance(node, Not):
        inner = node.item
        if isinstance(inner, (Term, Wildcard, Exists, Range)) and inner.field and "*" not in inner.field:
            current = _get(document, inner.field)
            if current is not None and rng.random() < 0.5:
                _remove(document, inner.field)
    elif isinstance(node, Term):
        value: Any = node.value
        if value.isdigit() and rng.random() < 0.5:
            value = int(value)
        elif value in ("true", "false"):
            value = value == "true"
        _put(document, node.field or "message", value)
    elif isinstance(node, Wildcard):
        filler = rng.choice(["", "x", "abc/def", "1.2"])
        _put(document, node.field or "message", filler.join(node.parts) if node.parts else filler)
    elif isinstance(node, Exists):
        if "*" not in node.field:
            _put(document, node.field, "present")
    elif isinstance(node, Range):
        bound = node.value
        if bound.lstrip("-").isdigit():
            step = {"<": -1, "<=": 0, ">": 1, ">=": 0}[node.operator]
            _put(document, node.field, int(bound) + step)
        else:
            _put(document, node.field, bound)
    elif isinstance(node, Nested):
        element: dict[str, Any] = {}
        _satisfy(node.query, element, rng)
        _put(document, node.field, [element])
    elif isinstance(node, MatchAll):
        pass


def _fields(node: Node) -> set[str]:
    if isinstance(node, (And, Or)):
        return set().union(*(_fields(item) for item in node.items))
    if isinstance(node, Not):
        return _fields(node.item)
    if isinstance(node, (Term, Wildcard, Exists, Range)) and node.field and "*" not in node.field:
        return {node.field}
    return set()


def _get(document: dict[str, Any], field: str) -> Any:
    node: Any = document
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _put(document: dict[str, Any], field: str, value: Any) -> None:
    *parents, last = field.split(".")
    node = document
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            if child is not None:
                return  # a scalar is in the way: leave the document as it is
            child = node[part] = {}
        node = child
    node[last] = value


def _remove(document: dict[str, Any], field: str) -> None:
    *parents, last = field.split(".")
    node: Any = document
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(last, None)
