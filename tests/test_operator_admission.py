"""The operator end to end: kmock as the Kubernetes API, the harness as kube-apiserver.

gatewatch runs (kopf, the HTTPS webhook server, Events, alerts) on this test's
event loop; the harness reads the ValidatingWebhookConfiguration gatewatch
registered and calls the webhook as the API server would.
"""
from __future__ import annotations

import asyncio
import contextlib
import base64
import datetime
import gc
import io
import ipaddress
import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import kmock
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from apiserver_harness import AdmissionProxy, ApiRequest, ApiServerHarness, add_namespace, add_pod, namespace_labels
from kube_emulator import VALIDATING_WEBHOOK_CONFIGURATIONS, KubeEmulator, api_client_for, read_object
from supervision import eventually  # re-exported: other test modules take it from here
from gatewatch.admission import WEBHOOK_ROUTES
from gatewatch.config import Settings, load_settings
from gatewatch.controller import YOUNG_GENERATION_THRESHOLD, Operator
from gatewatch.metrics import HealthServer, Metrics, Readiness

RULES = """\
version: 1
ruleset: test
rules:
  - id: debug-image
    name: Pod Created From A Debug Image
    description: A pod runs a debug or base image often used for throwaway containers.
    severity: low
    risk_score: 21
    action: warn
    query: >-
      kubernetes.audit.objectRef.resource:"pods" and kubernetes.audit.verb:"create"
      and kubernetes.audit.requestObject.spec.containers.image:(busybox* or alpine*)
    threat:
      - framework: MITRE ATT&CK
        tactic: {id: TA0002, name: Execution, reference: "https://attack.mitre.org/tactics/TA0002/"}
        techniques:
          - {id: T1610, name: Deploy Container, reference: "https://attack.mitre.org/techniques/T1610/"}
  - id: user-exec
    name: Kubernetes User Exec into Pod
    description: A user opens a shell in a pod.
    severity: medium
    risk_score: 47
    action: deny
    query: >-
      kubernetes.audit.verb:"create" and kubernetes.audit.objectRef.resource:"pods"
      and kubernetes.audit.objectRef.subresource:"exec"
    exceptions:
      - 'user.name:"break-glass@example.com"'
    threat:
      - framework: MITRE ATT&CK
        tactic: {id: TA0002, name: Execution, reference: "https://attack.mitre.org/tactics/TA0002/"}
        techniques:
          - {id: T1609, name: Container Administration Command, reference: "https://attack.mitre.org/techniques/T1609/"}
  - id: ephemeral-debug
    name: Debug Container Added To A Pod
    description: kubectl debug adds an ephemeral container to a running pod.
    severity: medium
    risk_score: 47
    action: warn
    query: kubernetes.audit.objectRef.subresource:"ephemeralcontainers"
  - id: host-pid
    name: Pod Shares The Host PID Namespace
    description: A pod that sees every process on its node.
    severity: high
    risk_score: 73
    action: deny
    query: kubernetes.audit.verb:"create" and kubernetes.audit.requestObject.spec.hostPID:true
    threat:
      - framework: MITRE ATT&CK
        tactic: {id: TA0004, name: Privilege Escalation, reference: "https://attack.mitre.org/tactics/TA0004/"}
        techniques:
          - {id: T1611, name: Escape to Host, reference: "https://attack.mitre.org/techniques/T1611/"}
"""

EXTRA_RULE = """\
version: 1
ruleset: extra
rules:
  - id: attach
    name: Kubernetes User Attach to Pod
    description: A user attaches to a running container.
    severity: medium
    risk_score: 47
    action: deny
    query: kubernetes.audit.objectRef.subresource:"attach"
"""

SERVICE_DNS = "gatewatch.gatewatch.svc"


# --- TLS material, as cert-manager would mount it (certificates.mode: files) -----------------


def make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def write_serving_files(directory: Path, *, ca_name: str, days: int = 1) -> datetime.datetime:
    """CA + serving certificate for the Service DNS name and 127.0.0.1; returns the expiry."""
    ca, ca_key = make_ca(ca_name)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    expiry = (now + datetime.timedelta(days=days)).replace(microsecond=0)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVICE_DNS)]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(expiry)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(SERVICE_DNS), x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "tls.key": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        "tls.crt": certificate.public_bytes(serialization.Encoding.PEM),
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
    }
    # Written aside and renamed, as the kubelet swaps a mounted Secret: never half a file.
    for name, data in files.items():
        (directory / f".{name}.new").write_bytes(data)
    for name in files:
        os.replace(directory / f".{name}.new", directory / name)
    return expiry


