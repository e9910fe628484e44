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

``submit`` also takes a function that builds the Event, or a ``MatchOccurrence``
(the arguments of ``match_event``): the review path only queues it, and the
worker builds the Event, for a match only when it starts a series (a repeat is
counted by the Event's name alone). The worker writes one Event at a time; a
write under way when the worker is cancelled finishes, and ``drain`` waits for
it before it writes what is left.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

import kubernetes.client

from gatewatch.errors import GatewatchError
from gatewatch.kube import rest
# What an Event says lives in event_requests; its names are this module's too (callers import them here).
from gatewatch.kube.event_requests import (  # noqa: F401
    _REASONS,
    ANNOTATION_PREFIX,
    COMBINED_PREFIX,
    EVENT_ANNOTATIONS,
    EVENT_REASONS,
    MAX_NAME_LENGTH,
    REASON_ALERT,
    REASON_RULES_REJECTED,
    SIMILAR_EVENTS_LIMIT,
    SIMILAR_EVENTS_WINDOW,
    EventRequest,
    EventSource,
    EventType,
    MatchOccurrence,
    ObjectRef,
    Operation,
    SimilarEvents,
    event_name,
    match_event,
    rules_rejected_event,
)

if TYPE_CHECKING:
    from gatewatch.metrics import Metrics

logger = logging.getLogger(__name__)

DEFAULT_REPORTING_CONTROLLER = "gatewatch.io/gatewatch"
# The label of this queue in gatewatch_queue_dropped (metrics.py).
METRICS_QUEUE = "events"
# events.k8s.io/v1 validation: note is at most 1 kB.
MAX_NOTE_BYTES = 1024
# The worker finishes a round at least this often, even with nothing to write (the supervisor's liveness).
IDLE_CYCLE_SECONDS = 5.0
# Occurrences already queued are counted in the same round, up to this many and for this long: a
# burst costs no timer and no flush pass per occurrence, and a slow API (each new series is a write)
# still ends the round well within its supervisor's timeout.
OBSERVE_BATCH = 64
OBSERVE_BATCH_SECONDS = 1.0
# After a round that emptied the queue, the worker waits this long before it looks again, so a burst's
# next occurrences are counted in one round: under load, a round per matching review (its wake-up, its
# timers and its supervisor's bookkeeping) cost the event loop more than counting the occurrence did.
GATHER_SECONDS = 0.02



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

    async def cycle(self, *, idle: float = IDLE_CYCLE_SECONDS, gather: float = GATHER_SECONDS) -> None:
        """One round of the worker: wait for an Event (at most ``idle`` seconds, less when a
        series is due), count it and those queued behind it, write what is due; then, when it
        emptied the queue, pause ``gather`` seconds (nothing taken is held meanwhile).

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
                # A timeout scope, not wait_for: no task of its own each time (the worker waits about once
                # per matching review), and a cancelled get leaves its item in the queue.
                async with asyncio.timeout(idle if due is None else min(due, idle)):
                    request = await queue.get()
            except TimeoutError:
                request = None
        else:
            request = queue.get_nowait()
        if request is not None:
            started = self._clock()
            await self._observe(_built(request))
            observed = 1
            # The rest of a burst, until a write fails (then the supervisor backs off first).
            while observed < OBSERVE_BATCH and not queue.empty() and self._round_failure is None \
                    and self._clock() - started < OBSERVE_BATCH_SECONDS:
                await self._observe(_built(queue.get_nowait()))
                observed += 1
        await self._flush(force=False)
        if self._round_failure is not None:
            raise EventWriteFailed(self._round_failure)
        if request is not None and gather > 0 and queue.empty():
            await asyncio.sleep(gather)

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

    async def _observe(self, occurrence: EventRequest | MatchOccurrence) -> None:
        key = (occurrence.namespace, occurrence.name)
        series = self._series.get(key)
        similar_key = occurrence.similar_key
        if series is None and similar_key is not None and self._too_many_similar(similar_key, key):
            occurrence = occurrence.combined()
            key = (occurrence.namespace, occurrence.name)
            series = self._series.get(key)
        if series is not None:
            series.count += 1
            series.last_observed = max(series.last_observed, occurrence.observed_at)
            self._series.move_to_end(key)
            self._dirty.add(key)
            return
        # The first of its series: only now is the Event itself built (its note, its annotations).
        request = occurrence.built()
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


def _built(source: EventSource) -> EventRequest | MatchOccurrence:
    return source() if callable(source) else source


def _micro_time(when: datetime) -> datetime:
    """A datetime the client serializes as an API MicroTime.

    The client writes ``isoformat()``, which leaves out a zero fraction; the
    API server parses MicroTime as RFC 3339 with exactly six fractional digits.
    """
    when = when.astimezone(timezone.utc) if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return when if when.microsecond else when.replace(microsecond=1)
