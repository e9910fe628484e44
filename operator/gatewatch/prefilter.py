"""Which rules can match at all: an index on every field the rules' queries require.

A query *requires* a field to hold certain values when no document without
them can match: ``verb:create and objectRef.resource:(pods or jobs)`` requires
``verb`` to hold "create" and ``objectRef.resource`` "pods" or "jobs". Such
requirements are read from the syntax tree (``requirements``): a field match
(``field:value``, ``field:prefix*``, any ``field:pattern``), ``field:*`` (the
field is present) and ``not field:*`` (absent), alone or under ``and`` (every
item's requirements hold), ``or`` (a field every branch constrains, with the
union of their values), ``not`` over ``or`` (De Morgan) and a nested query
(``list:{ a:x }``: what its inner query requires, on ``list.a``, absences
aside). Anything else (a negated match, a range, free text, a wildcard field name)
requires nothing, so the rule stays a candidate for every value of that field:
the index can only leave out rules that cannot match, never one that can.
Exceptions play no part: they only take matches away, and the engine still
evaluates them on every candidate.

A document meets the index field by field. Each field the rules constrain is
resolved once per document, whatever the number of rules; each of its values
is turned into the set of rules it admits (a bit mask, one bit per rule, in
rule-set order): a dict lookup for exact values, one lookup per prefix length
for ``prefix*`` patterns, and the compiler's own value test
(``kql.compiler.any_value_test``) for everything else (numbers, IP blocks,
other wildcards, case-insensitive matches). That test is the definition of a
match, so the index cannot disagree with evaluating the rule. Masks of string
values are cached per field. The candidates are the rules left in every
field's mask: they grow with the rules that could match the document, not
with the size of the rule set. Fields are consulted in the order expected to
rule out the most, and a field that constrains none of the rules still left is
not even resolved (with Elastic's 36 Kubernetes rules, most documents resolve
4-6 of the 48 fields the rules constrain).

Replay asks before it builds a document at all (``candidates_for_audit_event``):
the document's ``kubernetes.audit`` is the audit event itself (only its
annotations are rewritten), so the fields beneath it read from the raw event
resolve exactly as on the document. Only the fields of the request itself are
consulted there (``REQUEST_FIELDS``: verb, objectRef, user...), never those
that differ between the stages of one request (stage, requestObject,
responseStatus, annotations): replay relies on every stage of a request
getting the same answer (a ResponseComplete it skipped could not overrule an
earlier stage that matched). Fields elsewhere in the document are not
consulted either: the raw event's candidates include the document's.
Two of the fields that differ between stages, the stage and the
authorization decision, are asked about apart (``may_match_at_stage``):
replay records the event it skips on that answer as a stage without a match.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeAlias, TypeVar

from gatewatch.kql import And, Exists, Nested, Node, Not, Or, Term, Wildcard
from gatewatch.kql.compiler import any_value_test, is_plain_term, keyword_text
from gatewatch.kql.fields import FieldValues, Resolvers

# Where the document keeps the audit event.
AUDIT_EVENT_PREFIX = "kubernetes.audit."
# The audit event's fields that are the same in every stage of one request (audit.k8s.io/v1 Event).
REQUEST_FIELDS = frozenset({"auditID", "requestURI", "verb", "user", "impersonatedUser", "sourceIPs",
                            "userAgent", "objectRef"})
# Two fields that differ between the stages of one request, which replay's skim holds: a request's
# first event (RequestReceived) has no authorization decision yet, and most rules want "allow".
STAGE_FIELDS = (f"{AUDIT_EVENT_PREFIX}stage", f"{AUDIT_EVENT_PREFIX}annotations.authorization_k8s_io/decision")
# Distinct string values whose mask a field remembers; past that the cache starts over.
_MAX_CACHED_VALUES = 4096
# Distinct candidate sets remembered (a cluster's traffic gives a few dozen).
_MAX_CACHED_MASKS = 4096

R = TypeVar("R")


class _Presence:
    """``field:*`` (PRESENT) or ``not field:*`` (ABSENT) as a requirement."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


PRESENT = _Presence("PRESENT")
ABSENT = _Presence("ABSENT")
# ``field:{ ... }``: some value of the field is an object, an empty one too (what a nested query walks).
ELEMENT = _Presence("ELEMENT")
Atom: TypeAlias = Term | Wildcard | _Presence
# Field -> what it must hold: one of the atoms (a disjunction). Fields are a conjunction.
Requirements: TypeAlias = dict[str, frozenset[Atom]]


