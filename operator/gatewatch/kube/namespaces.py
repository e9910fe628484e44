"""Which mode applies to a namespace.

Precedence, strongest first (docs/configuration.md):

1. ``namespaces.modes[<namespace>]`` in the config;
2. the namespace label ``gatewatch.io/mode`` (the Pod Security Admission convention);
3. the first matching entry of ``namespaces.selectors``;
4. ``mode``, the default.

Namespace labels come from the API with a short timeout and are cached for a
while, so a review costs at most one short lookup per namespace per TTL. If
the labels cannot be read, steps 2 and 3 are skipped and the result says why.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, Hashable, Literal, Mapping, TypeVar

from gatewatch.config import MODE_LABEL, LabelSelectorRequirement, NamespaceSelectorMode, Settings
from gatewatch.decision import Mode
from gatewatch.errors import GatewatchError

logger = logging.getLogger(__name__)

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
    """Run a sync kubernetes-client read in a thread, bounded by ``timeout``; plain JSON back.

    ``_preload_content=False`` skips the client's model classes: the raw JSON is
    all gatewatch needs and much cheaper on the review path.
    """

    def blocking() -> dict[str, Any]:
        response = call(*args, _request_timeout=timeout, _preload_content=False)
        return json.loads(response.data)

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


def namespace_labels_fetcher(core_v1_api: Any, *, timeout: float) -> LabelsFetcher:
    """Labels of a namespace through ``kubernetes.client.CoreV1Api``."""

    async def fetch(namespace: str) -> Mapping[str, str]:
        body = await read_object(
            core_v1_api.read_namespace, namespace, what=f"namespace {namespace!r}", timeout=timeout
        )
        return dict((body.get("metadata") or {}).get("labels") or {})

    return fetch


ModeSource = Literal["config", "label", "selector", "default", "excluded"]


@dataclass(frozen=True)
class NamespaceMode:
    namespace: str
    mode: Mode
    source: ModeSource
    # Why the labels could not be read (steps 2 and 3 skipped), else None.
    labels_error: str | None = None


class NamespaceModeResolver:
    """Resolves a namespace's mode by the documented precedence."""

    def __init__(self, settings: Settings, *, fetch_labels: LabelsFetcher, cache_ttl: float) -> None:
        self._default = settings.mode
        self._explicit = dict(settings.namespaces.modes)
        self._selectors = tuple(settings.namespaces.selectors)
        self._excluded = frozenset(settings.excluded_namespaces)
        self._labels = AsyncTtlCache(fetch_labels, ttl=cache_ttl)
        self._reported_bad_labels: set[tuple[str, str]] = set()

    async def resolve(self, namespace: str) -> NamespaceMode:
        if namespace in self._excluded:
            # The webhook's namespaceSelector keeps these away; if one arrives anyway
            # (a hand-edited configuration), gatewatch stays out of it.
            return NamespaceMode(namespace, Mode.OFF, "excluded")
        explicit = self._explicit.get(namespace)
        if explicit is not None:
            return NamespaceMode(namespace, explicit, "config")
        try:
            labels = await self._labels.get(namespace)
        except LookupFailed as error:
            return NamespaceMode(namespace, self._default, "default", labels_error=str(error))
        return self.resolve_with_labels(namespace, labels)

    def resolve_with_labels(self, namespace: str, labels: Mapping[str, str]) -> NamespaceMode:
        """Steps 2-4, given the namespace's labels (no API call)."""
        value = labels.get(MODE_LABEL)
        if value is not None:
            try:
                return NamespaceMode(namespace, Mode.parse(value), "label")
            except GatewatchError:
                if (namespace, value) not in self._reported_bad_labels:
                    self._reported_bad_labels.add((namespace, value))
                    logger.warning(
                        "namespace %r: label %s=%r is not a mode (off, audit, warn, enforce); ignored",
                        namespace, MODE_LABEL, value,
                    )
        for entry in self._selectors:
            if selector_matches(entry, labels):
                return NamespaceMode(namespace, entry.mode, "selector")
        return NamespaceMode(namespace, self._default, "default")


def selector_matches(selector: NamespaceSelectorMode, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics: every matchLabels pair and every expression holds."""
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    return all(_requirement_holds(requirement, labels) for requirement in selector.match_expressions)


def _requirement_holds(requirement: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    present = requirement.key in labels
    if requirement.operator == "Exists":
        return present
    if requirement.operator == "DoesNotExist":
        return not present
    if requirement.operator == "In":
        return present and labels[requirement.key] in requirement.values
    # NotIn: Kubernetes counts an absent key as "not in".
    return not present or labels[requirement.key] not in requirement.values
