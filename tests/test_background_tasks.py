"""Every background task survives an outage and works again afterwards.

Each task runs as the operator runs it (``gatewatch.background``, under the real
``Supervisor``), against kmock's API double. The API server then goes away in
one of three ways (tests/supervision.py): connections refused, a listener that
never answers, every call answered 500. During the outage the task keeps
failing, with a log line and a counted failure, and is never stalled; once the
API server is back it does its job again, which the test checks in the API
double: drift repaired, certificate renewed, Event written, history saved.

Nothing waits on the wall clock: the supervisor's sleep is ``QuickSleep`` and the
outage lasts a number of failed cycles, not seconds; only the blackhole costs a
request timeout (0.3 s) per attempt.
"""
from __future__ import annotations

import datetime as dt
import io
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gatewatch import background
from gatewatch.alert_sinks import StdoutAlertSink
from gatewatch.decision import Mode
from gatewatch.kube.certificates import CertificateManager, serving_names
from gatewatch.kube.events import EventRecorder
from gatewatch.kube.newterms_store import ConfigMapNewTermsStore
from gatewatch.kube.webhook_configuration import (
    ServiceTarget,
    WebhookConfigurationReconciler,
    WebhookHandler,
    WebhookRegistration,
)
from gatewatch.metrics import Metrics
from gatewatch.namespace_modes import ModePolicy
from gatewatch.rules import load_rules
from gatewatch.rules_reloader import RulesReloader
from gatewatch.supervisor import SupervisedTask, Supervisor, TaskState
from kube_emulator import (  # noqa: F401  (fixtures)
    CONFIGMAPS,
    SECRETS,
    VALIDATING_WEBHOOK_CONFIGURATIONS,
    delete_object,
    kube_api_client,
    kube_emulator,
    read_object,
)
from supervision import ApiOutages, api_outages, eventually, supervised
from test_kube_events import exec_event, stored_events

REQUEST_TIMEOUT = 1.0  # a blackholed call ends after this (urllib3 retries a GET up to 3 times)
# Only a hung cycle may reach it: healthy cycles on a loaded machine (or under the faketime
# check, where threads hand the GIL over slowly) take seconds, and must still succeed.
CYCLE_TIMEOUT = 30.0
FAILURES_IN_OUTAGE = 2

REGISTRATION = WebhookRegistration(
    name="gatewatch",
    handlers=(WebhookHandler("pods-exec", "pods/exec", ("CONNECT",)),),
    namespace_classes=ModePolicy(default=Mode.WARN, excluded=("gatewatch", "kube-system")).namespace_classes(),
    service=ServiceTarget(name="gatewatch", namespace="gatewatch", port=443),
)


def quick(task: SupervisedTask, **changes: Any) -> SupervisedTask:
    """The operator's task with a test-sized cycle timeout (the pauses are QuickSleep's)."""
    return replace(task, timeout=CYCLE_TIMEOUT, **changes)


def sample(metrics: Metrics, name: str, task: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"task": task})


async def through_an_outage(outages: ApiOutages, outage: str, state: TaskState, supervisor: Supervisor) -> None:
    """Start the outage, see the task fail ``FAILURES_IN_OUTAGE`` times in a row and keep running, end it."""
    successes = state.successes
    await outages.start(outage)
    await eventually(lambda: state.streak >= FAILURES_IN_OUTAGE, what=f"{FAILURES_IN_OUTAGE} failures in a row")
    assert state.runner is not None and not state.runner.done()
    assert supervisor.problems() == []
    assert state.successes == successes
    outages.restore()


def assert_reported(caplog: pytest.LogCaptureFixture, metrics: Metrics, state: TaskState) -> None:
    task = state.task
    assert f"{task.description} failed" in caplog.text
    assert f"{task.description} works again after" in caplog.text
    assert sample(metrics, "gatewatch_task_failures_total", task.name) >= FAILURES_IN_OUTAGE
    assert sample(metrics, "gatewatch_task_last_success_timestamp_seconds", task.name) == state.last_success


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gatewatch")


