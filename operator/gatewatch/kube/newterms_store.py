"""new_terms history kept in memory and persisted in a ConfigMap.

``ConfigMapNewTermsStore`` is ``gatewatch.newterms.InMemoryNewTermsStore`` (the
review path only touches memory) plus persistence: a supervised background
task (gatewatch.background) calls :meth:`flush` every ``flush_interval`` seconds to the ConfigMap ``name``
(``newTerms.configMapName``, default ``gatewatch-new-terms``) in gatewatch's namespace (data key ``history.json``), and :meth:`load` restores it
at start, so the history survives restarts and is shared by replicas. The
value is ``{"version": 1, "rules": {rule id: {key: last seen (ISO 8601)}}}``,
the ``NewTermsStore.snapshot()`` shape (a key's values joined by U+001F).

Consistency (what an operator can rely on):

* A flush reads the ConfigMap, merges it into memory (per rule and key, the
  latest sighting wins), prunes, and writes it back with the resourceVersion
  it read (optimistic concurrency). On 409 Conflict another replica wrote in
  between: it reads again, merges again and retries. No sighting a replica
  has flushed is lost by another replica's write (only by pruning and the
  size bound, below).
* Replicas converge within one flush interval (plus the API round trip): each
  flush both publishes this replica's sightings and takes in the others'.
* Until then replicas decide alone: a term first seen by two replicas within
  one flush interval alerts once per replica at worst (never zero times).
  A crash loses at most the sightings of the last flush interval; those terms
  may alert once more after the restart.
* Pruning: a sighting older than its rule's history window can no longer make
  a term "not new", so it is dropped (for rules this process has evaluated;
  entries of rules it has not seen yet are kept until the size bound).
* Size bound: at most ``max_entries`` sightings after a flush (twice that
  between flushes, the in-memory store's bound), and the serialized history at
  most ``max_bytes`` (a ConfigMap holds 1 MiB). Beyond the bound the oldest
  sightings are evicted first and counted (``evicted``); an evicted term is
  treated as new when seen again, so the bound errs towards alerting again,
  never towards silence.
"""
from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone
from typing import Any, Callable

import kubernetes.client

from gatewatch.errors import KubernetesApiError
from gatewatch.kube import rest
from gatewatch.kube.client import api_error
from gatewatch.newterms import InMemoryNewTermsStore, Snapshot

logger = logging.getLogger(__name__)

DEFAULT_CONFIGMAP_NAME = "gatewatch-new-terms"
DATA_KEY = "history.json"
FORMAT_VERSION = 1
# Leave room under the API's 1 MiB object limit for metadata and JSON escaping.
DEFAULT_MAX_BYTES = 900_000
# Fewer than the in-memory default: every sighting is written to the ConfigMap.
DEFAULT_MAX_ENTRIES = 5_000
# Conflicts mean another replica is flushing right now; a few retries settle it.
MAX_CONFLICT_RETRIES = 5


