"""Which mode applies to a namespace, with its labels read from the API.

The rule is ``gatewatch.namespace_modes``'s (docs/configuration.md): the
platform team's configuration decides, and whoever may label a namespace (often
its tenant) can raise its mode but never lower it. A label or an unprotected
selector asking for less is ignored, logged once (logger ``gatewatch.security``)
and named in the result, so the alert says why it did not count.

Namespace labels come from the API with a short timeout and are cached for a
while, so a review costs at most one short lookup per namespace per TTL. The
webhook entry that called (its path) carries the mode the API server's own
reading of the labels gives: it can only raise the mode. When the labels cannot
be read, the mode is never the default: it is the entry's (raised by the last
labels read, if any), else the strongest mode the configuration could give the
namespace. The result says why either way.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, Hashable, Literal, Mapping, TypeVar

import kubernetes.client

from gatewatch.config import MODE_LABEL, Settings
from gatewatch.decision import Mode
from gatewatch.errors import GatewatchError
from gatewatch.kube import rest
from gatewatch.namespace_modes import ModePolicy, ModeSelector

logger = logging.getLogger(__name__)
# Label attempts to loosen the mode are security-relevant, like webhook-configuration drift.
security_logger = logging.getLogger("gatewatch.security")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# A failed lookup is retried after this long at most, so an API outage costs one
# timeout per namespace every few seconds, not one per review.
FAILURE_TTL_SECONDS = 5.0


class LookupFailed(GatewatchError):
    """A Kubernetes lookup that timed out or failed; the message says which object and why."""


class AsyncTtlCache(Generic[K, V]):
    """Results of an async lookup, kept for ``ttl`` seconds; failures kept for less.

    Concurrent callers asking for the same key share one lookup in flight.
    """

    def __init__(
        self,
        fetch: Callable[[K], Awaitable[V]],
        *,
        ttl: float,
        failure_ttl: float = FAILURE_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._failure_ttl = min(failure_ttl, ttl)
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[K, tuple[float, V | None, LookupFailed | None]] = {}
        self._in_flight: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K) -> V:
        """The cached value, or a fresh lookup; raises LookupFailed (possibly cached)."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self._clock():
            if entry[2] is not None:
                raise entry[2]
            return entry[1]  # type: ignore[return-value]
        pending = self._in_flight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            value = await self._fetch(key)
        except LookupFailed as error:
            self._store(key, None, error, self._failure_ttl)
            future.set_exception(error)
            future.exception()  # mark retrieved: nobody else may be waiting
            raise
        except BaseException as error:  # cancellation or a bug: nothing cached
            future.set_exception(LookupFailed(f"lookup of {key!r} was interrupted: {error!r}"))
            future.exception()
            raise
        else:
            self._store(key, value, None, self._ttl)
            future.set_result(value)
            return value
        finally:
            self._in_flight.pop(key, None)

    def invalidate(self, key: K | None = None) -> None:
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)

    def _store(self, key: K, value: V | None, error: LookupFailed | None, ttl: float) -> None:
        if ttl <= 0:
            return
        if len(self._entries) >= self._max_entries:
            # Drop expired entries first; if still full, the oldest inserted.
            now = self._clock()
            for stale in [k for k, entry in self._entries.items() if entry[0] <= now]:
                del self._entries[stale]
            if len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]
        self._entries[key] = (self._clock() + ttl, value, error)


async def read_object(
    call: Callable[..., Any],
    *args: Any,
    what: str,
    timeout: float,
) -> dict[str, Any]:
    """Run a sync ``gatewatch.kube.rest`` read in a thread, bounded by ``timeout``; plain JSON back."""

    def blocking() -> dict[str, Any]:
        return call(*args, timeout=timeout)

    try:
        # The thread may outlive the wait (the client's own timeout ends it); the review does not.
        return await asyncio.wait_for(asyncio.to_thread(blocking), timeout=timeout + 0.1)
    except asyncio.TimeoutError:
        raise LookupFailed(f"{what}: no answer from the Kubernetes API within {timeout:g}s") from None
    except Exception as error:  # the client raises ApiException, urllib3 errors, ...
        status = getattr(error, "status", None)
        reason = getattr(error, "reason", None) or type(error).__name__
        detail = f"HTTP {status} {reason}" if status else str(reason)
        raise LookupFailed(f"{what}: {detail}") from None


LabelsFetcher = Callable[[str], Awaitable[Mapping[str, str]]]


