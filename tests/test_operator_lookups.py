"""Namespace modes and exec/attach target pods, read from the API double with timeouts and caches."""
from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from apiserver_harness import add_namespace, add_pod
from kube_emulator import PODS, KubeEmulator, kube_api_client, kube_emulator, put_object  # noqa: F401  (fixtures)
from gatewatch.config import load_settings
from gatewatch.decision import Mode
from gatewatch.documents import document_from_admission_review, document_from_pod
from gatewatch.kube.namespaces import AsyncTtlCache, LookupFailed, NamespaceModeResolver, namespace_labels_fetcher
from gatewatch.kql import compile_query
from gatewatch.kube.pods import PodLookup, pod_fetcher

# The API double answers in the same process as the test: a timeout where an answer is
# expected only catches a hang, so it is generous (a loaded machine must not fail the test).
ANSWER_TIMEOUT = 30.0

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def emulator(kube_emulator: KubeEmulator) -> KubeEmulator:
    return kube_emulator


def resolver(api_client: kubernetes.client.ApiClient, **config: Any) -> NamespaceModeResolver:
    settings = load_settings(environ={}, overrides=config)
    return NamespaceModeResolver(
        settings, fetch_labels=namespace_labels_fetcher(api_client, timeout=ANSWER_TIMEOUT), cache_ttl=30.0
    )


def api_reads(k8s: KubeEmulator, path: str) -> int:
    return sum(1 for request in k8s if request.url.path == path)


async def test_config_decides_else_the_strongest_of_label_selectors_and_default(emulator, kube_api_client):
    add_namespace(emulator, "payments", {"gatewatch.io/mode": "audit"})  # config says enforce: config wins
    add_namespace(emulator, "sandbox", {"gatewatch.io/mode": "enforce"})  # config may loosen: off
    add_namespace(emulator, "team-a", {"gatewatch.io/mode": "enforce", "env": "dev"})  # label tightens a selector
    add_namespace(emulator, "team-b", {"gatewatch.io/mode": "enforce"})  # label tightens the default
    add_namespace(emulator, "shop", {"env": "prod"})  # a matching selector
    add_namespace(emulator, "db", {"tier": "db", "env": "prod"})  # tier=db cannot pull prod down to audit
    add_namespace(emulator, "dev", {"env": "dev"})  # nor env=dev below the default
    add_namespace(emulator, "plain")  # the default
    modes = resolver(
        kube_api_client,
        mode="warn",
        namespaces={
            "modes": {"payments": "enforce", "sandbox": "off"},
            "selectors": [
                {"matchLabels": {"env": "dev"}, "mode": "off"},
                {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}], "mode": "audit"},
                {"matchLabels": {"env": "prod"}, "mode": "enforce"},
            ],
        },
    )
    names = ("payments", "sandbox", "team-a", "team-b", "shop", "db", "dev", "plain")
    results = {name: await modes.resolve(name) for name in names}
    assert {name: (r.mode, r.source) for name, r in results.items()} == {
        "payments": (Mode.ENFORCE, "config"),
        "sandbox": (Mode.OFF, "config"),
        "team-a": (Mode.ENFORCE, "label"),
        "team-b": (Mode.ENFORCE, "label"),
        "shop": (Mode.ENFORCE, "selector"),
        "db": (Mode.ENFORCE, "selector"),  # the strongest match, not the first
        "dev": (Mode.WARN, "default"),
        "plain": (Mode.WARN, "default"),
    }
    assert all(r.ignored_label is None for r in results.values())
    # The selectors that asked for less than the default say so in the alert.
    assert results["dev"].alert_fields()["mode_selectors_ignored"] == [{
        "selector": "namespaces.selectors[0]", "mode": "off",
        "reason": "a selector reading labels not in namespaces.protectedLabels may only tighten the mode"}]
    assert "mode_selectors_ignored" not in results["shop"].alert_fields()


