"""Kubernetes Events for matches, against the shared kmock Kubernetes emulator (tests/kube_emulator.py)."""
from __future__ import annotations

import asyncio
from dataclasses import replace
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import kmock
import kubernetes.client
import pytest

from gatewatch.kube.events import (
    EventRecorder,
    EventRequest,
    MatchOccurrence,
    ObjectRef,
    event_name,
    match_event,
    rules_rejected_event,
)
from gatewatch import background
from gatewatch.metrics import Metrics
from gatewatch.supervisor import Supervisor
from gatewatch.rules.model import Action, Rule, RuleType, Severity, Tactic, Technique, Threat
from kube_emulator import kube_api_client, kube_emulator  # noqa: F401  (pytest fixtures)
from supervision import QuickSleep, eventually

EVENTS = kmock.resource("events.k8s.io", "v1", "events")
T0 = datetime(2026, 11, 22, 5, 0, tzinfo=timezone.utc)


class FakeClock:
    """The recorder's monotonic clock, moved by hand: windows pass when the test says so."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


def exec_rule() -> Rule:
    return Rule(
        id="a9cb3641-ff4b-4cdc-a063-b4b8d02a67c7",
        name="Kubernetes User Exec into Pod",
        description="exec into a pod",
        severity=Severity.MEDIUM,
        risk_score=47,
        type=RuleType.QUERY,
        query="kubernetes.audit.objectRef.subresource:exec",
        matcher=lambda document: True,
        action=Action.DENY,
        threat=(Threat(
            framework="MITRE ATT&CK",
            tactic=Tactic(id="TA0002", name="Execution", reference="https://attack.mitre.org/tactics/TA0002/"),
            techniques=(Technique(id="T1609", name="Container Administration Command",
                                  reference="https://attack.mitre.org/techniques/T1609/"),),
        ),),
    )


def exec_event(*, user: str = "alice@example.com", at: datetime = T0, effect: Any = Action.DENY) -> EventRequest:
    return match_event(rule=exec_rule(), effect=effect, operation="exec", namespace="shop", pod_name="web-0",
                       pod_uid="uid-web-0", user=user, observed_at=at)


@pytest.fixture
async def running() -> AsyncIterator[Callable[[EventRecorder], asyncio.Task]]:
    """Starts a recorder's worker as the operator does: its supervised task (gatewatch.background)."""
    supervisor = Supervisor(sleep=QuickSleep())

    def start(recorder: EventRecorder) -> asyncio.Task:
        state = supervisor.start(replace(background.event_writer(recorder), name=f"events-{len(supervisor.tasks)}"))
        assert state.runner is not None
        return state.runner

    yield start
    await supervisor.stop()


def stored_events(k8s: kmock.KubernetesEmulator) -> list[dict[str, Any]]:
    return [obj.raw for (resource, _, _), obj in k8s.objects.items() if resource == EVENTS and not obj.deleted]



def series_count(k8s: kmock.KubernetesEmulator) -> int | None:
    events = stored_events(k8s)
    return (events[0].get("series") or {}).get("count") if len(events) == 1 else None