def namespace_labels_fetcher(api_client: kubernetes.client.ApiClient, *, timeout: float) -> LabelsFetcher:
    """Labels of a namespace, read through the shared ``ApiClient``."""

    async def fetch(namespace: str) -> Mapping[str, str]:
        body = await read_object(
            rest.read_namespace, api_client, namespace, what=f"namespace {namespace!r}", timeout=timeout
        )
        return dict((body.get("metadata") or {}).get("labels") or {})

    return fetch


ModeSource = Literal["config", "label", "selector", "default", "excluded", "entry", "strongest", "cluster"]
IgnoredLabelCallback = Callable[[str, Mode, "NamespaceMode"], None]


@dataclass(frozen=True)
class NamespaceMode:
    namespace: str
    mode: Mode
    source: ModeSource
    # Why the labels could not be read now, else None.
    labels_error: str | None = None
    # The labels used were the last ones read, before ``labels_error``.
    labels_stale: bool = False
    # A ``gatewatch.io/mode`` label asking for a weaker mode than ``source`` gives: ignored.
    ignored_label: Mode | None = None
    # Unprotected selectors that matched but asked for less than the baseline: ignored.
    ignored_selectors: tuple[ModeSelector, ...] = ()

    def alert_fields(self) -> dict[str, Any]:
        """The alert's ``gatewatch`` extras: where the mode came from and why (docs/alerts.md)."""
        fields: dict[str, Any] = {"mode_source": self.source}
        if self.ignored_label is not None:
            fields["mode_label_ignored"] = {
                "label": f"{MODE_LABEL}={self.ignored_label.value}",
                "reason": f"a namespace label may only tighten the mode; the {self.source} gives {self.mode.value}",
            }
        if self.ignored_selectors:
            fields["mode_selectors_ignored"] = [
                {"selector": f"namespaces.selectors[{selector.position}]", "mode": selector.mode.value,
                 "reason": "a selector reading labels not in namespaces.protectedLabels may only tighten the mode"}
                for selector in self.ignored_selectors
            ]
        if self.labels_error is not None:
            fields["namespace_lookup"] = {
                "status": "failed",
                "reason": self.labels_error,
                "labels": "stale" if self.labels_stale else "none",
            }
        return fields