@pytest.mark.parametrize(
    ("labels", "expected_mode", "expected_source"),
    [
        ({"gatewatch.io/mode": "off"}, Mode.WARN, "default"),
        ({"gatewatch.io/mode": "audit", "env": "prod"}, Mode.ENFORCE, "selector"),
        ({"gatewatch.io/mode": "off", "env": "prod"}, Mode.ENFORCE, "selector"),
    ],
)
async def test_a_tenant_label_cannot_loosen_the_platform_mode(emulator, kube_api_client, caplog, labels, expected_mode,
                                                               expected_source):
    add_namespace(emulator, "tenant", labels)
    ignored: list[tuple[str, Mode]] = []
    modes = NamespaceModeResolver(
        load_settings(environ={}, overrides={
            "mode": "warn", "namespaces": {"selectors": [{"matchLabels": {"env": "prod"}, "mode": "enforce"}]},
        }),
        fetch_labels=namespace_labels_fetcher(kube_api_client, timeout=ANSWER_TIMEOUT), cache_ttl=0.0,  # re-read every time
        on_ignored_label=lambda namespace, asked, result: ignored.append((namespace, asked)),
    )
    with caplog.at_level("WARNING", logger="gatewatch.security"):
        first = await modes.resolve("tenant")
        second = await modes.resolve("tenant")
    asked = Mode.parse(labels["gatewatch.io/mode"])
    assert (first.mode, first.source, first.ignored_label) == (expected_mode, expected_source, asked)
    assert second == first
    # Reported once, however many reviews follow.
    assert ignored == [("tenant", asked)]
    reports = [r for r in caplog.records if r.name == "gatewatch.security"]
    assert len(reports) == 1 and "may only tighten" in reports[0].getMessage()
    # The alert says why the label did not count.
    assert first.alert_fields() == {
        "mode_source": expected_source,
        "mode_label_ignored": {
            "label": f"gatewatch.io/mode={asked.value}",
            "reason": f"a namespace label may only tighten the mode; the {expected_source} gives "
                      f"{expected_mode.value}",
        },
    }


async def test_a_label_that_is_no_mode_is_ignored(emulator, kube_api_client):
    add_namespace(emulator, "typo", {"gatewatch.io/mode": "enforcing", "env": "prod"})
    modes = resolver(kube_api_client, mode="audit", namespaces={"selectors": [{"matchLabels": {"env": "prod"}, "mode": "warn"}]})
    result = await modes.resolve("typo")
    assert (result.mode, result.source, result.ignored_label) == (Mode.WARN, "selector", None)


async def test_excluded_namespaces_are_off_without_an_api_call(emulator, kube_api_client):
    modes = resolver(kube_api_client, mode="enforce", namespace="gatewatch", namespaces={"exempt": ["monitoring"]})
    for name in ("kube-system", "gatewatch", "monitoring"):
        assert (await modes.resolve(name)).mode is Mode.OFF
    assert not [request for request in emulator if "/namespaces/" in request.url.path]


async def test_namespace_labels_are_cached(emulator, kube_api_client):
    add_namespace(emulator, "shop", {"gatewatch.io/mode": "enforce"})
    modes = resolver(kube_api_client)
    results = await asyncio.gather(*(modes.resolve("shop") for _ in range(5)))
    results.append(await modes.resolve("shop"))
    assert {r.mode for r in results} == {Mode.ENFORCE}
    assert api_reads(emulator, "/api/v1/namespaces/shop") == 1  # concurrent callers share one read


async def test_unreadable_labels_never_fall_back_to_the_default(emulator, kube_api_client):
    emulator["get", "/api/v1/namespaces/broken"] << 500 << {"kind": "Status", "code": 500, "message": "etcd down"}
    modes = resolver(kube_api_client, mode="audit", namespaces={"modes": {"lab": "warn"}})
    # What the API server said: the webhook entry that called, for its own reading of the labels.
    told = await modes.resolve("broken", entry_mode=Mode.WARN)
    assert (told.mode, told.source, told.labels_stale) == (Mode.WARN, "entry", False)
    assert "namespace 'broken'" in told.labels_error and "500" in told.labels_error
    assert told.alert_fields()["namespace_lookup"] == {
        "status": "failed", "reason": told.labels_error, "labels": "none"}
    # Not told (an entry without a mode): the strongest mode the configuration could give.
    untold = await modes.resolve("broken")
    assert (untold.mode, untold.source) == (Mode.ENFORCE, "strongest")
    # The platform team's explicit word needs no labels.
    assert (await modes.resolve("lab")).mode is Mode.WARN