def requirements(node: Node | None) -> Requirements:
    """What every document matching ``node`` holds, field by field (see the module doc)."""
    if isinstance(node, (Term, Wildcard)):
        return {node.field: frozenset({node})} if _indexable(node.field) else {}
    if isinstance(node, Exists):
        return {node.field: frozenset({PRESENT})} if _indexable(node.field) else {}
    if isinstance(node, And):
        merged: Requirements = {}
        for item in node.items:
            for field, atoms in requirements(item).items():
                # Both hold; keep the narrower. Not their intersection: a field with
                # several values can satisfy `f:a and f:b`.
                if field not in merged or len(atoms) < len(merged[field]):
                    merged[field] = atoms
        return merged
    if isinstance(node, Or):
        branches = [requirements(item) for item in node.items]
        common = set(branches[0]).intersection(*branches[1:]) if branches else set()
        return {field: frozenset().union(*(branch[field] for branch in branches)) for field in common}
    if isinstance(node, Not):
        inner = node.item
        if isinstance(inner, Exists):
            return {inner.field: frozenset({ABSENT})} if _indexable(inner.field) else {}
        if isinstance(inner, Not):
            return requirements(inner.item)
        if isinstance(inner, Or):  # not (a or b) == not a and not b
            return requirements(And(tuple(Not(item) for item in inner.items)))
    if isinstance(node, Nested) and _indexable(node.field):
        # One element of the field satisfies the inner query: what that requires of the element's
        # fields, the document's ``field.inner`` paths hold among their values (the paths flatten every
        # element's). Not an absence: the other elements may hold what this one lacks. Nor the field's
        # own presence (an empty object is absent to ``field:*``, yet ``field:{ not a:* }`` matches it):
        # an object among its values (ELEMENT).
        found: Requirements = {node.field: frozenset({ELEMENT})}
        for field, atoms in requirements(node.query).items():
            if ABSENT not in atoms:
                found[f"{node.field}.{field}"] = atoms
        return found
    return {}


def _indexable(field: str | None) -> bool:
    return field is not None and "*" not in field


class _FieldIndex:
    """One field: which rules each of its values admits."""

    __slots__ = ("field", "path", "resolve", "constrained", "unconstrained", "present", "absent", "element",
                 "if_absent", "_exact", "_prefixes", "_tests", "_cache", "expected_exclusions")

    def __init__(self, field: str, constraints: list[tuple[int, frozenset[Atom]]], *, all_rules: int,
                 path: str, resolvers: Resolvers) -> None:
        self.field = field
        self.path = path  # where it is read: the field itself, or its place in a raw audit event
        self.resolve = resolvers[path]  # what FieldValues would call for it (the rule set shares the resolvers)
        constrained = 0
        self.present = self.absent = self.element = 0
        exact: dict[str, int] = {}
        prefixes: dict[int, dict[str, int]] = {}
        tests: dict[Atom, int] = {}
        for bit, atoms in constraints:
            constrained |= bit
            for atom in atoms:
                if atom is PRESENT:
                    self.present |= bit
                elif atom is ABSENT:
                    self.absent |= bit
                elif atom is ELEMENT:
                    self.element |= bit
                elif isinstance(atom, Term) and is_plain_term(atom):
                    exact[atom.value] = exact.get(atom.value, 0) | bit
                elif isinstance(atom, Wildcard) and not atom.case_insensitive and len(atom.parts) == 2 \
                        and not atom.parts[1]:
                    by_prefix = prefixes.setdefault(len(atom.parts[0]), {})
                    by_prefix[atom.parts[0]] = by_prefix.get(atom.parts[0], 0) | bit
                else:
                    tests[atom] = tests.get(atom, 0) | bit
        self.constrained = constrained
        self.unconstrained = all_rules & ~constrained
        self.if_absent = self.unconstrained | self.absent  # admitted([]): most Pod fields of most Pods
        distinct = len(exact) + sum(map(len, prefixes.values())) + len(tests) + bool(self.present) + bool(self.absent) \
            + bool(self.element)
        self.expected_exclusions = constrained.bit_count() * (1 - 1 / distinct) if distinct else 0.0
        self._exact = exact
        self._prefixes = tuple(sorted(prefixes.items()))
        self._tests: tuple[tuple[Callable[[Any], bool], int], ...] = tuple(
            (any_value_test([atom]), bits) for atom, bits in tests.items()  # type: ignore[list-item]
        )
        self._cache: dict[str, int] = {}

    def admitted(self, values: list[Any]) -> int:
        """The rules this field's values (as resolved from a document) leave possible."""
        if len(values) == 1 and values[0].__class__ is str:  # the common case: one string
            found = self._cache.get(values[0])
            if found is None:
                found = self._remember(values[0])
            return self.unconstrained | found | self.present
        mask = self.unconstrained
        present = False
        for value in values:
            if isinstance(value, Mapping):
                mask |= self.element
                present = present or bool(value)  # {} is absent to KQL; no value test admits an object
            elif isinstance(value, str):
                found = self._cache.get(value)
                mask |= self._remember(value) if found is None else found
                present = True
            else:
                mask |= self._value_mask(value)
                present = True
        return mask | (self.present if present else self.absent)

    def _remember(self, value: str) -> int:
        if len(self._cache) >= _MAX_CACHED_VALUES:
            self._cache.clear()
        found = self._cache[value] = self._value_mask(value)
        return found

    def _value_mask(self, value: Any) -> int:
        """Rules with an atom that ``value`` satisfies, by the compiler's definition of each."""
        mask = self._exact.get(value, 0) if isinstance(value, str) else 0
        text = value if isinstance(value, str) else keyword_text(value)
        if text is not None:
            for length, by_prefix in self._prefixes:
                if len(text) >= length:
                    mask |= by_prefix.get(text[:length], 0)
        for test, bits in self._tests:
            if not bits & ~mask:
                continue  # every rule it could add is in already
            if test(value):
                mask |= bits
        return mask


