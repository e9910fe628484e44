"""A Kubernetes API for operator tests: kmock's KubernetesEmulator, declared and fixed up.

Real HTTP on 127.0.0.1; objects live in memory (``emulator.objects``). Use::

    from kube_emulator import kube_emulator, kube_api_client  # noqa: F401  (pytest fixtures)

    async def test_x(kube_emulator, kube_api_client):
        ...  # hand kube_api_client to gatewatch code; read kube_emulator.objects or read_object()

The ``kubernetes`` client is synchronous: call it through ``asyncio.to_thread``
(as gatewatch does), never directly on the event loop the emulator serves on,
or the test deadlocks.

What ``KubeEmulator`` adds to kmock 0.8's emulator (which is a dict store over HTTP):

- every resource gatewatch uses is declared (kmock's bundled discovery: pods and
  their subresources, namespaces, secrets, configmaps, events, events.k8s.io
  events, leases, validating/mutating webhook configurations, ...);
- ``metadata.resourceVersion``, ``uid``, ``creationTimestamp`` on every write,
  and ``resourceVersion`` as a precondition (409 Conflict when stale) for PUT
  and PATCH, as the API server does;
- PUT (replace): kmock only knows PATCH (a recursive merge); PUT replaces the object;
- ``metadata.generateName`` on create;
- a Namespace written by a client (e.g. ``kubectl apply``) gets the
  ``kubernetes.io/metadata.name`` label, as the API server sets it (webhook
  ``namespaceSelector``s rely on it);
- lists carry ``kind``/``apiVersion`` and core discovery says ``groupVersion: v1``
  (kubectl needs both);
- ``/api/v1/namespaces[/name[/status]]`` is the namespaces resource (kmock reads
  ``namespaces/<name>`` as a namespace prefix and fails on the bare list/watch);
- a bounded request history: kmock keeps every request it served (and walks
  that record), which grows without end in long tests and in the benchmark's
  API process; only the last ``history_limit`` are kept.
"""
from __future__ import annotations

import copy
import datetime
import gzip
import importlib.resources
import itertools
import re
import secrets
import uuid
from typing import Any, AsyncIterator, Iterator

import aiohttp.web
import attrs
import kmock
import kubernetes.client
import pytest
import pytest_asyncio
from kmock._internal import parsing, rendering

VALIDATING_WEBHOOK_CONFIGURATIONS = "admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
SECRETS = "v1/secrets"
CONFIGMAPS = "v1/configmaps"
NAMESPACES = "v1/namespaces"
PODS = "v1/pods"
EVENTS = "events.k8s.io/v1/events"
LEASES = "coordination.k8s.io/v1/leases"

# --- namespaces paths: fixed in kmock's path parser (module-wide, for every kmock handler) --------

_NAMESPACE_PATH = re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+)(?:/(?P<sub>status|finalize))?)?/?$")
_original_parse_path = parsing.parse_path


def _parse_path_with_namespaces(path: str) -> parsing.ParsedPath:
    match = _NAMESPACE_PATH.match(path)
    if match is None:
        return _original_parse_path(path)
    return parsing.ParsedPath(group="", version="v1", plural="namespaces", namespace=None,
                              name=match.group("name"), subresource=match.group("sub"))


if parsing.parse_path is not _parse_path_with_namespaces:
    parsing.parse_path = _parse_path_with_namespaces


