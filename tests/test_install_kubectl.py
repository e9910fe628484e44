"""The plain-manifests install, end to end: real ``kubectl apply -f manifests/`` into the API
double, then gatewatch started the way the installed Deployment starts it.

The pod is played by this test: the Deployment's ConfigMap volumes are written
under a temporary root (as the kubelet mounts them), its emptyDir is a directory
there, its ``fieldRef`` env is filled in, and gatewatch runs from the installed
config. Only what a pod gets from its environment is adjusted: file paths
(re-rooted), and the listen address/ports (127.0.0.1, any free port).
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, AsyncIterator

import kmock
import pytest

from kube_emulator import KubeEmulator, api_client_for
from gatewatch.config import Settings, load_settings
from gatewatch.controller import Operator
from test_operator_admission import Cluster, create_pod, eventually, operator_thread, webhook_configuration

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")

MANIFESTS_DIR = Path(__file__).resolve().parents[1] / "manifests"
NAMESPACE = "gatewatch"
DEBUG_IMAGE_WARNING = (
    "gatewatch: [T1610,T1609] Kubernetes Pod Created or Updated with a Common Debug or Base Image (any registry)")


async def kubectl(server: str, tmp_path: Path, *args: str) -> str:
    """Run kubectl as a user would (no kubeconfig, just --server); its stdout, or fail the test."""
    process = await asyncio.create_subprocess_exec(
        "kubectl", "--server", server, *args,
        env={**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 0, f"kubectl {' '.join(args)}: {stderr.decode()}"
    return stdout.decode()


async def kubectl_json(server: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    return json.loads(await kubectl(server, tmp_path, "get", *args, "-o", "json"))


def rerooted(path: str | Path, *, root: Path) -> Path:
    """A path in the container's filesystem, as seen from the test."""
    return root / str(path).lstrip("/")


async def mount_volumes(server: str, tmp_path: Path, *, pod_spec: dict[str, Any], root: Path) -> None:
    """What the kubelet does for gatewatch's container: ConfigMap volumes as files, emptyDirs as directories."""
    (container,) = pod_spec["containers"]
    volumes = {volume["name"]: volume for volume in pod_spec["volumes"]}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        target = rerooted(mount["mountPath"], root=root)
        if "emptyDir" in volume:
            target.mkdir(parents=True, exist_ok=True)
            continue
        assert "configMap" in volume, f"volume {volume['name']}: only configMap and emptyDir are mounted here"
        config_map = await kubectl_json(server, tmp_path, "configmap", "-n", NAMESPACE, volume["configMap"]["name"])
        files = {mount["subPath"]: target} if "subPath" in mount else {
            key: target / key for key in config_map["data"]}
        for key, path in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(config_map["data"][key])


