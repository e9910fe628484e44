"""kopf wiring: the admission handlers, the webhook server, startup and shutdown.

A review's way through (the answer itself is ``gatewatch.admission``'s):

    GuardedWebhookServer (admission.check_review: route / operation / parse checks)
      -> kopf -> validating handler -> AdmissionReviewer.review -> Decision
      -> kopf's response: the decision's warnings, or a 403 with its message.

kopf 1.45 answers ``allowed: true`` for a path with no handler and never
re-checks the operation at runtime; ``GuardedWebhookServer`` closes both holes,
and it turns any failure during evaluation into an HTTP error, so the
webhook's failurePolicy decides instead of a silent allow.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, TextIO

import aiohttp.web
import kopf
import kubernetes.client

from gatewatch.admission import WEBHOOK_ROUTES, AdmissionReviewer, CheckedReview, RejectedReview, check_review
from gatewatch.alert_sinks import AlertFanout, HttpAlertSink, StdoutAlertSink
from gatewatch.config import Settings
from gatewatch.decision import Decision
from gatewatch.engine import RuleEngine
from gatewatch.kube.certificates import (
    CertificateManager,
    FileCertificateSource,
    ServingFiles,
    kopf_server_tls_options,
    reload_server_ssl_context,
    server_ssl_context,
    serving_names,
)
from gatewatch.kube.events import EventRecorder, ObjectRef
from gatewatch.kube.namespaces import NamespaceModeResolver, namespace_labels_fetcher
from gatewatch.kube.newterms_store import ConfigMapNewTermsStore
from gatewatch.kube.pods import PodLookup, pod_fetcher
from gatewatch.kube.webhook_configuration import WebhookConfigurationReconciler, WebhookRegistration
from gatewatch.metrics import HealthServer, Metrics, Readiness
from gatewatch.rules import RuleSet, default_rules_path
from gatewatch.rules_reloader import RulesReloader

logger = logging.getLogger(__name__)


@dataclass
class ReviewInFlight:
    """One review on its way through kopf: what the guard checked, and what the handler made of it."""

    checked: CheckedReview
    decision: Decision | None = None
    failure: BaseException | None = None


# kopf runs async handlers in the task that called the webhook function, so the
# guard hands the checked review to the handler through a context variable
# (kopf's handler kwargs lack the request's uid, name, namespace and options).
CURRENT_REVIEW: contextvars.ContextVar[ReviewInFlight] = contextvars.ContextVar("gatewatch_review")


class EvaluationFailed(Exception):
    """The handler did not produce a decision; answered 500."""


ClientConfigCallback = Callable[[kopf.WebhookClientConfig], Awaitable[None]]


class GuardedWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS webhook server with gatewatch's guard in front of kopf.

    Every call passes ``check_review`` first; kopf only sees reviews for a
    served path, resource and operation. An error status answers the rest
    (aiohttp HTTP exceptions pass through kopf's own handling untouched).
    ``on_serving`` is awaited once the server listens, with kopf's client
    config: gatewatch then registers its ValidatingWebhookConfiguration.
    """

    def __init__(self, *, metrics: Metrics, on_serving: ClientConfigCallback | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metrics = metrics
        self._on_serving = on_serving

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        async def guarded(review: Any, **kwargs: Any) -> Any:
            return await self._guard(fn, review, **kwargs)

        async for client_config in super().__call__(guarded):  # type: ignore[arg-type]
            if self._on_serving is not None:
                await self._on_serving(client_config)
            yield client_config

    async def _guard(self, fn: kopf.WebhookFn, review: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        request = review.get("request") if isinstance(review, Mapping) else None
        request = request if isinstance(request, Mapping) else {}
        resource_label = _resource_label(request)
        operation = str(request.get("operation") or "")
        outcome = "error"
        try:
            in_flight = ReviewInFlight(check_review(review, webhook=kwargs.get("webhook")))
            token = CURRENT_REVIEW.set(in_flight)
            try:
                response = await fn(review, **kwargs)
            finally:
                CURRENT_REVIEW.reset(token)
            if in_flight.failure is not None:
                raise EvaluationFailed(f"gatewatch could not evaluate: {in_flight.failure!r}")
            decision = in_flight.decision
            if decision is None:
                # kopf answered without running our handler: never let that through as an allow.
                raise EvaluationFailed("gatewatch: no handler evaluated this review")
            outcome = "denied" if not decision.allowed else "warned" if decision.warnings else "allowed"
            return response
        except RejectedReview as error:
            logger.warning("rejected webhook call: %s", error)
            raise _http_error(error.status, str(error)) from None
        except EvaluationFailed as error:
            raise _http_error(500, str(error)) from None
        finally:
            self._metrics.reviews.labels(resource=resource_label, operation=operation, decision=outcome).inc()
            self._metrics.review_duration.labels(resource=resource_label).observe(time.perf_counter() - started)


def _resource_label(request: Mapping[str, Any]) -> str:
    resource = request.get("resource")
    name = resource.get("resource") if isinstance(resource, Mapping) else None
    sub = request.get("subResource")
    return f"{name}/{sub}" if name and sub else str(name or "unknown")


def _http_error(status: int, message: str) -> aiohttp.web.HTTPException:
    # The reason phrase is one bounded line; the body carries the message too.
    reason = " ".join(message.split())
    reason = reason if len(reason) <= 300 else reason[:297] + "..."
    error_class = {404: aiohttp.web.HTTPNotFound, 400: aiohttp.web.HTTPBadRequest}.get(
        status, aiohttp.web.HTTPInternalServerError)
    return error_class(reason=reason, text=message)


DENIAL_PREFIX = "gatewatch denied this request"


class DenialLogFilter(logging.Filter):
    """kopf logs each denial as a handler failing permanently (ERROR); a denial is
    gatewatch working, reported by its alert and Event, so it is not logged again."""

    def filter(self, record: logging.LogRecord) -> bool:
        return DENIAL_PREFIX not in record.getMessage()


def register_handlers(registry: kopf.OperatorRegistry, reviewer: AdmissionReviewer) -> None:
    """One kopf validating handler per route, all answering through ``reviewer``."""

    async def validate(warnings: list[str], **_: Any) -> None:
        in_flight = CURRENT_REVIEW.get(None)
        if in_flight is None:
            raise kopf.AdmissionError("gatewatch: review arrived without the guard", code=500)
        checked = in_flight.checked
        try:
            decision = await reviewer.review(checked)
        except Exception as error:
            in_flight.failure = error
            logger.exception("evaluation failed for %s review %s", checked.route.resource_path,
                             checked.request["uid"])
            raise
        in_flight.decision = decision
        # The decision becomes kopf's response: warnings, or a denial with its message.
        warnings.extend(decision.warnings)
        if not decision.allowed:
            raise kopf.AdmissionError(decision.message or DENIAL_PREFIX, code=403)

    for route in WEBHOOK_ROUTES:
        kopf.on.validate(
            route.api_group or "", route.api_version, route.resource,
            id=route.handler_id,
            subresource=route.subresource,
            operations=list(route.operations),
            side_effects=True,  # Events and alerts, none on dry-run (sideEffects: NoneOnDryRun)
            registry=registry,
        )(validate)


# --- startup and shutdown ------------------------------------------------------------------


def rule_paths(settings: Settings) -> list[Path]:
    """The rule files to load and watch: the packaged rules.yaml (unless ``rules.packaged`` is
    false) and then ``rules.files``. With neither, the packaged rules: never run without rules."""
    files = [Path(path) for path in settings.rules.files]
    if settings.rules.packaged or not files:
        return [default_rules_path(), *files]
    return files


def connection_info(configuration: kubernetes.client.Configuration) -> kopf.ConnectionInfo:
    """kopf's credentials from the same kubernetes-client configuration gatewatch uses.

    Mirrors ``kopf.login_via_client``, but for a given configuration rather than
    the process-global default (tests run several operators in one process).
    """
    header = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
        "authorization"
    )
    parts = header.split(" ", 1) if header else []
    scheme, token = (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def kopf_settings(server: kopf.WebhookServer) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.admission.server = server
    # gatewatch registers its own ValidatingWebhookConfiguration (namespaceSelector,
    # timeoutSeconds, failurePolicy); kopf's would lack them and be emptied on every stop.
    settings.admission.managed = None
    # No kopf log-Events: they need generateName and Events RBAC; gatewatch posts its own.
    settings.posting.enabled = False
    # Only admission handlers: no CRD/namespace watching, so no RBAC for it.
    settings.scanning.disabled = True
    return settings



RECONCILE_INTERVAL_SECONDS = 10.0  # webhook configuration drift is repaired this fast
CERTIFICATE_CHECK_SECONDS = 60.0


class Operator:
    """Everything `gatewatch run` starts, wired together; ``run()`` serves until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        api_client: kubernetes.client.ApiClient,
        metrics: Metrics | None = None,
        alert_stream: TextIO | None = None,
        shutdown_timeout: float = 5.0,
        certificate_check_interval: float = CERTIFICATE_CHECK_SECONDS,
    ) -> None:
        self.settings = settings
        self.api_client = api_client
        self.metrics = metrics or Metrics()
        self.readiness = Readiness()
        self._alert_stream = alert_stream
        self._shutdown_timeout = shutdown_timeout
        self._certificate_check_interval = certificate_check_interval
        # Set while running; exposed for diagnostics and tests.
        self.engine: RuleEngine | None = None
        self.webhook_port: int | None = None
        self.metrics_port: int | None = None

    async def run(self, *, stop_flag: Any = None, ready_flag: Any = None) -> None:
        """Load the rules, start the servers and workers, serve until ``stop_flag``, shut down in order.

        The flags are kopf's: an asyncio.Event, threading.Event or future.
        Raises RuleError / ConfigError / CertificateError / KubernetesApiError
        for a setup that cannot work.
        """
        settings = self.settings
        _install_once(logging.getLogger("kopf.objects"), DenialLogFilter())
        stopping = asyncio.Event()  # tells the kube/ workers to finish

        # Rules and new_terms history first: nothing is served without rules.
        events = EventRecorder(self.api_client, queue_size=settings.events.queue_size, metrics=self.metrics)
        reloader = RulesReloader(
            rule_paths(settings),
            interval=settings.rules.reload_interval_seconds,
            on_change=self._rules_changed,
            metrics=self.metrics,
            event_recorder=events,
            # Where the files come from (the chart's rules ConfigMap): a rejected update is an Event on it.
            configmap=ObjectRef(kind="ConfigMap", api_version="v1", name=settings.rules.config_map_name,
                                namespace=settings.namespace),
        )
        ruleset = reloader.load_initial()
        new_terms = ConfigMapNewTermsStore(
            self.api_client, namespace=settings.namespace, name=settings.new_terms.config_map_name,
        )
        try:
            await new_terms.load()
        except Exception as error:  # start without history rather than not at all
            logger.warning("new_terms history not loaded (starting empty): %s", error)
        self.engine = RuleEngine(ruleset, new_terms_store=new_terms)
        self.readiness.rules_loaded = True

        core = kubernetes.client.CoreV1Api(self.api_client)
        lookup = settings.pod_lookup
        alerts = self._alert_sinks()
        reviewer = AdmissionReviewer(
            engine=self.engine,
            namespace_modes=NamespaceModeResolver(
                settings,
                fetch_labels=namespace_labels_fetcher(core, timeout=lookup.timeout_seconds),
                cache_ttl=lookup.cache_ttl_seconds,
            ),
            pod_lookup=PodLookup(pod_fetcher(core, timeout=lookup.timeout_seconds), cache_ttl=lookup.cache_ttl_seconds),
            metrics=self.metrics,
            alerts=alerts,
            event_sink=events,
        )

        # TLS and the webhook configuration: renewals reload the server's SSLContext in
        # place (no listener restart) and then update the registered caBundle.
        certificates = self._certificate_source()
        files = await certificates.ensure()
        self._record_certificate_expiry(files)
        tls_context = server_ssl_context(files)
        reconciler = WebhookConfigurationReconciler(
            self.api_client,
            registration=WebhookRegistration.from_settings(settings, handlers=WEBHOOK_ROUTES),
            ca_bundle=files.ca_bundle,
        )

        async def certificates_changed(new_files: ServingFiles) -> None:
            reload_server_ssl_context(tls_context, new_files)
            reconciler.set_ca_bundle(new_files.ca_bundle)
            self._record_certificate_expiry(new_files)
            await reconciler.reconcile_once()

        certificates.on_change = certificates_changed

        async def serving(client_config: Mapping[str, Any]) -> None:
            # kopf's server listens: register the webhooks, then report ready.
            self.webhook_port = urllib.parse.urlsplit(str(client_config.get("url"))).port
            await reconciler.reconcile_once()
            self.readiness.webhook_serving = True
            logger.info("webhook serving on port %s; ValidatingWebhookConfiguration %s registered",
                        self.webhook_port, reconciler.name)

        server = GuardedWebhookServer(
            metrics=self.metrics,
            on_serving=serving,
            addr=settings.server.host,
            port=settings.server.port or None,  # 0: kopf picks a free port
            path=settings.webhook.path,
            **kopf_server_tls_options(files, tls_context),
        )
        registry = kopf.OperatorRegistry()
        register_handlers(registry, reviewer)
        configuration = self.api_client.configuration

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return connection_info(configuration)

        health = HealthServer(
            metrics=self.metrics, readiness=self.readiness,
            host=settings.server.host, port=settings.server.metrics_port,
        )
        await health.start()
        self.metrics_port = health.port
        workers = [
            asyncio.create_task(events.run(), name="gatewatch events"),
            asyncio.create_task(alerts.run(), name="gatewatch alerts"),
            asyncio.create_task(new_terms.run(), name="gatewatch new_terms"),
            asyncio.create_task(reloader.run(), name="gatewatch rules"),
            asyncio.create_task(
                certificates.run(interval=self._certificate_check_interval, stop=stopping),
                name="gatewatch certificates"),
            asyncio.create_task(
                reconciler.run(interval=RECONCILE_INTERVAL_SECONDS, stop=stopping),
                name="gatewatch webhook configuration"),
        ]
        stopped = False

        async def stop_workers() -> None:
            nonlocal stopped
            if stopped:
                return
            stopped = True
            self.readiness.webhook_serving = False
            stopping.set()
            await _started_queued_thread_jobs(timeout=self._shutdown_timeout)
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            # What the queues hold still goes out, within a bound.
            await events.drain(timeout=self._shutdown_timeout)
            await alerts.drain(timeout=self._shutdown_timeout)
            try:
                await asyncio.wait_for(new_terms.flush(), timeout=self._shutdown_timeout)
            except Exception as error:
                logger.warning("shutdown: new_terms history not saved: %s", error)
            await health.stop()

        # kopf runs cleanup handlers once the webhook server has stopped, and then
        # cancels whatever tasks are left after a grace period: stop ours first.
        # The webhook configuration stays registered: the next replica serves it.
        @kopf.on.cleanup(registry=registry)
        async def cleanup(**_: Any) -> None:
            await stop_workers()

        try:
            await kopf.operator(
                registry=registry,
                settings=kopf_settings(server),
                clusterwide=True,
                standalone=True,  # no peering objects: several replicas answer reviews alike
                stop_flag=stop_flag,
                ready_flag=ready_flag,
            )
        finally:
            await stop_workers()

    def _rules_changed(self, ruleset: RuleSet) -> None:
        assert self.engine is not None
        self.engine.replace_rules(ruleset)

    def _alert_sinks(self) -> AlertFanout:
        options = self.settings.alerts
        sinks: list[Any] = []
        if options.stdout:
            sinks.append(StdoutAlertSink(self._alert_stream, buffer_size=options.http.buffer_size, metrics=self.metrics))
        http = options.http
        http_options: dict[str, Any] = dict(
            batch_size=http.batch_size, flush_interval=http.flush_interval_seconds,
            buffer_size=http.buffer_size, metrics=self.metrics,
        )
        if http.url is not None:
            sinks.append(HttpAlertSink(http.url, **http_options))
        elif http.url_file is not None:
            sinks.append(HttpAlertSink.from_url_file(http.url_file, **http_options))
        return AlertFanout(sinks)

    def _certificate_source(self) -> CertificateManager | FileCertificateSource:
        settings = self.settings
        certificates = settings.certificates
        if certificates.mode == "files":
            return FileCertificateSource(
                cert_file=certificates.cert_file, key_file=certificates.key_file, ca_file=certificates.ca_file,
            )
        return CertificateManager(
            self.api_client,
            namespace=settings.namespace,
            secret_name=certificates.secret_name,
            names=serving_names(
                service_name=settings.webhook.service.name,
                service_namespace=settings.service_namespace,
                url=settings.webhook.url,
            ),
            work_dir=certificates.work_dir,
        )

    def _record_certificate_expiry(self, files: ServingFiles) -> None:
        self.metrics.certificate_expiry.set(files.not_after.timestamp())


async def _started_queued_thread_jobs(*, timeout: float) -> None:
    """Wait until the thread pool has started every job handed to it so far.

    Cancelling ``asyncio.to_thread`` cancels a job no thread has started yet:
    a queue worker cancelled just after handing its alert lines or Event to the
    pool would lose them. The pool starts jobs in order, so once this no-op
    has run, the earlier jobs are running and finish despite the cancel.
    """
    try:
        await asyncio.wait_for(asyncio.to_thread(lambda: None), timeout=timeout)
    except asyncio.TimeoutError:
        logger.warning("shutdown: the thread pool stayed busy for %gs; queued writes may be lost", timeout)


def _install_once(target: logging.Logger, log_filter: logging.Filter) -> None:
    if not any(isinstance(existing, type(log_filter)) for existing in target.filters):
        target.addFilter(log_filter)