def _conflict(message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=409, reason="Conflict", message=message, details={})


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with resourceVersions, PUT, generateName and the discovery fixes above."""

    # Requests kept for assertions (iterating the emulator); the current one is always among them.
    history_limit: int = 1000
    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1000), init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock's load_bundled() uses a deprecated importlib call; same file, read directly.
        self.resources.load_data(gzip.decompress(
            importlib.resources.files("kmock._internal").joinpath("resources.json.gz").read_bytes()))

    def _next_version(self) -> str:
        return str(next(self._versions))

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if len(self._requests) > 2 * self.history_limit:  # trimmed in bulk: amortized O(1) per request
            del self._requests[: -self.history_limit]
        if request.resource is not None and isinstance(request.data, dict):
            writes = request.action in (kmock.action.CREATE, kmock.action.UPDATE) or request.method == kmock.method.PUT
            if writes and request.resource.plural == "namespaces" and not request.resource.group:
                _label_namespace_name(request.data, request.name)
            if request.method == kmock.method.PUT and request.name is not None:
                return await self._serve_replace(request)
            if request.action == kmock.action.CREATE:
                self._stamp_new(request)
            elif request.action == kmock.action.UPDATE and request.name is not None:
                self._check_precondition(request)
                request.data.setdefault("metadata", {})["resourceVersion"] = self._next_version()
        return await super()._handle(request)

    def _stamp_new(self, request: rendering.Request) -> None:
        metadata = request.data.setdefault("metadata", {})
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + secrets.token_hex(3)[:5]
        if request.namespace and not metadata.get("namespace"):
            metadata["namespace"] = request.namespace
        metadata.pop("resourceVersion", None)
        metadata["uid"] = str(uuid.uuid4())
        metadata["resourceVersion"] = self._next_version()
        metadata["creationTimestamp"] = _now()

    def _live(self, request: rendering.Request) -> Any:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return self.objects[key]

    def _check_precondition(self, request: rendering.Request) -> None:
        wanted = (request.data.get("metadata") or {}).get("resourceVersion")
        if wanted is None:
            return
        current = self._live(request).raw.get("metadata", {}).get("resourceVersion")
        if wanted != current:
            raise _conflict(f"the object has been modified (resourceVersion {wanted} is not {current})")

    async def _serve_replace(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        async with self._lock:
            obj = self._live(request)
            self._check_precondition(request)
            current = obj.raw
            new = copy.deepcopy(request.data)
            metadata = new.setdefault("metadata", {})
            for kept in ("uid", "creationTimestamp", "namespace"):
                if kept in current.get("metadata", {}):
                    metadata[kept] = current["metadata"][kept]
            metadata["name"] = request.name
            metadata["resourceVersion"] = self._next_version()
            obj.delete()  # kmock objects only merge; a replace is a new version from scratch
            obj.create(new)
            raw = obj.raw
            await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
        return aiohttp.web.json_response(raw)

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        payload = await super()._serve_list(request)
        resource = request.resource
        info = self.resources[resource] if resource is not None else None
        kind = info.kind if info is not None and info.kind else "Object"
        group_version = resource.version if not resource.group else f"{resource.group}/{resource.version}"
        return {"apiVersion": group_version, "kind": f"{kind}List", **payload}

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        payload = await super()._serve_version(request)
        if isinstance(payload, dict) and str(payload.get("groupVersion", "")).startswith("/"):
            payload["groupVersion"] = payload["groupVersion"][1:]
        return payload


def _label_namespace_name(body: dict[str, Any], name: str | None) -> None:
    # Creates and replaces carry the name in the body; a PATCH may not, the URL has it.
    name = (body.get("metadata") or {}).get("name") or name
    if name:
        metadata = body.setdefault("metadata", {})
        metadata["labels"] = {**(metadata.get("labels") or {}), "kubernetes.io/metadata.name": name}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_client_for(emulator: kmock.RawHandler) -> kubernetes.client.ApiClient:
    """A ``kubernetes`` ApiClient talking to the emulator over HTTP."""
    configuration = kubernetes.client.Configuration()
    configuration.host = str(emulator.url).rstrip("/")
    return kubernetes.client.ApiClient(configuration)


def kopf_connection_info(emulator: kmock.RawHandler) -> Any:
    """For a ``@kopf.on.login`` handler: kopf talks to the emulator (plain HTTP, no auth)."""
    import kopf

    return kopf.ConnectionInfo(server=str(emulator.url).rstrip("/"))


def read_object(emulator: KubeEmulator, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    """The stored object (a deep copy), or None if absent or deleted."""
    key = (kmock.resource(resource), namespace, name)  # kmock's `in` does not parse string resources
    if key not in emulator.objects or emulator.objects[key].deleted:
        return None
    return copy.deepcopy(emulator.objects[key].raw)


def put_object(emulator: KubeEmulator, resource: str, namespace: str | None, body: dict[str, Any]) -> None:
    """Store an object directly (test setup, or "someone else" editing it), with a new resourceVersion."""
    body = copy.deepcopy(body)
    metadata = body.setdefault("metadata", {})
    metadata["resourceVersion"] = emulator._next_version()
    key = (kmock.resource(resource), namespace, metadata["name"])
    if key in emulator.objects and not emulator.objects[key].deleted:
        emulator.objects[key].delete()
        emulator.objects[key].create(body)
    else:
        emulator.objects[key] = body


def delete_object(emulator: KubeEmulator, resource: str, namespace: str | None, name: str) -> None:
    emulator.objects[(kmock.resource(resource), namespace, name)].delete()


@pytest_asyncio.fixture()
async def kube_emulator() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator() as emulator, kmock.Server(emulator):
        yield emulator


@pytest.fixture()
def kube_api_client(kube_emulator: KubeEmulator) -> Iterator[kubernetes.client.ApiClient]:
    client = api_client_for(kube_emulator)
    try:
        yield client
    finally:
        client.close()