def pod_settings(*, container: dict[str, Any], root: Path) -> Settings:
    """The container's own config file and environment; paths re-rooted, listening where a test can."""
    args = container["args"]
    config_file = rerooted(args[args.index("--config") + 1], root=root)
    environ = {}
    for variable in container.get("env", []):
        if "value" in variable:
            environ[variable["name"]] = variable["value"]
            continue
        # The one reference the kubelet resolves for the chart: the pod's namespace.
        assert variable["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", variable
        environ[variable["name"]] = NAMESPACE
    installed = load_settings(config_file=config_file, environ=environ)
    return load_settings(config_file=config_file, environ=environ, overrides={
        "rules.files": [str(rerooted(path, root=root)) for path in installed.rules.files],
        "certificates.workDir": str(rerooted(installed.certificates.work_dir, root=root)),
        "server.host": "127.0.0.1", "server.port": 0, "server.metricsPort": 0,
    })


async def apply_manifests(server: str, tmp_path: Path) -> str:
    return await kubectl(server, tmp_path, "apply", "-f", str(MANIFESTS_DIR), "--validate=false")


@pytest.fixture
async def installed(tmp_path: Path) -> AsyncIterator[tuple[KubeEmulator, str]]:
    async with KubeEmulator() as k8s, kmock.Server(k8s):
        server = str(k8s.url).rstrip("/")
        output = await apply_manifests(server, tmp_path)
        assert "deployment.apps/gatewatch created" in output, output
        yield k8s, server


async def test_kubectl_apply_installs_every_manifest_and_the_restricted_deployment(
        installed: tuple[KubeEmulator, str], tmp_path: Path):
    _, server = installed
    deployment = await kubectl_json(server, tmp_path, "deployment", "-n", NAMESPACE, "gatewatch")
    pod_spec = deployment["spec"]["template"]["spec"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod_spec["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    namespace = await kubectl_json(server, tmp_path, "namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for kind in ("serviceaccount", "configmap/gatewatch-config", "configmap/gatewatch-rules", "service",
                 "role", "rolebinding", "poddisruptionbudget"):
        name = kind if "/" in kind else f"{kind}/gatewatch"
        assert (await kubectl_json(server, tmp_path, name, "-n", NAMESPACE))["metadata"]["namespace"] == NAMESPACE
    for kind in ("clusterrole/gatewatch", "clusterrolebinding/gatewatch"):
        assert (await kubectl_json(server, tmp_path, kind))["metadata"]["name"] == "gatewatch"
    # The namespace label guard is on by default (manifests/admission-policies.yaml).
    for kind in ("validatingadmissionpolicy", "validatingadmissionpolicybinding"):
        guard = await kubectl_json(server, tmp_path, f"{kind}/gatewatch-namespace-labels")
        assert guard["metadata"]["name"] == "gatewatch-namespace-labels"
    # Applying again is a no-op for what the user wrote (kubectl's three-way merge finds it all stored).
    again = await apply_manifests(server, tmp_path)
    assert "deployment.apps/gatewatch unchanged" in again and "configmap/gatewatch-config unchanged" in again


async def test_gatewatch_runs_from_the_installed_manifests_and_warns_on_a_busybox_pod(
        installed: tuple[KubeEmulator, str], tmp_path: Path):
    k8s, server = installed
    deployment = await kubectl_json(server, tmp_path, "deployment", "-n", NAMESPACE, "gatewatch")
    pod_spec = deployment["spec"]["template"]["spec"]
    root = tmp_path / "pod"
    await mount_volumes(server, tmp_path, pod_spec=pod_spec, root=root)
    settings = pod_settings(container=pod_spec["containers"][0], root=root)
    assert settings.certificates.mode == "self-managed"  # the chart default: gatewatch makes its own

    alerts = io.StringIO()
    operator = Operator(settings, api_client=api_client_for(k8s), alert_stream=alerts, shutdown_timeout=1.0,
                        drain_seconds=0.0)
    async with operator_thread(operator) as running:
        await eventually(lambda: operator.readiness.ready or running.done(), timeout=120, what="readiness")
        running.raise_startup_error()
        cluster = Cluster(k8s=k8s, operator=operator, alerts=alerts, rules_file=Path(settings.rules.files[0]),
                          tls_dir=Path(settings.certificates.work_dir), running=running)

        secret = await kubectl_json(server, tmp_path, "secret", "-n", NAMESPACE, "gatewatch-tls")
        assert {"tls.crt", "tls.key", "ca.crt"} <= set(secret["data"])
        webhooks = webhook_configuration(cluster)["webhooks"]
        assert webhooks
        for webhook in webhooks:
            # Fail closed where gatewatch enforces, open elsewhere; workloads always open (warnings only).
            workload = not webhook["rules"][0]["resources"][0].startswith("pods")
            expected = "Fail" if ".enforce." in webhook["name"] and not workload else "Ignore"
            assert webhook["failurePolicy"] == expected, webhook["name"]
            assert webhook["timeoutSeconds"] == 5, webhook["name"]
            assert webhook["clientConfig"]["service"]["namespace"] == NAMESPACE
            assert webhook["clientConfig"]["service"]["name"] == "gatewatch"
            assert webhook["clientConfig"]["service"]["port"] == 443
            if webhook["rules"][0]["scope"] == "Cluster":
                # nodes/proxy: the API server applies no namespaceSelector to a node.
                assert webhook["namespaceSelector"] == {}, webhook["name"]
                continue
            (name_expression,) = [expression for expression in webhook["namespaceSelector"]["matchExpressions"]
                                  if expression["key"] == "kubernetes.io/metadata.name"]
            assert name_expression["operator"] == "NotIn"
            assert {"gatewatch", "kube-system"} <= set(name_expression["values"])

        # `kubectl create namespace` would send protobuf, which kmock cannot read; a manifest goes as JSON.
        demo = tmp_path / "demo-namespace.yaml"
        demo.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n")
        await kubectl(server, tmp_path, "create", "-f", str(demo), "--validate=false")
        harness = cluster.harness()
        result = await harness.admit(create_pod("dbg", "busybox:1.36", namespace="demo"))
        assert not result.failures, result.failures  # the API server trusted the self-managed certificate
        assert result.allowed and DEBUG_IMAGE_WARNING + " (medium)" in result.warnings, result.warnings
        await eventually(lambda: cluster.events() and cluster.alert_lines(), what="Event and alert")
        assert cluster.events()[0]["metadata"]["namespace"] == "demo"

        # gatewatch's own namespace is never sent to it (the selector keys on the name label the API server adds).
        own = await harness.admit(create_pod("dbg", "busybox:1.36", namespace=NAMESPACE))
        assert own.allowed and own.called == [] and own.warnings == []