class ConfigMapNewTermsStore(InMemoryNewTermsStore):
    """The in-memory ``NewTermsStore`` (the review path), persisted to a ConfigMap by ``flush``/``run``."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        *,
        namespace: str,
        name: str = DEFAULT_CONFIGMAP_NAME,
        flush_interval: float = 10.0,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        request_timeout: float = 5.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(max_entries=max_entries)
        self._api_client = api_client
        self.namespace = namespace
        self.name = name
        self.flush_interval = flush_interval
        self.max_bytes = max_bytes
        self._timeout = request_timeout
        self._clock = clock or (lambda: datetime.now(timezone.utc))

    # -- persistence --------------------------------------------------------

    async def load(self) -> None:
        """Merge the persisted history in (at start). A missing ConfigMap is an empty history.

        An unreadable one is logged and ignored (the next flush rewrites it); an
        API failure raises ``KubernetesApiError``, so the caller decides whether
        to start without it.
        """
        configmap = await self._read()
        if configmap is not None:
            self.restore(self._decode(configmap))
            logger.info(
                "new_terms history: %d sighting(s) loaded from ConfigMap %s/%s", len(self), self.namespace, self.name
            )

    async def flush(self) -> None:
        """Merge with the ConfigMap, prune, bound, write back (optimistic concurrency).

        Raises ``KubernetesApiError`` when the API fails (the history stays in memory).
        """
        for _ in range(MAX_CONFLICT_RETRIES):
            configmap = await self._read()
            if configmap is not None:
                self.restore(self._decode(configmap))
            self.expire(now=self._clock())
            self.evict(limit=self.max_entries)
            payload = self._fitting_payload()
            if configmap is not None and payload == (configmap.get("data") or {}).get(DATA_KEY):
                return  # nothing new on either side: no write
            try:
                if configmap is None:
                    await self._call("create", rest.create_namespaced_config_map,
                                     self.namespace, self._body(payload))
                else:
                    version = (configmap.get("metadata") or {}).get("resourceVersion")
                    await self._call("patch", rest.patch_namespaced_config_map,
                                     self.name, self.namespace, self._body(payload, resource_version=version))
                return
            except KubernetesApiError as error:
                if error.status != 409:  # 409: written (or created) by another replica meanwhile
                    raise
                logger.debug("new_terms history: conflict writing %s/%s, merging again", self.namespace, self.name)
        raise KubernetesApiError(
            f"still conflicting after {MAX_CONFLICT_RETRIES} attempts",
            operation="update", kind="configmap", name=self.name, namespace=self.namespace, status=409,
        )

    # -- internals ----------------------------------------------------------

    def _fitting_payload(self) -> str:
        payload = self._encode()
        while len(payload.encode()) > self.max_bytes and len(self):
            # Too big for a ConfigMap: evict another tenth of the oldest sightings.
            self.evict(limit=len(self) * 9 // 10)
            payload = self._encode()
        return payload

    def _encode(self) -> str:
        return json.dumps({"version": FORMAT_VERSION, "rules": self.snapshot()}, separators=(",", ":"))

    def _decode(self, configmap: dict[str, Any]) -> Snapshot:
        raw = (configmap.get("data") or {}).get(DATA_KEY)
        if raw is None:
            return {}
        where = f"ConfigMap {self.namespace}/{self.name}, key {DATA_KEY}"
        try:
            decoded = json.loads(raw)
        except json.JSONDecodeError as error:
            logger.error("new_terms history: %s: not JSON (line %d, column %d); ignored, will be rewritten",
                         where, error.lineno, error.colno)
            return {}
        rules = decoded.get("rules") if isinstance(decoded, dict) else None
        if not isinstance(rules, dict):
            logger.error("new_terms history: %s: no \"rules\" object; ignored, will be rewritten", where)
            return {}
        return rules

    def _body(self, payload: str, *, resource_version: str | None = None) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": {"app.kubernetes.io/name": "gatewatch", "app.kubernetes.io/component": "new-terms-history"},
        }
        if resource_version is not None:
            # In a patch, resourceVersion is a precondition: 409 if someone wrote since our read.
            metadata["resourceVersion"] = resource_version
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {DATA_KEY: payload}}

    async def _read(self) -> dict[str, Any] | None:
        try:
            return await self._call("read", rest.read_namespaced_config_map, self.name, self.namespace)
        except KubernetesApiError as error:
            if error.status == 404:
                return None
            raise

    async def _call(self, operation: str, method: Any, *args: Any) -> dict[str, Any]:
        """A sync ``gatewatch.kube.rest`` call in a thread; plain JSON back; every failure as KubernetesApiError."""

        def blocking() -> dict[str, Any]:
            return method(self._api_client, *args, timeout=self._timeout)

        try:
            return await asyncio.to_thread(blocking)
        except kubernetes.client.ApiException as error:
            raise api_error(error, operation=operation, kind="configmap",
                            name=self.name, namespace=self.namespace) from None
        except Exception as error:  # urllib3 connection errors, timeouts
            raise KubernetesApiError(type(error).__name__, operation=operation, kind="configmap",
                                     name=self.name, namespace=self.namespace) from None