async def test_a_match_becomes_a_warning_event_regarding_the_pod(
    kube_emulator, kube_api_client, running
) -> None:
    recorder = EventRecorder(kube_api_client, reporting_instance="gatewatch-7d9f-abcde")
    assert recorder.submit(exec_event())
    running(recorder)
    await eventually(lambda: len(stored_events(kube_emulator)) == 1)

    event = stored_events(kube_emulator)[0]
    assert event["metadata"]["namespace"] == "shop"
    assert event["metadata"]["name"].startswith("web-0.")
    assert event["type"] == "Warning" and event["reason"] == "ExecDenied" and event["action"] == "Deny"
    assert event["regarding"] == {"kind": "Pod", "apiVersion": "v1", "name": "web-0", "namespace": "shop",
                                  "uid": "uid-web-0"}
    assert event["reportingController"] == "gatewatch.io/gatewatch"
    assert event["reportingInstance"] == "gatewatch-7d9f-abcde"
    # MicroTime: the API server needs the six fractional digits.
    assert event["eventTime"].startswith("2026-11-22T05:00:00.000001")
    for words in ("Kubernetes User Exec into Pod", "T1609", "alice@example.com", "deny", "web-0"):
        assert words in event["note"]
    assert event["metadata"]["annotations"] == {
        "gatewatch.io/rule-id": "a9cb3641-ff4b-4cdc-a063-b4b8d02a67c7",
        "gatewatch.io/rule-name": "Kubernetes User Exec into Pod",
        "gatewatch.io/severity": "medium",
        "gatewatch.io/risk-score": "47",
        "gatewatch.io/mitre-tactics": "TA0002",
        "gatewatch.io/mitre-techniques": "T1609",
        "gatewatch.io/action": "deny",
        "gatewatch.io/effect": "deny",
        "gatewatch.io/operation": "exec",
        "gatewatch.io/user": "alice@example.com",
    }
    assert "series" not in event


async def test_repeats_are_one_event_with_a_series_count(kube_emulator, kube_api_client, running) -> None:
    clock = FakeClock()
    recorder = EventRecorder(kube_api_client, aggregation_window=0.05, clock=clock)
    built: list[int] = []

    def occurrence(minute: int) -> Callable[[], EventRequest]:
        def build() -> EventRequest:  # the worker builds it just before it counts it
            built.append(minute)
            return exec_event(at=T0 + timedelta(minutes=minute))
        return build

    for minute in range(5):
        assert recorder.submit(occurrence(minute))
    running(recorder)
    await eventually(lambda: len(built) == 5)

    def event_writes() -> list[str]:
        return [r.method for r in kube_emulator if r.resource == EVENTS and r.method in ("POST", "PATCH")]

    # Within the window (the clock stands still, however slow the machine): the first occurrence
    # created the Event, the other four are counted in memory.
    assert event_writes() == ["POST"]
    assert "series" not in stored_events(kube_emulator)[0]
    assert recorder.pending == 4
    # Once the window has passed, one PATCH carries all four.
    clock.seconds += 0.05
    await eventually(lambda: series_count(kube_emulator) == 5)
    assert event_writes() == ["POST", "PATCH"]
    assert stored_events(kube_emulator)[0]["series"]["lastObservedTime"].startswith("2026-11-22T05:04:00")

    # Someone else doing the same is a different Event.
    recorder.submit(exec_event(user="mallory@example.com"))
    await eventually(lambda: len(stored_events(kube_emulator)) == 2)


async def test_a_restarted_recorder_continues_the_series_of_the_existing_event(
    kube_emulator, kube_api_client, running
) -> None:
    first = EventRecorder(kube_api_client, aggregation_window=0.01)
    first.submit(exec_event())
    first.submit(exec_event(at=T0 + timedelta(seconds=1)))
    task = running(first)
    await eventually(lambda: series_count(kube_emulator) == 2)
    task.cancel()

    second = EventRecorder(kube_api_client, aggregation_window=0.01)  # a new process: knows nothing
    second.submit(exec_event(at=T0 + timedelta(seconds=2)))
    running(second)
    await eventually(lambda: series_count(kube_emulator) == 3)
    assert len(stored_events(kube_emulator)) == 1


async def test_a_failing_events_api_never_blocks_submit_and_counts_drops(
    kube_emulator, kube_api_client, running
) -> None:
    kube_emulator["post", EVENTS] << 500
    metrics = Metrics()
    recorder = EventRecorder(kube_api_client, queue_size=3, metrics=metrics)

    # The worker is not running yet: the queue holds 3, the rest is refused at once.
    results = [recorder.submit(exec_event(user=f"user-{n}")) for n in range(5)]
    assert results == [True, True, True, False, False]
    assert recorder.dropped == 2

    task = running(recorder)
    await eventually(lambda: recorder.failed == 3)
    assert not task.done()  # failures do not stop the worker
    assert metrics.registry.get_sample_value("gatewatch_queue_dropped_total", {"queue": "events"}) == 5
    assert recorder.submit(exec_event(user="later"))  # room again


