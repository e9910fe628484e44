"""The guard in front of kopf: what it refuses to let kopf answer, and why."""
from __future__ import annotations

from typing import Any

import aiohttp.web
import pytest

from gatewatch.admission import UnexpectedReview, UnknownWebhookPath, check_review
from gatewatch.controller import GuardedWebhookServer
from gatewatch.metrics import Metrics


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


async def test_kopf_answering_without_our_handler_becomes_an_error_not_an_allow():
    metrics = Metrics()
    server = GuardedWebhookServer(metrics=metrics)

    async def kopf_without_handlers(request: Any, **_: Any) -> dict[str, Any]:
        # What kopf 1.45 answers when no handler matches: allowed, nothing evaluated.
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": "u-1", "allowed": True}}

    with pytest.raises(aiohttp.web.HTTPInternalServerError):
        await server._guard(kopf_without_handlers, review(), webhook="pods")
    assert metrics.registry.get_sample_value(
        "gatewatch_admission_reviews_total", {"resource": "pods", "operation": "CREATE", "decision": "error"}) == 1
