"""The Pod Security packs in the running operator: the harness plays kube-apiserver, kmock the API.

What a user of the default install sees: a Pod that breaks the Baseline
profile is warned about in warn and enforce namespaces (the pack's action is
warn), denied when the pack's action is raised to deny, left alone for an
exempt user; alerts carry the control tag and the offending field.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml

from apiserver_harness import ApiRequest
from test_operator_admission import eventually, running_cluster, webhook_configuration

BASELINE_WARN = {"packs": [{"name": "pod-security-baseline", "action": "warn"}]}


def rules(tmp_path: Path, **rules_settings: Any) -> dict[str, Any]:
    """The ``rules`` settings of the test cluster (its own rule file only), with packs and exemptions."""
    return {"rules": {"files": [str(tmp_path / "rules.yaml")], "packaged": False, "reloadIntervalSeconds": 0.1,
                      "configMapName": "team-rules", **rules_settings}}


def privileged_pod(name: str, *, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "initContainers": [{"name": "setup", "image": "registry.example.com/setup:1",
                                "securityContext": {"privileged": True}}],
            "containers": [{"name": "app", "image": "registry.example.com/app:1"}],
        },
    }


def create(pod: dict[str, Any], *, user: str = "alice@example.com") -> ApiRequest:
    return ApiRequest(operation="CREATE", resource="pods", namespace=pod["metadata"]["namespace"],
                      name=pod["metadata"]["name"], object=pod,
                      user={"username": user, "uid": "u-1", "groups": ["system:authenticated"]})


async def test_baseline_at_warn_warns_in_warn_and_enforce_namespaces_and_alerts_with_the_control(tmp_path: Path):
    async with running_cluster(tmp_path, **rules(tmp_path, **BASELINE_WARN)) as cluster:
        harness = cluster.harness()
        for namespace in ("warn-ns", "enforce-ns"):
            result = await harness.admit(create(privileged_pod("agent", namespace=namespace)))
            assert result.allowed, result.message
            assert result.warnings == ["gatewatch: [T1611,T1610] Pod Security baseline: privileged container (high)"]
        # A Pod that meets Baseline: nothing to say.
        plain = privileged_pod("web", namespace="enforce-ns")
        del plain["spec"]["initContainers"]
        result = await harness.admit(create(plain))
        assert result.allowed and not result.warnings

        await eventually(lambda: len(cluster.alert_lines()) == 2, what="alerts")
        alert = cluster.alert_lines()[-1]
        assert alert["rule"]["id"] == "pss-baseline-privileged-containers"
        assert "Pod Security: baseline/privileged-containers" in alert["tags"]
        assert alert["gatewatch"]["offending_fields"] == ["spec.initContainers[0].securityContext.privileged"]
        assert alert["gatewatch"]["offending_containers"] == ["setup"]
        assert (alert["gatewatch"]["effect"], alert["gatewatch"]["mode"]) == ("warn", "enforce")


async def test_baseline_at_deny_denies_in_enforce_namespaces_only(tmp_path: Path):
    packs = {"packs": [{"name": "pod-security-baseline", "action": "deny"}]}
    async with running_cluster(tmp_path, **rules(tmp_path, **packs)) as cluster:
        harness = cluster.harness()
        denied = await harness.admit(create(privileged_pod("agent", namespace="enforce-ns")))
        assert not denied.allowed
        assert "Pod Security baseline: privileged container" in denied.message
        assert "pss-baseline-privileged-containers" in denied.message
        warned = await harness.admit(create(privileged_pod("agent", namespace="warn-ns")))
        assert warned.allowed and len(warned.warnings) == 1


async def test_exempt_users_namespaces_and_runtime_classes_are_left_alone(tmp_path: Path):
    settings = rules(tmp_path, packs=[{"name": "pod-security-baseline", "action": "deny"}], packExemptions={
        "usernames": ["system:serviceaccount:kube-system:daemon-set-controller"],
        "namespaces": ["warn-ns"], "runtimeClassNames": ["gvisor"]})
    async with running_cluster(tmp_path, **settings) as cluster:
        harness = cluster.harness()
        by_controller = await harness.admit(create(
            privileged_pod("agent", namespace="enforce-ns"), user="system:serviceaccount:kube-system:daemon-set-controller"))
        assert by_controller.allowed and not by_controller.warnings
        in_exempt_namespace = await harness.admit(create(privileged_pod("agent", namespace="warn-ns")))
        assert in_exempt_namespace.allowed and not in_exempt_namespace.warnings
        sandboxed = privileged_pod("agent", namespace="enforce-ns")
        sandboxed["spec"]["runtimeClassName"] = "gvisor"
        assert (await harness.admit(create(sandboxed))).allowed
        # Anyone else, anywhere else: denied.
        assert not (await harness.admit(create(privileged_pod("agent", namespace="enforce-ns")))).allowed
        # The pack's exemptions do not touch the other rules: the test rules' debug-image rule still warns.
        debug = privileged_pod("shell", namespace="warn-ns")
        debug["spec"] = {"containers": [{"name": "c", "image": "busybox"}]}
        assert (await harness.admit(create(debug))).warnings


async def test_an_image_update_is_evaluated_as_the_whole_pod(tmp_path: Path):
    async with running_cluster(tmp_path, **rules(tmp_path, **BASELINE_WARN)) as cluster:
        harness = cluster.harness()
        old = privileged_pod("agent", namespace="warn-ns")
        new = privileged_pod("agent", namespace="warn-ns")
        new["spec"]["containers"][0]["image"] = "registry.example.com/app:2"
        result = await harness.admit(ApiRequest(
            operation="UPDATE", resource="pods", namespace="warn-ns", name="agent", object=new, old_object=old,
            options={"kind": "PatchOptions", "apiVersion": "meta.k8s.io/v1"}))
        assert result.allowed
        assert result.warnings == ["gatewatch: [T1611,T1610] Pod Security baseline: privileged container (high)"]


# --- workloads: a warning for the Pod template, never a denial ---------------------------------

WORKLOADS = {
    "Deployment": ("apps", "deployments", ("spec", "template")),
    "StatefulSet": ("apps", "statefulsets", ("spec", "template")),
    "DaemonSet": ("apps", "daemonsets", ("spec", "template")),
    "ReplicaSet": ("apps", "replicasets", ("spec", "template")),
    "Job": ("batch", "jobs", ("spec", "template")),
    "CronJob": ("batch", "cronjobs", ("spec", "jobTemplate", "spec", "template")),
    "ReplicationController": ("", "replicationcontrollers", ("spec", "template")),
}


def workload(kind: str, pod: dict[str, Any]) -> dict[str, Any]:
    group, _, path = WORKLOADS[kind]
    spec: dict[str, Any] = {"metadata": {"labels": {"app": "agent"}}, "spec": pod["spec"]}
    for key in reversed(path[1:]):  # spec.template, or spec.jobTemplate.spec.template
        spec = {key: spec}
    return {"apiVersion": f"{group}/v1" if group else "v1", "kind": kind,
            "metadata": {"name": "agent", "namespace": pod["metadata"]["namespace"]}, "spec": spec}


def apply(kind: str, obj: dict[str, Any], *, operation: str = "CREATE", old: dict[str, Any] | None = None) -> ApiRequest:
    group, resource, _ = WORKLOADS[kind]
    return ApiRequest(operation=operation, resource=resource, group=group, kind=kind,
                      namespace=obj["metadata"]["namespace"], name=obj["metadata"]["name"], object=obj, old_object=old)


TEMPLATE_WARNING = "gatewatch: pod template: [T1611,T1610] Pod Security baseline: privileged container (high)"


async def test_every_workload_kind_gets_a_warning_for_its_template_in_warn_and_enforce_never_a_denial(tmp_path: Path):
    packs = {"packs": [{"name": "pod-security-baseline", "action": "deny"}]}
    async with running_cluster(tmp_path, **rules(tmp_path, **packs)) as cluster:
        harness = cluster.harness()
        for kind in WORKLOADS:
            for namespace in ("warn-ns", "enforce-ns"):
                result = await harness.admit(apply(kind, workload(kind, privileged_pod("agent", namespace=namespace))))
                assert result.allowed, (kind, namespace, result.message)
                assert result.warnings == [TEMPLATE_WARNING], (kind, namespace)
                assert result.called == [f"{WORKLOADS[kind][1]}.{namespace.removesuffix('-ns')}.gatewatch.io"]
            # Audit mode: no warning (the Pods it creates get their Events and alerts).
            quiet = await harness.admit(apply(kind, workload(kind, privileged_pod("agent", namespace="audit-ns"))))
            assert quiet.allowed and not quiet.warnings
        # An update warns again, as Pod Security Admission does.
        deployment = workload("Deployment", privileged_pod("agent", namespace="enforce-ns"))
        updated = await harness.admit(apply("Deployment", deployment, operation="UPDATE", old=deployment))
        assert updated.allowed and updated.warnings == [TEMPLATE_WARNING]
        # The Pod the Deployment's ReplicaSet then creates is denied: enforcement happens there.
        pod = privileged_pod("agent-7d9c6b5f4-x2x8l", namespace="enforce-ns")
        denied = await harness.admit(create(pod, user="system:serviceaccount:kube-system:replicaset-controller"))
        assert not denied.allowed
        # Templates make no Events and no alerts.
        await asyncio.sleep(0.3)
        assert [alert["orchestrator"]["resource"]["type"] for alert in cluster.alert_lines()] == ["pods"]


async def test_workload_entries_fail_open_whatever_the_failure_policy(tmp_path: Path):
    async with running_cluster(tmp_path, **rules(tmp_path, **BASELINE_WARN)) as cluster:
        configuration = webhook_configuration(cluster)
        policies = {entry["name"]: entry["failurePolicy"] for entry in configuration["webhooks"]}
        workload_entries = {f"{resource}.{mode}.gatewatch.io" for _, resource, _ in WORKLOADS.values()
                            for mode in ("enforce", "warn")}
        assert workload_entries <= set(policies)
        assert {policies[name] for name in workload_entries} == {"Ignore"}
        assert policies["pods.enforce.gatewatch.io"] == "Fail"  # enforce namespaces fail closed
        assert not any(name.startswith("cronjobs.audit.") for name in policies)  # nothing to say there
        rules_of = {entry["name"]: entry["rules"] for entry in configuration["webhooks"]}
        assert rules_of["cronjobs.warn.gatewatch.io"] == [{"apiGroups": ["batch"], "apiVersions": ["v1"],
                                                      "operations": ["CREATE", "UPDATE"], "resources": ["cronjobs"],
                                                      "scope": "Namespaced"}]


async def test_the_webhook_agrees_with_gatewatch_check_on_workload_templates(tmp_path: Path):
    # Every manifest of examples/pod-security/, applied through the API server: the rules the
    # webhook warns about are the rules `gatewatch check` reports at warn or deny.
    from click.testing import CliRunner

    from gatewatch.cli import main

    examples = Path(__file__).resolve().parents[1] / "examples" / "pod-security"
    packs = {"packs": [{"name": "pod-security-baseline", "action": "deny"},
                       {"name": "pod-security-restricted", "action": "warn"}], "packaged": True}
    async with running_cluster(tmp_path, **rules(tmp_path, **packs)) as cluster:
        harness = cluster.harness()
        for manifest in sorted(examples.glob("*.yaml")):
            obj = yaml.safe_load(manifest.read_text())
            obj["metadata"]["namespace"] = "warn-ns"
            result = await harness.admit(apply(obj["kind"], obj))
            assert result.allowed
            warned = sorted(line.split("] ", 1)[1].rsplit(" (", 1)[0] for line in result.warnings)
            report = CliRunner().invoke(main, [
                "check", "--format", "json", "--rules", str(tmp_path / "rules.yaml"), "--rules",
                str(Path(__file__).resolve().parents[1] / "rules.yaml"),
                "--pack", "pod-security-baseline=deny", "--pack", "pod-security-restricted=warn", str(manifest)])
            checked = sorted(alert["rule"]["name"] for alert in map(json.loads, report.stdout.splitlines())
                             if alert["gatewatch"]["action"] in ("warn", "deny"))
            assert warned == checked, manifest.name