async def test_an_unreachable_api_server_fails_in_the_worker_only(running, unused_tcp_port: int) -> None:
    configuration = kubernetes.client.Configuration(host=f"http://127.0.0.1:{unused_tcp_port}")
    api_client = kubernetes.client.ApiClient(configuration)
    recorder = EventRecorder(api_client, request_timeout=1.0)
    assert recorder.submit(exec_event())
    task = running(recorder)
    await eventually(lambda: recorder.failed == 1)
    assert not task.done()


async def test_drain_writes_pending_events_on_shutdown(kube_emulator, kube_api_client) -> None:
    recorder = EventRecorder(kube_api_client, aggregation_window=3600)
    for second in range(3):
        recorder.submit(exec_event(at=T0 + timedelta(seconds=second)))
    await recorder.drain(timeout=10)
    assert series_count(kube_emulator) == 3


def test_a_denied_pod_creation_names_the_pod_that_was_not_created() -> None:
    request = match_event(rule=exec_rule(), effect="deny", operation="create", namespace="shop",
                          pod_name="web-7d9f-", user="bob", observed_at=T0)
    assert request.reason == "PodCreationDenied"
    assert request.note.startswith("Pod shop/web-7d9f- was not created")
    assert request.regarding == ObjectRef(kind="Pod", api_version="v1", name="web-7d9f-", namespace="shop")
    # generateName prefixes end with "-": the Event name must still be a DNS subdomain.
    assert request.name.startswith("web-7d9f.")


def test_reasons_follow_the_operation_and_effect() -> None:
    def reason(operation: str, effect: str) -> str:
        return match_event(rule=exec_rule(), effect=effect, operation=operation, namespace="n",
                           pod_name="p", user="u", observed_at=T0).reason

    assert reason("create", "warn") == "PodCreationWarned"
    assert reason("attach", "deny") == "AttachDenied"
    assert reason("ephemeralcontainers", "warn") == "EphemeralContainerWarned"
    assert reason("exec", "alert") == "RuleMatched"


def test_annotations_name_the_rules_action_and_the_effect_apart_as_the_alert_does() -> None:
    # The rule may deny; in a warn namespace the match only warned.
    request = match_event(rule=exec_rule(), effect=Action.WARN, operation="exec", namespace="shop",
                          pod_name="web-0", user="alice", mode="warn", observed_at=T0)
    assert request.annotations["gatewatch.io/action"] == "deny"
    assert request.annotations["gatewatch.io/effect"] == "warn"
    assert request.reason == "ExecWarned" and request.action == "Warn"
    assert "effect warn (rule action deny), mode warn" in request.note


def test_event_names_are_valid_and_bounded() -> None:
    name = event_name("X" * 300, "key")
    assert len(name) <= 253 and name == name.lower()
    assert event_name("web", "one") != event_name("web", "two")


def test_rules_rejected_event_regards_the_configmap() -> None:
    configmap = ObjectRef(kind="ConfigMap", api_version="v1", name="gatewatch-rules", namespace="gatewatch")
    request = rules_rejected_event(configmap=configmap, error=ValueError("rules.yaml:3: bad"), observed_at=T0)
    assert request.regarding == configmap and request.namespace == "gatewatch"
    assert request.reason == "RulesRejected" and "rules.yaml:3: bad" in request.note
    assert request.annotations == {"gatewatch.io/effect": "reject"}


def create_warning(pod_name: str, *, user: str = "alice@example.com", second: int = 0,
                   make: Callable[..., Any] = match_event) -> Any:
    return make(rule=exec_rule(), effect="warn", operation="create", namespace="shop",
                pod_name=pod_name, user=user, observed_at=T0 + timedelta(seconds=second))


