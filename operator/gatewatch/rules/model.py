"""The rule model: what one rule of rules.yaml is once loaded and compiled.

Frozen dataclasses, so a loaded rule set can be shared between the admission
handlers and swapped whole on reload. The loader (``loader.py``) is the only
place that builds them from text; everything else reads them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from gatewatch.documents import ADMISSION_UNAVAILABLE_FIELDS

if TYPE_CHECKING:
    from gatewatch.kql import CompiledQuery
else:  # the compiled query is only ever called; keep the import one-way at runtime
    CompiledQuery = Callable[[Any], bool]

FORMAT_VERSION = 1
ATTACK_FRAMEWORK = "MITRE ATT&CK"


class Severity(str, Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    def __str__(self) -> str:
        return self.value


class RuleType(str, Enum):
    QUERY = "query"
    NEW_TERMS = "new_terms"

    def __str__(self) -> str:
        return self.value


class Language(str, Enum):
    """The query language of ``query``; exceptions are always KQL."""

    KUERY = "kuery"
    EQL = "eql"
    ESQL = "esql"

    def __str__(self) -> str:
        return self.value


_ACTION_ORDER = ("alert", "warn", "deny")


class Action(str, Enum):
    """The strongest response a rule may cause, ordered ``alert < warn < deny``.

    A ``str`` enum would otherwise compare alphabetically ("deny" < "warn"),
    so the comparisons are defined on the rank.
    """

    ALERT = "alert"
    WARN = "warn"
    DENY = "deny"

    @property
    def rank(self) -> int:
        return _ACTION_ORDER.index(self.value)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Action):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Action):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Action):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Action):
            return NotImplemented
        return self.rank >= other.rank

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a rule (or one of its fields) was written."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return self.file if self.line is None else f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Tactic:
    id: str
    name: str
    reference: str


@dataclass(frozen=True, slots=True)
class Technique:
    id: str
    name: str
    reference: str
    subtechniques: tuple[Technique, ...] = ()


@dataclass(frozen=True, slots=True)
class Threat:
    """One ATT&CK tactic and the techniques of the rule under it (Elastic's ``threat`` entry)."""

    framework: str
    tactic: Tactic
    techniques: tuple[Technique, ...] = ()


def is_admission_unavailable(field_name: str) -> bool:
    """True when an admission request never carries ``field_name`` (it is, or lies
    beneath, one of ``ADMISSION_UNAVAILABLE_FIELDS``)."""
    return any(
        field_name == unavailable or field_name.startswith(unavailable + ".")
        for unavailable in ADMISSION_UNAVAILABLE_FIELDS
    )


@lru_cache(maxsize=1024)
def _admission_fields(fields: tuple[str, ...]) -> tuple[str, ...]:
    # Asked for every new_terms match at admission: worked out once per field list.
    return tuple(name for name in fields if not is_admission_unavailable(name))


@dataclass(frozen=True, slots=True)
class NewTerms:
    """A new_terms rule alerts when this combination of field values was not seen
    within ``history_window`` before the event."""

    fields: tuple[str, ...]
    history_window: timedelta

    def admission_fields(self) -> tuple[str, ...]:
        """The fields the rule keys on at admission: ``fields`` minus those an
        admission request never carries (empty: every admission match is new)."""
        return _admission_fields(self.fields)

    def unavailable_at_admission(self) -> tuple[str, ...]:
        return tuple(name for name in self.fields if is_admission_unavailable(name))


@dataclass(frozen=True, slots=True)
class Schedule:
    """When Elastic runs a rule: every ``interval``, over the events of the last ``lookback``
    (Elastic's ``interval`` and ``from``). Replay runs STATS rules on this schedule."""

    interval: timedelta
    lookback: timedelta


# Elastic's defaults for a detection rule: interval 5m, from now-6m.
DEFAULT_SCHEDULE = Schedule(interval=timedelta(minutes=5), lookback=timedelta(minutes=6))


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One detection rule. See docs/rules.md for every field."""

    id: str
    name: str
    description: str
    severity: Severity
    risk_score: int
    type: RuleType
    query: str
    matcher: CompiledQuery = field(compare=False, repr=False)
    language: Language = Language.KUERY
    new_terms: NewTerms | None = None
    schedule: Schedule | None = None
    threat: tuple[Threat, ...] = ()
    action: Action = Action.ALERT
    exceptions: tuple[str, ...] = ()
    exception_matchers: tuple[CompiledQuery, ...] = field(default=(), compare=False, repr=False)
    false_positives: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    enabled: bool = True
    ruleset: str | None = None
    origin: Origin | None = None

    @property
    def tactic_ids(self) -> tuple[str, ...]:
        """ATT&CK tactic ids in rule order, without repeats."""
        return tuple(dict.fromkeys(threat.tactic.id for threat in self.threat))

    @property
    def technique_ids(self) -> tuple[str, ...]:
        """ATT&CK technique and sub-technique ids in rule order, without repeats."""
        ids: dict[str, None] = {}
        for threat in self.threat:
            for technique in threat.techniques:
                ids[technique.id] = None
                for sub in technique.subtechniques:
                    ids[sub.id] = None
        return tuple(ids)

    @property
    def required_node(self) -> Any:
        """A KQL syntax tree every document the rule matches satisfies, for the rule
        index and lint: the query itself for KQL and EQL; for ES|QL the conditions of
        its WHERE commands on document fields; for an EQL sequence any of its steps
        or ``until`` (None: nothing known)."""
        matcher = self.matcher
        return getattr(matcher, "requirement", None) or getattr(matcher, "node", None)

    @property
    def aggregates(self) -> bool:
        """True for an ES|QL rule with STATS: it aggregates over many events, so
        admission (one request) never evaluates it; replay does."""
        return bool(getattr(self.matcher, "aggregates", False))

    @property
    def sequence(self) -> bool:
        """True for an EQL ``sequence`` rule: it spans many events, so admission
        (one request) never evaluates it; replay does (gatewatch.replay_sequences)."""
        return bool(getattr(self.matcher, "is_sequence", False))

    @property
    def replay_only(self) -> bool:
        """A STATS or sequence rule: many events make one result, so only replay runs it."""
        return self.aggregates or self.sequence

    def is_excepted(self, document: Any) -> bool:
        """True when one of the rule's exceptions matches ``document``."""
        return any(matches(document) for matches in self.exception_matchers)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules of one or more files, in file order; ids are unique across them."""

    name: str
    version: int
    rules: tuple[Rule, ...]
    sources: tuple[str, ...] = ()
    description: str | None = None  # the file's optional top-level description (one file only)

    @property
    def enabled_rules(self) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules if rule.enabled)

    def get(self, rule_id: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.id == rule_id), None)

    def __len__(self) -> int:
        return len(self.rules)
