"""Where one admission review's CPU time goes inside gatewatch, stage by stage, without the network.

    .venv/bin/python benchmarks/webhook_stages.py [--repeat 3000]

The companion of webhook_throughput.py: the same three reviews (Pod CREATE
busybox, Pod CREATE nginx, pods/exec CONNECT), the rules `gatewatch run` serves
by default (the packaged rules and the pod-security-baseline pack) in warn mode, and the functions the controller calls for each review, timed one
stage at a time, then the whole review path as the webhook server runs it
(``GuardedWebhookServer.answer``: ``bounded_json`` measure and parse,
``check_review``, ``AdmissionReviewer.review``, ``review_response``,
``orjson.dumps``, metrics; microseconds per review, best of 3 passes). In
that whole path the alert and Event sinks take each queued item and let it go
(``Discarding``): queues that nobody drains would grow by thousands of
documents per pass and bill the review path for the garbage collector's
walks over them (about 40 us per review), which a running server, whose
workers drain them, does not pay. Stages marked "(worker)" run in the alert
and Event workers, off the review path, but on the same CPUs; the indented
rows are what the workers run now for the two rows above them (a review's
alert lines with its audit part encoded once; an Event occurrence counted by
its name, the Event built only for a new series), not summed. aiohttp, TLS and the Event API calls are not in
these figures: compare them with the server CPU per review
webhook_throughput.py prints for gatewatch and for the no-op baseline.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from webhook_throughput import REVIEW_MIX, admission_review  # noqa: E402  (sibling script)

import json  # noqa: E402

import orjson  # noqa: E402

from gatewatch import bounded_json
from gatewatch.admission import AdmissionReviewer, check_review, event_target, review_response
from gatewatch.alerts import SharedAuditPart, alert_line, build_alert, shared_alert_line
from gatewatch.config import Settings
from gatewatch.decision import Mode, decide
from gatewatch.documents import document_from_admission_request, image_entry
from gatewatch.engine import RuleEngine
from gatewatch.kube.events import MatchOccurrence, match_event
from gatewatch.kube.namespaces import NamespaceModeResolver
from gatewatch.kube.pods import PodLookup
from gatewatch.metrics import Metrics
from gatewatch.controller import rules_loader
from gatewatch.rules.loader import default_rules_path
from gatewatch.webhook_server import GuardedWebhookServer

HANDLER_FOR = {"pod-busybox": "pods", "pod-nginx": "pods", "exec": "pods-exec"}
TARGET_POD = {"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "web", "namespace": "bench", "uid": "uid-web", "labels": {"app": "web"}},
              "spec": {"serviceAccountName": "default", "containers": [{"name": "c0", "image": "nginx:1.27"}]}}


def best_of(passes: int, repeat: int, call: Callable[[], Any]) -> float:
    """Microseconds per call, the fastest of ``passes`` timed loops. CPU time of this process, not
    wall-clock time: on a shared machine the others' work does not count against it."""
    best = float("inf")
    for _ in range(passes):
        started = time.process_time()
        for _ in range(repeat):
            call()
        best = min(best, time.process_time() - started)
    return 1e6 * best / repeat


def reviewer(engine: RuleEngine, metrics: Metrics) -> AdmissionReviewer:
    """The reviewer as controller.Operator builds it; the two lookups answer from memory (cached anyway)."""

    async def namespace_labels(namespace: str) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": namespace}

    async def pod(key: tuple[str, str]) -> dict[str, Any]:
        return TARGET_POD

    return AdmissionReviewer(
        engine=engine,
        namespace_modes=NamespaceModeResolver(Settings(mode=Mode.WARN), fetch_labels=namespace_labels, cache_ttl=3600),
        pod_lookup=PodLookup(pod, cache_ttl=3600),
        metrics=metrics,
        alerts=Discarding(),
        event_sink=Discarding(),
    )


class Discarding:
    """An alert sink and Event sink that takes every item and keeps none (see the module doc)."""

    def emit(self, alert: Any) -> bool:
        return True

    def submit(self, request: Any) -> bool:
        return True


async def whole_review_cost(kind: str, *, reviewer: AdmissionReviewer, repeat: int) -> float:
    """GuardedWebhookServer.answer, the review path after the body is read: microseconds per review (best of 3)."""
    body = json.dumps(admission_review(kind, index=1)).encode()  # type: ignore[arg-type]
    server = GuardedWebhookServer(reviewer=reviewer, metrics=reviewer.metrics)
    webhook = HANDLER_FOR[kind]
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(repeat):
            await server.answer(body, webhook=webhook)
        best = min(best, time.process_time() - started)
    return 1e6 * best / repeat