@pytest.mark.parametrize("outage", ApiOutages.OUTAGES)
async def test_drift_repair_survives_an_outage_and_restores_a_configuration_deleted_meanwhile(
    outage: str, kube_emulator, kube_api_client, caplog: pytest.LogCaptureFixture
) -> None:
    reconciler = WebhookConfigurationReconciler(kube_api_client, registration=REGISTRATION, ca_bundle=b"ca",
                                                request_timeout=REQUEST_TIMEOUT)
    await reconciler.reconcile_once()  # registered, as when the webhook starts serving
    metrics = Metrics()
    task = quick(background.drift_repair(reconciler, interval=0.05))
    async with api_outages(kube_api_client) as outages, supervised(task, metrics=metrics) as supervisor:
        state = supervisor.tasks["webhook-configuration"]
        await eventually(lambda: state.successes >= 1)
        delete_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, "gatewatch")  # the attacker's move
        await through_an_outage(outages, outage, state, supervisor)
        await eventually(lambda: read_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, "gatewatch"),
                         what="the configuration restored")
        await eventually(lambda: state.streak == 0, what="a successful cycle")
    assert_reported(caplog, metrics, state)
    assert "webhook_configuration_drift" in caplog.text


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        return self.now


def serving_certificate(emulator) -> bytes:
    return read_object(emulator, SECRETS, "gatewatch", "gatewatch-tls")["data"]["tls.crt"]


