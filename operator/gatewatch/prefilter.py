"""Which rules can match at all: an index on the resource, subresource and verb of a request.

Nearly every Kubernetes rule requires `kubernetes.audit.objectRef.resource`
and `kubernetes.audit.verb` to be one of a few values ("pods", "create"), and
often `kubernetes.audit.objectRef.subresource` too ("exec"), while most audit
events are reads of other resources. Looking those fields up once per event
and evaluating only the rules that admit their values gives the same matches
for a fraction of the work (replay reads every event of the cluster, not just
Pod ones).

A rule is constrained on a field only when its query *requires* the field to
hold one of a set of plain strings (`field:value` or `field:(a or b)`, alone
or inside a top-level `and`), or to be absent (`not field:*`, as in "a Pod
itself, not one of its subresources"); on other fields it is unconstrained.

The index also spares the candidates re-checking what it has just checked:
``residual_query`` drops from a rule's top-level ``and`` the conditions on
index fields, and the engine evaluates that residue when the document's
index values are plain single strings (or absent), which is when the index's
answer is exact (``RuleIndex.lookup``). A rule set of many Pod rules, each
starting with ``resource:"pods" and verb:(...)``, then pays for those once.

Replay asks before it builds a document at all (``candidates_for_audit_event``):
the document's ``kubernetes.audit`` is the audit event itself (only its
annotations are rewritten), so ``objectRef.resource`` and the others read from
the raw event resolve exactly as the index fields do on the document.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence, TypeVar

from gatewatch.kql import And, Exists, MatchAll, Node, Not, Or, Term
from gatewatch.kql.fields import compile_path

INDEX_FIELDS = (
    "kubernetes.audit.objectRef.resource",
    "kubernetes.audit.objectRef.subresource",
    "kubernetes.audit.verb",
)
# Where the document keeps the audit event; the index fields all lie beneath it.
AUDIT_EVENT_PREFIX = "kubernetes.audit."
# Distinct (resource, subresource, verb) keys remembered; a cluster has a few hundred.
_MAX_CACHED_KEYS = 4096

# Resource names: plain lower-case words. Anything else (numbers, booleans,
# IP addresses, which KQL also reads as such) is left unindexed.
_PLAIN_WORD = re.compile(r"[a-z][a-z0-9-]*")
_NOT_PLAIN = frozenset({"true", "false"})

R = TypeVar("R")


def required_values(node: Node | None, field: str) -> frozenset[str] | None:
    """The values ``field`` must hold for ``node`` to match (``ABSENT``: none); None when unconstrained."""
    if isinstance(node, Term):
        if node.field == field and not node.case_insensitive and _is_plain(node.value):
            return frozenset({node.value})
        return None
    if isinstance(node, Not) and isinstance(node.item, Exists) and node.item.field == field:
        return frozenset({ABSENT})  # `not field:*`: only an event without the field
    if isinstance(node, Or):
        union: set[str] = set()
        for item in node.items:
            values = required_values(item, field)
            if values is None:
                return None
            union |= values
        return frozenset(union)
    if isinstance(node, And):
        constrained = [v for v in (required_values(item, field) for item in node.items) if v is not None]
        if not constrained:
            return None
        return frozenset.intersection(*constrained)
    return None


def _decided_by_index(node: Node) -> bool:
    """True when ``node`` reads one index field only, and holds for every value ``required_values`` admits for it."""
    for field in INDEX_FIELDS:
        values = required_values(node, field)
        if values is not None and _only_reads(node, field):
            return True
    return False


def _only_reads(node: Node, field: str) -> bool:
    if isinstance(node, Term):
        return node.field == field and not node.case_insensitive and _is_plain(node.value)
    if isinstance(node, Not):
        return isinstance(node.item, Exists) and node.item.field == field
    if isinstance(node, Or):
        return all(_only_reads(item, field) for item in node.items)
    return False


def residual_query(node: Node) -> Node:
    """``node`` without the conditions the index decides: what is left to evaluate for a candidate
    whose index values are exact (plain single strings, or absent)."""
    if _decided_by_index(node):
        return MatchAll()
    if isinstance(node, And):
        kept = tuple(item for item in node.items if not _decided_by_index(item))
        if len(kept) == len(node.items):
            return node
        return MatchAll() if not kept else kept[0] if len(kept) == 1 else And(kept)
    return node


class RuleIndex:
    """The rules that can match a document, given its values of ``INDEX_FIELDS``, in rule-set order."""

    def __init__(self, rules: Sequence[R], nodes: Sequence[Node | None]) -> None:
        self._rules = tuple(rules)
        self._requirements = [tuple(required_values(node, field) for field in INDEX_FIELDS) for node in nodes]
        self._resolvers = tuple(compile_path(field) for field in INDEX_FIELDS)
        self._event_resolvers = tuple(compile_path(field.removeprefix(AUDIT_EVENT_PREFIX)) for field in INDEX_FIELDS)
        self._by_key: dict[tuple[object, ...], tuple[R, ...]] = {}

    def candidates(self, document: Mapping[str, Any]) -> tuple[R, ...]:
        return self._candidates_for_key(tuple(_single_string(resolve(document)) for resolve in self._resolvers))

    def lookup(self, document: Mapping[str, Any]) -> tuple[tuple[R, ...], bool]:
        """``candidates``, and whether the answer is exact: every index value a plain single string
        or absent, so each candidate's conditions on index fields hold (see ``residual_query``)."""
        key = tuple(_single_string(resolve(document)) for resolve in self._resolvers)
        return self._candidates_for_key(key), _ANY not in key

    def candidates_for_audit_event(self, event: Mapping[str, Any]) -> tuple[R, ...]:
        """``candidates`` of the document this audit event becomes, without building it."""
        return self._candidates_for_key(tuple(_single_string(resolve(event)) for resolve in self._event_resolvers))

    def _candidates_for_key(self, key: tuple[object, ...]) -> tuple[R, ...]:
        found = self._by_key.get(key)
        if found is None:
            found = tuple(
                rule
                for rule, requirements in zip(self._rules, self._requirements)
                if all(values is None or value is _ANY or value in values for values, value in zip(requirements, key))
            )
            if len(self._by_key) < _MAX_CACHED_KEYS:
                self._by_key[key] = found
        return found


# An absent field rules out every rule that requires a value of it; several
# values or a non-string one rule out nothing (they stay with _ANY).
ABSENT = object()
_ANY = object()


def _single_string(values: list[Any]) -> object:
    if not values:
        return ABSENT
    return values[0] if len(values) == 1 and isinstance(values[0], str) else _ANY


def _is_plain(value: str) -> bool:
    return value not in _NOT_PLAIN and _PLAIN_WORD.fullmatch(value) is not None
