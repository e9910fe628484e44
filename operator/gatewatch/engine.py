"""The compiled rule set: document -> matches.

A rule matches a document when its query matches and none of its exceptions
does. An ES|QL rule with STATS or an EQL sequence never matches one document: it
spans many, and only replay runs it (gatewatch.replay_stats, gatewatch.replay_sequences). A new_terms rule then matches only when the combination of its new_terms
field values was not seen within its history window (Elastic's meaning),
unless the caller asks for every query match (``gatewatch check``).
"""
from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Mapping

from gatewatch.kql import And, CompiledQuery, MatchAll, Nested, Node, Not, Or, Term, Wildcard
from gatewatch.kql.codegen import GeneratedQuery, compile_program
from gatewatch.kql.fields import FieldValues, field_values
from gatewatch.podspec import POD_FIELD_NAMES
from gatewatch.prefilter import RuleIndex
from gatewatch.newterms import InMemoryNewTermsStore, Key, NewTermsStore, parse_iso_time
from gatewatch.rules.model import Rule, RuleSet, RuleType

Document = Mapping[str, Any]
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Match:
    rule: Rule
    # For new_terms rules: the combination of values the rule keyed on, and
    # whether the history was consulted (False in `check`, which reports every
    # query match of a new_terms rule, marked as such).
    new_terms_key: Key | None = None
    new_terms_evaluated: bool = False

    @property
    def is_new_terms(self) -> bool:
        return self.rule.type is RuleType.NEW_TERMS


class RuleEngine:
    """Evaluates the enabled rules of a rule set; the set can be swapped at runtime."""

    def __init__(self, ruleset: RuleSet, *, new_terms_store: NewTermsStore | None = None,
                 settle_heap: bool = True) -> None:
        # settle_heap=False: a replay, which runs with the collector off, has no use for _settle_heap.
        self._settles_heap = settle_heap
        self.new_terms_store: NewTermsStore = (
            InMemoryNewTermsStore() if new_terms_store is None else new_terms_store
        )
        self.replace_rules(ruleset)

    @property
    def ruleset(self) -> RuleSet:
        return self._state[0]

    def replace_rules(self, ruleset: RuleSet) -> None:
        """Swap the rule set atomically: a review in flight sees the old or the new set whole.

        The enabled rules are compiled together (``kql.codegen``): one generated
        function per rule, its query and its exceptions, reading the document's
        fields from the ``FieldValues`` the rule index filled.
        """
        enabled = [rule for rule in ruleset.rules if rule.enabled]
        replay_only = [rule.id for rule in enabled if rule.replay_only]
        if replay_only:
            logger.info("%d ES|QL STATS or EQL sequence rule(s) span many events; replay only, never evaluated at "
                        "admission: %s", len(replay_only), ", ".join(replay_only))
        nodes = [_rule_node(rule) for rule in enabled]
        program = compile_program([MatchAll() if node is None else node for node in nodes])
        tests = [
            _closure_test(rule) if node is None else generated
            for rule, node, generated in zip(enabled, nodes, program.functions)
        ]
        # STATS and sequence rules stay in the index: replay builds documents for them (RuleEngine never
        # matches them: their matcher is false on one document). An ES|QL rule's index node is a requirement
        # of its query, a sequence's any of its steps.
        # Each candidate carries its Match when the rule keys on nothing (not new_terms): a Match is
        # immutable, so every document that matches the rule shares one (frozen dataclasses cost to build).
        plain = [None if rule.type is RuleType.NEW_TERMS else Match(rule=rule) for rule in enabled]
        index = RuleIndex(list(zip(enabled, tests, plain)), [rule.required_node for rule in enabled],
                          resolvers=program.resolvers)
        # One attribute, so a reader never sees a new set with an old index.
        self._state = (ruleset, index, any(map(_reads_pod_fields, enabled)))
        if self._settles_heap:
            _settle_heap()

    @property
    def reads_pod_fields(self) -> bool:
        """True when an enabled rule may read the normalized Pod lists (``gatewatch.containers``, ...):
        documents need them only then (documents/mapping.py builds them on request)."""
        return self._state[2]

    def may_match_audit_event(self, event: Mapping[str, Any]) -> bool:
        """False when no enabled rule can match the document this audit event becomes.

        Decided by the rule index on the raw event's own fields (verb, objectRef...;
        gatewatch.prefilter), so replay skips building documents for the reads that
        make up most logs.
        """
        return bool(self._state[1].candidates_for_audit_event(event))

    def may_match_at_stage(self, stage: str | None, decision: str | None) -> bool:
        """False when no enabled rule can match an audit event of this stage with this authorization
        decision (None: it has none), whatever else the event holds (the rule index's ``may_match_at_stage``)."""
        return self._state[1].may_match_at_stage(stage, decision)

    def evaluate(
        self,
        document: Document,
        *,
        now: datetime | None = None,
        record: bool = True,
        new_terms: bool = True,
    ) -> list[Match]:
        """Matches of ``document``, in rule-set order.

        ``record=False`` leaves no new_terms history (dry-run requests);
        ``new_terms=False`` reports every query match of a new_terms rule.
        """
        found: list[Match] = []
        index = self._state[1]
        values = index.values(document)
        for rule, matches, match in index.candidates_in(values):
            if not matches(values):
                continue
            found.append(match if match is not None else Match(rule=rule, new_terms_key=new_terms_key(rule, values)))
        if not new_terms or not found:
            return found
        return self.apply_new_terms(found, at=event_time(document, now=now), record=record)

    def apply_new_terms(self, matches: list[Match], *, at: datetime, record: bool = True) -> list[Match]:
        """Keep query matches, and new_terms matches whose key is new at ``at``.

        Replay calls this separately, in event-time order, after a streaming
        pass of query matching.
        """
        kept: list[Match] = []
        for match in matches:
            rule = match.rule
            if match.new_terms_key is None or rule.new_terms is None:
                kept.append(match)
            elif self.new_terms_store.is_new(
                rule.id, match.new_terms_key, at=at, window=rule.new_terms.history_window, record=record
            ):
                kept.append(replace(match, new_terms_evaluated=True))
        return kept