class RuleIndex(Generic[R]):
    """The rules that can match a document, in rule-set order.

    ``rules`` and ``nodes`` (each rule's query tree; None: always a candidate)
    are parallel sequences. ``resolvers``: those of the compiled rules, when
    they share a document's ``FieldValues`` with the index.
    """

    def __init__(self, rules: Sequence[R], nodes: Sequence[Node | None], *, resolvers: Resolvers | None = None) -> None:
        self._resolvers = Resolvers() if resolvers is None else resolvers
        self._rules = tuple(rules)
        self._all = (1 << len(self._rules)) - 1
        by_field: dict[str, list[tuple[int, frozenset[Atom]]]] = {}
        for position, node in enumerate(nodes):
            for field, atoms in requirements(node).items():
                by_field.setdefault(field, []).append((1 << position, atoms))
        fields = [
            _FieldIndex(field, constraints, all_rules=self._all, path=field, resolvers=self._resolvers)
            for field, constraints in by_field.items()
        ]
        # The fields expected to rule out the most first, as a document left with no
        # candidate stops there: a value meets one of a field's k distinct requirements,
        # so of the c rules constrained on it about c * (1 - 1/k) go. A field every rule
        # wants the same value of (event.dataset) rules out nothing on normal traffic.
        fields.sort(key=lambda index: -index.expected_exclusions)
        self._fields = tuple(fields)
        self._event_fields = tuple(
            _FieldIndex(index.field, by_field[index.field], all_rules=self._all,
                        path=index.field.removeprefix(AUDIT_EVENT_PREFIX), resolvers=self._resolvers)
            for index in fields
            if _read_from_audit_event(index.field)
        )
        by_name = {index.field: index for index in fields}
        self._stage_fields = tuple((position, by_name[field]) for position, field in enumerate(STAGE_FIELDS)
                                   if field in by_name)
        self._stage_answers: dict[tuple[str | None, str | None], bool] = {}
        self._by_mask: dict[int, tuple[R, ...]] = {}
        # The rules a document's fields leave, and a raw audit event's (generated: _compiled_mask).
        self._document_mask = _compiled_mask(self._fields, self._all)
        self._event_mask = _compiled_mask(self._event_fields, self._all)

    @property
    def fields(self) -> tuple[str, ...]:
        """The document fields the index resolves, in the order it consults them."""
        return tuple(index.field for index in self._fields)

    @property
    def audit_event_fields(self) -> tuple[str, ...]:
        """The raw audit event's fields ``candidates_for_audit_event`` reads (paths from the event's root)."""
        return tuple(index.field.removeprefix(AUDIT_EVENT_PREFIX) for index in self._event_fields)

    def values(self, document: Mapping[str, Any]) -> FieldValues:
        """The document's field values, resolved on first use, for ``candidates_in`` and the compiled rules."""
        return FieldValues(document, self._resolvers)

    def candidates(self, document: Mapping[str, Any]) -> tuple[R, ...]:
        return self.candidates_in(FieldValues(document, self._resolvers))

    def candidates_in(self, values: FieldValues) -> tuple[R, ...]:
        """``candidates`` of ``values.document``, its fields resolved into ``values`` for what reads them next."""
        return self._rules_of(self._document_mask(values))

    def candidates_for_audit_event(self, event: Mapping[str, Any]) -> tuple[R, ...]:
        """The rules the document of this audit event could match (a superset of its
        ``candidates``), without building the document."""
        return self._rules_of(self._event_mask(FieldValues(event, self._resolvers)))

    def may_match_at_stage(self, stage: str | None, decision: str | None) -> bool:
        """False when no rule can match an event of this ``stage`` with this authorization ``decision``
        (None: the event has none), whatever else it holds (``STAGE_FIELDS``: these two fields alone)."""
        key = (stage, decision)
        answer = self._stage_answers.get(key)
        if answer is None:
            mask = self._all
            for position, index in self._stage_fields:
                value = key[position]
                mask &= index.admitted([] if value is None else [value])
            answer = bool(mask)
            if len(self._stage_answers) < _MAX_CACHED_MASKS:
                self._stage_answers[key] = answer
        return answer

    def _rules_of(self, mask: int) -> tuple[R, ...]:
        found = self._by_mask.get(mask)
        if found is None:
            rules = self._rules
            chosen = []
            remaining = mask
            while remaining:
                lowest = remaining & -remaining
                chosen.append(rules[lowest.bit_length() - 1])
                remaining ^= lowest
            found = tuple(chosen)
            if len(self._by_mask) >= _MAX_CACHED_MASKS:
                self._by_mask.clear()
            self._by_mask[mask] = found
        return found