# --- the running operator ---------------------------------------------------------------------


@dataclass
class Cluster:
    k8s: KubeEmulator
    operator: Operator
    alerts: io.StringIO
    rules_file: Path
    tls_dir: Path
    running: "OperatorThread"

    def harness(self, *, client_certificate: tuple[Path, Path] | None = None) -> ApiServerHarness:
        configuration = read_object(self.k8s, VALIDATING_WEBHOOK_CONFIGURATIONS, None, "gatewatch")
        port = self.operator.webhook_port

        def service_address(namespace: str, name: str, service_port: int) -> tuple[str, int]:
            assert (namespace, name, service_port) == ("gatewatch", "gatewatch", 443)
            return "127.0.0.1", port

        return ApiServerHarness(
            configuration, namespace_labels=namespace_labels(self.k8s), service_address=service_address,
            client_certificate=client_certificate,
        )

    def alert_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.alerts.getvalue().splitlines()]

    def events(self) -> list[dict[str, Any]]:
        return [
            obj.raw for (resource, _, _), obj in self.k8s.objects.items()
            if resource.plural == "events" and not obj.deleted
        ]


WEBHOOK_TIMEOUT_SECONDS = 30


def settings_for(tmp_path: Path, rules_file: Path, tls_dir: Path, **overrides: Any) -> Settings:
    config = {
        "mode": "warn",
        "namespace": "gatewatch",
        "rules": {"files": [str(rules_file)], "packaged": False, "packs": [], "reloadIntervalSeconds": 0.1,
                  "configMapName": "team-rules"},
        "server": {"host": "127.0.0.1", "port": 0, "metricsPort": 0},
        "certificates": {
            "mode": "files", "certFile": str(tls_dir / "tls.crt"), "keyFile": str(tls_dir / "tls.key"),
            "caFile": str(tls_dir / "ca.crt"),
        },
        # The longest wait the API server allows, and pod lookups to match: here only a hang may
        # fail a review, never a loaded machine (the suite runs beside others on shared cores).
        "webhook": {"failurePolicy": "Fail", "timeoutSeconds": WEBHOOK_TIMEOUT_SECONDS},
        "podLookup": {"timeoutSeconds": WEBHOOK_TIMEOUT_SECONDS / 3},
        "newTerms": {"configMapName": "gatewatch-new-terms"},
        # A namespace label may only tighten the default (warn); a looser mode is the config's word.
        "namespaces": {"modes": {"audit-ns": "audit"}},
    }
    config.update(overrides)
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return load_settings(config_file=path, environ={})


@contextlib.asynccontextmanager
async def running_cluster(
    tmp_path: Path, *, drain_seconds: float = 0.0, operator_options: dict[str, Any] | None = None,
    **overrides: Any
) -> AsyncIterator[Cluster]:
    """The API double with a few namespaces, and gatewatch serving against it.

    ``drain_seconds``: how long gatewatch keeps answering after stop (0: tests stop at once);
    ``operator_options``: more ``Operator`` arguments (e.g. ``task_sleep``);
    ``overrides``: top-level config keys replacing the test defaults.
    """
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    tls_dir = tmp_path / "tls"
    write_serving_files(tls_dir, ca_name="test CA 1")
    async with KubeEmulator() as k8s, kmock.Server(k8s):
        for name, mode in {"warn-ns": "warn", "enforce-ns": "enforce", "audit-ns": "audit"}.items():
            add_namespace(k8s, name, {"gatewatch.io/mode": mode})
        add_namespace(k8s, "kube-system")
        add_namespace(k8s, "gatewatch")
        add_namespace(k8s, "ignored", {"gatewatch.io/ignore": "true"})
        alerts = io.StringIO()
        operator = Operator(
            settings_for(tmp_path, rules_file, tls_dir, **overrides),
            api_client=api_client_for(k8s),
            alert_stream=alerts,
            shutdown_timeout=1.0,
            drain_seconds=drain_seconds,
            certificate_check_interval=0.2,
            **(operator_options or {}),
        )
        async with operator_thread(operator) as running:
            await eventually(lambda: operator.readiness.ready or running.done(), timeout=120, what="readiness")
            running.raise_startup_error()
            yield Cluster(k8s=k8s, operator=operator, alerts=alerts, rules_file=rules_file, tls_dir=tls_dir,
                          running=running)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path) as running:
        yield running