# The webhook queues a MatchOccurrence: the worker builds its Event only when it starts a series.
@pytest.mark.parametrize("make", [match_event, MatchOccurrence], ids=["match_event", "MatchOccurrence"])
async def test_similar_matches_on_many_pods_are_combined_into_one_event_past_the_limit(
    kube_emulator, kube_api_client, running, make
) -> None:
    recorder = EventRecorder(kube_api_client, aggregation_window=0.05, similar_limit=3)
    for n in range(10):  # the same user creating 10 pods with a debug image, as a Deployment would
        assert recorder.submit(create_warning(f"web-{n}", second=n, make=make))
    running(recorder)

    def combined() -> list[dict[str, Any]]:
        return [e for e in stored_events(kube_emulator) if e["metadata"]["annotations"].get("gatewatch.io/combined")]

    await eventually(lambda: len(combined()) == 1 and (combined()[0].get("series") or {}).get("count") == 7)
    (event,) = combined()
    assert event["note"].startswith("(combined from similar events): ")
    assert "namespace shop" in event["note"] and "from web-3 on" in event["note"]
    assert event["regarding"]["name"] == "web-3" and event["reason"] == "PodCreationWarned"
    assert event["series"]["lastObservedTime"].startswith("2026-11-22T05:00:09")
    own = sorted(e["regarding"]["name"] for e in stored_events(kube_emulator) if e not in combined())
    assert own == ["web-0", "web-1", "web-2"]

    # A repeat on a pod that has its own Event is counted there; another user is not similar.
    recorder.submit(create_warning("web-0", second=20, make=make))
    recorder.submit(create_warning("web-42", user="bob@example.com", second=21, make=make))
    await eventually(lambda: len(stored_events(kube_emulator)) == 5)
    (web_0,) = [e for e in stored_events(kube_emulator) if e["regarding"]["name"] == "web-0"]
    await eventually(lambda: (read_event(kube_emulator, web_0["metadata"]["name"]).get("series") or {}).get("count") == 2)


async def test_similar_matches_get_their_own_events_again_once_the_similar_window_has_passed(
    kube_emulator, kube_api_client, running
) -> None:
    clock = FakeClock()
    recorder = EventRecorder(kube_api_client, similar_limit=2, similar_window=600, clock=clock)
    running(recorder)

    def regarding() -> list[str]:
        return sorted(e["regarding"]["name"] for e in stored_events(kube_emulator))

    for n in range(3):
        recorder.submit(create_warning(f"web-{n}", second=n))
    await eventually(lambda: len(stored_events(kube_emulator)) == 3)
    assert regarding() == ["web-0", "web-1", "web-2"]  # web-2's is the combined Event
    combined_name = next(e["metadata"]["name"] for e in stored_events(kube_emulator)
                         if e["metadata"]["annotations"].get("gatewatch.io/combined"))

    clock.seconds += 599  # still within the window of the previous similar one: counted together
    recorder.submit(create_warning("web-3", second=3))
    await eventually(lambda: (read_event(kube_emulator, combined_name).get("series") or {}).get("count") == 2)

    clock.seconds += 601  # quiet for longer than the window: a new run, the pod has its own Event
    recorder.submit(create_warning("web-4", second=4))
    await eventually(lambda: len(stored_events(kube_emulator)) == 4)
    assert regarding() == ["web-0", "web-1", "web-2", "web-4"]


def read_event(k8s: kmock.KubernetesEmulator, name: str) -> dict[str, Any]:
    (event,) = [e for e in stored_events(k8s) if e["metadata"]["name"] == name]
    return event


async def test_functions_submitted_are_built_by_the_worker(kube_emulator, kube_api_client, running) -> None:
    recorder = EventRecorder(kube_api_client)
    assert recorder.submit(lambda: exec_event(user="built-later@example.com"))
    running(recorder)
    await eventually(lambda: len(stored_events(kube_emulator)) == 1)
    assert stored_events(kube_emulator)[0]["metadata"]["annotations"]["gatewatch.io/user"] == "built-later@example.com"


