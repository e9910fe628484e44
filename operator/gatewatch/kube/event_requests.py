"""What an Event for a rule match says: reason, note, annotations, name, series key.

Built by the Event worker (``kube.events.EventRecorder``) from what the review
path queued, so nothing here runs while a review waits. ``EventRequest`` is one
occurrence; occurrences with the same series key are one Event, and
``similar`` says how occurrences on other pods are combined (kube/events.py).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Union

from gatewatch.per_object import PerObject

if TYPE_CHECKING:
    from gatewatch.rules.model import Rule

ANNOTATION_PREFIX = "gatewatch.io/"
# events.k8s.io/v1 validation: names are DNS subdomains (253).
MAX_NAME_LENGTH = 253
# client-go's EventAggregator (tools/record/events_cache.go: defaultAggregateMaxEvents,
# defaultAggregateIntervalInSeconds): more than 10 similar events within 10 minutes are combined.
SIMILAR_EVENTS_LIMIT = 10
SIMILAR_EVENTS_WINDOW = 600.0
COMBINED_PREFIX = "(combined from similar events): "

EventType = Literal["Normal", "Warning"]
Operation = Literal["create", "update", "exec", "attach", "ephemeralcontainers", "portforward", "proxy"]

_REASONS: dict[tuple[str, str], str] = {
    ("create", "deny"): "PodCreationDenied",
    ("create", "warn"): "PodCreationWarned",
    ("update", "deny"): "PodUpdateDenied",
    ("update", "warn"): "PodUpdateWarned",
    ("exec", "deny"): "ExecDenied",
    ("exec", "warn"): "ExecWarned",
    ("attach", "deny"): "AttachDenied",
    ("attach", "warn"): "AttachWarned",
    ("ephemeralcontainers", "deny"): "EphemeralContainerDenied",
    ("ephemeralcontainers", "warn"): "EphemeralContainerWarned",
    ("portforward", "deny"): "PortForwardDenied",
    ("portforward", "warn"): "PortForwardWarned",
    ("proxy", "deny"): "PodProxyDenied",
    ("proxy", "warn"): "PodProxyWarned",
}
# An alert-only match: nothing was refused or shown to the user.
REASON_ALERT = "RuleMatched"
REASON_RULES_REJECTED = "RulesRejected"
# Every reason gatewatch gives its Events (docs/operations.md lists them all; a test keeps them equal).
EVENT_REASONS: frozenset[str] = frozenset({*_REASONS.values(), REASON_ALERT, REASON_RULES_REJECTED})

# Every annotation key gatewatch puts on its Events, and what it holds. The names
# agree with the alert's fields: ``action`` is the rule's action, ``effect`` what
# this occurrence caused (docs/operations.md lists them all; a test keeps them equal).
EVENT_ANNOTATIONS: dict[str, str] = {
    ANNOTATION_PREFIX + "rule-id": "the rule's id",
    ANNOTATION_PREFIX + "rule-name": "the rule's name",
    ANNOTATION_PREFIX + "severity": "the rule's severity",
    ANNOTATION_PREFIX + "risk-score": "the rule's risk score",
    ANNOTATION_PREFIX + "mitre-tactics": "the rule's ATT&CK tactic ids, comma-separated",
    ANNOTATION_PREFIX + "mitre-techniques": "the rule's ATT&CK technique ids, comma-separated",
    ANNOTATION_PREFIX + "action": "the rule's action, the strongest response it may cause (alert, warn, deny)",
    ANNOTATION_PREFIX + "effect": "what gatewatch did, given the mode (alert, warn, deny; reject on RulesRejected)",
    ANNOTATION_PREFIX + "operation": "create, update, exec, attach, ephemeralcontainers, portforward or proxy",
    ANNOTATION_PREFIX + "user": "the requesting user",
    ANNOTATION_PREFIX + "combined": '"true" on an Event counting similar matches on more than one pod',
}

_OPERATION_WORDS: dict[str, str] = {
    "create": "create pod",
    "update": "update pod",
    "exec": "exec into pod",
    "attach": "attach to pod",
    "ephemeralcontainers": "add an ephemeral container to pod",
    "portforward": "port-forward to pod",
    "proxy": "proxy to pod",
}


@dataclass(frozen=True, kw_only=True)
class ObjectRef:
    """What an Event is about (``regarding``)."""

    kind: str
    api_version: str
    name: str
    namespace: str | None = None
    uid: str | None = None

    def to_api(self) -> dict[str, str]:
        ref = {"kind": self.kind, "apiVersion": self.api_version, "name": self.name}
        if self.namespace is not None:
            ref["namespace"] = self.namespace
        if self.uid is not None:
            ref["uid"] = self.uid
        return ref


@dataclass(frozen=True, kw_only=True)
class SimilarEvents:
    """How an occurrence is combined with similar ones on other objects (see the module docstring)."""

    key: str  # the series key without the regarding object
    note: str  # the combined Event's note, after COMBINED_PREFIX
    name_base: str  # the combined Event's name is ``<name_base>.<hash of key>``


@dataclass(frozen=True, kw_only=True)
class EventRequest:
    """One occurrence to record. Occurrences with the same ``series_key`` are one Event."""

    regarding: ObjectRef
    reason: str
    action: str
    note: str
    series_key: str
    observed_at: datetime  # from the caller's clock (the review's ``now``)
    type: EventType = "Warning"
    annotations: Mapping[str, str] = field(default_factory=dict)
    similar: SimilarEvents | None = None  # None: never combined with other objects' Events
    name_base: str | None = None  # default: the regarding object's name

    @property
    def namespace(self) -> str:
        # Events live in the namespace of what they regard (API validation);
        # cluster-scoped objects' Events go to "default", as kubectl looks there.
        return self.regarding.namespace or "default"

    @property
    def name(self) -> str:
        return event_name(self.name_base or self.regarding.name, self.series_key)

    @property
    def similar_key(self) -> str | None:
        return self.similar.key if self.similar is not None else None

    def built(self) -> EventRequest:
        """The Event itself (a ``MatchOccurrence`` builds it)."""
        return self

    def combined(self) -> EventRequest:
        """The Event that counts this occurrence with its similar ones (requires ``similar``)."""
        assert self.similar is not None
        return replace(
            self,
            note=COMBINED_PREFIX + self.similar.note,
            series_key=self.similar.key,
            annotations={**self.annotations, ANNOTATION_PREFIX + "combined": "true"},
            similar=None,
            name_base=self.similar.name_base,
        )


class MatchOccurrence:
    """One rule match on a Pod request as the review path hands it to the Event worker: the arguments of
    ``match_event``, and what the worker needs of every occurrence (the Event's namespace and name, its
    similar-events key) worked out as ``match_event``'s Event has them. The Event itself, its note and
    annotations, is built (``built``) only for an occurrence that starts a series: most repeat one, and
    are only counted."""

    __slots__ = ("_arguments", "_combined", "namespace", "observed_at", "name", "similar_key")

    def __init__(
        self, *, rule: Rule, effect: Any, operation: Operation, namespace: str, pod_name: str, user: str,
        observed_at: datetime, pod_uid: str | None = None, mode: Any = None,
    ) -> None:
        self._arguments: dict[str, Any] = {
            "rule": rule, "effect": effect, "operation": operation, "namespace": namespace, "pod_name": pod_name,
            "user": user, "observed_at": observed_at, "pod_uid": pod_uid, "mode": mode}
        effect_name = _effect_name(effect)
        self._combined = False
        self.namespace = namespace or "default"  # EventRequest.namespace
        self.observed_at = observed_at
        self.name = event_name(pod_name, _series_key(namespace, pod_name, rule.id, effect_name, operation, user))
        self.similar_key: str | None = _similar_key(namespace, rule.id, effect_name, operation, user)

    def built(self) -> EventRequest:
        """The Event ``match_event`` makes of it (``combined()``: the combined Event's)."""
        request = match_event(**self._arguments)
        return request.combined() if self._combined else request

    def combined(self) -> MatchOccurrence:
        """This occurrence counted in the Event of its similar ones (EventRequest.combined)."""
        assert self.similar_key is not None
        combined = object.__new__(MatchOccurrence)
        combined._arguments = self._arguments
        combined._combined = True
        combined.namespace = self.namespace
        combined.observed_at = self.observed_at
        combined.name = event_name(_combined_name_base(self._arguments["operation"]), self.similar_key)
        combined.similar_key = None
        return combined


# What EventRecorder.submit takes: the Event, a match to make one of, or a function that builds the Event
# (called by the worker).
EventSource = Union[EventRequest, MatchOccurrence, Callable[[], EventRequest]]


@lru_cache(maxsize=4096)  # every occurrence asks; repeats of one series are what a burst is made of
def event_name(object_name: str, series_key: str) -> str:
    """``<object>.<hash of the series key>``, a valid DNS subdomain."""
    digest = hashlib.sha256(series_key.encode()).hexdigest()[:16]
    # A would-be name from generateName ("web-") ends with "-": not a valid label end.
    base = re.sub(r"[^a-z0-9.-]", "-", object_name.lower()).strip("-.") or "object"
    base = base[: MAX_NAME_LENGTH - len(digest) - 1].rstrip("-.")
    return f"{base}.{digest}"


def match_event(
    *,
    rule: Rule,
    effect: Any,
    operation: Operation,
    namespace: str,
    pod_name: str,
    user: str,
    observed_at: datetime,
    pod_uid: str | None = None,
    mode: Any = None,
) -> EventRequest:
    """The Event for one rule match on a Pod request.

    ``effect`` is what the match caused (``Action`` or "alert"/"warn"/"deny").
    ``pod_name`` is the target pod for exec/attach/ephemeralcontainers, and for
    a create the pod's name (or its generateName prefix): a denied pod was
    never created, so the Event regards the would-be pod and says so.
    """
    effect_name = _effect_name(effect)
    severity, action_name, rule_text, rule_annotations = _RULE_PARTS.get(rule)
    what = f"user {user!r} tried to {_OPERATION_WORDS.get(operation, operation)} {namespace}/{pod_name}"
    if operation == "create" and effect_name == "deny":
        head = f"Pod {namespace}/{pod_name} was not created: gatewatch denied it"
    else:
        head = {
            "deny": "gatewatch denied the request",
            "warn": "gatewatch allowed the request with a warning",
            "alert": "gatewatch allowed the request and raised an alert",
        }.get(effect_name, f"gatewatch: {effect_name}")
    mode_text = f", mode {getattr(mode, 'value', mode)}" if mode is not None else ""
    outcome_text = f"effect {effect_name} (rule action {action_name}){mode_text}"
    note = f"{head}. {rule_text}: {what}; {outcome_text}."
    similar_what = (
        f"user {user!r} tried to {_OPERATION_WORDS.get(operation, operation)}s in namespace {namespace}: "
        f"more than {SIMILAR_EVENTS_LIMIT} different pods, counted together from {pod_name} on"
    )
    similar = SimilarEvents(
        key=_similar_key(namespace, rule.id, effect_name, operation, user),
        note=f"{rule_text}: {similar_what}; {outcome_text}; series.count counts them all.",
        name_base=_combined_name_base(operation),
    )
    annotations = {
        **rule_annotations,
        ANNOTATION_PREFIX + "effect": effect_name,
        ANNOTATION_PREFIX + "operation": operation,
        ANNOTATION_PREFIX + "user": user,
    }
    return EventRequest(
        regarding=ObjectRef(kind="Pod", api_version="v1", name=pod_name, namespace=namespace, uid=pod_uid),
        reason=_REASONS.get((operation, effect_name), REASON_ALERT),
        action=effect_name.capitalize(),
        note=note,
        series_key=_series_key(namespace, pod_name, rule.id, effect_name, operation, user),
        annotations=annotations,
        observed_at=observed_at,
        similar=similar,
    )


# What names a match's Event and its similar-events run: match_event and MatchOccurrence both use these.


def _effect_name(effect: Any) -> str:
    return str(getattr(effect, "value", effect)).lower()


def _series_key(namespace: str, pod_name: str, rule_id: str, effect_name: str, operation: str, user: str) -> str:
    return "\x1f".join((namespace, pod_name, rule_id, effect_name, operation, user))


def _combined_name_base(operation: str) -> str:
    return f"gatewatch-{operation}"


def _similar_key(namespace: str, rule_id: str, effect_name: str, operation: str, user: str) -> str:
    return "\x1f".join((namespace, rule_id, effect_name, operation, user, "similar"))


def _rule_parts(rule: Rule) -> tuple[str, str, str, dict[str, str]]:
    """The rule's severity, action, "Rule ... matched" text and annotations (through _RULE_PARTS:
    once per rule object)."""
    techniques = rule.technique_ids
    severity = str(getattr(rule.severity, "value", rule.severity))
    action_name = str(getattr(rule.action, "value", rule.action)).lower()
    technique_text = ", ".join(techniques) or "no ATT&CK technique"
    rule_text = f"Rule {rule.name!r} ({rule.id}, ATT&CK {technique_text}, severity {severity}) matched"
    annotations = {
        ANNOTATION_PREFIX + "rule-id": rule.id,
        ANNOTATION_PREFIX + "rule-name": rule.name,
        ANNOTATION_PREFIX + "severity": severity,
        ANNOTATION_PREFIX + "risk-score": str(rule.risk_score),
        ANNOTATION_PREFIX + "mitre-tactics": ",".join(rule.tactic_ids),
        ANNOTATION_PREFIX + "mitre-techniques": ",".join(techniques),
        ANNOTATION_PREFIX + "action": action_name,
    }
    return severity, action_name, rule_text, annotations


# What match_event says of a rule is the same for every match of that rule object.
_RULE_PARTS: PerObject[tuple[str, str, str, dict[str, str]]] = PerObject(_rule_parts)


def rules_rejected_event(*, configmap: ObjectRef, error: Exception, observed_at: datetime) -> EventRequest:
    """The Event on the rules ConfigMap when an update is invalid and the old rules stay."""
    message = str(error)
    return EventRequest(
        regarding=configmap,
        reason=REASON_RULES_REJECTED,
        action="Reload",
        note=f"gatewatch kept its previous rules; the update is invalid: {message}",
        # One series per distinct error: the same broken file is counted, not repeated.
        series_key="\x1f".join((configmap.namespace or "", configmap.name, "rules", message)),
        annotations={ANNOTATION_PREFIX + "effect": "reject"},
        observed_at=observed_at,
    )
