"""The operator's background tasks, as the supervisor runs them: which cycle, how often, how long.

One function per task; ``gatewatch.controller.Operator`` starts them on its
``Supervisor`` (``gatewatch.supervisor``), tests start them on theirs. The
``task`` label of ``gatewatch_task_last_success_timestamp_seconds`` and
``gatewatch_task_failures_total`` is the task's name.

docs/operations.md ("Background tasks") has the table of every task: its cycle,
interval, backoff and stall deadline (tests/test_docs_background_tasks.py keeps
it equal to these functions).

Backoffs for the API tasks stop at their interval, so they work again within one
interval of the API server's return. Each cycle has a timeout well above the
API calls' own (``kube.client.REQUEST_TIMEOUT_SECONDS``); a task that has not
finished a cycle, successful or not, within twice (timeout + longest pause) has
stalled and fails liveness (docs/operations.md, "Background tasks").
"""
from __future__ import annotations

from typing import Any

from gatewatch.alert_sinks import HttpAlertSink, StdoutAlertSink
from gatewatch.kube.certificates import CertificateManager, FileCertificateSource
from gatewatch.kube.events import EventRecorder
from gatewatch.kube.newterms_store import ConfigMapNewTermsStore
from gatewatch.kube.webhook_configuration import WebhookConfigurationReconciler
from gatewatch.rules_reloader import RulesReloader
from gatewatch.supervisor import Backoff, SupervisedTask

RECONCILE_INTERVAL_SECONDS = 10.0  # webhook configuration drift is repaired this fast
CERTIFICATE_CHECK_SECONDS = 60.0
API_CYCLE_TIMEOUT_SECONDS = 60.0  # a few API calls of at most REQUEST_TIMEOUT_SECONDS each (GETs retried)
RULES_CYCLE_TIMEOUT_SECONDS = 120.0  # compiling a large rule set
WORKER_BACKOFF = Backoff(initial=1.0, maximum=30.0)


def drift_repair(reconciler: WebhookConfigurationReconciler, *,
                 interval: float = RECONCILE_INTERVAL_SECONDS) -> SupervisedTask:
    """Started once the webhook serves and its first reconcile registered the configuration."""
    return SupervisedTask(
        name="webhook-configuration", cycle=reconciler.reconcile_once,
        description=f"webhook configuration {reconciler.name}: drift repair",
        interval=interval, timeout=API_CYCLE_TIMEOUT_SECONDS, backoff=Backoff(initial=1.0, maximum=interval),
        first_after_interval=True,
    )


def certificate_check(certificates: CertificateManager | FileCertificateSource, *,
                      interval: float = CERTIFICATE_CHECK_SECONDS) -> SupervisedTask:
    """The first check ran at start (``ensure()``); a failure keeps serving the current certificate."""
    return SupervisedTask(
        name="certificates", cycle=certificates.ensure,
        description=f"certificate check ({_certificate_source(certificates)}; the current certificate stays)",
        interval=interval, timeout=API_CYCLE_TIMEOUT_SECONDS, backoff=Backoff(initial=1.0, maximum=interval),
        first_after_interval=True,
    )


def rules_reload(reloader: RulesReloader) -> SupervisedTask:
    """The rules were loaded at start; an invalid update is not a failure of the task (it is reported)."""
    return SupervisedTask(
        name="rules-reloader", cycle=reloader.reload_once,
        description="rules reload (the current rules stay in use)",
        interval=reloader.interval, timeout=RULES_CYCLE_TIMEOUT_SECONDS,
        backoff=Backoff(initial=1.0, maximum=max(30.0, reloader.interval)), first_after_interval=True,
    )


def event_writer(events: EventRecorder) -> SupervisedTask:
    return SupervisedTask(
        name="events", cycle=events.cycle, description="writing Events",
        timeout=API_CYCLE_TIMEOUT_SECONDS, backoff=WORKER_BACKOFF,
    )


def alert_delivery(sink: StdoutAlertSink | HttpAlertSink | Any) -> SupervisedTask:
    if isinstance(sink, HttpAlertSink):
        # A POST (request timeout), the wait for a full batch, building and the spill file's I/O.
        timeout = 2 * sink.request_timeout + sink.flush_interval + 30.0
        description = f"alert delivery to {sink.redacted_url}"
    else:
        timeout = API_CYCLE_TIMEOUT_SECONDS  # a write to a stalled pipe
        description = "alert delivery to stdout"
    return SupervisedTask(
        name=sink.name, cycle=sink.cycle, description=description,
        timeout=timeout, backoff=Backoff(initial=0.5, maximum=30.0),
    )


def new_terms_flush(store: ConfigMapNewTermsStore) -> SupervisedTask:
    """The history was loaded at start; a failure keeps it in memory until the next save."""
    return SupervisedTask(
        name="new-terms", cycle=store.flush,
        description=f"new_terms history save to ConfigMap {store.namespace}/{store.name} (kept in memory)",
        interval=store.flush_interval, timeout=API_CYCLE_TIMEOUT_SECONDS,
        backoff=Backoff(initial=1.0, maximum=store.flush_interval), first_after_interval=True,
    )


def _certificate_source(certificates: CertificateManager | FileCertificateSource) -> str:
    if isinstance(certificates, CertificateManager):
        return certificates.source
    return str(certificates.cert_file)
