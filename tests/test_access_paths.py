"""pods/portforward, pods/proxy and nodes/proxy: registered, sent as kube-apiserver sends them,
evaluated against the default rules (issue #9 item 7).

The operator end to end as in test_operator_admission.py (kmock as the API, the harness as
kube-apiserver, ``connect_request`` building the CONNECT the API server makes of each URL);
replay of the same calls' audit events; Elastic's own nodes/proxy rule, read from the corpus,
against both documents.
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from apiserver_harness import add_pod, connect_request
from shared_corpus import ELASTIC_RULES
from test_operator_admission import Cluster, eventually, running_cluster, webhook_configuration

from gatewatch.admission import WEBHOOK_ROUTES
from gatewatch.documents import document_from_admission_review, document_from_audit_event
from gatewatch.engine import RuleEngine
from gatewatch.kql import compile_query
from gatewatch.rules import load_rules

NODE_EXEC_URL = "/api/v1/nodes/node-1/proxy/exec/enforce-ns/web/c0?command=id&output=1&error=1"
# The shared corpus is read at test time, never copied.
ELASTIC_NODE_PROXY_RULE = ELASTIC_RULES / "privilege_escalation_api_proxy_to_node.toml"


def packaged_rules_with_the_test_rules(tmp_path: Path) -> dict[str, Any]:
    # running_cluster writes its test rules to tmp_path/rules.yaml; the default rules come on top.
    return {"files": [str(tmp_path / "rules.yaml")], "packaged": True, "reloadIntervalSeconds": 0.1,
            "configMapName": "team-rules"}


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path, rules=packaged_rules_with_the_test_rules(tmp_path)) as running:
        yield running


def rule_ids(alerts: list[dict[str, Any]]) -> set[str]:
    return {alert["rule"]["id"] for alert in alerts}


# --- what the API server sends ------------------------------------------------------------------


def test_the_api_server_sends_each_access_path_as_a_connect_with_its_options():
    node = connect_request(NODE_EXEC_URL)
    assert (node.operation, node.resource, node.subresource, node.namespace, node.name) == (
        "CONNECT", "nodes", "proxy", None, "node-1")
    # The kubelet's exec command is in the query: not part of NodeProxyOptions, never at admission.
    assert node.object == {"kind": "NodeProxyOptions", "apiVersion": "v1", "path": "/exec/enforce-ns/web/c0"}
    forward = connect_request("/api/v1/namespaces/warn-ns/pods/web/portforward?ports=8080&ports=9090")
    assert forward.object == {"kind": "PodPortForwardOptions", "apiVersion": "v1", "ports": [8080, 9090]}
    # kubectl port-forward names its ports in SPDY stream headers, not in the URL.
    assert connect_request("/api/v1/namespaces/warn-ns/pods/web/portforward").object == {
        "kind": "PodPortForwardOptions", "apiVersion": "v1"}
    proxy = connect_request("/api/v1/namespaces/warn-ns/pods/web:8080/proxy/admin/?token=x")
    assert (proxy.name, proxy.object["path"]) == ("web:8080", "/admin/")


# --- the webhook configuration ------------------------------------------------------------------


async def test_nodes_proxy_is_registered_cluster_scoped_and_no_namespace_opts_out(cluster: Cluster):
    webhooks = webhook_configuration(cluster)["webhooks"]
    # One entry only: with no namespace, every per-mode entry would be called. Its mode is the
    # strongest the configuration gives (here the default, warn), and so is its path.
    (node,) = [webhook for webhook in webhooks if webhook["name"].startswith("nodes-proxy.")]
    assert node["name"] == "nodes-proxy.warn.gatewatch.io"
    assert node["clientConfig"]["service"]["path"] == "/validate/nodes-proxy/warn"
    assert node["rules"] == [{
        "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CONNECT"], "resources": ["nodes/proxy"],
        "scope": "Cluster"}]
    assert node["namespaceSelector"] == {}  # the API server would not apply one
    for name, resource in (("pods-portforward", "pods/portforward"), ("pods-proxy", "pods/proxy")):
        entries = [webhook for webhook in webhooks if webhook["name"].startswith(f"{name}.")]
        assert entries and all(entry["rules"][0]["resources"] == [resource] for entry in entries)
        assert all(entry["rules"][0]["scope"] == "Namespaced" for entry in entries)
    harness = cluster.harness()
    # kube-system stays out of pods/portforward (the namespaceSelector) ...
    ignored = await harness.admit(connect_request("/api/v1/namespaces/kube-system/pods/web/portforward"))
    assert ignored.called == []
    # ... but a node has no namespace: its entry is always called, once.
    called = await harness.admit(connect_request("/api/v1/nodes/node-1/proxy/pods"))
    assert called.called == ["nodes-proxy.warn.gatewatch.io"]


def test_rules_lint_knows_every_reviewed_resource_and_subresource():
    from gatewatch.rules.lint import _ADMISSION_VALUES

    # A workload's template is evaluated as the Pod it creates: its document's resource is pods.
    assert set(_ADMISSION_VALUES["kubernetes.audit.objectRef.resource"][0]) == {
        r.resource for r in WEBHOOK_ROUTES if not r.pod_template}
    assert set(_ADMISSION_VALUES["kubernetes.audit.objectRef.subresource"][0]) == {
        r.subresource for r in WEBHOOK_ROUTES if r.subresource}


# --- evaluation ---------------------------------------------------------------------------------


async def test_kubelet_exec_through_nodes_proxy_is_reviewed_in_the_default_mode_as_a_warning(cluster: Cluster):
    result = await cluster.harness().admit(connect_request(NODE_EXEC_URL))
    # The namespace labelled enforce does not count for a node: the configuration's strongest mode (warn).
    assert result.allowed and result.called == ["nodes-proxy.warn.gatewatch.io"]
    # One warning: the broader kubelet-API rule leaves the streaming endpoints to this one.
    assert result.warnings == [
        "gatewatch: [T1609,T1611] Kubernetes Command Execution through the Kubelet API (nodes/proxy) (high)"]
    await eventually(lambda: "gatewatch-node-proxy-kubelet-exec" in rule_ids(cluster.alert_lines()), what="alert")
    alert = next(alert for alert in cluster.alert_lines() if alert["rule"]["id"] == "gatewatch-node-proxy-kubelet-exec")
    assert alert["kubernetes"]["audit"]["requestURI"] == "/api/v1/nodes/node-1/proxy/exec/enforce-ns/web/c0"
    assert alert["gatewatch"]["mode"] == "warn" and alert["gatewatch"]["mode_source"] == "cluster"
    assert cluster.events() == []  # a node has no namespace for an Event


async def test_kubelet_exec_is_denied_when_any_namespace_is_enforced_by_configuration(tmp_path: Path):
    namespaces = {"modes": {"audit-ns": "audit", "payments": "enforce"}}
    async with running_cluster(tmp_path, rules=packaged_rules_with_the_test_rules(tmp_path),
                               namespaces=namespaces) as cluster:
        harness = cluster.harness()
        result = await harness.admit(connect_request(NODE_EXEC_URL))
        assert not result.allowed and result.code == 403
        assert "gatewatch-node-proxy-kubelet-exec" in result.message
        # Monitoring paths are evaluated and left alone.
        metrics = await harness.admit(connect_request("/api/v1/nodes/node-1/proxy/metrics/cadvisor"))
        assert metrics.allowed and metrics.warnings == [] and metrics.called == ["nodes-proxy.enforce.gatewatch.io"]
        # Reading pod specs through the kubelet: warned, not denied (action warn).
        pods = await harness.admit(connect_request("/api/v1/nodes/node-1/proxy/pods"))
        assert pods.allowed
        assert any("Kubelet API Reached through nodes/proxy" in warning for warning in pods.warnings)


async def test_port_forward_is_warned_with_its_ports_and_an_event(cluster: Cluster):
    add_pod(cluster.k8s, "enforce-ns", "db", images=["postgres:16"], labels={"app": "db"})
    result = await cluster.harness().admit(
        connect_request("/api/v1/namespaces/enforce-ns/pods/db/portforward?ports=5432"))
    # The rule's action is warn: even an enforce namespace is only warned.
    assert result.allowed and result.called == ["pods-portforward.enforce.gatewatch.io"]
    assert result.warnings == ["gatewatch: [T1609] Kubernetes Port-Forward to Pod (low)"]
    await eventually(lambda: cluster.events() and cluster.alert_lines(), what="Event and alert")
    (event,) = cluster.events()
    assert event["reason"] == "PortForwardWarned" and event["regarding"]["name"] == "db"
    assert event["metadata"]["annotations"]["gatewatch.io/operation"] == "portforward"
    (alert,) = cluster.alert_lines()
    assert alert["kubernetes"]["audit"]["requestURI"] == "/api/v1/namespaces/enforce-ns/pods/db/portforward?ports=5432"
    assert alert["gatewatch"]["pod"]["labels"] == {"app": "db"}  # the target pod was looked up


async def test_pod_proxy_is_warned_with_its_path(cluster: Cluster):
    add_pod(cluster.k8s, "warn-ns", "web", images=["nginx:1.27"], labels={"app": "web"})
    # kubectl proxy's form: the pod's name with a scheme and port.
    result = await cluster.harness().admit(
        connect_request("/api/v1/namespaces/warn-ns/pods/https:web:8443/proxy/admin?x=1"))
    assert result.allowed and result.called == ["pods-proxy.warn.gatewatch.io"]
    assert result.warnings == ["gatewatch: [T1609] Kubernetes API Server Proxying Request to Pod (low)"]
    await eventually(lambda: cluster.events() and cluster.alert_lines(), what="Event and alert")
    (event,) = cluster.events()
    assert event["reason"] == "PodProxyWarned" and event["regarding"]["name"] == "web"
    (alert,) = cluster.alert_lines()
    # As the audit log writes it: the name as sent, the path without the query.
    assert alert["kubernetes"]["audit"]["requestURI"] == "/api/v1/namespaces/warn-ns/pods/https:web:8443/proxy/admin"
    assert alert["gatewatch"]["pod"]["labels"] == {"app": "web"}


# --- replay: the audit log's verbs --------------------------------------------------------------


def audit_event(*, verb: str, uri: str, resource: str, subresource: str, name: str,
                namespace: str | None = None, user: str = "mallory") -> dict[str, Any]:
    object_ref = {"resource": resource, "name": name, "subresource": subresource, "apiVersion": "v1"}
    if namespace:
        object_ref["namespace"] = namespace
    return {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "stage": "ResponseStarted",
        "auditID": "a-1", "requestURI": uri, "verb": verb, "user": {"username": user},
        "sourceIPs": ["10.0.0.9"], "objectRef": object_ref,
        "annotations": {"authorization.k8s.io/decision": "allow"},
        "requestReceivedTimestamp": "2026-11-30T10:00:00.000000Z", "stageTimestamp": "2026-11-30T10:00:00.100000Z",
    }


@pytest.mark.parametrize(("event", "rule_id"), [
    # kubectl port-forward: the SPDY POST (create), or over websocket (get).
    (audit_event(verb="create", uri="/api/v1/namespaces/ns/pods/db/portforward", resource="pods",
                 subresource="portforward", name="db", namespace="ns"), "gatewatch-pod-port-forward"),
    (audit_event(verb="get", uri="/api/v1/namespaces/ns/pods/db/portforward", resource="pods",
                 subresource="portforward", name="db", namespace="ns"), "gatewatch-pod-port-forward"),
    (audit_event(verb="update", uri="/api/v1/namespaces/ns/pods/web/proxy/admin", resource="pods",
                 subresource="proxy", name="web", namespace="ns"), "gatewatch-pod-proxy"),
    # The kubelet exec over websocket: a GET, so verb get; the audit log keeps the query.
    (audit_event(verb="get", uri=NODE_EXEC_URL, resource="nodes", subresource="proxy", name="node-1"),
     "gatewatch-node-proxy-kubelet-exec"),
    (audit_event(verb="create", uri="/api/v1/nodes/node-1/proxy/run/ns/web/c0?cmd=id", resource="nodes",
                 subresource="proxy", name="node-1"), "gatewatch-node-proxy-kubelet-exec"),
])
def test_replayed_audit_events_match_whatever_the_verb(event: dict[str, Any], rule_id: str):
    engine = RuleEngine(load_rules())
    assert rule_id in {match.rule.id for match in engine.evaluate(document_from_audit_event(event))}


def test_a_system_component_scraping_metrics_through_nodes_proxy_matches_nothing():
    engine = RuleEngine(load_rules())
    event = audit_event(verb="get", uri="/api/v1/nodes/node-1/proxy/metrics", resource="nodes",
                        subresource="proxy", name="node-1", user="system:serviceaccount:monitoring:prometheus")
    assert engine.evaluate(document_from_audit_event(event)) == []


# --- fidelity: Elastic's own rule sees the admission document as it sees the audit log ----------


def admission_review(url: str, *, user: str) -> dict[str, Any]:
    request = connect_request(url, user={"username": user, "groups": ["system:authenticated"]})
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "r-1", "kind": {"group": "", "version": "v1", "kind": request.kind},
        "resource": {"group": "", "version": "v1", "resource": request.resource},
        "subResource": request.subresource, "name": request.name, "operation": "CONNECT",
        "userInfo": dict(request.user), "object": dict(request.object or {}), "dryRun": False,
        **({"namespace": request.namespace} if request.namespace else {}),
    }}


@pytest.mark.parametrize(("path", "user", "fires"), [
    ("/exec/ns/web/c0?command=sh", "mallory", True),
    ("/pods", "mallory", True),
    ("/configz", "mallory", False),
    ("/metrics/cadvisor", "mallory", False),
    ("/pods", "system:node:node-1", False),
])
def test_elastics_nodes_proxy_rule_agrees_on_admission_and_audit_documents(path: str, user: str, fires: bool):
    if not ELASTIC_NODE_PROXY_RULE.exists():
        pytest.skip("the shared corpus is not here")
    query = compile_query(tomllib.loads(ELASTIC_NODE_PROXY_RULE.read_text())["rule"]["query"])
    url = f"/api/v1/nodes/node-1/proxy{path}"
    at_admission = document_from_admission_review(admission_review(url, user=user))
    in_the_log = document_from_audit_event(audit_event(
        verb="get", uri=url, resource="nodes", subresource="proxy", name="node-1", user=user))
    assert query(at_admission) is fires
    assert query(in_the_log) is fires
    assert json.dumps(at_admission["kubernetes"]["audit"]["objectRef"], sort_keys=True) == json.dumps(
        {"apiVersion": "v1", "name": "node-1", "resource": "nodes", "subresource": "proxy"}, sort_keys=True)