_POD_FIELD_PREFIXES = tuple(f"gatewatch.{name}" for name in POD_FIELD_NAMES)


def _reads_pod_fields(rule: Rule) -> bool:
    """Whether the rule's query or an exception may read a normalized Pod list.

    Free text and wildcard field names may read anything: they count.
    """
    for matcher in (rule.matcher, *rule.exception_matchers):
        node = getattr(matcher, "node", None)  # KQL and EQL; an ES|QL query names its fields only
        fields = getattr(matcher, "fields", None)
        if fields is None or (node is not None and _has_free_text(node)):
            return True
        for field in fields:
            if "*" in field or field.startswith(_POD_FIELD_PREFIXES):
                return True
    return False


def _has_free_text(node: Any) -> bool:
    if isinstance(node, (Term, Wildcard)):
        return node.field is None
    if isinstance(node, (And, Or)):
        return any(_has_free_text(item) for item in node.items)
    if isinstance(node, Not):
        return _has_free_text(node.item)
    if isinstance(node, Nested):
        return _has_free_text(node.query)
    return False


def _settle_heap() -> None:
    """Keep the garbage collector from scanning the rule set on every full collection.

    A loaded rule set (syntax trees, rules, generated code) is tens of thousands of
    objects that live until the next reload; every full collection walked them all,
    and everything imported before them: 22 us per review with the default rules and
    39 us with 1,000, more than evaluating the rules. Frozen (``gc.freeze``), they are
    left out of collections. The previous set is unfrozen first and collected, so a
    reload leaks nothing; what is frozen is what lives now.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _query_node(rule: Rule) -> Node | None:
    """The KQL tree the rule's matcher evaluates (KQL and EQL rules), else None (ES|QL)."""
    matcher = rule.matcher
    return matcher.node if isinstance(matcher, CompiledQuery) else None


def _rule_node(rule: Rule) -> Node | None:
    """The rule as one tree: its query and none of its exceptions (None: a matcher with no tree)."""
    query = _query_node(rule)
    exceptions = [matcher.node if isinstance(matcher, CompiledQuery) else None for matcher in rule.exception_matchers]
    if query is None or None in exceptions:
        return None
    if not exceptions:
        return query
    return And((query, Not(exceptions[0] if len(exceptions) == 1 else Or(tuple(exceptions)))))  # type: ignore[arg-type]


def _closure_test(rule: Rule) -> GeneratedQuery:
    """A rule whose matchers carry no KQL tree (ES|QL, or built in code): called as they are."""
    return lambda values: bool(rule.matcher(values.document)) and not rule.is_excepted(values.document)


def new_terms_key(rule: Rule, document: Document | FieldValues) -> Key:
    """The combination of values a new_terms rule keys on for this document.

    Admission requests never carry some fields (source.ip, user_agent.original):
    there the rule keys on the remaining ones (``rules lint`` says which). A field
    with several values contributes them sorted; an absent field contributes ""
    so that the rule still alerts once rather than never. Given the document's
    ``FieldValues``, the values already resolved are reused.
    """
    if rule.new_terms is None:
        return ()
    if isinstance(document, FieldValues):
        values, document = document, document.document
    else:
        values = None
    from_admission = _get(document, "gatewatch", "source") == "admission"
    fields = rule.new_terms.admission_fields() if from_admission else rule.new_terms.fields
    if values is None:
        return tuple([_key_part(field_values(document, field)) for field in fields])
    return tuple([_key_part(values[field]) for field in fields])


def _key_part(values: list[Any]) -> str:
    """One field's part of a new_terms key: its values as text, sorted, joined by RS (one value: itself)."""
    if len(values) == 1:  # the usual case; the same text as the join of one
        return str(values[0])
    return "\x1e".join(sorted([str(value) for value in values]))


def event_time(document: Document, *, now: datetime | None = None) -> datetime:
    """The document's @timestamp (replay: event time), else now."""
    return parse_iso_time(document.get("@timestamp")) or now or datetime.now(timezone.utc)


def _get(document: Document, *path: str) -> Any:
    value: Any = document
    for part in path:
        if value.__class__ is not dict and not isinstance(value, Mapping):  # dict first: the ABC check costs more
            return None
        value = value.get(part)
    return value

