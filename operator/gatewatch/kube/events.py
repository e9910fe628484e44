"""Kubernetes Events for rule matches, off the review path.

The admission handler calls :meth:`EventRecorder.submit`, which only puts the
event in a bounded queue and returns at once (False, counted as a drop, when the
queue is full). :meth:`EventRecorder.run` is the worker that talks to the API;
a slow or failing API server slows or fails only the worker, never a review.

Events are ``events.k8s.io/v1`` Events. Repeats are not a storm:

- *the same*: every occurrence with the same *series key* (namespace, pod, rule,
  effect, operation, user) is one Event with a deterministic name,
  ``<pod>.<hash of the key>``. The first occurrence creates it; later ones are
  counted in memory and written as one PATCH of ``series.count`` /
  ``series.lastObservedTime`` per aggregation window (events.k8s.io semantics).
  Because the name is deterministic, a restarted or second replica finds the
  Event (409 on create) and continues its series.
- *similar*: occurrences that differ only in the pod (same namespace, rule,
  effect, operation, user), as client-go's EventAggregator does for events that
  differ only in their message: once more than ``SIMILAR_EVENTS_LIMIT`` pods had
  their own Event within ``SIMILAR_EVENTS_WINDOW`` seconds of the previous
  similar one, further pods are counted in one Event, "(combined from similar
  events)", regarding the first pod past the limit and annotated
  ``gatewatch.io/combined: "true"``. A Deployment of 500 pods running a debug
  image is then 11 Events, not 500. Each match still has its own alert line.

``submit`` also takes a function that builds the Event: the review path only
queues it, and the worker builds it. The worker writes one Event at a time; a
write under way when the worker is cancelled finishes, and ``drain`` waits for
it before it writes what is left.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Union

import kubernetes.client

from gatewatch.errors import GatewatchError
from gatewatch.kube import rest

if TYPE_CHECKING:
    from gatewatch.metrics import Metrics
    from gatewatch.rules.model import Rule

logger = logging.getLogger(__name__)

ANNOTATION_PREFIX = "gatewatch.io/"
DEFAULT_REPORTING_CONTROLLER = "gatewatch.io/gatewatch"
# The label of this queue in gatewatch_queue_dropped (metrics.py).
METRICS_QUEUE = "events"
# events.k8s.io/v1 validation: note is at most 1 kB, names are DNS subdomains (253).
MAX_NOTE_BYTES = 1024
MAX_NAME_LENGTH = 253
# client-go's EventAggregator (tools/record/events_cache.go: defaultAggregateMaxEvents,
# defaultAggregateIntervalInSeconds): more than 10 similar events within 10 minutes are combined.
SIMILAR_EVENTS_LIMIT = 10
SIMILAR_EVENTS_WINDOW = 600.0
COMBINED_PREFIX = "(combined from similar events): "
# The worker finishes a round at least this often, even with nothing to write (the supervisor's liveness).
IDLE_CYCLE_SECONDS = 5.0
# Occurrences already queued are counted in the same round, up to this many: a burst costs no timer
# and no flush pass per occurrence.
OBSERVE_BATCH = 64

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


# What EventRecorder.submit takes: the Event, or a function that builds it (called by the worker).
EventSource = Union[EventRequest, Callable[[], EventRequest]]


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
    effect_name = str(getattr(effect, "value", effect)).lower()
    techniques = list(rule.technique_ids)
    tactics = list(rule.tactic_ids)
    severity = str(getattr(rule.severity, "value", rule.severity))
    key_parts = (namespace, pod_name, rule.id, effect_name, operation, user)
    technique_text = ", ".join(techniques) or "no ATT&CK technique"
    what = f"user {user!r} tried to {_OPERATION_WORDS.get(operation, operation)} {namespace}/{pod_name}"
    if operation == "create" and effect_name == "deny":
        head = f"Pod {namespace}/{pod_name} was not created: gatewatch denied it"
    else:
        head = {
            "deny": "gatewatch denied the request",
            "warn": "gatewatch allowed the request with a warning",
            "alert": "gatewatch allowed the request and raised an alert",
        }.get(effect_name, f"gatewatch: {effect_name}")
    action_name = str(getattr(rule.action, "value", rule.action)).lower()
    mode_text = f", mode {getattr(mode, 'value', mode)}" if mode is not None else ""
    rule_text = f"Rule {rule.name!r} ({rule.id}, ATT&CK {technique_text}, severity {severity}) matched"
    outcome_text = f"effect {effect_name} (rule action {action_name}){mode_text}"
    note = f"{head}. {rule_text}: {what}; {outcome_text}."
    similar_what = (
        f"user {user!r} tried to {_OPERATION_WORDS.get(operation, operation)}s in namespace {namespace}: "
        f"more than {SIMILAR_EVENTS_LIMIT} different pods, counted together from {pod_name} on"
    )
    similar = SimilarEvents(
        key="\x1f".join((namespace, rule.id, effect_name, operation, user, "similar")),
        note=f"{rule_text}: {similar_what}; {outcome_text}; series.count counts them all.",
        name_base=f"gatewatch-{operation}",
    )
    annotations = {
        ANNOTATION_PREFIX + "rule-id": rule.id,
        ANNOTATION_PREFIX + "rule-name": rule.name,
        ANNOTATION_PREFIX + "severity": severity,
        ANNOTATION_PREFIX + "risk-score": str(rule.risk_score),
        ANNOTATION_PREFIX + "mitre-tactics": ",".join(tactics),
        ANNOTATION_PREFIX + "mitre-techniques": ",".join(techniques),
        ANNOTATION_PREFIX + "action": action_name,
        ANNOTATION_PREFIX + "effect": effect_name,
        ANNOTATION_PREFIX + "operation": operation,
        ANNOTATION_PREFIX + "user": user,
    }
    return EventRequest(
        regarding=ObjectRef(kind="Pod", api_version="v1", name=pod_name, namespace=namespace, uid=pod_uid),
        reason=_REASONS.get((operation, effect_name), REASON_ALERT),
        action=effect_name.capitalize(),
        note=note,
        series_key="\x1f".join(key_parts),
        annotations=annotations,
        observed_at=observed_at,
        similar=similar,
    )


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


@dataclass
class _SimilarRun:
    """The pods that had their own Event for one similar-events key, in the current run of them."""

    last_seen: float  # the recorder's clock
    own_events: set[tuple[str, str]] = field(default_factory=set)


@dataclass
class _Series:
    """What this process knows of one Event."""

    first: EventRequest
    count: int  # occurrences seen (including those written by others, once known)
    written_count: int  # the count the API server has
    last_observed: datetime
    exists: bool = False  # created (or found) on the server
    next_write: float = 0.0  # when a PATCH may go out (the recorder's clock)


class EventWriteFailed(GatewatchError):
    """An Event write the API server refused or did not answer; its occurrences were counted as lost."""


class EventRecorder:
    """Bounded, non-blocking Event queue plus the worker that writes Events.

    Use: ``recorder.submit(match_event(...))`` on the review path; a supervised
    task runs ``await recorder.cycle()`` again and again; on shutdown cancel it and
    ``await recorder.drain(timeout=...)``. ``submit`` must be called from the
    event loop's thread (the kopf handlers are coroutines).
    """

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        *,
        queue_size: int = 1000,
        reporting_controller: str = DEFAULT_REPORTING_CONTROLLER,
        reporting_instance: str | None = None,
        aggregation_window: float = 10.0,
        request_timeout: float = 5.0,
        max_tracked_series: int = 10_000,
        similar_limit: int = SIMILAR_EVENTS_LIMIT,
        similar_window: float = SIMILAR_EVENTS_WINDOW,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` (seconds, monotonic) times the aggregation and similar-events windows."""
        if queue_size < 1:
            raise GatewatchError(f"events: queue size must be at least 1, not {queue_size}")
        self._api_client = api_client
        self._queue: asyncio.Queue[EventSource] = asyncio.Queue(maxsize=queue_size)
        self.reporting_controller = reporting_controller
        # In a Pod, HOSTNAME is the pod name (the downward API can set it explicitly).
        self.reporting_instance = reporting_instance or os.environ.get("HOSTNAME") or socket.gethostname()
        self._window = aggregation_window
        self._timeout = request_timeout
        self._max_tracked = max_tracked_series
        self._similar_limit = similar_limit
        self._similar_window = similar_window
        self._metrics = metrics
        self._clock = clock
        self._series: OrderedDict[tuple[str, str], _Series] = OrderedDict()
        self._similar: OrderedDict[str, _SimilarRun] = OrderedDict()
        # The API write under way: it outlives a cancelled cycle(), and drain() waits for it.
        self._writing: asyncio.Task[None] | None = None
        # Series with occurrences not yet written: what a flush looks at.
        self._dirty: set[tuple[str, str]] = set()
        self._round_failure: str | None = None  # the first failed write of the current round
        self.dropped = 0  # refused by submit: queue full
        self.failed = 0  # API writes that failed (their occurrences are lost)
        self.written = 0  # successful creates and patches

    # -- the review path ---------------------------------------------------

    def submit(self, request: EventSource) -> bool:
        """Queue ``request`` (or a function building it); never blocks. False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(request)
        except asyncio.QueueFull:
            self.dropped += 1
            if self._metrics is not None:
                self._metrics.queue_dropped(METRICS_QUEUE)
            return False
        return True

    @property
    def pending(self) -> int:
        """Occurrences queued or counted but not yet written."""
        unwritten = sum(self._series[key].count - self._series[key].written_count for key in self._dirty)
        return self._queue.qsize() + unwritten

    # -- the worker --------------------------------------------------------

    async def cycle(self, *, idle: float = IDLE_CYCLE_SECONDS) -> None:
        """One round of the worker: wait for an Event (at most ``idle`` seconds, less when a
        series is due), count it, write what is due.

        The operator's supervisor runs it again and again (gatewatch.background). Raises
        ``EventWriteFailed`` when a write failed in this round (its occurrences are counted
        as lost), so the supervisor logs it and backs off before the next round.
        """
        if self._writing is not None and not self._writing.done():
            # A write the previous round was cancelled in (a timeout) finishes first: never two at once.
            await asyncio.wait({self._writing})
        self._round_failure = None
        queue = self._queue
        if queue.empty():
            due = self._next_flush_delay()
            try:
                request = await asyncio.wait_for(queue.get(), timeout=idle if due is None else min(due, idle))
            except asyncio.TimeoutError:
                request = None
        else:
            request = queue.get_nowait()
        if request is not None:
            await self._observe(_built(request))
            observed = 1
            # The rest of a burst, until a write fails (then the supervisor backs off first).
            while observed < OBSERVE_BATCH and not queue.empty() and self._round_failure is None:
                await self._observe(_built(queue.get_nowait()))
                observed += 1
        await self._flush(force=False)
        if self._round_failure is not None:
            raise EventWriteFailed(self._round_failure)

    async def drain(self, *, timeout: float) -> None:
        """On shutdown: write what is queued and every pending series count, within ``timeout``."""

        async def everything() -> None:
            if self._writing is not None:  # the write cycle() was cancelled in (its errors are logged there)
                await asyncio.gather(self._writing, return_exceptions=True)
            while not self._queue.empty():
                try:
                    await self._observe(_built(self._queue.get_nowait()))
                except Exception:  # a bug in one Event must not cost the others
                    logger.exception("unexpected error while writing Events on shutdown; continuing")
            await self._flush(force=True)

        self._round_failure = None
        try:
            await asyncio.wait_for(everything(), timeout=timeout)
        except asyncio.TimeoutError:
            logger.warning("shutdown: %d Event occurrence(s) not written within %gs", self.pending, timeout)
        if self._round_failure is not None:
            logger.warning("shutdown: %s", self._round_failure)

    def _next_flush_delay(self) -> float | None:
        due = [self._series[key].next_write for key in self._dirty]
        if not due:
            return None
        return max(0.0, min(due) - self._clock())

    async def _observe(self, request: EventRequest) -> None:
        key = (request.namespace, request.name)
        series = self._series.get(key)
        if series is None and request.similar is not None and self._too_many_similar(request.similar.key, key):
            request = request.combined()
            key = (request.namespace, request.name)
            series = self._series.get(key)
        if series is not None:
            series.count += 1
            series.last_observed = max(series.last_observed, request.observed_at)
            self._series.move_to_end(key)
            self._dirty.add(key)
            return
        series = _Series(first=request, count=1, written_count=0, last_observed=request.observed_at)
        self._series[key] = series
        while len(self._series) > self._max_tracked:
            # The oldest series is forgotten; a repeat of it finds its Event by name (409).
            forgotten, _ = self._series.popitem(last=False)
            self._dirty.discard(forgotten)
        await self._write(key, series)

    def _too_many_similar(self, similar_key: str, own_key: tuple[str, str]) -> bool:
        """Whether an occurrence on a new object goes to the combined Event rather than one of its own."""
        now = self._clock()
        run = self._similar.get(similar_key)
        if run is None or now - run.last_seen > self._similar_window:
            run = self._similar[similar_key] = _SimilarRun(last_seen=now)
            while len(self._similar) > self._max_tracked:
                self._similar.popitem(last=False)
        run.last_seen = now
        self._similar.move_to_end(similar_key)
        if len(run.own_events) < self._similar_limit or own_key in run.own_events:
            run.own_events.add(own_key)
            return False
        return True

    async def _flush(self, *, force: bool) -> None:
        now = self._clock()
        for key in list(self._dirty):
            if self._round_failure is not None and not force:
                break  # the API failed this round: the rest waits for the next one, after a backoff
            series = self._series.get(key)
            if series is None:
                self._dirty.discard(key)
            elif force or now >= series.next_write:
                await self._write(key, series)

    async def _write(self, key: tuple[str, str], series: _Series) -> None:
        # Shielded: cancelling the worker must not cut a write (and its bookkeeping) in half.
        self._writing = asyncio.ensure_future(self._write_now(key, series))
        await asyncio.shield(self._writing)

    async def _write_now(self, key: tuple[str, str], series: _Series) -> None:
        series.next_write = self._clock() + self._window
        namespace, name = key
        target_count = series.count
        try:
            if series.exists:
                await self._call(rest.patch_namespaced_event, name, namespace, self._series_patch(series))
            else:
                await self._call(rest.create_namespaced_event, namespace, self._new_event(series))
                series.exists = True
        except kubernetes.client.ApiException as error:
            if error.status == 409 and not series.exists:
                # Another replica, or this one before a restart, made it: continue its series.
                await self._continue_existing(key, series)
                return
            if error.status == 404 and series.exists:
                # Expired (the API server keeps Events ~1h): start over with a new Event.
                series.exists = False
                await self._write_now(key, series)
                return
            self._failed(key, series, f"HTTP {error.status} {error.reason}")
            return
        except Exception as error:  # urllib3 connection errors, timeouts
            self._failed(key, series, type(error).__name__)
            return
        series.written_count = target_count
        if series.count == series.written_count:
            self._dirty.discard(key)
        self._succeeded()

    async def _continue_existing(self, key: tuple[str, str], series: _Series) -> None:
        namespace, name = key
        try:
            existing = await self._call(rest.read_namespaced_event, name, namespace)
        except Exception as error:
            self._failed(key, series, f"read after conflict: {getattr(error, 'status', type(error).__name__)}")
            return
        earlier = int(((existing.get("series") or {}).get("count")) or 1)
        series.count += earlier
        series.written_count = earlier
        series.exists = True
        await self._write_now(key, series)

    def _failed(self, key: tuple[str, str], series: _Series, why: str) -> None:
        lost = series.count - series.written_count
        self.failed += 1
        if self._metrics is not None:
            self._metrics.queue_dropped(METRICS_QUEUE, lost)
        message = f"could not write Event {key[0]}/{key[1]} ({lost} occurrence(s) lost): {why}"
        logger.debug("%s", message)
        # The first failure of the round is what the supervisor logs (once per outage, with backoff).
        self._round_failure = self._round_failure or message
        self._dirty.discard(key)
        if series.exists:
            series.written_count = series.count  # give up on these; later repeats try again
        else:
            self._series.pop(key, None)  # a later occurrence tries to create it again

    def _succeeded(self) -> None:
        self.written += 1

    async def _call(self, method: Any, *args: Any) -> dict[str, Any]:
        def blocking() -> dict[str, Any]:
            return method(self._api_client, *args, timeout=self._timeout)

        return await asyncio.to_thread(blocking)

    def _new_event(self, series: _Series) -> dict[str, Any]:
        request = series.first
        note = request.note.encode()[:MAX_NOTE_BYTES].decode(errors="ignore")
        event: dict[str, Any] = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {
                "name": request.name,
                "namespace": request.namespace,
                "annotations": dict(request.annotations),
            },
            "eventTime": _micro_time(request.observed_at),
            "type": request.type,
            "reason": request.reason,
            "action": request.action,
            "note": note,
            "regarding": request.regarding.to_api(),
            "reportingController": self.reporting_controller,
            "reportingInstance": self.reporting_instance,
        }
        if series.count > 1:  # occurrences counted while a previous write failed
            event["series"] = {"count": series.count, "lastObservedTime": _micro_time(series.last_observed)}
        return event

    @staticmethod
    def _series_patch(series: _Series) -> dict[str, Any]:
        return {"series": {"count": series.count, "lastObservedTime": _micro_time(series.last_observed)}}


def _built(source: EventSource) -> EventRequest:
    return source() if callable(source) else source


def _micro_time(when: datetime) -> datetime:
    """A datetime the client serializes as an API MicroTime.

    The client writes ``isoformat()``, which leaves out a zero fraction; the
    API server parses MicroTime as RFC 3339 with exactly six fractional digits.
    """
    when = when.astimezone(timezone.utc) if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return when if when.microsecond else when.replace(microsecond=1)
