"""new_terms history persisted in a ConfigMap, against kmock's Kubernetes emulator."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import kmock
import kubernetes.client
import pytest

from gatewatch import background
from gatewatch.engine import RuleEngine
from gatewatch.kube.newterms_store import DATA_KEY, ConfigMapNewTermsStore
from gatewatch.newterms import InMemoryNewTermsStore, NewTermsStore
from gatewatch.rules import load_rules_text
from kube_emulator import KubeEmulator, api_client_for, put_object, read_object
from supervision import eventually, supervised

# A resource object, not the "v1/configmaps" string: kmock's `key in objects` does not parse strings.
CONFIGMAP_RESOURCE = kmock.resource("", "v1", "configmaps")

NAMESPACE = "gatewatch"
NAME = "gatewatch-new-terms"
WINDOW = timedelta(days=7)
T0 = datetime(2026, 11, 22, 5, 0, tzinfo=timezone.utc)
# The stores' clock (what a flush prunes against): a day after T0, whatever today's date is.
FLUSHED_AT = T0 + timedelta(days=1)


class InterleavingEmulator(KubeEmulator):
    """The shared emulator (resourceVersion preconditions, 409 when stale), plus a hook.

    ``before_patch`` runs once, at the next ConfigMap PATCH, before its
    precondition is checked: another replica writing in between this
    replica's read and its write.
    """

    before_patch: Callable[[], Awaitable[None]] | None = None

    async def _handle(self, request: Any) -> Any:
        hook = self.before_patch
        if hook is not None and request.resource == CONFIGMAP_RESOURCE and request.method == kmock.method.PATCH:
            self.before_patch = None
            await hook()
        return await super()._handle(request)


@pytest.fixture
async def emulator() -> AsyncIterator[InterleavingEmulator]:
    async with InterleavingEmulator() as k8s, kmock.Server(k8s):
        yield k8s


@pytest.fixture
def api_client(emulator: InterleavingEmulator) -> Iterator[kubernetes.client.ApiClient]:
    client = api_client_for(emulator)
    yield client
    client.close()


def new_store(api_client: kubernetes.client.ApiClient, **options: Any) -> ConfigMapNewTermsStore:
    options.setdefault("clock", lambda: FLUSHED_AT)
    return ConfigMapNewTermsStore(api_client, namespace=NAMESPACE, name=NAME, **options)


def stored_payload(emulator: KubeEmulator) -> str:
    configmap = read_object(emulator, CONFIGMAP_RESOURCE, NAMESPACE, NAME)
    assert configmap is not None, "the ConfigMap was never written"
    return configmap["data"][DATA_KEY]


def persisted(emulator: KubeEmulator) -> dict[str, dict[str, str]]:
    return json.loads(stored_payload(emulator))["rules"]


async def test_history_survives_a_restart(api_client) -> None:
    before = new_store(api_client)
    assert isinstance(before, NewTermsStore)
    assert before.is_new("rule-1", ("alice", "nginx"), at=T0, window=WINDOW)
    await before.flush()

    after = new_store(api_client)  # a new process
    await after.load()
    assert not after.is_new("rule-1", ("alice", "nginx"), at=T0 + timedelta(days=1), window=WINDOW)
    assert after.is_new("rule-1", ("alice", "redis"), at=T0 + timedelta(days=1), window=WINDOW)
    # Outside the window the same term is new again.
    assert after.is_new("rule-1", ("alice", "nginx"), at=T0 + timedelta(days=30), window=WINDOW)


async def test_loading_a_missing_configmap_is_an_empty_history(api_client) -> None:
    store = new_store(api_client)
    await store.load()
    assert len(store) == 0


async def test_two_replicas_merge_on_conflict_keeping_the_latest_sighting(emulator, api_client) -> None:
    replica_a, replica_b = new_store(api_client), new_store(api_client)
    replica_a.is_new("rule-1", ("alice",), at=T0, window=WINDOW)
    await replica_a.flush()  # the ConfigMap exists from here on

    replica_a.is_new("rule-1", ("alice",), at=T0 + timedelta(hours=1), window=WINDOW)
    replica_a.is_new("rule-1", ("carol",), at=T0, window=WINDOW)
    replica_b.is_new("rule-1", ("alice",), at=T0 + timedelta(hours=2), window=WINDOW)
    replica_b.is_new("rule-2", ("bob",), at=T0, window=WINDOW)

    # Replica B writes between replica A's read and A's write: A gets 409 and merges again.
    emulator.before_patch = replica_b.flush
    await replica_a.flush()

    conflicts = [r for r in emulator if r.resource == CONFIGMAP_RESOURCE and r.method == "PATCH"]
    assert len(conflicts) == 3  # B's write, A's refused write, A's retry
    assert persisted(emulator) == {
        "rule-1": {"alice": (T0 + timedelta(hours=2)).isoformat(), "carol": T0.isoformat()},
        "rule-2": {"bob": T0.isoformat()},
    }
    # A has taken in B's sightings too.
    assert not replica_a.is_new("rule-2", ("bob",), at=T0 + timedelta(hours=3), window=WINDOW)


async def test_flush_prunes_sightings_older_than_their_window(emulator, api_client) -> None:
    now = T0 + timedelta(days=10)
    store = new_store(api_client, clock=lambda: now)
    store.is_new("weekly", ("old",), at=T0, window=WINDOW)
    store.is_new("weekly", ("recent",), at=now - timedelta(days=1), window=WINDOW)
    store.is_new("monthly", ("old",), at=T0, window=timedelta(days=30))
    await store.flush()
    assert persisted(emulator) == {
        "weekly": {"recent": (now - timedelta(days=1)).isoformat()},
        "monthly": {"old": T0.isoformat()},
    }
    assert len(store) == 2


async def test_at_the_size_bound_the_oldest_sightings_are_evicted_and_count_as_new(
    emulator, api_client, caplog: pytest.LogCaptureFixture
) -> None:
    store = new_store(api_client, max_entries=3)
    for hour in range(5):
        store.is_new("rule-1", (f"user-{hour}",), at=T0 + timedelta(hours=hour), window=WINDOW)
    await store.flush()

    assert set(persisted(emulator)["rule-1"]) == {"user-2", "user-3", "user-4"}
    assert store.evicted == 2
    assert "evicted the 2 oldest" in caplog.text
    later = T0 + timedelta(hours=6)
    assert store.is_new("rule-1", ("user-0",), at=later, window=WINDOW)
    assert not store.is_new("rule-1", ("user-4",), at=later, window=WINDOW)


def test_the_in_memory_store_forgets_expired_sightings_before_evicting_live_ones() -> None:
    # The CLI's store (replay of a large audit log) and the operator's share this bound.
    store = InMemoryNewTermsStore(max_entries=3)
    store.is_new("daily", ("expired-0",), at=T0, window=timedelta(days=1))
    store.is_new("daily", ("expired-1",), at=T0 + timedelta(hours=1), window=timedelta(days=1))
    later = T0 + timedelta(days=10)
    for n in range(5):  # the 7th sighting passes 2 x max_entries: trimmed back to 3
        store.is_new("weekly", (f"user-{n}",), at=later + timedelta(minutes=n), window=WINDOW)

    assert len(store) == 3
    assert store.evicted == 2  # the expired ones went first, uncounted; then the 2 oldest live ones
    assert set(store.snapshot()["weekly"]) == {"user-2", "user-3", "user-4"}
    assert not store.is_new("weekly", ("user-4",), at=later + timedelta(hours=1), window=WINDOW)
    assert store.is_new("weekly", ("user-0",), at=later + timedelta(hours=1), window=WINDOW)  # evicted: new again


async def test_the_persisted_history_fits_max_bytes(emulator, api_client) -> None:
    store = new_store(api_client, max_bytes=2_000)
    for n in range(200):
        store.is_new("rule-1", (f"user-{n:04d}", "registry.example.com/team/app"), at=T0 + timedelta(seconds=n),
                     window=WINDOW)
    await store.flush()
    payload = stored_payload(emulator)
    assert len(payload.encode()) <= 2_000
    # What is kept is the most recent.
    assert "user-0199" in payload and "user-0000" not in payload


async def test_an_unreadable_configmap_is_reported_ignored_and_rewritten(
    emulator, api_client, caplog: pytest.LogCaptureFixture
) -> None:
    put_object(emulator, CONFIGMAP_RESOURCE, NAMESPACE, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "data": {DATA_KEY: '{"version": 1, "rules": {'},
    })
    store = new_store(api_client)
    await store.load()
    assert len(store) == 0
    assert f"ConfigMap {NAMESPACE}/{NAME}, key {DATA_KEY}: not JSON (line 1, column 26)" in caplog.text

    store.is_new("rule-1", ("alice",), at=T0, window=WINDOW)
    await store.flush()
    assert persisted(emulator) == {"rule-1": {"alice": T0.isoformat()}}


async def test_bad_entries_are_skipped_not_fatal(api_client, caplog: pytest.LogCaptureFixture) -> None:
    store = new_store(api_client)
    store.restore({"rule-1": {"alice": "yesterday", "bob": T0.isoformat()}, "rule-2": "nonsense"})  # type: ignore[dict-item]
    assert len(store) == 1
    assert "rule 'rule-1': bad timestamp 'yesterday'" in caplog.text


async def test_dry_run_leaves_no_trace(api_client) -> None:
    store = new_store(api_client)
    assert store.is_new("rule-1", ("alice",), at=T0, window=WINDOW, record=False)
    assert store.is_new("rule-1", ("alice",), at=T0, window=WINDOW)
    assert len(store) == 1


async def test_the_flush_task_keeps_flushing_when_the_api_fails(
    unused_tcp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=f"http://127.0.0.1:{unused_tcp_port}"))
    store = ConfigMapNewTermsStore(client, namespace=NAMESPACE, flush_interval=0.01, request_timeout=1.0,
                                   clock=lambda: FLUSHED_AT)
    store.is_new("rule-1", ("alice",), at=T0, window=WINDOW)
    async with supervised(background.new_terms_flush(store)) as supervisor:
        state = supervisor.tasks["new-terms"]
        await eventually(lambda: state.failures >= 2, what="two failed saves")
        assert not state.runner.done()
    assert "new_terms history save to ConfigMap gatewatch/gatewatch-new-terms (kept in memory) failed" in caplog.text
    assert not store.is_new("rule-1", ("alice",), at=T0 + timedelta(hours=1), window=WINDOW)


NEW_EXEC_USER_RULES = """
version: 1
ruleset: test
rules:
  - id: first-exec-by-user
    name: First exec by a user
    description: A user runs a command in a container for the first time this week.
    severity: low
    risk_score: 21
    type: new_terms
    new_terms:
      fields: [user.name]
      history_window: 7d
    query: 'kubernetes.audit.objectRef.subresource: "exec"'
"""


def exec_by(user: str, at: datetime) -> dict[str, Any]:
    return {
        "@timestamp": at.isoformat(),
        "kubernetes": {"audit": {"verb": "create", "objectRef": {"resource": "pods", "subresource": "exec"}}},
        "user": {"name": user},
        "gatewatch": {"source": "admission"},
    }


async def test_a_new_terms_rule_does_not_alert_again_after_a_restart(api_client) -> None:
    ruleset = load_rules_text(NEW_EXEC_USER_RULES)
    before = RuleEngine(ruleset, new_terms_store=new_store(api_client))
    assert [m.rule.id for m in before.evaluate(exec_by("alice", T0))] == ["first-exec-by-user"]
    assert before.evaluate(exec_by("alice", T0 + timedelta(hours=1))) == []
    await before.new_terms_store.flush()

    restarted_store = new_store(api_client)
    await restarted_store.load()
    after = RuleEngine(ruleset, new_terms_store=restarted_store)
    assert after.evaluate(exec_by("alice", T0 + timedelta(days=1))) == []
    assert [m.rule.id for m in after.evaluate(exec_by("bob", T0 + timedelta(days=1)))] == ["first-exec-by-user"]