class FlakyLabels:
    """Namespace labels that can be made to fail, as an API server outage would."""

    def __init__(self, labels: dict[str, dict[str, str]]) -> None:
        self.labels = labels
        self.failing = False

    async def __call__(self, namespace: str) -> dict[str, str]:
        if self.failing:
            raise LookupFailed(f"namespace {namespace!r}: HTTP 503 Service Unavailable")
        return self.labels[namespace]


@pytest.mark.parametrize(
    ("labels", "default", "entry_mode", "expected_mode", "expected_source"),
    [
        # The stale label tightened the namespace: it stays tightened during the outage.
        ({"gatewatch.io/mode": "enforce"}, "warn", Mode.WARN, Mode.ENFORCE, "label"),
        # A stale selector match stronger than the entry's mode still counts.
        ({"env": "prod"}, "audit", Mode.AUDIT, Mode.ENFORCE, "selector"),
        # The namespace was tightened since the last read: the API server saw it, its entry says so.
        ({}, "warn", Mode.ENFORCE, Mode.ENFORCE, "entry"),
        # An entry without a mode: the strongest the configuration could give, whatever was read before.
        ({"env": "dev"}, "warn", None, Mode.ENFORCE, "strongest"),
    ],
)
async def test_a_failed_refresh_takes_the_entrys_mode_raised_by_the_last_labels(
    labels, default, entry_mode, expected_mode, expected_source
):
    fetch = FlakyLabels({"team": labels})
    modes = NamespaceModeResolver(
        load_settings(environ={}, overrides={"mode": default, "namespaces": {"selectors": [
            {"matchLabels": {"env": "prod"}, "mode": "enforce"},
            {"matchLabels": {"env": "dev"}, "mode": "off"},
        ]}}),
        fetch_labels=fetch, cache_ttl=0.0,  # every review refreshes
    )
    fresh = await modes.resolve("team")
    assert fresh.labels_error is None
    fetch.failing = True
    during_outage = await modes.resolve("team", entry_mode=entry_mode)
    assert (during_outage.mode, during_outage.source) == (expected_mode, expected_source)
    assert "503" in during_outage.labels_error
    assert during_outage.labels_stale is (entry_mode is not None)
    fetch.failing = False
    assert (await modes.resolve("team")) == fresh  # recovered: fresh labels again


async def test_the_entrys_mode_raises_what_cached_labels_give():
    # Labels read a moment ago said nothing; the API server's reading now selects the enforce entry.
    modes = NamespaceModeResolver(load_settings(environ={}, overrides={}), fetch_labels=FlakyLabels({"team": {}}),
                                  cache_ttl=30.0)
    assert (await modes.resolve("team")).mode is Mode.WARN
    raised = await modes.resolve("team", entry_mode=Mode.ENFORCE)
    assert (raised.mode, raised.source) == (Mode.ENFORCE, "entry")
    # It never lowers: an entry saying audit (or a forged call to that path) leaves warn.
    assert (await modes.resolve("team", entry_mode=Mode.AUDIT)).mode is Mode.WARN


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
    api_client = kubernetes.client.ApiClient(configuration)
    try:
        lookup = PodLookup(pod_fetcher(api_client, timeout=0.2), cache_ttl=30.0)
        result = await lookup.lookup(namespace="shop", name="web")
        assert result.pod is None
        assert "pod shop/web" in result.error and "within 0.2s" in result.error
        assert result.alert_fields() == {"pod_lookup": {"status": "failed", "reason": result.error}}
    finally:
        listener.close()