class OperatorThread:
    """gatewatch on its own event loop in a thread, as in its own process.

    kopf cancels every task created on its loop after it started when it stops,
    which would include pytest's own fixture tasks; a loop of its own avoids that.
    """

    def __init__(self, operator: Operator) -> None:
        self.stop = threading.Event()  # kopf accepts a threading.Event as its stop flag
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(operator,), name="gatewatch", daemon=True)
        self._thread.start()

    def _main(self, operator: Operator) -> None:
        try:
            asyncio.run(operator.run(stop_flag=self.stop))
        except BaseException as error:  # reported to the test by raise_startup_error()
            self.error = error

    def done(self) -> bool:
        return not self._thread.is_alive()

    def raise_startup_error(self) -> None:
        if self.done():
            raise AssertionError("gatewatch stopped during startup") from self.error

    async def join(self, timeout: float) -> None:
        if self.done():
            return
        self.stop.set()
        # Joined from a worker thread: this loop keeps serving the API double meanwhile.
        await asyncio.to_thread(self._thread.join, timeout)
        assert not self._thread.is_alive(), "gatewatch did not stop"
        if self.error is not None:
            raise self.error


@contextlib.asynccontextmanager
async def operator_thread(operator: Operator) -> AsyncIterator[OperatorThread]:
    running = OperatorThread(operator)
    try:
        yield running
    finally:
        await running.join(timeout=20)


def webhook_configuration(cluster: Cluster) -> dict[str, Any]:
    return read_object(cluster.k8s, VALIDATING_WEBHOOK_CONFIGURATIONS, None, "gatewatch") or {}


def sample(cluster: Cluster, name: str, **labels: str) -> float | None:
    return cluster.operator.metrics.registry.get_sample_value(name, labels)


def reviews_answered(cluster: Cluster) -> float:
    return sum(
        sample.value
        for family in cluster.operator.metrics.registry.collect() if family.name == "gatewatch_admission_reviews"
        for sample in family.samples if sample.name.endswith("_total")
    )


def pod(name: str, *images: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]},
    }


def create_pod(name: str, *images: str, namespace: str, dry_run: bool = False) -> ApiRequest:
    return ApiRequest(operation="CREATE", resource="pods", namespace=namespace, name=name,
                      object=pod(name, *images, namespace=namespace), dry_run=dry_run)


def exec_into(name: str, *, namespace: str, user: str = "alice@example.com") -> ApiRequest:
    return ApiRequest(
        operation="CONNECT", resource="pods", subresource="exec", namespace=namespace, name=name,
        kind="PodExecOptions",
        object={"kind": "PodExecOptions", "apiVersion": "v1", "stdin": True, "tty": True,
                "container": "c0", "command": ["sh"]},
        user={"username": user, "uid": "u-2", "groups": ["system:authenticated"]},
    )


# --- scenarios ----------------------------------------------------------------------------------


async def test_registered_configuration_is_what_the_api_server_needs(cluster: Cluster):
    configuration = webhook_configuration(cluster)
    webhooks = {webhook["name"]: webhook for webhook in configuration["webhooks"]}
    # Per route (a route added to the table is registered too), one webhook per mode a namespace can have:
    # audit (namespaces.modes: audit-ns), enforce (the gatewatch.io/mode label), warn (the default).
    # (A route that never denies, a workload's, has nothing to do in audit namespaces.)
    # A cluster-scoped route (nodes/proxy) gets one, in the strongest mode the configuration gives (warn).
    assert set(webhooks) == {f"{route.handler_id}.{mode}.gatewatch.io"
                             for route in WEBHOOK_ROUTES if route.namespaced
                             for mode in ("enforce", "warn", "audit")
                             if not (route.never_denies and mode == "audit")} | {
        f"{route.handler_id}.warn.gatewatch.io" for route in WEBHOOK_ROUTES if not route.namespaced}
    assert {"pods.warn.gatewatch.io", "pods-exec.enforce.gatewatch.io", "pods-attach.audit.gatewatch.io",
            "pods-ephemeralcontainers.warn.gatewatch.io"} <= set(webhooks)
    exec_hook = webhooks["pods-exec.enforce.gatewatch.io"]
    assert exec_hook["rules"][0]["resources"] == ["pods/exec"]
    assert exec_hook["rules"][0]["operations"] == ["CONNECT"]
    assert exec_hook["clientConfig"]["service"] == {
        "name": "gatewatch", "namespace": "gatewatch", "port": 443, "path": "/validate/pods-exec/enforce"}
    assert base64.b64decode(exec_hook["clientConfig"]["caBundle"]) == (cluster.tls_dir / "ca.crt").read_bytes()
    assert exec_hook["timeoutSeconds"] == WEBHOOK_TIMEOUT_SECONDS and exec_hook["failurePolicy"] == "Fail"
    assert exec_hook["sideEffects"] == "NoneOnDryRun"
    assert webhooks["pods-exec.audit.gatewatch.io"]["namespaceSelector"] == {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["audit-ns"]}]}


