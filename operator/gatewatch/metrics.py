"""Prometheus metrics and the health endpoints (``/metrics``, ``/livez`` = ``/healthz``, ``/readyz``).

Metrics live in their own registry (not the process-global one), so each
operator instance, and each test, counts its own.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import aiohttp.web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

logger = logging.getLogger(__name__)

# Reviews are expected to take milliseconds; the API server gives up after timeoutSeconds.
REVIEW_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# The labels whose values are a fixed set, and those values (the other labels carry rule
# ids and names, resources, operations). docs/operations.md names them; tests/test_docs_names.py
# checks the docs against this table and the emitters (Event queue, alert sinks) against it.
LABEL_VALUES: dict[str, frozenset[str]] = {
    "queue": frozenset({"events", "alerts-stdout", "alerts-http"}),
    "kind": frozenset({"namespace", "pod"}),
    "decision": frozenset({"allowed", "warned", "denied", "error"}),
    "action": frozenset({"alert", "warn", "deny"}),
    "effect": frozenset({"alert", "warn", "deny"}),
    # The supervised background tasks (gatewatch.background).
    "task": frozenset({"webhook-configuration", "certificates", "rules-reloader", "events", "alerts-stdout",
                       "alerts-http", "new-terms"}),
}


class Metrics:
    """Every gatewatch metric; one instance per operator."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reviews = Counter(
            "gatewatch_admission_reviews",
            "Admission reviews answered, by resource, operation and decision "
            "(allowed, warned, denied, error).",
            ["resource", "operation", "decision"], registry=r,
        )
        self.matches = Counter(
            "gatewatch_rule_matches",
            "Rule matches at admission, by rule and the rule's action and what it caused.",
            ["rule_id", "rule_name", "action", "effect"], registry=r,
        )
        self.review_duration = Histogram(
            "gatewatch_admission_review_duration_seconds",
            "Time from receiving an admission review to answering it.",
            ["resource"], buckets=REVIEW_LATENCY_BUCKETS, registry=r,
        )
        self.queue_drops = Counter(
            "gatewatch_queue_dropped",
            "Events or alerts dropped because their bounded queue was full or delivery failed.",
            ["queue"], registry=r,
        )
        self.rules_loaded = Gauge(
            "gatewatch_rules_loaded", "Enabled rules in the rule set in use.", registry=r,
        )
        self.rules_reload_failures = Counter(
            "gatewatch_rules_reload_failures",
            "Rule reloads rejected (the previous rule set stays in use).", registry=r,
        )
        self.certificate_expiry = Gauge(
            "gatewatch_certificate_expiry_timestamp_seconds",
            "When the webhook's serving certificate expires (Unix time).", registry=r,
        )
        self.lookup_failures = Counter(
            "gatewatch_lookup_failures",
            "Namespace or pod lookups that failed or timed out (the review went on without them).",
            ["kind"], registry=r,
        )
        self.oversized_reviews = Counter(
            "gatewatch_admission_reviews_oversized",
            "Webhook calls refused with 413 because the body exceeded the size gatewatch reads for "
            "that webhook (never evaluated: the failurePolicy decides).",
            registry=r,
        )
        self.webhook_refused = Counter(
            "gatewatch_webhook_requests_refused",
            "Webhook calls answered with an HTTP error instead of a review response, by reason "
            "(unknown_path, method, too_large, body_timeout, body_incomplete, malformed, overloaded, "
            "deadline, evaluation_failed); the failurePolicy decides them.",
            ["reason"], registry=r,
        )
        self.webhook_connections = Gauge(
            "gatewatch_webhook_connections", "Open connections to the webhook port.", registry=r,
        )
        self.webhook_connections_closed = Counter(
            "gatewatch_webhook_connections_closed",
            "Webhook connections gatewatch closed before they finished, by reason (header_timeout, "
            "tls_failed, evicted, refused).",
            ["reason"], registry=r,
        )
        self.namespace_labels_ignored = Counter(
            "gatewatch_namespace_mode_labels_ignored",
            "Namespace labels ignored because they asked for a weaker mode than the configuration gives "
            "(a gatewatch.io/mode value, or a label matching an unprotected namespaces.selectors entry: labels "
            "may only tighten); counted once per namespace and value or selector.",
            registry=r,
        )
        self.task_last_success = Gauge(
            "gatewatch_task_last_success_timestamp_seconds",
            "When a background task last completed a cycle successfully (Unix time), by task.",
            ["task"], registry=r,
        )
        self.task_failures = Counter(
            "gatewatch_task_failures",
            "Background task cycles that failed (raised or timed out) and were retried after a backoff, by task.",
            ["task"], registry=r,
        )
        self.queue_length = Gauge(
            "gatewatch_queue_length",
            "Items waiting in a bounded queue, by queue: Event occurrences not yet written (events), "
            "alerts not yet delivered (alerts-stdout, alerts-http; for HTTP including the batch being sent).",
            ["queue"], registry=r,
        )
        # ``.labels()`` hashes and locks on every call; the review path and the workers reuse the children.
        self._children: dict[tuple[Any, ...], Any] = {}
        self._review_children: dict[tuple[str, str, str], tuple[Callable[[], None], Callable[[float], None]]] = {}
        self._match_children: dict[tuple[str, str, str, str], Callable[[], None]] = {}
        # Every queue and lookup kind exported at 0 from the start: increase() sees the first loss.
        for queue in sorted(LABEL_VALUES["queue"]):
            self.queue_drops.labels(queue=queue)
        for kind in sorted(LABEL_VALUES["kind"]):
            self.lookup_failures.labels(kind=kind)
        for task in sorted(LABEL_VALUES["task"]):
            self.task_failures.labels(task=task)

    def count_review(self, *, resource: str, operation: str, decision: str, seconds: float) -> None:
        """One answered review: its outcome and how long it took."""
        # Once per review: the two children's methods looked up by one key (the label values are bounded sets).
        counted = self._review_children.get((resource, operation, decision))
        if counted is None:
            counted = self._review_children[(resource, operation, decision)] = (
                self.reviews.labels(resource=resource, operation=operation, decision=decision).inc,
                self.review_duration.labels(resource=resource).observe,
            )
        counted[0]()
        counted[1](seconds)

    def count_match(self, *, rule_id: str, rule_name: str, action: str, effect: str) -> None:
        """One rule match at admission."""
        count = self._match_children.get((rule_id, rule_name, action, effect))
        if count is None:
            count = self._match_children[(rule_id, rule_name, action, effect)] = self.matches.labels(
                rule_id=rule_id, rule_name=rule_name, action=action, effect=effect).inc
        count()

    def queue_dropped(self, queue: str, count: int = 1) -> None:
        """Callback for the Event and alert queues: ``count`` items of ``queue`` were lost."""
        self.queue_drops.labels(queue=queue).inc(count)

    def watch_queue(self, queue: str, length: Callable[[], float]) -> None:
        """``gatewatch_queue_length{queue}`` reads ``length()`` at each scrape: nothing on the review path."""
        self.queue_length.labels(queue=queue).set_function(length)

    def task_succeeded(self, task: str, when: float) -> None:
        """A background task completed a cycle at ``when`` (Unix time)."""
        # Every cycle of every worker (the Event worker's: about one per matching review) sets it.
        self._child(self.task_last_success, task=task).set(when)

    def _child(self, metric: Any, **labels: str) -> Any:
        """``metric.labels(**labels)``, remembered: asked by the workers every cycle (the review path's own
        counters keep their children's methods by one key each: ``count_review``, ``count_match``)."""
        key = (id(metric), *labels.values())
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(**labels)
        return child

    def task_failed(self, task: str) -> None:
        self.task_failures.labels(task=task).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class Readiness:
    """Ready only once the rules are loaded and the webhook server listens, and until shutdown starts.

    ``draining``: stopping was requested; the webhook still answers reviews for a
    short while, but the Service should stop sending new ones here.
    """

    rules_loaded: bool = False
    webhook_serving: bool = False
    draining: bool = False

    @property
    def ready(self) -> bool:
        return self.rules_loaded and self.webhook_serving and not self.draining

    def describe(self) -> str:
        missing = []
        if not self.rules_loaded:
            missing.append("rules not loaded")
        if not self.webhook_serving:
            missing.append("webhook server not listening")
        if self.draining:
            missing.append("shutting down (draining reviews in flight)")
        return "ok" if not missing else "not ready: " + ", ".join(missing)