def stage_costs(kind: str, *, engine: RuleEngine, metrics: Metrics, repeat: int) -> dict[str, float]:
    review = admission_review(kind, index=1)  # type: ignore[arg-type]
    webhook = HANDLER_FOR[kind]
    request = review["request"]
    now = datetime.now(timezone.utc)
    document = document_from_admission_request(request, now=now)
    if kind == "exec":
        document.setdefault("gatewatch", {})["pod"] = {"name": "web", "namespace": "bench", "uid": "uid-web",
                                                       "labels": {"app": "web"},
                                                       "images": [image_entry("nginx:1.27", container_kind="containers",
                                                                              container_name="web")]}
    engine.evaluate(document, now=now)  # the new_terms rule matches the first time only, as in a round
    matches = engine.evaluate(document, now=now)
    decision = decide(matches, mode=Mode.WARN)
    target = event_target(request)
    alerts = [build_alert(o.match, document, effect=o.effect, mode=decision.mode, decision="allowed", now=now)
              for o in decision.outcomes]

    def build_alerts() -> None:
        for outcome in decision.outcomes:
            build_alert(outcome.match, document, effect=outcome.effect, mode=decision.mode,
                        decision="allowed", now=now, extra={"mode_source": "default"})

    def alert_lines_shared() -> None:
        # What the alert worker runs now: the review's audit part encoded once, spliced into each line.
        audit = SharedAuditPart(document)
        for outcome in decision.outcomes:
            shared_alert_line(outcome.match, document, audit=audit, effect=outcome.effect, mode=decision.mode,
                              decision="allowed", now=now, extra={"mode_source": "default"})

    def count_occurrences() -> None:
        # What the review path queues, with what the Event worker reads of a repeat (its namespace, name and
        # similar-events key, worked out as it is made); the Event itself is built only for a new series.
        for outcome in decision.outcomes:
            if target is not None:
                MatchOccurrence(rule=outcome.match.rule, effect=outcome.effect, operation=target.operation,
                                namespace=target.namespace, pod_name=target.pod_name, user=target.user,
                                mode=decision.mode, observed_at=now)

    def build_events() -> None:
        for outcome in decision.outcomes:
            if target is not None:
                match_event(rule=outcome.match.rule, effect=outcome.effect, operation=target.operation,
                            namespace=target.namespace, pod_name=target.pod_name, user=target.user,
                            mode=decision.mode, observed_at=now)

    def count_metrics() -> None:
        metrics.count_review(resource="pods", operation="CREATE", decision="warned", seconds=0.001)
        for outcome in decision.outcomes:
            rule = outcome.match.rule
            metrics.count_match(rule_id=rule.id, rule_name=rule.name, action=str(rule.action.value),
                                effect=str(getattr(outcome.effect, "value", outcome.effect)))

    body = json.dumps(review).encode()

    def answer_json() -> None:
        orjson.dumps(review_response(review, decision))

    limits = bounded_json.JsonLimits()
    return {
        "bounded_json.measure (before parsing)": best_of(3, repeat, lambda: bounded_json.measure(body, limits=limits)),
        "orjson.loads (request body)": best_of(3, repeat, lambda: orjson.loads(body)),
        "check_review (parse + route checks)": best_of(3, repeat, lambda: check_review(review, webhook=webhook)),
        # As the reviewer calls it: Pod lists only when a rule reads them, the request as check_review checked it.
        "document_from_admission_request": best_of(3, repeat, lambda: document_from_admission_request(
            request, now=now, pod_fields=engine.reads_pod_fields, checked=True)),
        "engine.evaluate (all default rules)": best_of(3, repeat, lambda: engine.evaluate(document, now=now)),
        "decide": best_of(3, repeat, lambda: decide(matches, mode=Mode.WARN)),
        "review_response + orjson.dumps": best_of(3, repeat, answer_json),
        "metrics (prometheus_client, cached)": best_of(3, repeat, count_metrics),
        "build_alert, per match (worker)": best_of(3, repeat, build_alerts),
        "alert_line, JSON (worker)": best_of(3, repeat, lambda: [alert_line(a) for a in alerts]),
        "  (both, audit part shared: the worker's)": best_of(3, repeat, alert_lines_shared),
        "match_event, per match (worker)": best_of(3, repeat, build_events),
        "  (MatchOccurrence, repeat: the worker's)": best_of(3, repeat, count_occurrences),
        f"[{len(decision.outcomes)} match(es)]": 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3000, help="calls per timed loop")
    args = parser.parse_args()
    # The rules `gatewatch run` serves by default: the packaged file and the pod-security-baseline pack.
    engine = RuleEngine(rules_loader(Settings())([default_rules_path()]))
    metrics = Metrics()
    table = {kind: stage_costs(kind, engine=engine, metrics=metrics, repeat=args.repeat) for kind in REVIEW_MIX}

    async def whole() -> dict[str, float]:
        each = reviewer(engine, metrics)
        return {kind: await whole_review_cost(kind, reviewer=each, repeat=args.repeat) for kind in REVIEW_MIX}

    whole_costs = asyncio.run(whole())
    stages = list(next(iter(table.values())))
    print(f"gatewatch review stages, microseconds per review (best of 3 x {args.repeat:,}), default rules and packs, warn:")
    print(f"{'stage':<42}" + "".join(f"{kind:>13}" for kind in REVIEW_MIX) + f"{'mix mean':>11}")
    totals = dict.fromkeys(REVIEW_MIX, 0.0)
    for stage in stages:
        if stage.startswith("["):
            continue
        row = [table[kind][stage] for kind in REVIEW_MIX]
        for kind, value in zip(REVIEW_MIX, row):
            if not stage.startswith("  ("):  # the worker's way of the rows above: not summed twice
                totals[kind] += value
        print(f"{stage:<42}" + "".join(f"{value:>13.1f}" for value in row) + f"{sum(row) / len(row):>11.1f}")
    print(f"{'sum':<42}" + "".join(f"{totals[kind]:>13.1f}" for kind in REVIEW_MIX)
          + f"{sum(totals.values()) / len(totals):>11.1f}")
    print(f"{'':<42}" + "".join(f"{next(s for s in table[kind] if s.startswith('[')):>13.13}" for kind in REVIEW_MIX))
    print(f"{'whole review path (answer; no workers)':<42}"
          + "".join(f"{whole_costs[kind]:>13.1f}" for kind in REVIEW_MIX)
          + f"{sum(whole_costs.values()) / len(whole_costs):>11.1f}")


if __name__ == "__main__":
    main()