async def test_busybox_pod_in_a_warn_namespace_is_allowed_with_a_warning_event_and_alert(cluster: Cluster):
    result = await cluster.harness().admit(create_pod("shell", "busybox:1.36", namespace="warn-ns"))
    assert result.allowed, result
    assert result.warnings == ["gatewatch: [T1610] Pod Created From A Debug Image (low)"]
    await eventually(lambda: cluster.events() and cluster.alert_lines(), what="Event and alert")
    (event,) = cluster.events()
    assert event["regarding"]["name"] == "shell" and event["metadata"]["namespace"] == "warn-ns"
    assert event["metadata"]["annotations"]["gatewatch.io/rule-id"] == "debug-image"
    (alert,) = cluster.alert_lines()
    assert alert["rule"]["id"] == "debug-image"
    assert alert["gatewatch"]["effect"] == "warn" and alert["gatewatch"]["mode"] == "warn"


async def test_a_harmless_pod_gets_no_warning(cluster: Cluster):
    result = await cluster.harness().admit(create_pod("web", "nginx:1.27", namespace="warn-ns"))
    assert result.allowed and result.warnings == [] and result.called == ["pods.warn.gatewatch.io"]
    assert reviews_answered(cluster) == 1


async def test_exec_in_an_enforce_namespace_is_denied_with_403_naming_rule_and_technique(cluster: Cluster):
    add_pod(cluster.k8s, "enforce-ns", "web", images=["nginx:1.27"], labels={"app": "web"})
    result = await cluster.harness().admit(exec_into("web", namespace="enforce-ns"))
    assert not result.allowed
    assert result.code == 403
    assert "Kubernetes User Exec into Pod" in result.message and "T1609" in result.message
    assert "user-exec" in result.message and "exception" in result.message
    await eventually(lambda: cluster.alert_lines(), what="alert")
    (alert,) = cluster.alert_lines()
    assert alert["gatewatch"]["effect"] == "deny" and alert["gatewatch"]["decision"] == "denied"
    assert alert["gatewatch"]["pod"]["labels"] == {"app": "web"}  # the target pod was looked up


async def test_rule_exceptions_apply(cluster: Cluster):
    add_pod(cluster.k8s, "enforce-ns", "web", images=["nginx:1.27"])
    result = await cluster.harness().admit(exec_into("web", namespace="enforce-ns", user="break-glass@example.com"))
    assert result.allowed and result.warnings == []


async def test_exec_in_an_audit_namespace_is_allowed_silently_with_event_and_alert(cluster: Cluster):
    add_pod(cluster.k8s, "audit-ns", "web", images=["nginx:1.27"])
    result = await cluster.harness().admit(exec_into("web", namespace="audit-ns"))
    assert result.allowed and result.warnings == []
    await eventually(lambda: cluster.events() and cluster.alert_lines(), what="Event and alert")
    assert cluster.alert_lines()[0]["gatewatch"]["effect"] == "alert"
    assert cluster.events()[0]["regarding"]["name"] == "web"


async def test_kubectl_debug_adding_an_ephemeral_container_is_reviewed(cluster: Cluster):
    running = add_pod(cluster.k8s, "warn-ns", "web", images=["nginx:1.27"])
    debugged = {**running, "spec": {**running["spec"], "ephemeralContainers": [
        {"name": "debugger", "image": "busybox:1.36", "targetContainerName": "c0"}]}}
    result = await cluster.harness().admit(ApiRequest(
        operation="UPDATE", resource="pods", subresource="ephemeralcontainers", namespace="warn-ns", name="web",
        object=debugged, old_object=running))
    assert result.called == ["pods-ephemeralcontainers.warn.gatewatch.io"]
    assert result.allowed and result.warnings == ["gatewatch: [no ATT&CK id] Debug Container Added To A Pod (medium)"]
    await eventually(lambda: cluster.events(), what="Event")
    assert cluster.events()[0]["reason"] == "EphemeralContainerWarned"


