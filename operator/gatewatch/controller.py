"""kopf wiring: the operator's startup and shutdown around the webhook server.

The review path itself (connection, route, body, JSON, check, evaluation,
answer, each bounded) is ``gatewatch.webhook_server.GuardedWebhookServer``;
the answer is ``gatewatch.admission``'s.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

import kopf
import kubernetes.client

from gatewatch import background
from gatewatch.admission import WEBHOOK_ROUTES, AdmissionReviewer
from gatewatch.alert_sinks import AlertFanout, HttpAlertSink, StdoutAlertSink
from gatewatch.alert_spill import AlertSpill
from gatewatch.config import Settings
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
from gatewatch.kube.client import check_api_server
from gatewatch.kube.events import EventRecorder, ObjectRef
from gatewatch.kube.namespaces import NamespaceModeResolver, namespace_labels_fetcher
from gatewatch.kube.newterms_store import ConfigMapNewTermsStore
from gatewatch.kube.pods import PodLookup, pod_fetcher
from gatewatch.kube.webhook_configuration import WebhookConfigurationReconciler, WebhookRegistration
from gatewatch.metrics import HealthServer, Metrics, Readiness
from gatewatch.rules import RuleSet, default_rules_path
from gatewatch.rules.packs import Exemptions, PackSelection, load_ruleset
from gatewatch.rules_reloader import RulesReloader
from gatewatch.supervisor import Sleep, Supervisor, describe_error
from gatewatch.webhook_server import GuardedWebhookServer

logger = logging.getLogger(__name__)

# The garbage collector's first generation while serving. A review makes thousands of container objects,
# nearly all freed by reference counting, some held a few ms longer by the alert and Event queues; with
# Python's default (700) the collector ran every few reviews and took 3.5% of the server's CPU under load,
# with this 1.2% (docs/benchmarks.md). What waits for it is a few MiB at most. The older generations keep
# Python's settings, and the rule set stays frozen out of collections (engine._settle_heap).
YOUNG_GENERATION_THRESHOLD = 10_000

# --- startup and shutdown ------------------------------------------------------------------


def rule_paths(settings: Settings) -> list[Path]:
    """The rule files to load and watch: the packaged rules.yaml (unless ``rules.packaged`` is
    false) and then ``rules.files``. With neither, the packaged rules: never run without rules."""
    files = [Path(path) for path in settings.rules.files]
    if settings.rules.packaged or not files:
        return [default_rules_path(), *files]
    return files


def rules_loader(settings: Settings) -> Callable[[list[Path]], RuleSet]:
    """Loads the rule files and then the packs of ``rules.packs``, with their actions and exemptions."""
    packs = [PackSelection(pack.name, pack.action) for pack in settings.rules.packs]
    exempt = settings.rules.pack_exemptions
    exemptions = Exemptions(usernames=exempt.usernames, runtime_class_names=exempt.runtime_class_names,
                            namespaces=exempt.namespaces)
    allow_empty = settings.rules.allow_empty
    return lambda paths: load_ruleset(paths, packs=packs, exemptions=exemptions, allow_empty=allow_empty)


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
        drain_seconds: float | None = None,
        certificate_check_interval: float = background.CERTIFICATE_CHECK_SECONDS,
        task_sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.api_client = api_client
        self.metrics = metrics or Metrics()
        self.readiness = Readiness()
        self._alert_stream = alert_stream
        self._shutdown_timeout = shutdown_timeout
        # None: ``server.drainSeconds`` from the settings (tests pass 0 to stop at once).
        self._drain_seconds = settings.server.drain_seconds if drain_seconds is None else drain_seconds
        self._certificate_check_interval = certificate_check_interval
        # Every background task runs under it (gatewatch.background); tests pass a quicker sleep.
        self.supervisor = Supervisor(metrics=self.metrics, sleep=task_sleep)
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
        supervisor = self.supervisor

        # Rules and new_terms history first: nothing is served without rules.
        events = EventRecorder(self.api_client, queue_size=settings.events.queue_size, metrics=self.metrics)
        reloader = RulesReloader(
            rule_paths(settings),
            interval=settings.rules.reload_interval_seconds,
            on_change=self._rules_changed,
            load=rules_loader(settings),
            metrics=self.metrics,
            event_recorder=events,
            # Where the files come from (the chart's rules ConfigMap): a rejected update is an Event on it.
            configmap=ObjectRef(kind="ConfigMap", api_version="v1", name=settings.rules.config_map_name,
                                namespace=settings.namespace),
        )
        ruleset = reloader.load_initial()
        # Then the API server, once: unreachable, credentials refused or no namespace is one clear
        # error at start, not urllib3's retries and a traceback from whichever call comes first.
        await asyncio.to_thread(check_api_server, self.api_client, namespace=settings.namespace)
        new_terms = ConfigMapNewTermsStore(
            self.api_client, namespace=settings.namespace, name=settings.new_terms.config_map_name,
        )
        try:
            await new_terms.load()
        except Exception as error:  # start without history rather than not at all
            logger.warning("new_terms history not loaded (starting empty): %s", error)
        self.engine = RuleEngine(ruleset, new_terms_store=new_terms)
        self.readiness.rules_loaded = True

        lookup = settings.pod_lookup
        alerts = self._alert_sinks()
        reviewer = AdmissionReviewer(
            engine=self.engine,
            namespace_modes=NamespaceModeResolver(
                settings,
                fetch_labels=namespace_labels_fetcher(self.api_client, timeout=lookup.timeout_seconds),
                cache_ttl=lookup.cache_ttl_seconds,
                on_ignored_label=lambda *_: self.metrics.namespace_labels_ignored.inc(),
            ),
            pod_lookup=PodLookup(pod_fetcher(self.api_client, timeout=lookup.timeout_seconds), cache_ttl=lookup.cache_ttl_seconds),
            metrics=self.metrics,
            alerts=alerts,
            event_sink=events,
            alert_dry_runs=settings.alerts.dry_run,
        )

        # TLS and the webhook configuration: renewals reload the server's SSLContext in
        # place (no listener restart) and then update the registered caBundle.
        certificates = self._certificate_source()
        files = await certificates.ensure()
        self._record_certificate_expiry(files)
        tls_context = server_ssl_context(files, client_ca=settings.webhook.client_ca)
        reconciler = WebhookConfigurationReconciler(
            self.api_client,
            registration=WebhookRegistration.from_settings(settings, handlers=WEBHOOK_ROUTES),
            ca_bundle=files.ca_bundle,
            # Another replica may have rotated the CA in the shared Secret first: adopt its
            # bundle instead of "restoring" ours (two replicas would flip-flop, each calling it drift).
            refresh_ca_bundle=certificates.read_ca_bundle if isinstance(certificates, CertificateManager) else None,
            # Mounted Secrets (cert-manager) change on each node at its own time: keep the CAs
            # other replicas serve with while a CA rotation reaches every replica.
            ca_bundle_union=isinstance(certificates, FileCertificateSource),
            generation=settings.webhook.generation,
        )

        async def certificates_changed(new_files: ServingFiles) -> None:
            reload_server_ssl_context(tls_context, new_files)
            reconciler.set_ca_bundle(new_files.ca_bundle)
            self._record_certificate_expiry(new_files)
            try:
                await reconciler.reconcile_once()
            except Exception as error:  # the drift-repair task registers the new bundle on its next cycle
                logger.warning("new caBundle not registered yet, the next drift repair will: %s", describe_error(error))

        certificates.on_change = certificates_changed

        async def serving(client_config: Mapping[str, Any]) -> None:
            # kopf's server listens: register the webhooks, then report ready.
            self.webhook_port = urllib.parse.urlsplit(str(client_config.get("url"))).port
            await reconciler.reconcile_once()
            if "webhook-configuration" not in supervisor.tasks:
                supervisor.start(background.drift_repair(reconciler))
            self.readiness.webhook_serving = True
            logger.info("webhook serving on port %s; ValidatingWebhookConfiguration %s registered",
                        self.webhook_port, reconciler.name)

        def draining() -> None:
            self.readiness.draining = True

        server = GuardedWebhookServer(
            reviewer=reviewer,
            metrics=self.metrics,
            on_serving=serving,
            on_draining=draining,
            drain_seconds=self._drain_seconds,
            limits=settings.server.limits,
            deadline_seconds=settings.review_deadline_seconds,
            addr=settings.server.host,
            port=settings.server.port or None,  # 0: kopf picks a free port
            path=settings.webhook.path,
            **kopf_server_tls_options(files, tls_context),
        )
        registry = kopf.OperatorRegistry()  # no admission handlers: the server answers reviews itself
        configuration = self.api_client.configuration

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return connection_info(configuration)

        health = HealthServer(
            metrics=self.metrics, readiness=self.readiness,
            host=settings.server.host, port=settings.server.metrics_port,
            liveness=supervisor.problems,
        )
        await health.start()
        self.metrics_port = health.port
        # Drift repair starts once the webhook serves (``serving``); the rest now.
        supervisor.start(background.event_writer(events))
        for sink in alerts.sinks:
            supervisor.start(background.alert_delivery(sink))
            self.metrics.watch_queue(sink.name, lambda sink=sink: sink.buffered)
        self.metrics.watch_queue("events", lambda: events.pending)
        supervisor.start(background.new_terms_flush(new_terms))
        supervisor.start(background.rules_reload(reloader))
        supervisor.start(background.certificate_check(certificates, interval=self._certificate_check_interval))
        stopped = False

        async def stop_workers() -> None:
            nonlocal stopped
            if stopped:
                return
            stopped = True
            self.readiness.webhook_serving = False
            # The sinks finish a write under way when cancelled; drain() then writes the rest.
            await supervisor.stop()
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

        thresholds = gc.get_threshold()
        gc.set_threshold(max(thresholds[0], YOUNG_GENERATION_THRESHOLD), *thresholds[1:])
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
            gc.set_threshold(*thresholds)

    def _rules_changed(self, ruleset: RuleSet) -> None:
        assert self.engine is not None
        self.engine.replace_rules(ruleset)

    def _alert_sinks(self) -> AlertFanout:
        options = self.settings.alerts
        sinks: list[Any] = []
        if options.stdout:
            # Its own buffer (the sink's default): alerts.http.bufferSize sizes the HTTP sink only.
            sinks.append(StdoutAlertSink(self._alert_stream, metrics=self.metrics))
        http = options.http
        http_options: dict[str, Any] = dict(
            batch_size=http.batch_size, flush_interval=http.flush_interval_seconds,
            buffer_size=http.buffer_size, request_timeout=http.request_timeout_seconds, metrics=self.metrics,
            spill=AlertSpill(http.spill_file, max_bytes=http.spill_max_bytes) if http.spill_file else None,
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
