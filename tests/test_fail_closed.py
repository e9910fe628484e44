"""Fail closed where gatewatch enforces, open elsewhere; outages and labels never weaken enforcement.

gatewatch runs against the API double with its default failure policies (enforce
entries Fail, the others Ignore); the apiserver harness plays kube-apiserver:
it picks the entry by namespaceSelector from the labels it stores, calls it, and
applies that entry's failurePolicy when the call fails.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from apiserver_harness import ApiServerHarness, add_namespace, add_pod, validate_webhook_configuration
from test_operator_admission import (
    WEBHOOK_TIMEOUT_SECONDS,
    Cluster,
    create_pod,
    eventually,
    exec_into,
    running_cluster,
    webhook_configuration,
)

# The default failure policies (test_operator_admission.settings_for sets Fail for every entry).
DEFAULT_POLICIES = {"webhook": {"failurePolicy": "Ignore", "timeoutSeconds": WEBHOOK_TIMEOUT_SECONDS}}


def add_pod_to_exec_into(cluster: Cluster, namespace: str) -> None:
    add_pod(cluster.k8s, namespace, "web", images=["nginx:1.27"])


async def test_while_gatewatch_is_down_enforce_namespaces_refuse_and_warn_namespaces_admit(tmp_path: Path):
    async with running_cluster(tmp_path, **DEFAULT_POLICIES) as cluster:
        webhooks = {w["name"]: w for w in webhook_configuration(cluster)["webhooks"]}
        assert webhooks["pods.enforce.gatewatch.io"]["failurePolicy"] == "Fail"
        assert webhooks["pods.warn.gatewatch.io"]["failurePolicy"] == "Ignore"
        assert webhooks["pods.audit.gatewatch.io"]["failurePolicy"] == "Ignore"
        await cluster.running.join(timeout=20)  # gatewatch is down; its configuration stays registered
        harness = cluster.harness()

        enforced = await harness.admit(create_pod("web", "nginx:1.27", namespace="enforce-ns"))
        assert not enforced.allowed and enforced.code == 500
        assert enforced.called == ["pods.enforce.gatewatch.io"]
        assert "failed calling webhook 'pods.enforce.gatewatch.io'" in enforced.message

        warned = await harness.admit(create_pod("shell", "busybox:1.36", namespace="warn-ns"))
        assert warned.allowed and warned.warnings == [] and warned.failures  # admitted unchecked, as Ignore means
        assert warned.called == ["pods.warn.gatewatch.io"]


async def test_relabelling_cannot_move_an_enforced_namespace_to_a_fail_open_entry(tmp_path: Path):
    # env=prod enforces; tier=sandbox asks for audit and comes first, so first-match would pick it.
    namespaces = {"selectors": [{"matchLabels": {"tier": "sandbox"}, "mode": "audit"},
                                {"matchLabels": {"env": "prod"}, "mode": "enforce"}]}
    async with running_cluster(tmp_path, namespaces=namespaces, **DEFAULT_POLICIES) as cluster:
        add_namespace(cluster.k8s, "shop", {"env": "prod", "tier": "sandbox"})
        add_pod_to_exec_into(cluster, "shop")
        harness = cluster.harness()
        result = await harness.admit(exec_into("web", namespace="shop"))
        # Still the enforce entry (fails closed) and still a denial, not a silent audit.
        assert result.called == ["pods-exec.enforce.gatewatch.io"]
        assert not result.allowed and result.code == 403
        await eventually(lambda: cluster.alert_lines(), what="alert")
        (alert,) = cluster.alert_lines()
        assert alert["gatewatch"]["mode"] == "enforce"
        assert alert["gatewatch"]["mode_source"] == "selector"


async def test_the_ignore_label_does_not_take_an_enforced_namespace_out(tmp_path: Path):
    async with running_cluster(tmp_path, **DEFAULT_POLICIES) as cluster:
        add_namespace(cluster.k8s, "payments", {"gatewatch.io/mode": "enforce", "gatewatch.io/ignore": "true"})
        add_pod_to_exec_into(cluster, "payments")
        result = await cluster.harness().admit(exec_into("web", namespace="payments"))
        assert result.called == ["pods-exec.enforce.gatewatch.io"]
        assert not result.allowed and result.code == 403


async def test_a_cold_cache_during_an_api_outage_keeps_the_mode_the_api_server_selected(tmp_path: Path):
    async with running_cluster(tmp_path, **DEFAULT_POLICIES) as cluster:
        # This replica has read no namespace yet, and now cannot: the API server's own reading still works.
        failing = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 503, "message": "etcd down"}
        for name in ("enforce-ns", "warn-ns"):
            cluster.k8s["get", f"/api/v1/namespaces/{name}"] << 503 << failing
        add_pod_to_exec_into(cluster, "enforce-ns")
        harness = cluster.harness()

        denied = await harness.admit(exec_into("web", namespace="enforce-ns"))
        assert not denied.allowed and denied.code == 403  # enforce, not the default warn
        warned = await harness.admit(create_pod("shell", "busybox:1.36", namespace="warn-ns"))
        assert warned.allowed and warned.warnings  # warn, not the strongest mode either

        await eventually(lambda: len(cluster.alert_lines()) == 2, what="alerts")
        by_namespace = {alert["orchestrator"]["namespace"]: alert["gatewatch"] for alert in cluster.alert_lines()}
        assert by_namespace["enforce-ns"]["mode"] == "enforce" and by_namespace["enforce-ns"]["mode_source"] == "entry"
        assert by_namespace["warn-ns"]["mode"] == "warn" and by_namespace["warn-ns"]["mode_source"] == "entry"
        assert by_namespace["enforce-ns"]["namespace_lookup"]["status"] == "failed"
        assert cluster.operator.metrics.registry.get_sample_value(
            "gatewatch_lookup_failures_total", {"kind": "namespace"}) >= 2


# --- the harness refuses what kube-apiserver would not store ------------------------------------


def _configuration(**changes: Any) -> dict[str, Any]:
    webhook = {
        "name": "pods.warn.gatewatch.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "failurePolicy": "Ignore", "timeoutSeconds": 5,
        "clientConfig": {"service": {"name": "gw", "namespace": "gw", "path": "/validate/pods/warn"}},
        "namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]},
        **changes,
    }
    return {"webhooks": [webhook]}


@pytest.mark.parametrize(("configuration", "problem"), [
    ({"webhooks": [_configuration()["webhooks"][0]] * 2}, "Duplicate value"),
    (_configuration(name="pods"), "not a fully qualified name"),
    (_configuration(namespaceSelector={"matchExpressions": [{"key": "env", "operator": "In", "values": []}]}),
     "Required value"),
    (_configuration(namespaceSelector={"matchExpressions": [{"key": "env", "operator": "Exists", "values": ["a"]}]}),
     "Forbidden"),
    (_configuration(failurePolicy="Sometimes"), "failurePolicy"),
])
def test_the_harness_refuses_a_configuration_the_api_server_would_not_store(configuration, problem):
    assert any(problem in found for found in validate_webhook_configuration(configuration))
    with pytest.raises(ValueError, match="would refuse"):
        ApiServerHarness(configuration, namespace_labels=lambda _: {})
    assert validate_webhook_configuration(_configuration()) == []


@pytest.mark.parametrize(("path", "mode"), [("pods/enforce", "enforce"), ("pods/warn", "warn"),
                                            ("pods/audit", "audit"), ("pods", None)])
def test_the_path_says_the_entrys_mode(path, mode):
    from gatewatch.admission import check_review

    checked = check_review(ApiServerHarness._review(create_pod("web", "nginx", namespace="team"), uid="u-1"),
                           webhook=path)
    assert (checked.entry_mode.value if checked.entry_mode else None) == mode


@pytest.mark.parametrize("path", ["pods/off", "pods/Enforce", "pods/enforce/x", "enforce/pods"])
def test_paths_of_no_entry_are_not_served(path):
    from gatewatch.admission import UnknownWebhookPath, check_review

    with pytest.raises(UnknownWebhookPath):
        check_review(ApiServerHarness._review(create_pod("web", "nginx", namespace="team"), uid="u-1"), webhook=path)