async def test_failed_pod_lookup_is_evaluated_without_it_and_said_in_the_alert(cluster: Cluster):
    result = await cluster.harness().admit(exec_into("ghost", namespace="enforce-ns"))
    assert not result.allowed and result.code == 403  # the rule does not need the pod
    await eventually(lambda: cluster.alert_lines(), what="alert")
    lookup = cluster.alert_lines()[0]["gatewatch"]["pod_lookup"]
    assert lookup["status"] == "failed" and "pod enforce-ns/ghost" in lookup["reason"]


async def test_kube_system_and_gatewatch_are_never_sent_and_the_ignore_label_is_off_by_default(cluster: Cluster):
    harness = cluster.harness()
    for namespace in ("kube-system", "gatewatch"):
        result = await harness.admit(create_pod("shell", "busybox", namespace=namespace))
        assert result.allowed and result.called == [] and result.warnings == []
    assert reviews_answered(cluster) == 0  # not one review reached gatewatch
    # A tenant's gatewatch.io/ignore=true does not take the namespace out.
    labelled = await harness.admit(create_pod("shell", "busybox", namespace="ignored"))
    assert labelled.called == ["pods.warn.gatewatch.io"] and labelled.warnings


async def test_the_ignore_label_opts_out_where_the_platform_team_turned_it_on(tmp_path: Path):
    namespaces = {"modes": {"audit-ns": "audit"}, "ignoreLabel": True}
    async with running_cluster(tmp_path, namespaces=namespaces) as cluster:
        result = await cluster.harness().admit(create_pod("shell", "busybox", namespace="ignored"))
        assert result.allowed and result.called == [] and result.warnings == []


async def dry_runs_then_a_real_request(cluster: Cluster) -> None:
    """A warned and a denied dry run, then the same pod for real (its alert and Event queue behind theirs)."""
    harness = cluster.harness()
    add_pod(cluster.k8s, "enforce-ns", "web", images=["nginx:1.27"])
    warned = await harness.admit(create_pod("shell", "busybox", namespace="warn-ns", dry_run=True))
    assert warned.allowed and warned.warnings == ["gatewatch: [T1610] Pod Created From A Debug Image (low)"]
    denied = await harness.admit(ApiRequest(**{**exec_into("web", namespace="enforce-ns").__dict__, "dry_run": True}))
    assert not denied.allowed and denied.code == 403
    await harness.admit(create_pod("shell", "busybox", namespace="warn-ns"))


async def test_dry_run_gets_the_same_answer_and_no_side_effects(cluster: Cluster):
    await dry_runs_then_a_real_request(cluster)
    # Queues are first in, first out: once the real request's alert and Event are out, a dry
    # run's would have been too. Only the real one's are there.
    await eventually(lambda: cluster.alert_lines() and cluster.events(), what="alert and Event")
    (alert,) = cluster.alert_lines()
    assert alert["rule"]["id"] == "debug-image" and "dry_run" not in alert["gatewatch"]
    # One Event, about the real pod and counted once: neither dry run left one (the warned one
    # would have merged into this Event's series, the denied exec would regard pod "web").
    (event,) = cluster.events()
    assert event["regarding"]["name"] == "shell" and event.get("series") is None


async def test_with_alerts_dry_run_a_dry_run_leaves_a_tagged_alert_and_still_no_event(tmp_path: Path):
    async with running_cluster(tmp_path, alerts={"stdout": True, "dryRun": True}) as cluster:
        await dry_runs_then_a_real_request(cluster)
        await eventually(lambda: len(cluster.alert_lines()) == 3 and cluster.events(), what="alerts and Event")
        alerts = cluster.alert_lines()
        assert [(a["rule"]["id"], a["gatewatch"].get("dry_run")) for a in alerts] == [
            ("debug-image", True), ("user-exec", True), ("debug-image", None)]
        assert len(cluster.events()) == 1  # the real request's only


def big_pod(name: str, *, namespace: str, annotation_bytes: int) -> dict[str, Any]:
    """A Pod with one large annotation (e.g. a tool's embedded config), over aiohttp's default 1 MiB."""
    manifest = pod(name, "busybox:1.36", namespace=namespace)
    manifest["metadata"]["annotations"] = {"example.com/config": "x" * annotation_bytes}
    return manifest


