"""The guard: what the webhook server refuses to evaluate, and that nothing is allowed unevaluated."""
from __future__ import annotations

import json
from typing import Any

import pytest

from gatewatch.admission import AdmissionReviewer, UnexpectedReview, UnknownWebhookPath, check_review
from gatewatch.config import Settings
from gatewatch.controller import GuardedWebhookServer
from gatewatch.webhook_server import Refused
from gatewatch.decision import Mode
from gatewatch.engine import RuleEngine
from gatewatch.kube.namespaces import NamespaceModeResolver
from gatewatch.kube.pods import PodLookup
from gatewatch.metrics import Metrics
from gatewatch.rules.model import Action, Rule, RuleSet, RuleType, Severity


def review(*, resource: str = "pods", sub: str | None = None, operation: str = "CREATE") -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": resource},
        "operation": operation,
        "namespace": "shop",
        "name": "web",
        "userInfo": {"username": "alice"},
        "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {"containers": []}},
    }
    if sub:
        request["subResource"] = sub
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def test_each_route_takes_its_own_resource_and_operation():
    assert check_review(review(), webhook="pods").route.handler_id == "pods"
    assert check_review(review(sub="exec", operation="CONNECT"), webhook="pods-exec").route.subresource == "exec"
    with pytest.raises(UnexpectedReview, match="'pods-exec' takes pods/exec, not pods "):
        check_review(review(), webhook="pods-exec")
    with pytest.raises(UnexpectedReview, match="'pods' takes CREATE, not 'DELETE'"):
        check_review(review(operation="DELETE"), webhook="pods")
    with pytest.raises(UnexpectedReview, match="takes pods/attach, not pods/exec"):
        check_review(review(sub="exec", operation="CONNECT"), webhook="pods-attach")


def test_unknown_paths_and_unreadable_reviews_are_refused():
    with pytest.raises(UnknownWebhookPath, match="no webhook at 'mutate'"):
        check_review(review(), webhook="mutate")
    with pytest.raises(UnexpectedReview, match="not a readable AdmissionReview"):
        check_review({"kind": "AdmissionReview", "request": "nope"}, webhook="pods")
    # The API server always wraps the request; a bare one is refused, not evaluated.
    with pytest.raises(UnexpectedReview, match="request: missing"):
        check_review(review()["request"], webhook="pods")


def failing_reviewer(metrics: Metrics) -> AdmissionReviewer:
    """A real reviewer whose only rule's query raises: evaluation fails."""

    def broken(document: Any) -> bool:
        raise RuntimeError("the rule's matcher broke")

    rule = Rule(id="broken", name="Broken Rule", description="raises", severity=Severity.LOW, risk_score=1,
                type=RuleType.QUERY, query="*", matcher=broken, action=Action.DENY)
    settings = Settings(mode=Mode.ENFORCE)

    async def labels(namespace: str) -> dict[str, str]:
        return {}

    async def no_pod(key: Any) -> dict[str, Any]:
        raise LookupError(key)

    return AdmissionReviewer(
        engine=RuleEngine(RuleSet(name="test", version=1, rules=(rule,))),
        namespace_modes=NamespaceModeResolver(settings, fetch_labels=labels, cache_ttl=60),
        pod_lookup=PodLookup(no_pod, cache_ttl=60),
        metrics=metrics,
    )


def failing_server() -> tuple[GuardedWebhookServer, Metrics]:
    """The webhook server in front of a reviewer whose evaluation always fails, and its metrics."""
    metrics = Metrics()
    return GuardedWebhookServer(reviewer=failing_reviewer(metrics), metrics=metrics), metrics


async def test_a_failed_evaluation_is_an_error_status_never_an_allow():
    server, metrics = failing_server()
    with pytest.raises(Refused, match="could not evaluate") as refused:
        await server.answer(json.dumps(review()).encode(), webhook="pods")
    assert refused.value.status == 500
    assert metrics.registry.get_sample_value(
        "gatewatch_admission_reviews_total", {"resource": "pods", "operation": "CREATE", "decision": "error"}) == 1


async def test_unreadable_bodies_and_unknown_paths_are_error_statuses():
    server, metrics = failing_server()
    with pytest.raises(Refused, match="not a readable AdmissionReview: body is not JSON") as refused:
        await server.answer(b"{not json", webhook="pods")
    assert refused.value.status == 400
    with pytest.raises(Refused) as refused:
        await server.answer(json.dumps(review()).encode(), webhook="mutate")
    assert refused.value.status == 404
    assert metrics.registry.get_sample_value(
        "gatewatch_admission_reviews_total", {"resource": "unknown", "operation": "", "decision": "error"}) == 1


async def test_metric_labels_from_a_hostile_body_stay_bounded():
    server, metrics = failing_server()
    for n in range(3):
        body = review(resource=f"made-up-{n}")
        body["request"]["operation"] = ["not", "a", "string"] if n else f"VERB{n}"
        with pytest.raises(Refused) as refused:
            await server.answer(json.dumps(body).encode(), webhook="pods")
        assert refused.value.status == 400
    assert metrics.registry.get_sample_value(
        "gatewatch_admission_reviews_total", {"resource": "other", "operation": "other", "decision": "error"}) == 3
