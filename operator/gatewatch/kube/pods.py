"""The target pod of an exec/attach request, for the document's ``gatewatch.pod``.

A pods/exec or pods/attach CONNECT review carries only PodExecOptions: rules
about the pod itself (its images, labels, service account) need the pod from
the API. The lookup has a short timeout and a small TTL cache; when it fails
the review is evaluated without ``gatewatch.pod`` and the alert says why.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, TypedDict

import kubernetes.client

from gatewatch.documents import ImageEntry, image_entry
from gatewatch.kube import rest
from gatewatch.kube.namespaces import AsyncTtlCache, LookupFailed, read_object
from gatewatch.shapes import CONTAINER_KINDS

PodKey = tuple[str, str]  # (namespace, name)
PodFetcher = Callable[[PodKey], Awaitable[Mapping[str, Any]]]


class PodSummary(TypedDict):
    """``gatewatch.pod`` in the document."""

    name: str
    namespace: str
    uid: str | None
    # The shape of gatewatch.images, so gatewatch.pod.images.name works as gatewatch.images.name does.
    images: list[ImageEntry]
    labels: dict[str, str]
    service_account: str | None
    node_name: str | None


@dataclass(frozen=True)
class PodLookupResult:
    pod: PodSummary | None
    # Why there is no pod (timeout, 404, forbidden...), else None.
    error: str | None = None

    def alert_fields(self) -> dict[str, Any]:
        """``gatewatch.pod_lookup`` for the alert: said only when the lookup failed."""
        if self.error is None:
            return {}
        return {"pod_lookup": {"status": "failed", "reason": self.error}}


def pod_fetcher(api_client: kubernetes.client.ApiClient, *, timeout: float) -> PodFetcher:
    """Reads a pod through the shared ``ApiClient``."""

    async def fetch(key: PodKey) -> Mapping[str, Any]:
        namespace, name = key
        return await read_object(
            rest.read_namespaced_pod, api_client, name, namespace,
            what=f"pod {namespace}/{name}", timeout=timeout,
        )

    return fetch


def summarize_pod(pod: Mapping[str, Any]) -> PodSummary:
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    if not isinstance(metadata, Mapping) or not isinstance(spec, Mapping):
        raise TypeError("metadata and spec must be objects")
    images = [
        image_entry(
            container["image"],
            container_kind=kind,
            container_name=container.get("name") if isinstance(container.get("name"), str) else None,
        )
        for kind in CONTAINER_KINDS
        for container in spec.get(kind) or []
        if isinstance(container, Mapping) and isinstance(container.get("image"), str) and container["image"]
    ]
    return PodSummary(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        uid=metadata.get("uid"),
        images=images,
        labels=dict(metadata.get("labels") or {}),
        service_account=spec.get("serviceAccountName") or spec.get("serviceAccount"),
        node_name=spec.get("nodeName"),
    )


class PodLookup:
    """Cached, bounded lookups of pods by namespace and name."""

    def __init__(self, fetch: PodFetcher, *, cache_ttl: float) -> None:
        self._cache: AsyncTtlCache[PodKey, PodSummary] = AsyncTtlCache(
            self._fetch_summary, ttl=cache_ttl
        )
        self._fetch = fetch

    async def lookup(self, *, namespace: str | None, name: str | None) -> PodLookupResult:
        if not namespace or not name:
            return PodLookupResult(pod=None, error="the request names no pod")
        try:
            return PodLookupResult(pod=await self._cache.get((namespace, name)))
        except LookupFailed as error:
            return PodLookupResult(pod=None, error=str(error))

    async def _fetch_summary(self, key: PodKey) -> PodSummary:
        pod = await self._fetch(key)
        try:
            return summarize_pod(pod)
        except (AttributeError, TypeError, ValueError) as error:
            # Not the shape of a Pod: evaluate without it rather than fail the review.
            raise LookupFailed(f"pod {key[0]}/{key[1]}: unexpected content ({error})") from None