async def test_a_review_over_one_mib_is_evaluated(cluster: Cluster):
    request = ApiRequest(operation="CREATE", resource="pods", namespace="warn-ns", name="big",
                         object=big_pod("big", namespace="warn-ns", annotation_bytes=1_200_000))
    result = await cluster.harness().admit(request)
    assert not result.failures, result.failures
    assert result.allowed and result.warnings == ["gatewatch: [T1610] Pod Created From A Debug Image (low)"]
    assert sample(cluster, "gatewatch_admission_reviews_oversized_total") == 0


async def test_a_review_over_the_limit_is_refused_and_counted_never_allowed(tmp_path: Path):
    # Pod CREATE reviews are read up to objectBytes plus 256 KiB (for the rest of the review).
    server = {"host": "127.0.0.1", "port": 0, "metricsPort": 0, "limits": {"objectBytes": 64 * 1024}}
    async with running_cluster(tmp_path, server=server) as cluster:
        request = ApiRequest(operation="CREATE", resource="pods", namespace="warn-ns", name="huge",
                             object=big_pod("huge", namespace="warn-ns", annotation_bytes=330 * 1024))
        result = await cluster.harness().admit(request)  # failurePolicy: Fail
        assert not result.allowed and result.failures
        assert sample(cluster, "gatewatch_admission_reviews_oversized_total") == 1
        assert reviews_answered(cluster) == 0  # never evaluated


async def test_on_stop_readiness_fails_first_while_reviews_are_still_answered(tmp_path: Path):
    async with running_cluster(tmp_path, drain_seconds=3.0) as cluster:
        harness = cluster.harness()
        readyz = f"http://127.0.0.1:{cluster.operator.metrics_port}/readyz"
        cluster.running.stop.set()  # as on SIGTERM
        await eventually(lambda: not cluster.operator.readiness.ready, what="not ready")
        async with aiohttp.ClientSession() as session, session.get(readyz) as ready:
            assert ready.status == 503 and "shutting down" in await ready.text()
        result = await harness.admit(create_pod("shell", "busybox", namespace="warn-ns"))
        assert not result.failures, result.failures
        assert result.allowed and result.warnings == ["gatewatch: [T1610] Pod Created From A Debug Image (low)"]
        await cluster.running.join(timeout=20)
        # The drained review's alert and Event still went out before gatewatch stopped.
        assert [alert["rule"]["id"] for alert in cluster.alert_lines()] == ["debug-image"]
        assert len(cluster.events()) == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/validate/nonexistent", None),  # kopf itself would answer allowed: true
        ("/validate/pods-exec", "create-pod"),  # a Pod CREATE sent to the exec webhook
        ("/validate/pods", "connect-pod"),  # an operation the handler is not registered for
        ("/validate/pods", "garbage"),
        ("/elsewhere", None),
    ],
)
async def test_reviews_gatewatch_does_not_take_get_an_error_never_an_allow(cluster: Cluster, path, body):
    review = ApiServerHarness._review(create_pod("shell", "busybox", namespace="warn-ns"), uid="u-1")
    if body == "create-pod":
        pass
    elif body == "connect-pod":
        review["request"]["operation"] = "CONNECT"
    elif body == "garbage":
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 3}}
    ca = (cluster.tls_dir / "ca.crt").read_text()
    import ssl

    context = ssl.create_default_context(cadata=ca)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"https://127.0.0.1:{cluster.operator.webhook_port}{path}",
                                json=review, ssl=context) as response:
            text = await response.text()
    assert response.status in (400, 404, 405), text
    assert '"allowed": true' not in text


async def test_rules_file_update_applies_and_a_broken_update_keeps_the_old_rules(cluster: Cluster):
    harness = cluster.harness()
    add_pod(cluster.k8s, "enforce-ns", "web", images=["nginx:1.27"])
    attach = ApiRequest(operation="CONNECT", resource="pods", subresource="attach", namespace="enforce-ns",
                        name="web", kind="PodAttachOptions",
                        object={"kind": "PodAttachOptions", "apiVersion": "v1", "stdin": True})
    assert (await harness.admit(attach)).allowed

    cluster.rules_file.write_text(RULES + EXTRA_RULE.split("rules:\n", 1)[1])
    await eventually(lambda: sample(cluster, "gatewatch_rules_loaded") == 5, what="reload")
    denied = await harness.admit(attach)
    assert not denied.allowed and "Kubernetes User Attach to Pod" in denied.message

    cluster.rules_file.write_text(RULES + "  - id: broken\n    name: [\n")
    await eventually(lambda: sample(cluster, "gatewatch_rules_reload_failures_total") == 1, what="rejection")
    assert not (await harness.admit(attach)).allowed  # the last good rules stay
    assert cluster.operator.readiness.ready
    # The rejection is an Event on the configured rules ConfigMap (rules.configMapName), naming the file.
    await eventually(lambda: any(e["reason"] == "RulesRejected" for e in cluster.events()), what="RulesRejected")
    (rejected,) = [e for e in cluster.events() if e["reason"] == "RulesRejected"]
    assert rejected["regarding"]["kind"] == "ConfigMap" and rejected["regarding"]["name"] == "team-rules"
    assert rejected["metadata"]["namespace"] == "gatewatch" and cluster.rules_file.name in rejected["note"]


