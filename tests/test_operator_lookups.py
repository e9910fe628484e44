"""Namespace modes and exec/attach target pods, read from the API double with timeouts and caches."""
from __future__ import annotations

import asyncio
import socket
from typing import Any

import kubernetes.client
import pytest

from apiserver_harness import add_namespace, add_pod
from kube_emulator import KubeEmulator, kube_api_client, kube_emulator  # noqa: F401  (fixtures)
from gatewatch.config import load_settings
from gatewatch.decision import Mode
from gatewatch.kube.namespaces import AsyncTtlCache, LookupFailed, NamespaceModeResolver, namespace_labels_fetcher
from gatewatch.kube.pods import PodLookup, pod_fetcher


@pytest.fixture
def emulator(kube_emulator: KubeEmulator) -> KubeEmulator:
    return kube_emulator


@pytest.fixture
def core_api(kube_api_client: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(kube_api_client)


def resolver(core_api: Any, **config: Any) -> NamespaceModeResolver:
    settings = load_settings(environ={}, overrides=config)
    return NamespaceModeResolver(
        settings, fetch_labels=namespace_labels_fetcher(core_api, timeout=1.0), cache_ttl=30.0
    )


def api_reads(k8s: KubeEmulator, path: str) -> int:
    return sum(1 for request in k8s if request.url.path == path)


async def test_mode_precedence_config_then_label_then_selector_then_default(emulator, core_api):
    add_namespace(emulator, "payments", {"gatewatch.io/mode": "audit"})  # config says enforce: config wins
    add_namespace(emulator, "team-a", {"gatewatch.io/mode": "enforce", "env": "dev"})  # label beats selector
    add_namespace(emulator, "shop", {"env": "prod"})  # first matching selector
    add_namespace(emulator, "db", {"tier": "db", "env": "prod"})
    add_namespace(emulator, "plain")  # the default
    modes = resolver(
        core_api,
        mode="warn",
        namespaces={
            "modes": {"payments": "enforce"},
            "selectors": [
                {"matchLabels": {"env": "dev"}, "mode": "off"},
                {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}], "mode": "audit"},
                {"matchLabels": {"env": "prod"}, "mode": "enforce"},
            ],
        },
    )
    results = {name: await modes.resolve(name) for name in ("payments", "team-a", "shop", "db", "plain")}
    assert {name: (r.mode, r.source) for name, r in results.items()} == {
        "payments": (Mode.ENFORCE, "config"),
        "team-a": (Mode.ENFORCE, "label"),
        "shop": (Mode.ENFORCE, "selector"),
        "db": (Mode.AUDIT, "selector"),  # the first match wins
        "plain": (Mode.WARN, "default"),
    }


async def test_a_label_that_is_no_mode_is_ignored(emulator, core_api):
    add_namespace(emulator, "typo", {"gatewatch.io/mode": "enforcing", "env": "prod"})
    modes = resolver(core_api, mode="audit", namespaces={"selectors": [{"matchLabels": {"env": "prod"}, "mode": "warn"}]})
    result = await modes.resolve("typo")
    assert (result.mode, result.source) == (Mode.WARN, "selector")


async def test_excluded_namespaces_are_off_without_an_api_call(emulator, core_api):
    modes = resolver(core_api, mode="enforce", namespace="gatewatch", namespaces={"exempt": ["monitoring"]})
    for name in ("kube-system", "gatewatch", "monitoring"):
        assert (await modes.resolve(name)).mode is Mode.OFF
    assert not [request for request in emulator if "/namespaces/" in request.url.path]


async def test_namespace_labels_are_cached(emulator, core_api):
    add_namespace(emulator, "shop", {"gatewatch.io/mode": "audit"})
    modes = resolver(core_api)
    results = await asyncio.gather(*(modes.resolve("shop") for _ in range(5)))
    results.append(await modes.resolve("shop"))
    assert {r.mode for r in results} == {Mode.AUDIT}
    assert api_reads(emulator, "/api/v1/namespaces/shop") == 1  # concurrent callers share one read


async def test_unreadable_labels_fall_back_to_the_default_and_say_why(emulator, core_api):
    emulator["get", "/api/v1/namespaces/broken"] << 500 << {"kind": "Status", "code": 500, "message": "etcd down"}
    modes = resolver(core_api, mode="audit")
    result = await modes.resolve("broken")
    assert (result.mode, result.source) == (Mode.AUDIT, "default")
    assert "namespace 'broken'" in result.labels_error and "500" in result.labels_error


def silent_server() -> socket.socket:
    """A TCP server that accepts connections and never answers (a hung API server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener


async def test_a_hung_api_server_costs_one_short_timeout():
    listener = silent_server()
    host, port = listener.getsockname()
    configuration = kubernetes.client.Configuration(host=f"http://{host}:{port}")
    core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))
    try:
        lookup = PodLookup(pod_fetcher(core, timeout=0.2), cache_ttl=30.0)
        result = await lookup.lookup(namespace="shop", name="web")
        assert result.pod is None
        assert "pod shop/web" in result.error and "within 0.2s" in result.error
        assert result.alert_fields() == {"pod_lookup": {"status": "failed", "reason": result.error}}
    finally:
        listener.close()


async def test_target_pod_summary_goes_into_the_document_fields(emulator, core_api):
    add_pod(emulator, "shop", "web", images=["nginx:1.27", "busybox:1.36"], labels={"app": "web"},
            service_account="web-sa")
    lookup = PodLookup(pod_fetcher(core_api, timeout=1.0), cache_ttl=30.0)
    result = await lookup.lookup(namespace="shop", name="web")
    assert result.error is None
    assert result.pod["images"] == ["nginx:1.27", "busybox:1.36"]
    assert result.pod["labels"] == {"app": "web"}
    assert result.pod["service_account"] == "web-sa"
    assert result.alert_fields() == {}
    await lookup.lookup(namespace="shop", name="web")
    assert api_reads(emulator, "/api/v1/namespaces/shop/pods/web") == 1


async def test_missing_pod_is_a_failed_lookup_not_an_error(emulator, core_api):
    lookup = PodLookup(pod_fetcher(core_api, timeout=1.0), cache_ttl=30.0)
    result = await lookup.lookup(namespace="shop", name="ghost")
    assert result.pod is None and "404" in result.error


async def test_cache_expires_and_failures_are_retried_sooner():
    now = [0.0]
    calls: list[str] = []

    async def fetch(key: str) -> str:
        calls.append(key)
        if key == "bad":
            raise LookupFailed("no")
        return key.upper()

    cache: AsyncTtlCache[str, str] = AsyncTtlCache(fetch, ttl=30.0, failure_ttl=5.0, clock=lambda: now[0])
    assert await cache.get("ok") == "OK"
    with pytest.raises(LookupFailed):
        await cache.get("bad")
    now[0] = 4.0
    await cache.get("ok")
    with pytest.raises(LookupFailed):
        await cache.get("bad")
    assert calls == ["ok", "bad"]  # both served from the cache
    now[0] = 6.0
    with pytest.raises(LookupFailed):
        await cache.get("bad")
    now[0] = 31.0
    await cache.get("ok")
    assert calls == ["ok", "bad", "bad", "ok"]