class HealthServer:
    """The plain-HTTP server for Prometheus and the kubelet's probes.

    ``liveness`` names what keeps the process from being live (the supervisor's
    stalled background tasks); an empty list is live.
    """

    def __init__(
        self, *, metrics: Metrics, readiness: Readiness, host: str, port: int,
        liveness: Callable[[], list[str]] | None = None,
    ) -> None:
        self._metrics = metrics
        self._readiness = readiness
        self._liveness = liveness
        self._host = host
        self._port = port
        self._runner: aiohttp.web.AppRunner | None = None
        self.port: int | None = None  # the bound port, once started

    def application(self) -> aiohttp.web.Application:
        app = aiohttp.web.Application()
        app.add_routes([
            aiohttp.web.get("/metrics", self._serve_metrics),
            aiohttp.web.get("/livez", self._serve_liveness),
            aiohttp.web.get("/healthz", self._serve_liveness),  # the older name, kept for existing probes
            aiohttp.web.get("/readyz", self._serve_readiness),
        ])
        return app

    async def start(self) -> None:
        self._runner = aiohttp.web.AppRunner(self.application(), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        addresses = self._runner.addresses
        self.port = addresses[0][1] if addresses else self._port
        logger.info("metrics and health on http://%s:%s (/metrics, /livez, /readyz)", self._host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve_metrics(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        response = aiohttp.web.Response(body=self._metrics.exposition())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    async def _serve_liveness(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        # Answering at all means the event loop runs; the supervisor says whether its tasks still turn.
        problems = self._liveness() if self._liveness is not None else []
        if not problems:
            return aiohttp.web.Response(text="ok\n")
        return aiohttp.web.Response(text="not live: " + "; ".join(problems) + "\n", status=503)

    async def _serve_readiness(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        status = 200 if self._readiness.ready else 503
        return aiohttp.web.Response(text=self._readiness.describe() + "\n", status=status)