async def test_events_api_failing_leaves_reviews_alone_and_counts_drops(cluster: Cluster):
    cluster.k8s["post", "/apis/events.k8s.io/v1/namespaces/warn-ns/events"] << 500 << {
        "kind": "Status", "code": 500, "message": "events are broken"}
    harness = cluster.harness()
    for index in range(3):
        result = await harness.admit(create_pod(f"shell-{index}", "busybox", namespace="warn-ns"))
        assert result.allowed and len(result.warnings) == 1
    await eventually(lambda: (sample(cluster, "gatewatch_queue_dropped_total", queue="events") or 0) >= 3,
                     what="drops")
    await eventually(lambda: len(cluster.alert_lines()) == 3, what="alerts")  # alerts unaffected


async def test_not_ready_until_rules_are_loaded_and_the_webhook_serves():
    readiness = Readiness()
    health = HealthServer(metrics=Metrics(), readiness=readiness, host="127.0.0.1", port=0)
    await health.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{health.port}"
            readiness.rules_loaded = True
            async with session.get(f"{url}/readyz") as ready, session.get(f"{url}/healthz") as live:
                assert (ready.status, live.status) == (503, 200)
                assert "webhook server not listening" in await ready.text()
            readiness.webhook_serving = True
            async with session.get(f"{url}/readyz") as ready:
                assert ready.status == 200
    finally:
        await health.stop()


async def test_metrics_and_health_endpoints(cluster: Cluster):
    await cluster.harness().admit(create_pod("shell", "busybox", namespace="warn-ns"))
    base = f"http://127.0.0.1:{cluster.operator.metrics_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/readyz") as ready, session.get(f"{base}/healthz") as live:
            assert (ready.status, live.status) == (200, 200)
        async with session.get(f"{base}/metrics") as response:
            text = await response.text()
    assert 'gatewatch_admission_reviews_total{decision="warned",operation="CREATE",resource="pods"} 1.0' in text
    assert 'gatewatch_rule_matches_total{action="warn",effect="warn",rule_id="debug-image"' in text
    assert "gatewatch_rules_loaded 4.0" in text
    assert "gatewatch_admission_review_duration_seconds_count" in text
    assert "gatewatch_certificate_expiry_timestamp_seconds" in text


async def test_certificate_renewal_serves_the_new_certificate_and_updates_the_ca_bundle(cluster: Cluster, monkeypatch):
    old_bundle = cluster.harness().configuration["webhooks"][0]["clientConfig"]["caBundle"]
    expiry = write_serving_files(cluster.tls_dir, ca_name="test CA 2", days=2)
    await eventually(
        lambda: webhook_configuration(cluster)["webhooks"][0]
        ["clientConfig"]["caBundle"] != old_bundle,
        timeout=30, what="caBundle update",
    )
    harness = cluster.harness()  # reads the configuration again, as the API server does
    registered = base64.b64decode(harness.configuration["webhooks"][0]["clientConfig"]["caBundle"])
    assert (cluster.tls_dir / "ca.crt").read_bytes() in registered
    # files mode: the old CA stays a while, for replicas whose mounted Secret is not updated yet
    assert base64.b64decode(old_bundle) in registered
    await eventually(lambda: cluster.operator.readiness.ready, what="serving again")
    result = await harness.admit(create_pod("shell", "busybox", namespace="warn-ns"))
    assert result.allowed and result.warnings and not result.failures  # verified against the new CA
    assert sample(cluster, "gatewatch_certificate_expiry_timestamp_seconds") == expiry.timestamp()


# --- what a user sees: real kubectl against the API double ----------------------------------------