def _compiled_mask(fields: Sequence[_FieldIndex], all_rules: int) -> Callable[[FieldValues], int]:
    """A function of a document's ``FieldValues`` that meets ``fields`` in order and returns the rules left.

    Per field, ``values[index.path]`` and ``index.admitted`` written out with the field's masks, resolver
    and cache as constants (generated source, compiled once per index): a loop over the fields reading
    them as attributes cost as much as resolving them. A field that constrains none of the rules still
    left is not even resolved; no rule left, no field more.
    """
    lines = ["def mask(values):", "    mask = ALL", "    get = values.get", "    document = values.document"]
    constants: dict[str, Any] = {"ALL": all_rules}
    for position, index in enumerate(fields):
        constants.update({
            f"C{position}": index.constrained, f"P{position}": index.path, f"R{position}": index.resolve,
            f"E{position}": index.if_absent, f"K{position}": index._cache.get, f"M{position}": index._remember,
            f"U{position}": index.unconstrained | index.present, f"A{position}": index.admitted,
        })
        lines += [
            f"    if mask & C{position}:",
            f"        found = get(P{position})",
            "        if found is None:",
            f"            found = values[P{position}] = R{position}(document)",
            "        if not found:",  # admitted's most common cases: no value, one string
            f"            mask &= E{position}",
            "        elif len(found) == 1 and found[0].__class__ is str:",
            f"            admits = K{position}(found[0])",
            "            if admits is None:",
            f"                admits = M{position}(found[0])",
            f"            mask &= U{position} | admits",
            "        else:",
            f"            mask &= A{position}(found)",
            "        if not mask:",
            "            return 0",
        ]
    lines.append("    return mask")
    namespace: dict[str, Any] = {**constants, "__builtins__": {"len": len, "str": str}}
    exec(compile("\n".join(lines), "<gatewatch.prefilter>", "exec"), namespace)  # noqa: S102 - our own source
    return namespace["mask"]


def _read_from_audit_event(field: str) -> bool:
    """True when the raw audit event holds ``field`` as its document does, the same in every stage."""
    if not field.startswith(AUDIT_EVENT_PREFIX):
        return False
    return field.removeprefix(AUDIT_EVENT_PREFIX).split(".", 1)[0] in REQUEST_FIELDS
