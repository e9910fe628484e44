"""The ValidatingWebhookConfiguration: what gatewatch registers, and that it stays registered.

Against kube_emulator (real HTTP); a real CA bundle from gatewatch's own certificates.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json

import kmock
import kubernetes_validate
import pytest
import yaml
from apiserver_harness import label_selector_matches
from supervision import supervised
from kube_emulator import (  # noqa: F401  (fixtures)
    VALIDATING_WEBHOOK_CONFIGURATIONS,
    delete_object,
    kube_api_client,
    kube_emulator,
    put_object,
    read_object,
)

from gatewatch import background
from gatewatch.config import NamespaceSelectorMode, load_settings
from gatewatch.decision import Mode
from gatewatch.errors import ConfigError, KubernetesApiError
from gatewatch.kube.client import build_api_client
from gatewatch.kube.certificates import generate_ca
from gatewatch.kube.webhook_configuration import (
    POD_IMAGES_CHANGED,
    ReconcileOutcome,
    ServiceTarget,
    WebhookConfigurationReconciler,
    WebhookHandler,
    WebhookRegistration,
    build_webhook_configuration,
    delete_webhook_configuration,
)
from gatewatch.namespace_modes import ModePolicy

HANDLERS = (
    WebhookHandler("pods", "pods", ("CREATE",)),
    WebhookHandler("pods-exec", "pods/exec", ("CONNECT",)),
    WebhookHandler("pods-attach", "pods/attach", ("CONNECT",)),
    WebhookHandler("pods-ephemeralcontainers", "pods/ephemeralcontainers", ("UPDATE",)),
    WebhookHandler("pods-update", "pods", ("UPDATE",), match_conditions=(POD_IMAGES_CHANGED,)),
)
NOW = dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc)
CA_BUNDLE = generate_ca(now=NOW).cert_pem
OTHER_CA_BUNDLE = generate_ca(now=NOW).cert_pem
# The defaults: warn, a gatewatch.io/mode label may raise a namespace to enforce.
NAMESPACE_CLASSES = ModePolicy(default=Mode.WARN,
                               excluded=("gatewatch", "kube-system", "monitoring")).namespace_classes()
REGISTRATION = WebhookRegistration(
    name="gatewatch",
    handlers=HANDLERS,
    namespace_classes=NAMESPACE_CLASSES,
    service=ServiceTarget(name="gatewatch", namespace="gatewatch", port=443),
)
EXCLUDED = {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
            "values": ["gatewatch", "kube-system", "monitoring"]}


def live(emulator) -> dict | None:
    return read_object(emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, "gatewatch")


def security_records(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "gatewatch.security"]


def entry_index(configuration: dict, name: str) -> int:
    return [webhook["name"] for webhook in configuration["webhooks"]].index(name)


# --- the desired object -------------------------------------------------------------------------


def test_per_handler_one_webhook_per_mode_at_the_path_of_its_mode():
    configuration = REGISTRATION.build(CA_BUNDLE)
    webhooks = {webhook["name"]: webhook for webhook in configuration["webhooks"]}
    assert list(webhooks) == [f"{handler.handler_id}.{mode}.gatewatch.io"
                              for handler in HANDLERS for mode in ("enforce", "warn")]
    exec_enforce, exec_warn = webhooks["pods-exec.enforce.gatewatch.io"], webhooks["pods-exec.warn.gatewatch.io"]
    assert exec_enforce["clientConfig"]["service"] == {
        "name": "gatewatch", "namespace": "gatewatch", "port": 443, "path": "/validate/pods-exec/enforce"}
    assert exec_warn["clientConfig"]["service"]["path"] == "/validate/pods-exec/warn"
    assert base64.b64decode(exec_enforce["clientConfig"]["caBundle"]) == CA_BUNDLE
    assert exec_enforce["rules"] == exec_warn["rules"] == [{
        "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CONNECT"], "resources": ["pods/exec"],
        "scope": "Namespaced"}]
    assert webhooks["pods-ephemeralcontainers.warn.gatewatch.io"]["rules"][0]["operations"] == ["UPDATE"]
    assert webhooks["pods.enforce.gatewatch.io"]["rules"][0]["operations"] == ["CREATE"]
    for mode in ("enforce", "warn"):
        update_hook = webhooks[f"pods-update.{mode}.gatewatch.io"]
        assert update_hook["rules"][0]["operations"] == ["UPDATE"]
        assert update_hook["rules"][0]["resources"] == ["pods"]
        assert update_hook["matchConditions"] == [
            {"name": "pod-images-changed", "expression": POD_IMAGES_CHANGED.expression}]
    # No empty list where there is no condition: the API server would not store one.
    assert all("matchConditions" not in webhooks[name] for name in webhooks if not name.startswith("pods-update."))
    for name, webhook in webhooks.items():
        enforce = ".enforce." in name
        # Fail closed where gatewatch enforces, open elsewhere.
        assert webhook["failurePolicy"] == ("Fail" if enforce else "Ignore")
        assert webhook["namespaceSelector"] == {"matchExpressions": [
            EXCLUDED, {"key": "gatewatch.io/mode", "operator": "In" if enforce else "NotIn", "values": ["enforce"]}]}
        assert webhook["timeoutSeconds"] == 5
        assert webhook["sideEffects"] == "NoneOnDryRun"
        assert webhook["matchPolicy"] == "Equivalent"
        assert webhook["admissionReviewVersions"] == ["v1"]


@pytest.mark.parametrize(("labels", "called"), [
    ({"gatewatch.io/mode": "enforce"}, "pods.enforce.gatewatch.io"),
    ({"gatewatch.io/mode": "warn"}, "pods.warn.gatewatch.io"),
    ({"gatewatch.io/mode": "off"}, "pods.warn.gatewatch.io"),  # a label only tightens
    ({}, "pods.warn.gatewatch.io"),
    ({"kubernetes.io/metadata.name": "monitoring"}, None),
])
def test_the_api_server_calls_exactly_one_entry_per_handler(labels, called):
    creates = [w for w in REGISTRATION.build(CA_BUNDLE)["webhooks"] if w["rules"][0]["operations"] == ["CREATE"]]
    labels = {"kubernetes.io/metadata.name": "team-a", **labels}
    # The API server's reading of the selectors (the apiserver harness's, not gatewatch's).
    assert [w["name"] for w in creates if label_selector_matches(w["namespaceSelector"], labels)] == (
        [called] if called else [])


def test_a_modes_second_class_gets_a_numbered_name():
    classes = ModePolicy(default=Mode.WARN, excluded=("gw",), selectors=[
        NamespaceSelectorMode(match_labels={"env": "prod"}, mode=Mode.ENFORCE)]).namespace_classes()
    configuration = build_webhook_configuration(name="gw", handlers=HANDLERS[:1], namespace_classes=classes,
                                                ca_bundle=CA_BUNDLE, service=ServiceTarget("gw", "gw"))
    assert [w["name"] for w in configuration["webhooks"]] == [
        "pods.enforce.gatewatch.io", "pods.enforce-2.gatewatch.io", "pods.warn.gatewatch.io"]
    assert [w["clientConfig"]["service"]["path"] for w in configuration["webhooks"]] == [
        "/validate/pods/enforce", "/validate/pods/enforce", "/validate/pods/warn"]


def test_a_handler_that_never_denies_fails_open_in_enforce_namespaces_and_skips_audit_ones():
    handlers = (*HANDLERS, WebhookHandler("deployments", "deployments", ("CREATE", "UPDATE"), api_group="apps",
                                          never_denies=True))
    classes = ModePolicy(default=Mode.AUDIT, excluded=("gatewatch", "kube-system"),
                         explicit={"payments": Mode.ENFORCE, "shop": Mode.WARN}).namespace_classes()
    configuration = build_webhook_configuration(
        name="gatewatch", handlers=handlers, namespace_classes=classes, ca_bundle=CA_BUNDLE,
        service=ServiceTarget(name="gatewatch", namespace="gatewatch"), failure_policy="Fail")
    policies = {webhook["name"]: webhook["failurePolicy"] for webhook in configuration["webhooks"]}
    workload = {name: policy for name, policy in policies.items() if name.startswith("deployments.")}
    # Warnings at most: never a refusal while gatewatch is down; nothing to say in audit namespaces.
    assert set(workload.values()) == {"Ignore"}
    assert {name.split(".")[1].split("-")[0] for name in workload} == {"enforce", "warn"}
    assert policies["pods.enforce.gatewatch.io"] == "Fail" and policies["pods.audit.gatewatch.io"] == "Fail"


def test_the_configuration_is_valid_for_kubernetes():
    for configuration in (
        REGISTRATION.build(CA_BUNDLE),
        build_webhook_configuration(name="gw", handlers=HANDLERS, namespace_classes=NAMESPACE_CLASSES,
                                    ca_bundle=CA_BUNDLE, url="https://10.0.0.5:8443", failure_policy="Fail",
                                    timeout_seconds=30),
    ):
        kubernetes_validate.validate(configuration, "1.30.0", strict=True)


def test_local_mode_registers_urls_and_configured_policy():
    configuration = build_webhook_configuration(
        name="gw", handlers=HANDLERS[:1], namespace_classes=NAMESPACE_CLASSES, ca_bundle=CA_BUNDLE,
        url="https://192.168.1.10:8443/", path="/hooks/", failure_policy="Fail", timeout_seconds=12)
    enforce, warn = configuration["webhooks"]
    assert enforce["clientConfig"]["url"] == "https://192.168.1.10:8443/hooks/pods/enforce"
    assert warn["clientConfig"]["url"] == "https://192.168.1.10:8443/hooks/pods/warn"
    assert "service" not in enforce["clientConfig"]
    assert (warn["failurePolicy"], warn["timeoutSeconds"]) == ("Fail", 12)


@pytest.mark.parametrize("kwargs, source", [
    ({"failure_policy": "Allow"}, "webhook.failurePolicy"),
    ({"enforce_failure_policy": "Allow"}, "webhook.enforceFailurePolicy"),
    ({"timeout_seconds": 31}, "webhook.timeoutSeconds"),
    ({"url": "http://insecure:8443"}, "webhook.url"),
    ({"url": "https://both:8443", "service": ServiceTarget("gw", "gw")}, "webhook"),
])
def test_values_kubernetes_would_reject_are_config_errors_naming_the_key(kwargs, source):
    arguments = {"name": "gw", "handlers": HANDLERS, "ca_bundle": CA_BUNDLE, "namespace_classes": NAMESPACE_CLASSES,
                 "service": ServiceTarget("gw", "gw"), **kwargs}
    if "url" in kwargs and "service" not in kwargs:
        arguments.pop("service")
    with pytest.raises(ConfigError) as caught:
        build_webhook_configuration(**arguments)
    assert caught.value.source == source


def test_registration_from_the_operator_settings(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "namespace: gw-system\n"
        "namespaces: {exempt: [monitoring]}\n"
        "webhook: {configurationName: gw, failurePolicy: Fail, timeoutSeconds: 7, service: {port: 8443}}\n")
    settings = load_settings(config_file=config, environ={})
    configuration = WebhookRegistration.from_settings(settings, handlers=HANDLERS).build(CA_BUNDLE)
    enforce, warn = configuration["webhooks"][:2]
    assert configuration["metadata"]["name"] == "gw"
    assert warn["clientConfig"]["service"] == {
        "name": "gatewatch", "namespace": "gw-system", "port": 8443, "path": "/validate/pods/warn"}
    assert (warn["failurePolicy"], warn["timeoutSeconds"]) == ("Fail", 7)
    assert enforce["failurePolicy"] == "Fail"
    assert warn["namespaceSelector"]["matchExpressions"][0]["values"] == ["gw-system", "kube-system", "monitoring"]


@pytest.mark.parametrize(("ignore_label", "ignored_namespace_called"), [("true", False), ("false", True)])
def test_the_ignore_label_opts_a_namespace_out_only_while_the_setting_allows_it(
        tmp_path, ignore_label, ignored_namespace_called):
    config = tmp_path / "config.yaml"
    config.write_text(f"namespace: gw-system\nnamespaces: {{ignoreLabel: {ignore_label}}}\n")
    settings = load_settings(config_file=config, environ={})
    webhooks = WebhookRegistration.from_settings(settings, handlers=HANDLERS).build(CA_BUNDLE)["webhooks"]
    for labels in ({}, {"gatewatch.io/mode": "enforce"}):
        labels = {"kubernetes.io/metadata.name": "team-a", "gatewatch.io/ignore": "true", **labels}
        # The API server's reading of the selector (the apiserver harness's, not gatewatch's).
        called = [w["name"] for w in webhooks[:2] if label_selector_matches(w["namespaceSelector"], labels)]
        assert bool(called) is ignored_namespace_called


def test_the_ignore_label_is_off_by_default():
    assert load_settings(environ={}).namespaces.ignore_label is False


# --- reconciling against the API ----------------------------------------------------------------


async def test_first_reconcile_registers_it_and_logs_no_drift(kube_emulator, kube_api_client, caplog):
    reconciler = WebhookConfigurationReconciler(kube_api_client, registration=REGISTRATION, ca_bundle=CA_BUNDLE)
    assert (await reconciler.reconcile_once()).outcome is ReconcileOutcome.CREATED
    assert live(kube_emulator)["webhooks"] == REGISTRATION.build(CA_BUNDLE)["webhooks"]
    assert (await reconciler.reconcile_once()).outcome is ReconcileOutcome.IN_SYNC
    assert security_records(caplog) == []


async def test_an_outdated_configuration_at_startup_is_updated_not_reported(kube_emulator, kube_api_client, caplog):
    old = WebhookRegistration(**{**REGISTRATION.__dict__, "timeout_seconds": 30}).build(OTHER_CA_BUNDLE)
    put_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, old)
    reconciler = WebhookConfigurationReconciler(kube_api_client, registration=REGISTRATION, ca_bundle=CA_BUNDLE)
    assert (await reconciler.reconcile_once()).outcome is ReconcileOutcome.UPDATED
    assert live(kube_emulator)["webhooks"] == REGISTRATION.build(CA_BUNDLE)["webhooks"]
    assert security_records(caplog) == []


async def test_an_enforce_entry_switched_to_fail_open_is_restored_and_logged(kube_emulator, kube_api_client,
                                                                             caplog):
    drifts = []
    reconciler = WebhookConfigurationReconciler(kube_api_client, registration=REGISTRATION, ca_bundle=CA_BUNDLE,
                                                on_drift=drifts.append)
    await reconciler.reconcile_once()
    edited = live(kube_emulator)
    index = entry_index(edited, "pods-exec.enforce.gatewatch.io")
    edited["webhooks"][index]["failurePolicy"] = "Ignore"  # so that taking gatewatch down admits everything
    put_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, edited)

    result = await reconciler.reconcile_once()

    assert result.outcome is ReconcileOutcome.RESTORED
    assert live(kube_emulator)["webhooks"][index]["failurePolicy"] == "Fail"
    (record,) = security_records(caplog)
    assert record["event"] == "webhook_configuration_drift"
    assert record["configuration"] == "gatewatch"
    assert record["changes"] == [{"webhook": "pods-exec.enforce.gatewatch.io", "field": "failurePolicy",
                                  "expected": "Fail", "found": "Ignore"}]
    assert [r.levelname for r in caplog.records if r.name == "gatewatch.security"] == ["WARNING"]
    assert [[change.field for change in drift] for drift in drifts] == [["failurePolicy"]]


async def test_a_removed_webhook_is_restored_and_logged(kube_emulator, kube_api_client, caplog):
    reconciler = WebhookConfigurationReconciler(kube_api_client, registration=REGISTRATION, ca_bundle=CA_BUNDLE)
    await reconciler.reconcile_once()
    edited = live(kube_emulator)
    del edited["webhooks"][entry_index(edited, "pods-exec.enforce.gatewatch.io")]  # exec in enforce unchecked
    put_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, edited)

    assert (await reconciler.reconcile_once()).outcome is ReconcileOutcome.RESTORED
    assert [w["name"] for w in live(kube_emulator)["webhooks"]] == [
        w["name"] for w in REGISTRATION.build(CA_BUNDLE)["webhooks"]]
    (record,) = security_records(caplog)
    assert record["changes"] == [{"webhook": "pods-exec.enforce.gatewatch.io", "field": "<entry>",
                                  "expected": "present", "found": "missing"}]


async def test_a_bypass_added_to_an_entry_is_removed_and_logged(kube_emulator, kube_api_client, caplog):
    reconciler = WebhookConfigurationReconciler(kube_api_client, registration=REGISTRATION, ca_bundle=CA_BUNDLE)
    await reconciler.reconcile_once()
    edited = live(kube_emulator)
    edited["webhooks"][0]["matchConditions"] = [{"name": "skip", "expression": "false"}]
    edited["webhooks"][0]["namespaceSelector"]["matchLabels"] = {"enforced": "never"}
    put_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, edited)

    assert (await reconciler.reconcile_once()).outcome is ReconcileOutcome.RESTORED
    assert live(kube_emulator)["webhooks"] == REGISTRATION.build(CA_BUNDLE)["webhooks"]
    (record,) = security_records(caplog)
    assert {change["field"] for change in record["changes"]} == {"matchConditions", "namespaceSelector"}


@pytest.mark.parametrize("weaken", ["edit", "remove"])
async def test_a_weakened_image_change_condition_is_restored_and_logged(kube_emulator, kube_api_client, caplog,
                                                                       weaken):
    reconciler = WebhookConfigurationReconciler(kube_api_client, registration=REGISTRATION, ca_bundle=CA_BUNDLE)
    await reconciler.reconcile_once()
    edited = live(kube_emulator)
    update_hook = edited["webhooks"][entry_index(edited, "pods-update.enforce.gatewatch.io")]
    if weaken == "edit":  # no pod update would reach gatewatch any more
        update_hook["matchConditions"] = [{"name": "pod-images-changed", "expression": "false"}]
    else:
        del update_hook["matchConditions"]
    put_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, edited)

    assert (await reconciler.reconcile_once()).outcome is ReconcileOutcome.RESTORED
    assert live(kube_emulator)["webhooks"] == REGISTRATION.build(CA_BUNDLE)["webhooks"]
    (record,) = security_records(caplog)
    assert [(change["webhook"], change["field"]) for change in record["changes"]] == [
        ("pods-update.enforce.gatewatch.io", "matchConditions")]


async def test_a_deleted_configuration_is_recreated_and_logged(kube_emulator, kube_api_client, caplog):
    reconciler = WebhookConfigurationReconciler(kube_api_client, registration=REGISTRATION, ca_bundle=CA_BUNDLE)
    await reconciler.reconcile_once()
    delete_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, "gatewatch")

    assert (await reconciler.reconcile_once()).outcome is ReconcileOutcome.RESTORED
    assert live(kube_emulator)["webhooks"] == REGISTRATION.build(CA_BUNDLE)["webhooks"]
    (record,) = security_records(caplog)
    assert record["deleted"] is True


async def test_a_new_ca_bundle_is_an_update_not_drift(kube_emulator, kube_api_client, caplog):
    reconciler = WebhookConfigurationReconciler(kube_api_client, registration=REGISTRATION, ca_bundle=CA_BUNDLE)
    await reconciler.reconcile_once()
    reconciler.set_ca_bundle(CA_BUNDLE + OTHER_CA_BUNDLE)

    assert (await reconciler.reconcile_once()).outcome is ReconcileOutcome.UPDATED
    for webhook in live(kube_emulator)["webhooks"]:
        assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == CA_BUNDLE + OTHER_CA_BUNDLE
    assert security_records(caplog) == []


async def test_another_replicas_rotated_bundle_is_not_reported_as_drift(kube_emulator, kube_api_client, caplog):
    current_bundle = {"pem": CA_BUNDLE}

    async def refresh() -> bytes:  # what the certificate manager would read from the Secret
        return current_bundle["pem"]

    ours = WebhookConfigurationReconciler(kube_api_client, registration=REGISTRATION, ca_bundle=CA_BUNDLE,
                                          refresh_ca_bundle=refresh)
    theirs = WebhookConfigurationReconciler(kube_api_client, registration=REGISTRATION, ca_bundle=CA_BUNDLE)
    await ours.reconcile_once()
    await theirs.reconcile_once()
    current_bundle["pem"] = CA_BUNDLE + OTHER_CA_BUNDLE
    theirs.set_ca_bundle(current_bundle["pem"])
    await theirs.reconcile_once()

    assert (await ours.reconcile_once()).outcome is ReconcileOutcome.IN_SYNC
    assert security_records(caplog) == []
    for webhook in live(kube_emulator)["webhooks"]:
        assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == CA_BUNDLE + OTHER_CA_BUNDLE


async def test_the_loop_restores_drift_and_leaves_the_configuration_on_stop(kube_emulator, kube_api_client):
    reconciler = WebhookConfigurationReconciler(kube_api_client, registration=REGISTRATION, ca_bundle=CA_BUNDLE)
    await reconciler.reconcile_once()  # what the operator does once the webhook serves
    async with supervised(background.drift_repair(reconciler)):
        edited = live(kube_emulator)
        edited["webhooks"][0]["timeoutSeconds"] = 30
        put_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, edited)
        await _until(lambda: live(kube_emulator)["webhooks"][0]["timeoutSeconds"] == 5)
    assert live(kube_emulator)["webhooks"] == REGISTRATION.build(CA_BUNDLE)["webhooks"]


async def test_uninstall_deletes_it_and_tolerates_its_absence(kube_emulator, kube_api_client):
    reconciler = WebhookConfigurationReconciler(kube_api_client, registration=REGISTRATION, ca_bundle=CA_BUNDLE)
    await reconciler.reconcile_once()
    assert await delete_webhook_configuration(kube_api_client, name="gatewatch") is True
    assert live(kube_emulator) is None
    assert await delete_webhook_configuration(kube_api_client, name="gatewatch") is False


async def _until(condition, timeout: float = 10.0) -> None:
    # Waits for the background loop; the deadline only bounds a failing test.
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def test_an_api_refusal_is_an_error_naming_the_configuration(kube_emulator, kube_api_client):
    def forbidden():
        raise kmock.KubernetesError(status=403, reason="Forbidden", message="cannot get validatingwebhookconfigurations")

    kube_emulator["get /apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/gatewatch"] << forbidden
    reconciler = WebhookConfigurationReconciler(kube_api_client, registration=REGISTRATION, ca_bundle=CA_BUNDLE)
    with pytest.raises(KubernetesApiError, match=r"^read validatingwebhookconfiguration gatewatch: 403 Forbidden"):
        await reconciler.reconcile_once()


# --- the client ---------------------------------------------------------------------------------


async def test_a_kubeconfig_gives_a_client_for_its_cluster(kube_emulator, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "emulator", "cluster": {"server": str(kube_emulator.url).rstrip("/")}},
                     {"name": "nowhere", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "dev", "user": {"token": "t"}}],
        "contexts": [{"name": "emulated", "context": {"cluster": "emulator", "user": "dev"}},
                     {"name": "other", "context": {"cluster": "nowhere", "user": "dev"}}],
    }))
    client = build_api_client(kubeconfig=kubeconfig, context="emulated")
    try:
        reconciler = WebhookConfigurationReconciler(client, registration=REGISTRATION, ca_bundle=CA_BUNDLE)
        assert (await reconciler.reconcile_once()).outcome is ReconcileOutcome.CREATED
        assert await delete_webhook_configuration(client, name="gatewatch") is True
    finally:
        client.close()


def test_an_unusable_kubeconfig_is_a_config_error_naming_it(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    with pytest.raises(ConfigError, match=str(kubeconfig)):
        build_api_client(kubeconfig=kubeconfig)
    with pytest.raises(ConfigError, match="missing"):
        build_api_client(kubeconfig=tmp_path / "missing")


# --- the image-change condition, evaluated as CEL ----------------------------------------------


def _pod(*images: str, init: tuple[str, ...] = (), ephemeral: tuple[str, ...] = (), labels=None) -> dict:
    spec: dict = {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]}
    if init:
        spec["initContainers"] = [{"name": f"i{i}", "image": image} for i, image in enumerate(init)]
    if ephemeral:
        spec["ephemeralContainers"] = [{"name": f"e{i}", "image": image} for i, image in enumerate(ephemeral)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": labels or {}}, "spec": spec}


@pytest.mark.parametrize(
    ("old", "new", "sent"),
    [
        (_pod("nginx"), _pod("nginx", labels={"a": "b"}), False),  # metadata only: never sent
        (_pod("nginx", "busybox"), _pod("nginx", "busybox"), False),
        (_pod("nginx"), _pod("busybox"), True),  # kubectl set image
        (_pod("nginx", "envoy"), _pod("nginx", "busybox"), True),
        (_pod("nginx", init=("alpine",)), _pod("nginx", init=("busybox",)), True),
        (_pod("nginx", init=("alpine",)), _pod("nginx", init=("alpine",)), False),
        (_pod("nginx"), _pod("nginx", ephemeral=("busybox",)), True),  # absent list before: has() guards it
        ({"spec": {"containers": [{"name": "c0"}]}}, {"spec": {"containers": [{"name": "c0"}]}}, False),  # no image
    ],
)
def test_the_image_change_condition_sends_exactly_the_updates_that_change_an_image(old, new, sent):
    # cel-python is not Kubernetes' CEL (no Kubernetes libraries), but this expression uses
    # only core CEL: has(), map(), ?:, list comparison.
    celpy = pytest.importorskip("celpy", reason="cel-python is needed to evaluate the CEL expression")
    environment = celpy.Environment()
    program = environment.program(environment.compile(POD_IMAGES_CHANGED.expression))
    result = program.evaluate({"object": celpy.json_to_cel(new), "oldObject": celpy.json_to_cel(old)})
    assert bool(result) is sent