POD_MANIFEST = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hostPID: {host_pid}
  containers: [{{name: main, image: {image}}}]
"""


async def kubectl(proxy_url: str, tmp_path: Path, *args: str, manifest: str) -> tuple[int, str, str]:
    path = tmp_path / "pod.yaml"
    path.write_text(manifest)
    process = await asyncio.create_subprocess_exec(
        "kubectl", "--server", proxy_url, *args, "-f", str(path), "--validate=false",
        env={**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
async def test_kubectl_shows_the_warning_and_the_denial(cluster: Cluster, tmp_path: Path):
    async with AdmissionProxy(upstream=str(cluster.k8s.url), harness=cluster.harness) as proxy:
        code, stdout, stderr = await kubectl(proxy.url, tmp_path, "create", manifest=POD_MANIFEST.format(
            name="shell", namespace="warn-ns", host_pid="false", image="busybox:1.36"))
        assert code == 0, stderr
        assert "Warning: gatewatch: [T1610] Pod Created From A Debug Image (low)" in stderr
        assert "pod/shell created" in stdout

        code, stdout, stderr = await kubectl(proxy.url, tmp_path, "create", manifest=POD_MANIFEST.format(
            name="debugger", namespace="enforce-ns", host_pid="true", image="nginx:1.27"))
        assert code != 0
        assert "Error from server (Forbidden)" in stderr
        assert "Pod Shares The Host PID Namespace" in stderr and "T1611" in stderr
        assert read_object(cluster.k8s, "v1/pods", "enforce-ns", "debugger") is None


async def test_while_gatewatch_is_down_the_failure_policy_decides(cluster: Cluster):
    await cluster.running.join(timeout=20)
    # gatewatch leaves its configuration in place on shutdown: the next replica serves it.
    configuration = webhook_configuration(cluster)
    # enforce, warn, audit per namespaced route; workloads' entries (never a denial) enforce and warn
    # only; one entry for a cluster-scoped one (nodes/proxy)
    assert len(configuration["webhooks"]) == sum(
        1 if not route.namespaced else 2 if route.never_denies else 3 for route in WEBHOOK_ROUTES)
    request = create_pod("shell", "busybox", namespace="warn-ns")

    failing = await cluster.harness().admit(request)  # failurePolicy: Fail
    assert not failing.allowed and failing.code == 500
    assert "failed calling webhook" in failing.message and failing.failures

    for webhook in configuration["webhooks"]:
        webhook["failurePolicy"] = "Ignore"
    ignoring = ApiServerHarness(configuration, namespace_labels=namespace_labels(cluster.k8s),
                                service_address=lambda *_: ("127.0.0.1", cluster.operator.webhook_port))
    result = await ignoring.admit(request)
    assert result.allowed and result.warnings == [] and result.failures  # unchecked, as Ignore means


async def test_self_managed_certificates_are_created_in_a_secret_and_trusted_by_the_api_server(tmp_path: Path):
    work_dir = tmp_path / "work"
    certificates = {"mode": "self-managed", "secretName": "gatewatch-tls", "workDir": str(work_dir)}
    async with running_cluster(tmp_path, certificates=certificates) as cluster:
        secret = read_object(cluster.k8s, "v1/secrets", "gatewatch", "gatewatch-tls")
        assert secret is not None and {"tls.crt", "tls.key", "ca.crt"} <= set(secret["data"])
        bundle = base64.b64decode(webhook_configuration(cluster)["webhooks"][0]["clientConfig"]["caBundle"])
        assert bundle == (work_dir / "ca.crt").read_bytes()
        # The harness verifies the certificate for gatewatch.gatewatch.svc against that bundle.
        result = await cluster.harness().admit(create_pod("shell", "busybox", namespace="warn-ns"))
        assert result.allowed and result.warnings and not result.failures


async def test_the_collector_runs_less_often_while_gatewatch_serves_and_as_before_once_it_stops(tmp_path: Path):
    # Reviews make young objects that reference counting frees; the collector's first generation is
    # raised while serving (docs/benchmarks.md: its share of the CPU), and given back at shutdown.
    before = gc.get_threshold()
    assert before[0] < YOUNG_GENERATION_THRESHOLD
    async with running_cluster(tmp_path) as cluster:
        assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, *before[1:])
        result = await cluster.harness().admit(exec_into("web", namespace="warn-ns"))
        assert result.allowed and result.warnings
    assert gc.get_threshold() == before