class NamespaceModeResolver:
    """A namespace's mode (``gatewatch.namespace_modes``), from labels read through a cache.

    ``entry_mode`` is the mode of the webhook entry that called (its path): what the
    API server, reading the labels itself, says the mode is. It can only raise the
    mode, and it is what counts when the labels cannot be read.
    ``on_ignored_label(namespace, asked_mode, result)`` is called once per namespace
    and label value, or selector, that asked for a weaker mode (e.g. to count it).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        fetch_labels: LabelsFetcher,
        cache_ttl: float,
        on_ignored_label: IgnoredLabelCallback | None = None,
        max_stale_entries: int = 10_000,
    ) -> None:
        self.policy = ModePolicy.from_settings(settings)
        self._excluded = frozenset(settings.excluded_namespaces)
        self._labels = AsyncTtlCache(fetch_labels, ttl=cache_ttl)
        self._on_ignored_label = on_ignored_label
        # The last labels read per namespace, for when a refresh fails.
        self._last_labels: dict[str, Mapping[str, str]] = {}
        # Per namespace: the labels and policy its mode was last worked out from, and that mode (_resolved).
        self._resolved_modes: dict[str, tuple[dict[str, str], ModePolicy, NamespaceMode]] = {}
        self._max_stale_entries = max_stale_entries
        self._reported_bad_labels: set[tuple[str, str]] = set()
        self._reported_weaker: set[tuple[str, Any]] = set()

    async def resolve(self, namespace: str, *, entry_mode: Mode | None = None) -> NamespaceMode:
        if namespace in self._excluded:
            # The webhook's namespaceSelector keeps these away; if one arrives anyway
            # (a hand-edited configuration), gatewatch stays out of it.
            return NamespaceMode(namespace, Mode.OFF, "excluded")
        if namespace in self.policy.explicit:
            return _raised(NamespaceMode(namespace, self.policy.explicit[namespace], "config"), entry_mode)
        try:
            labels = await self._labels.get(namespace)
        except LookupFailed as error:
            return self._without_fresh_labels(namespace, str(error), entry_mode)
        self._remember(namespace, labels)
        return _raised(self._resolved(namespace, labels), entry_mode)

    def _resolved(self, namespace: str, labels: Mapping[str, str]) -> NamespaceMode:
        """resolve_with_labels, worked out again only when the namespace's labels (or the policy) changed:
        every review of a namespace asks, with the labels the cache holds for minutes."""
        known = self._resolved_modes.get(namespace)
        if known is not None and known[1] is self.policy and known[0] == labels:
            return known[2]
        result = self.resolve_with_labels(namespace, labels)
        if namespace not in self._resolved_modes and len(self._resolved_modes) >= self._max_stale_entries:
            del self._resolved_modes[next(iter(self._resolved_modes))]  # the oldest inserted
        self._resolved_modes[namespace] = (dict(labels), self.policy, result)  # a copy: compared, never changed
        return result

    def resolve_cluster_scoped(self, *, entry_mode: Mode | None = None) -> NamespaceMode:
        """The mode for a request on a cluster-scoped resource (``nodes/proxy``): the policy's
        ``cluster_mode`` (the strongest ``mode``, ``namespaces.selectors`` or ``namespaces.modes``
        gives), raised to the calling entry's. ``namespace`` is empty, ``source`` "cluster"."""
        mode = self.policy.cluster_mode()
        if entry_mode is not None and entry_mode > mode:
            mode = entry_mode
        return NamespaceMode("", mode, "cluster")

    def resolve_with_labels(self, namespace: str, labels: Mapping[str, str]) -> NamespaceMode:
        """The mode from the namespace's labels (no API call), reporting what did not count."""
        decision = self.policy.decide(namespace, labels)
        result = NamespaceMode(namespace, decision.mode, decision.source, ignored_label=decision.ignored_label,
                               ignored_selectors=decision.ignored_selectors)
        if decision.invalid_label is not None:
            if _first_time(self._reported_bad_labels, (namespace, decision.invalid_label),
                           limit=self._max_stale_entries):
                logger.warning(
                    "namespace %r: label %s=%r is not a mode (exactly off, audit, warn or enforce); ignored",
                    namespace, MODE_LABEL, decision.invalid_label,
                )
        if decision.ignored_label is not None:
            self._report_weaker(namespace, ("label", decision.ignored_label), decision.ignored_label, result,
                                f"label {MODE_LABEL}={decision.ignored_label.value}",
                                "a namespace label may only tighten the mode (set namespaces.modes to loosen it)")
        for selector in decision.ignored_selectors:
            self._report_weaker(namespace, ("selector", selector.position), selector.mode, result,
                                f"matching {selector.describe()}",
                                "a selector may loosen only when every label it reads is in "
                                "namespaces.protectedLabels")
        return result

    def _without_fresh_labels(self, namespace: str, error: str, entry_mode: Mode | None) -> NamespaceMode:
        # Never the default: the API server's word (the entry that called), else the strongest
        # mode the configuration could give; the last labels read may only raise it.
        stale = self._last_labels.get(namespace)
        if entry_mode is None:
            return NamespaceMode(namespace, self.policy.strongest(namespace), "strongest", labels_error=error,
                                 labels_stale=False)
        if stale is None:
            return NamespaceMode(namespace, entry_mode, "entry", labels_error=error)
        result = _raised(self.resolve_with_labels(namespace, stale), entry_mode)
        return NamespaceMode(
            namespace, result.mode, result.source, labels_error=error, labels_stale=True,
            ignored_label=result.ignored_label, ignored_selectors=result.ignored_selectors,
        )

    def _remember(self, namespace: str, labels: Mapping[str, str]) -> None:
        if namespace not in self._last_labels and len(self._last_labels) >= self._max_stale_entries:
            del self._last_labels[next(iter(self._last_labels))]  # the oldest inserted
        self._last_labels[namespace] = labels

    def _report_weaker(self, namespace: str, key: Any, asked: Mode, result: NamespaceMode, what: str,
                       why: str) -> None:
        if not _first_time(self._reported_weaker, (namespace, key), limit=self._max_stale_entries):
            return
        security_logger.warning(
            "namespace %r: %s asks for a weaker mode (%s) than the %s gives (%s); ignored: %s",
            namespace, what, asked.value, result.source, result.mode.value, why,
        )
        if self._on_ignored_label is not None:
            try:
                self._on_ignored_label(namespace, asked, result)
            except Exception:
                logger.exception("ignored-label callback failed")


def _raised(result: NamespaceMode, entry_mode: Mode | None) -> NamespaceMode:
    """``result``, or the entry's mode when that is stronger (the API server read fresher labels)."""
    if entry_mode is None or entry_mode <= result.mode:
        return result
    return NamespaceMode(result.namespace, entry_mode, "entry", labels_error=result.labels_error,
                         labels_stale=result.labels_stale)


def _first_time(seen: set[Any], key: Any, *, limit: int) -> bool:
    """Whether ``key`` is new to ``seen`` (then added). Bounded: past ``limit`` keys
    it starts over, so a namespace churning label values cannot grow it for ever
    (at worst a message is logged again)."""
    if key in seen:
        return False
    if len(seen) >= limit:
        seen.clear()
    seen.add(key)
    return True