async def test_target_pod_summary_goes_into_the_document_fields(emulator, kube_api_client):
    add_pod(emulator, "shop", "web", images=["nginx:1.27", "busybox:1.36"], labels={"app": "web"},
            service_account="web-sa")
    lookup = PodLookup(pod_fetcher(kube_api_client, timeout=ANSWER_TIMEOUT), cache_ttl=30.0)
    result = await lookup.lookup(namespace="shop", name="web")
    assert result.error is None
    assert [(image["reference"], image["name"], image["container_name"]) for image in result.pod["images"]] == [
        ("nginx:1.27", "nginx", "c0"), ("busybox:1.36", "busybox", "c1")
    ]
    assert result.pod["labels"] == {"app": "web"}
    assert result.pod["service_account"] == "web-sa"
    assert result.alert_fields() == {}
    await lookup.lookup(namespace="shop", name="web")
    assert api_reads(emulator, "/api/v1/namespaces/shop/pods/web") == 1


async def test_target_pod_images_have_the_shape_of_gatewatch_images(emulator, kube_api_client):
    # A rule about the exec target's image is written as one about a created pod's:
    # gatewatch.pod.images.name, .repository, .container_kind, ...
    pod = add_pod(emulator, "shop", "web", images=["nginx:1.27", "quay.io/prometheus/busybox:1.36"])
    pod["spec"]["initContainers"] = [{"name": "fetch", "image": f"docker.io/library/alpine@sha256:{'a' * 64}"}]
    pod["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "nicolaka/netshoot"}]
    put_object(emulator, PODS, "shop", pod)
    lookup = PodLookup(pod_fetcher(kube_api_client, timeout=ANSWER_TIMEOUT), cache_ttl=30.0)
    result = await lookup.lookup(namespace="shop", name="web")

    assert result.pod["images"] == document_from_pod(pod)["gatewatch"]["images"]
    document = document_from_admission_review(json.loads((EXAMPLES / "reviews" / "exec-review.json").read_text()))
    document["gatewatch"]["pod"] = dict(result.pod)  # as the admission path adds it
    for query, expected in [
        ('gatewatch.pod.images.name:busybox and gatewatch.pod.images.repository:"prometheus/busybox"', True),
        ("gatewatch.pod.images:{ name:alpine and container_kind:initContainers and container_name:fetch }", True),
        ('gatewatch.pod.images:{ name:netshoot and container_kind:containers }', False),
        ("gatewatch.pod.images:{ name:netshoot and container_kind:ephemeralContainers }", True),
        ("gatewatch.pod.images.name:busybox*", True),
        ("gatewatch.pod.images.name:alpine and gatewatch.pod.images.digest:*", True),
    ]:
        assert compile_query(query)(document) is expected, query


async def test_missing_pod_is_a_failed_lookup_not_an_error(emulator, kube_api_client):
    lookup = PodLookup(pod_fetcher(kube_api_client, timeout=ANSWER_TIMEOUT), cache_ttl=30.0)
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


async def test_a_namespaces_mode_follows_its_labels_from_review_to_review() -> None:
    # The mode worked out from a namespace's labels is remembered until they change: labels changed in place (the
    # same mapping, read again) or replaced, and back, each give the mode those labels give.
    labels = {"env": "dev"}

    async def fetch(namespace: str) -> dict[str, str]:
        return labels

    modes = NamespaceModeResolver(
        load_settings(environ={}, overrides={
            "mode": "audit", "namespaces": {"selectors": [{"matchLabels": {"env": "prod"}, "mode": "enforce"}]},
        }),
        fetch_labels=fetch, cache_ttl=0.0,  # re-read every time
    )
    seen = []
    for change in ({}, {"env": "prod"}, {}, {"gatewatch.io/mode": "warn"}, {"env": "dev"}):
        labels.update(change)
        seen.append([((result := await modes.resolve(namespace)).mode, result.source) for namespace in ("a", "b")])
    assert seen == [[(Mode.AUDIT, "default")] * 2, [(Mode.ENFORCE, "selector")] * 2, [(Mode.ENFORCE, "selector")] * 2,
                    [(Mode.ENFORCE, "selector")] * 2, [(Mode.WARN, "label")] * 2]
    labels = {"env": "prod"}  # another mapping
    assert (await modes.resolve("a")).mode is Mode.ENFORCE