@pytest.mark.parametrize("outage", ApiOutages.OUTAGES)
async def test_certificate_renewal_survives_an_outage_and_renews_afterwards(
    outage: str, kube_emulator, kube_api_client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    changed: list[Any] = []

    async def on_change(files: Any) -> None:
        changed.append(files)

    manager = CertificateManager(kube_api_client, namespace="gatewatch", secret_name="gatewatch-tls",
                                 names=serving_names(service_name="gatewatch", service_namespace="gatewatch"),
                                 work_dir=tmp_path, clock=clock, on_change=on_change,
                                 request_timeout=REQUEST_TIMEOUT)
    first = await manager.ensure()
    issued = serving_certificate(kube_emulator)
    metrics = Metrics()
    async with api_outages(kube_api_client) as outages, \
            supervised(quick(background.certificate_check(manager, interval=0.05)), metrics=metrics) as supervisor:
        state = supervisor.tasks["certificates"]
        await eventually(lambda: state.successes >= 1)
        clock.now += dt.timedelta(days=300)  # due for renewal while the API server is away
        await through_an_outage(outages, outage, state, supervisor)
        await eventually(lambda: serving_certificate(kube_emulator) != issued, what="a renewed certificate")
        await eventually(lambda: changed, what="the renewal handed to the server")
        await eventually(lambda: state.streak == 0, what="a successful cycle")
    assert changed[0].not_after > first.not_after
    assert_reported(caplog, metrics, state)


@pytest.mark.parametrize("outage", ApiOutages.OUTAGES)
async def test_the_event_writer_survives_an_outage_and_writes_events_afterwards(
    outage: str, kube_emulator, kube_api_client, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = EventRecorder(kube_api_client, request_timeout=REQUEST_TIMEOUT, aggregation_window=0.01)
    metrics = Metrics()
    async with api_outages(kube_api_client) as outages, \
            supervised(quick(background.event_writer(recorder)), metrics=metrics) as supervisor:
        state = supervisor.tasks["events"]
        for n in range(FAILURES_IN_OUTAGE + 1):  # something to write in every cycle of the outage
            recorder.submit(exec_event(user=f"during-{n}"))
        await through_an_outage(outages, outage, state, supervisor)
        recorder.submit(exec_event(user="after"))
        await eventually(lambda: any("after" in event["note"] for event in stored_events(kube_emulator)),
                         what="the Event written after the outage")
        await eventually(lambda: state.streak == 0, what="a successful cycle")
    assert_reported(caplog, metrics, state)
    assert recorder.failed >= FAILURES_IN_OUTAGE  # those occurrences were counted as lost


@pytest.mark.parametrize("outage", ApiOutages.OUTAGES)
async def test_new_terms_saving_survives_an_outage_and_saves_what_was_seen_meanwhile(
    outage: str, kube_emulator, kube_api_client, caplog: pytest.LogCaptureFixture
) -> None:
    store = ConfigMapNewTermsStore(kube_api_client, namespace="gatewatch", flush_interval=0.05,
                                   request_timeout=REQUEST_TIMEOUT)
    metrics = Metrics()
    now = dt.datetime.now(dt.timezone.utc)
    async with api_outages(kube_api_client) as outages, \
            supervised(quick(background.new_terms_flush(store)), metrics=metrics) as supervisor:
        state = supervisor.tasks["new-terms"]
        await eventually(lambda: state.successes >= 1)
        store.is_new("rule-1", ("seen-during-the-outage",), at=now, window=dt.timedelta(days=7))
        await through_an_outage(outages, outage, state, supervisor)

        def saved() -> bool:
            configmap = read_object(kube_emulator, CONFIGMAPS, "gatewatch", "gatewatch-new-terms")
            return configmap is not None and "seen-during-the-outage" in configmap["data"]["history.json"]

        await eventually(saved, what="the sighting saved")
        await eventually(lambda: state.streak == 0, what="a successful cycle")
    assert_reported(caplog, metrics, state)


# --- tasks that do not call the API ------------------------------------------------------------


RULES = """
version: 1
ruleset: test
rules:
  - id: exec-into-pod
    name: Exec into pod
    description: Someone runs a command in a container.
    severity: medium
    risk_score: 47
    query: kubernetes.audit.objectRef.subresource:"exec"
"""


async def test_the_rules_reloader_survives_any_exception_and_applies_the_next_update(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A loader that fails in ways no rule error covers (too deep, exhausted memory): each such
    update is a rejected update, counted and reported like a bad file; the task goes on and
    applies the next update that loads."""
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    failures = [RecursionError("maximum recursion depth exceeded"), MemoryError()]

    def load(paths: list[Path]) -> Any:
        if failures and "attach" in paths[0].read_text():
            raise failures.pop(0)
        return load_rules(paths[0])

    applied: list[Any] = []
    reloader = RulesReloader([path], interval=0.05, on_change=applied.append, load=load)
    reloader.load_initial()
    metrics = Metrics()
    reloader._metrics = metrics
    attach = RULES.replace("exec-into-pod", "attach-to-pod").replace('"exec"', '"attach"')
    async with supervised(quick(background.rules_reload(reloader)), metrics=metrics) as supervisor:
        state = supervisor.tasks["rules-reloader"]
        for attempt, error in enumerate(("RecursionError", "MemoryError")):
            path.write_text(attach + f"# attempt {attempt}\n")
            await eventually(lambda: reloader.last_error is not None and error in str(reloader.last_error),
                             what=f"the {error} update rejected")
        assert applied == [] and [rule.id for rule in reloader.ruleset.rules] == ["exec-into-pod"]
        path.write_text(attach)
        await eventually(lambda: applied, what="the next update applied")
    assert [rule.id for rule in applied[0].rules] == ["attach-to-pod"]
    assert metrics.rules_reload_failures._value.get() == 2
    assert state.failures == 0  # rejected updates are the task working, not failing
    assert "rules update rejected" in caplog.text


async def test_a_failing_rules_swap_is_tried_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    calls: list[Any] = []

    def swap(ruleset: Any) -> None:
        calls.append(ruleset)
        if len(calls) == 1:
            raise RuntimeError("engine busy")

    reloader = RulesReloader([path], interval=0.05, on_change=swap)
    reloader.load_initial()
    async with supervised(quick(background.rules_reload(reloader))):
        path.write_text(RULES.replace("exec-into-pod", "exec-2"))
        await eventually(lambda: reloader.ruleset is not None and reloader.ruleset.rules[0].id == "exec-2")
    assert len(calls) == 2
    assert "RuntimeError: engine busy" in caplog.text


class BrokenPipe(io.StringIO):
    """A stdout that fails ``failures`` writes, then works."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def write(self, text: str) -> int:
        if self.failures:
            self.failures -= 1
            raise OSError(32, "Broken pipe")
        return super().write(text)


async def test_stdout_alert_delivery_survives_write_errors(caplog: pytest.LogCaptureFixture) -> None:
    stream = BrokenPipe(failures=2)
    metrics = Metrics()
    sink = StdoutAlertSink(stream, metrics=metrics)
    async with supervised(quick(background.alert_delivery(sink)), metrics=metrics) as supervisor:
        state = supervisor.tasks["alerts-stdout"]
        for n in range(3):
            sink.emit({"message": f"alert {n}"})
            await eventually(lambda n=n: state.failures + state.successes > n, what="a cycle")
        sink.emit({"message": "after"})
        await eventually(lambda: "after" in stream.getvalue())
        await eventually(lambda: state.streak == 0, what="a successful cycle")
    assert state.failures == 2 and sink.dropped == 2  # the lines of the failed writes are counted
    assert metrics.registry.get_sample_value("gatewatch_queue_dropped_total", {"queue": "alerts-stdout"}) == 2
    assert_reported_without_outage(caplog, metrics, state)


def assert_reported_without_outage(caplog: pytest.LogCaptureFixture, metrics: Metrics, state: TaskState) -> None:
    assert f"{state.task.description} failed" in caplog.text
    assert f"{state.task.description} works again after" in caplog.text
    assert sample(metrics, "gatewatch_task_failures_total", state.task.name) == state.failures
    assert sample(metrics, "gatewatch_task_last_success_timestamp_seconds", state.task.name) == state.last_success

