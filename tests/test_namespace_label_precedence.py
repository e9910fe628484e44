"""A tenant who may label their own namespace cannot use the label to escape the platform's mode.

The whole review path (AdmissionReviewer with the default rules), namespace labels from the
API double; only the resolver's precedence is under test here.
"""
from __future__ import annotations

from typing import Any

import kubernetes.client
import pytest

from apiserver_harness import add_namespace
from kube_emulator import kube_api_client, kube_emulator  # noqa: F401  (fixtures)
from gatewatch.admission import AdmissionReviewer, check_review
from gatewatch.config import load_settings
from gatewatch.engine import RuleEngine
from gatewatch.kube.namespaces import NamespaceModeResolver, namespace_labels_fetcher
from gatewatch.kube.pods import PodLookup
from gatewatch.metrics import Metrics
from gatewatch.rules import load_rules

# The API double answers in the same process as the test: a timeout where an answer is
# expected only catches a hang, so it is generous (a loaded machine must not fail the test).
ANSWER_TIMEOUT = 30.0


def busybox_pod_review(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u-1", "operation": "CREATE", "namespace": namespace, "name": "dbg",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "userInfo": {"username": "tenant-admin", "groups": ["system:authenticated"]},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dbg", "namespace": namespace},
                       "spec": {"containers": [{"name": "dbg", "image": "busybox:1.36"}]}},
        },
    }


def reviewer(kube_api_client: kubernetes.client.ApiClient, **config: Any) -> AdmissionReviewer:
    settings = load_settings(environ={}, overrides=config)

    async def no_pod(key: Any) -> dict[str, Any]:
        raise LookupError(key)

    return AdmissionReviewer(
        engine=RuleEngine(load_rules()),
        namespace_modes=NamespaceModeResolver(
            settings,
            fetch_labels=namespace_labels_fetcher(kube_api_client, timeout=ANSWER_TIMEOUT),
            cache_ttl=30.0,
        ),
        pod_lookup=PodLookup(no_pod, cache_ttl=30.0),
        metrics=Metrics(),
    )


@pytest.mark.parametrize(
    ("config", "labels"),
    [
        ({"mode": "enforce"}, {"gatewatch.io/mode": "off"}),  # the default enforces
        ({"mode": "warn", "namespaces": {"selectors": [{"matchLabels": {"tier": "prod"}, "mode": "enforce"}]}},
         {"tier": "prod", "gatewatch.io/mode": "audit"}),  # a selector enforces
    ],
)
async def test_a_label_asking_for_less_does_not_let_a_debug_pod_through(kube_emulator, kube_api_client, config,
                                                                         labels):
    add_namespace(kube_emulator, "tenant-a", labels)
    decision = await reviewer(kube_api_client, **config).review(
        check_review(busybox_pod_review("tenant-a"), webhook="pods"))
    assert not decision.allowed
    assert decision.message and "Debug or Base Image" in decision.message


async def test_the_platform_team_can_still_loosen_one_namespace_by_name(kube_emulator, kube_api_client):
    add_namespace(kube_emulator, "sandbox", {"gatewatch.io/mode": "enforce"})  # ignored: config decides
    decision = await reviewer(kube_api_client, mode="enforce", namespaces={"modes": {"sandbox": "warn"}}).review(
        check_review(busybox_pod_review("sandbox"), webhook="pods"))
    assert decision.allowed and decision.warnings


async def test_a_label_asking_for_more_tightens(kube_emulator, kube_api_client):
    add_namespace(kube_emulator, "payments", {"gatewatch.io/mode": "enforce"})
    decision = await reviewer(kube_api_client, mode="warn").review(
        check_review(busybox_pod_review("payments"), webhook="pods"))
    assert not decision.allowed