async def test_a_write_under_way_when_the_worker_is_cancelled_is_finished_by_drain_and_counted_once(
    kube_emulator, kube_api_client
) -> None:
    gate = asyncio.Event()

    async def held_create() -> None:
        await gate.wait()
        return None  # then the emulator stores the Event as usual

    kube_emulator["post", EVENTS] << held_create
    recorder = EventRecorder(kube_api_client, aggregation_window=3600)
    recorder.submit(exec_event())
    worker = asyncio.create_task(recorder.cycle())
    await eventually(lambda: any(r.method == "POST" for r in kube_emulator if r.resource == EVENTS))
    worker.cancel()  # shutdown while the create is in flight
    await asyncio.gather(worker, return_exceptions=True)
    recorder.submit(exec_event(at=T0 + timedelta(seconds=1)))
    gate.set()
    await recorder.drain(timeout=10)
    assert series_count(kube_emulator) == 2  # both occurrences, neither counted twice
    assert len([r for r in kube_emulator if r.resource == EVENTS and r.method == "POST"]) == 1


def test_a_pod_update_has_its_own_reasons() -> None:
    request = match_event(rule=exec_rule(), effect="warn", operation="update", namespace="shop",
                          pod_name="web-0", user="bob", observed_at=T0)
    assert request.reason == "PodUpdateWarned" and "tried to update pod shop/web-0" in request.note


@pytest.mark.parametrize("operation", ["create", "update", "exec", "proxy"])
@pytest.mark.parametrize("effect", [Action.DENY, Action.WARN, "alert"])
@pytest.mark.parametrize("pod_name", ["web-0", "web-", "Web_0:8080", "x" * 300])
def test_a_match_occurrence_is_counted_and_built_as_match_event_makes_its_event(operation, effect, pod_name) -> None:
    # What the recorder keys a series by (namespace, name, similar-events key; the combined Event's too) and the
    # Event it writes for a new one: the same for a MatchOccurrence as for match_event's Event.
    arguments = dict(rule=exec_rule(), effect=effect, operation=operation, namespace="shop", pod_name=pod_name,
                     user="alice@example.com", observed_at=T0, pod_uid="uid-1", mode="warn")
    request = match_event(**arguments)
    occurrence = MatchOccurrence(**arguments)
    assert (occurrence.namespace, occurrence.name, occurrence.similar_key, occurrence.observed_at) == (
        request.namespace, request.name, request.similar_key, request.observed_at)
    assert occurrence.built() == request
    combined, combined_request = occurrence.combined(), request.combined()
    assert (combined.namespace, combined.name, combined.similar_key) == (
        combined_request.namespace, combined_request.name, combined_request.similar_key)
    assert combined.built() == combined_request


async def test_a_burst_arriving_while_the_worker_pauses_is_counted_in_one_round_and_a_cancel_loses_none(
    kube_emulator, kube_api_client
) -> None:
    # After a round that emptied the queue the worker pauses (``gather``), so a burst of matching reviews
    # costs one round, not one each; what it has taken is written before the pause, so cancelling it then
    # (shutdown) leaves the burst in the queue for drain.
    recorder = EventRecorder(kube_api_client, aggregation_window=3600)
    recorder.submit(exec_event())
    worker = asyncio.create_task(recorder.cycle(gather=60))
    await eventually(lambda: len(stored_events(kube_emulator)) == 1)
    for second in range(1, 11):
        assert recorder.submit(exec_event(at=T0 + timedelta(seconds=second)))
    await asyncio.sleep(0.05)
    assert not worker.done() and recorder.pending == 10  # pausing: the burst waits in the queue, whole
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    await recorder.cycle(gather=0)  # one round takes the whole burst
    assert recorder.pending == 10 and recorder._queue.empty()  # counted; written when the window flushes
    await recorder.drain(timeout=10)
    assert series_count(kube_emulator) == 11
