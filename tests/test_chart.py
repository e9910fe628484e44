"""The Helm chart, rendered and linted by Helm's own code (helm-python-sdk).

Every rendered object is validated against the Kubernetes API schemas
(kubernetes-validate); the Pod Security, RBAC and config contracts a cluster
administrator relies on are asserted on the rendered objects.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from gatewatch.config import ServerLimits, Settings, load_settings
from gatewatch.decision import Mode
from gatewatch.errors import ConfigError
from gatewatch.rules import load_rules

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART_DIR = REPO_ROOT / "charts" / "gatewatch"
PRODUCTION_VALUES = CHART_DIR / "examples" / "enforce-production.yaml"
NAMESPACE = "security"

# Kinds from CRDs (cert-manager, Prometheus Operator): kubernetes-validate has no schema for them.
CRD_KINDS = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas available.
KUBERNETES_VERSIONS = ("1.28", kubernetes_validate.utils.latest_version())


def _load_script():
    # scripts/ is not a package: load the generator by path (it also renders the chart for these tests).
    if "render_manifests" in sys.modules:
        return sys.modules["render_manifests"]
    spec = importlib.util.spec_from_file_location("render_manifests", REPO_ROOT / "scripts" / "render_manifests.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


render_manifests = _load_script()


def production_values() -> dict[str, Any]:
    return yaml.safe_load(PRODUCTION_VALUES.read_text())


# What a Kubernetes 1.30+ cluster adds to Helm's default capabilities, as `helm install` finds it
# (or `helm template --api-versions`).
SERVES_ADMISSION_POLICIES = (render_manifests.ADMISSION_POLICY_API,)


def render(values: dict[str, Any] | None = None, *, release: str = "gatewatch",
           api_versions: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return render_manifests.render_chart(values, chart_dir=CHART_DIR, release_name=release, namespace=NAMESPACE,
                                         api_versions=api_versions)


def only(objects: list[dict[str, Any]], kind: str, *, hook: bool = False) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and render_manifests.is_helm_hook(o) == hook]
    assert len(found) == 1, f"expected one {kind} (hook={hook}), got {[o['metadata']['name'] for o in found]}"
    return found[0]


def config_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    configmaps = [o for o in objects if o["kind"] == "ConfigMap" and "config.yaml" in o["data"]]
    assert len(configmaps) == 1
    return yaml.safe_load(configmaps[0]["data"]["config.yaml"])


@pytest.fixture(scope="module")
def default_objects() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def production_objects() -> list[dict[str, Any]]:
    return render(production_values())


# --- lint and schema validation -------------------------------------------------------


@pytest.mark.parametrize("values_name", ["default", "enforce-production"])
def test_helm_lint_strict_reports_no_warnings(values_name):
    values = None if values_name == "default" else production_values()
    report = helm_python.lint(CHART_DIR, values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == []


@pytest.mark.parametrize("values_name", ["default", "enforce-production"])
@pytest.mark.parametrize(("kubernetes_version", "api_versions"), [
    *((version, ()) for version in KUBERNETES_VERSIONS),
    ("1.30", SERVES_ADMISSION_POLICIES),  # the first to serve ValidatingAdmissionPolicy v1
    (KUBERNETES_VERSIONS[-1], SERVES_ADMISSION_POLICIES),
])
def test_every_rendered_object_is_valid_for_the_kubernetes_api(values_name, kubernetes_version, api_versions):
    values = None if values_name == "default" else production_values()
    objects = render(values, api_versions=api_versions)
    for obj in objects:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            assert obj["metadata"]["namespace"] == NAMESPACE, where
            continue
        try:
            kubernetes_validate.validate(obj, kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{where} is invalid for Kubernetes {kubernetes_version}: "
                        f"{error.message} at {list(error.path)}")


def test_namespaced_objects_carry_the_release_namespace(default_objects, production_objects):
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    for obj in default_objects + production_objects:
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["kind"]


@pytest.mark.parametrize(
    ("values", "where", "reason"),
    [
        ({"mode": "block"}, "/mode", "must be one of"),
        ({"mode": False}, "/mode", ""),  # `mode: off` unquoted in a values file is YAML false
        ({"webhook": {"timeoutSeconds": 31}}, "/webhook/timeoutSeconds", "maximum"),
        ({"webhook": {"timeoutSeconds": 0}}, "/webhook/timeoutSeconds", "minimum"),
        ({"webhook": {"timeoutSeconds": 2}}, "/webhook/timeoutSeconds", "minimum"),
        ({"webhook": {"clientCAFrom": {"secretName": "Bad_Name"}}}, "/webhook/clientCAFrom/secretName", "pattern"),
        ({"namespaces": {"ignoreLabel": "no"}}, "/namespaces/ignoreLabel", ""),
        ({"preStopSleepSeconds": -1}, "/preStopSleepSeconds", "minimum"),
        ({"webhook": {"failurePolicy": "ignore"}}, "/webhook/failurePolicy", "must be one of"),
        ({"webhook": {"path": "validate"}}, "/webhook/path", "pattern"),
        ({"replicaCount": 3}, "", "replicaCount"),
        ({"replicas": 0}, "/replicas", "minimum"),
        ({"namespaces": {"modes": {"Payments_NS": "enforce"}}}, "/namespaces/modes", "Payments_NS"),
        ({"namespaces": {"selectors": [{"matchLabels": {"env": "prod"}}]}}, "/namespaces/selectors/0", "mode"),
        ({"namespaces": {"exempt": ["monitoring", "monitoring"]}}, "/namespaces/exempt", ""),
        ({"rules": {"extraFiles": {"rules.yaml": "version: 1"}}}, "/rules/extraFiles/rules.yaml", ""),
        ({"rules": {"extraFiles": {"team.txt": "version: 1"}}}, "/rules/extraFiles", "team.txt"),
        ({"certificates": {"mode": "vault"}}, "/certificates/mode", "must be one of"),
        ({"certificates": {"certManager": {"issuerRef": {"kind": "ClusterIssuer"}}}},
         "/certificates/certManager/issuerRef", "name"),
        ({"image": {"digest": "sha256:abc"}}, "/image/digest", "pattern"),
        ({"image": {"tag": "1.0 beta"}}, "/image/tag", "pattern"),
        ({"image": {"repository": "ghcr.io/gatewatch/gatewatch:0.1.0"}}, "/image/repository", "pattern"),
        ({"alerts": {"http": {"url": "alerts.example.com"}}}, "/alerts/http/url", "pattern"),
        ({"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory", "pattern"),
        ({"server": {"port": 70000}}, "/server/port", "maximum"),
    ],
)
def test_the_schema_rejects_bad_values_naming_the_key(values, where, reason):
    with helm_python.Chart.load(CHART_DIR) as chart:
        with pytest.raises(helm_python.HelmValuesError) as raised:
            chart.render(values, name="gatewatch", namespace=NAMESPACE)
    message = str(raised.value)
    assert f"at '{where}'" in message, message
    assert reason in message


def test_the_production_example_passes_the_schema():
    with helm_python.Chart.load(CHART_DIR) as chart:
        chart.validate_schema(production_values())  # raises on failure


# --- Deployment ----------------------------------------------------------------------


def _restricted_pod_security_violations(pod_spec: dict[str, Any]) -> list[str]:
    """The Pod Security Standard 'restricted' checks, plus readOnlyRootFilesystem."""
    problems = []
    pod_context = pod_spec.get("securityContext", {})
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(host):
            problems.append(host)
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                       "projected", "secret"}
    for volume in pod_spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= allowed_volumes:
            problems.append(f"volume {volume['name']}: {kinds}")
    for container in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
        context = container.get("securityContext", {})
        name = container["name"]
        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: capabilities.drop ALL")
        if set(context.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities.add")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot")
        if context.get("runAsUser", pod_context.get("runAsUser")) in (0, None):
            problems.append(f"{name}: runAsUser")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem")
        if any("hostPort" in port for port in container.get("ports", [])):
            problems.append(f"{name}: hostPort")
    return problems


@pytest.mark.parametrize("values_name", ["default", "enforce-production"])
def test_every_pod_meets_the_restricted_pod_security_standard(values_name):
    values = None if values_name == "default" else production_values()
    pod_specs = [o["spec"]["template"]["spec"] for o in render(values) if o["kind"] in ("Deployment", "Job")]
    assert len(pod_specs) == 2  # the operator and the uninstall hook
    for pod_spec in pod_specs:
        assert _restricted_pod_security_violations(pod_spec) == []


def test_restricted_check_catches_a_weakened_pod(default_objects):
    # Guards the check above: it must notice when one field is missing.
    pod_spec = yaml.safe_load(yaml.safe_dump(only(default_objects, "Deployment")["spec"]["template"]["spec"]))
    del pod_spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"]
    pod_spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    problems = _restricted_pod_security_violations(pod_spec)
    assert "gatewatch: allowPrivilegeEscalation" in problems
    assert "volume host: {'hostPath'}" in problems


def test_deployment_is_highly_available_by_default(default_objects):
    deployment = only(default_objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == ["kubernetes.io/hostname"]
    assert spread[0]["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    budget = only(default_objects, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_production_spreads_strictly_and_scales(production_objects):
    deployment = only(production_objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread[0]["whenUnsatisfiable"] == "DoNotSchedule"


def test_container_has_probes_resources_and_the_documented_ports(default_objects):
    container = only(default_objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"webhook": 8443, "metrics": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert set(container["resources"]) == {"requests", "limits"}
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}


def test_container_mounts_config_rules_and_a_writable_tmp(default_objects):
    pod_spec = only(default_objects, "Deployment")["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert container["args"] == ["run", "--config", "/etc/gatewatch/config.yaml"]
    assert mounts["/etc/gatewatch/config.yaml"]["subPath"] == "config.yaml"
    # The rules directory is mounted without subPath, so ConfigMap edits reach the Pod and reload.
    assert "subPath" not in mounts["/etc/gatewatch/rules"]
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert all(m.get("readOnly") for path, m in mounts.items() if path != "/tmp")
    env = {e["name"]: e for e in container["env"]}
    assert env["GATEWATCH_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ({}, "ghcr.io/gatewatch/gatewatch:{app_version}"),
        ({"tag": "0.2.0-rc.1"}, "ghcr.io/gatewatch/gatewatch:0.2.0-rc.1"),
        ({"repository": "registry.example.com:5000/sec/gatewatch", "digest": "sha256:" + "ab" * 32},
         "registry.example.com:5000/sec/gatewatch:{app_version}@sha256:" + "ab" * 32),
    ],
)
def test_image_reference_follows_repository_tag_and_digest(image, expected):
    app_version = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"]
    objects = render({"image": image})
    images = {o["kind"]: o["spec"]["template"]["spec"]["containers"][0]["image"]
              for o in objects if o["kind"] in ("Deployment", "Job")}
    expected = expected.format(app_version=app_version)
    assert images == {"Deployment": expected, "Job": expected}


def test_config_change_rolls_the_pods_but_rule_change_does_not():
    def checksum(values):
        return only(render(values), "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum(None)
    assert checksum({"mode": "enforce"}) != base
    assert checksum({"rules": {"extraFiles": {"team.yaml": "version: 1"}}}) != base  # the file list changes
    assert checksum({"replicas": 3}) == base
    # The generation (the release revision, or set) is part of it: a ReplicaSet's Pods share one.
    assert checksum({"webhook": {"generation": 7}}) != base
    assert config_of(render({"webhook": {"generation": 7}}))["webhook"]["generation"] == 7


# --- RBAC ----------------------------------------------------------------------------

# Exactly the API calls gatewatch makes (kube/ and controller.py), nothing more.
OPERATOR_CLUSTER_RULES = [
    {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"],
     "resourceNames": ["gatewatch"], "verbs": ["get", "update", "delete"]},
    {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"],
     "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "get", "patch"]},
]
SELF_MANAGED_CERTIFICATE_RULES = [
    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["gatewatch-tls"], "verbs": ["get", "update"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
]
OPERATOR_NAMESPACE_RULES = [
    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["gatewatch-new-terms"],
     "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
]


def test_operator_rbac_is_exactly_the_documented_least_privilege(default_objects):
    assert only(default_objects, "ClusterRole")["rules"] == OPERATOR_CLUSTER_RULES
    assert only(default_objects, "Role")["rules"] == SELF_MANAGED_CERTIFICATE_RULES + OPERATOR_NAMESPACE_RULES


def test_cert_manager_mode_grants_no_access_to_secrets(production_objects):
    assert only(production_objects, "Role")["rules"] == OPERATOR_NAMESPACE_RULES


def test_resource_names_follow_the_configured_names():
    objects = render({
        "webhook": {"configurationName": "gatewatch-prod"},
        "certificates": {"secretName": "gw-serving"},
        "newTerms": {"configMapName": "gw-history"},
    }, release="edge")
    names = {name for o in objects if o["kind"] in ("ClusterRole", "Role")
             for rule in o["rules"] for name in rule.get("resourceNames", [])}
    assert names == {"gatewatch-prod", "gw-serving", "gw-history"}
    # The operator is told the same names it is granted, and its rules ConfigMap's.
    config = config_of(objects)
    assert config["newTerms"]["configMapName"] == "gw-history"
    assert config["rules"]["configMapName"] in {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
    assert config["rules"]["configMapName"].startswith("edge-")


def test_no_wildcards_anywhere_in_rbac(default_objects, production_objects):
    for obj in default_objects + production_objects:
        for rule in obj.get("rules", []) if obj["kind"] in ("ClusterRole", "Role") else []:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), (obj["metadata"]["name"], rule)


def test_bindings_grant_the_roles_to_the_operator_service_account(default_objects):
    service_account = only(default_objects, "ServiceAccount")["metadata"]["name"]
    assert only(default_objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == service_account
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = only(default_objects, kind)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind,
                                      "name": only(default_objects, role_kind)["metadata"]["name"]}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": service_account, "namespace": NAMESPACE}]


# --- webhook configuration and the uninstall hook -------------------------------------


def test_the_chart_never_renders_a_webhook_configuration(default_objects, production_objects):
    # gatewatch registers and updates it at runtime (caBundle, namespaceSelector): see the chart README.
    kinds = {o["kind"] for o in default_objects + production_objects}
    assert not kinds & {"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"}


def test_uninstall_hook_deletes_only_the_webhook_configuration():
    objects = render({"webhook": {"configurationName": "gw-admission"}})
    hooks = [o for o in objects if render_manifests.is_helm_hook(o)]
    assert {o["kind"] for o in hooks} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Job"}
    # pre-delete, and again post-delete: a replica still running after the first deletion restores it.
    assert all(o["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete,post-delete" for o in hooks)
    assert all("hook-succeeded" in o["metadata"]["annotations"]["helm.sh/hook-delete-policy"] for o in hooks)
    job = only(objects, "Job", hook=True)
    role = only(objects, "ClusterRole", hook=True)
    binding = only(objects, "ClusterRoleBinding", hook=True)
    service_account = only(objects, "ServiceAccount", hook=True)
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["uninstall-webhook", "--name", "gw-admission"]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == service_account["metadata"]["name"]
    assert role["rules"] == [{"apiGroups": ["admissionregistration.k8s.io"],
                              "resources": ["validatingwebhookconfigurations"],
                              "resourceNames": ["gw-admission"], "verbs": ["delete"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == service_account["metadata"]["name"]
    # RBAC before the Job: Helm creates hooks of one event in weight order.
    weight = {o["kind"]: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for o in hooks}
    assert max(weight["ServiceAccount"], weight["ClusterRole"], weight["ClusterRoleBinding"]) < weight["Job"]


def test_uninstall_hook_can_be_disabled():
    objects = render({"uninstallHook": {"enabled": False}})
    assert not [o for o in objects if render_manifests.is_helm_hook(o)]


# --- the operator's config file --------------------------------------------------------


def _settings_from(objects: list[dict[str, Any]], tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_of(objects)))
    return load_settings(config_file=path, environ={})


def test_rendered_config_is_accepted_by_gatewatch_and_matches_the_objects(default_objects, tmp_path):
    settings = _settings_from(default_objects, tmp_path)
    service = only(default_objects, "Service")
    container = only(default_objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert settings.mode is Mode.WARN
    assert settings.namespace == NAMESPACE
    assert (settings.webhook.failure_policy, settings.webhook.timeout_seconds) == ("Ignore", 5)
    assert settings.webhook.service.name == service["metadata"]["name"]
    assert settings.service_namespace == NAMESPACE
    webhook_port = next(p for p in service["spec"]["ports"] if p["port"] == settings.webhook.service.port)
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container_ports[webhook_port["targetPort"]] == settings.server.port
    assert container_ports["metrics"] == settings.server.metrics_port
    assert settings.certificates.mode == "self-managed"
    assert settings.certificates.secret_name == "gatewatch-tls"
    assert str(settings.certificates.work_dir).startswith("/tmp/")  # the writable emptyDir


def test_rendered_config_carries_the_production_values(production_objects, tmp_path):
    settings = _settings_from(production_objects, tmp_path)
    values = production_values()
    assert settings.namespaces.modes == {"payments": Mode.ENFORCE}
    assert settings.namespaces.selectors[0].match_labels == {"env": "prod"}
    assert settings.namespaces.selectors[1].match_expressions[0].values == ("staging", "preprod")
    # cert-manager mode: cert-manager's namespace is exempted without being listed.
    assert set(settings.namespaces.exempt) == set(values["namespaces"]["exempt"]) | {"cert-manager"}
    # Fail closed in enforce namespaces, open elsewhere.
    assert (settings.webhook.failure_policy, settings.webhook.timeout_seconds) == ("Ignore", 3)
    assert settings.webhook.enforce_failure_policy == "Fail"
    assert settings.alerts.http.batch_size == 200


def test_every_configured_rule_file_is_a_key_of_the_mounted_rules_configmap(production_objects, tmp_path):
    settings = _settings_from(production_objects, tmp_path)
    deployment = only(production_objects, "Deployment")
    pod_spec = deployment["spec"]["template"]["spec"]
    mount = next(m for m in pod_spec["containers"][0]["volumeMounts"] if m["name"] == "rules")
    volume = next(v for v in pod_spec["volumes"] if v["name"] == "rules")
    rules_configmap = next(o for o in production_objects
                           if o["kind"] == "ConfigMap" and o["metadata"]["name"] == volume["configMap"]["name"])
    assert settings.rules.packaged is False  # the ConfigMap's copy is the one that reloads
    # A rejected rules update is an Event on this ConfigMap: gatewatch must know its real name.
    assert settings.rules.config_map_name == rules_configmap["metadata"]["name"]
    assert [str(f) for f in settings.rules.files] == [f"{mount['mountPath']}/{key}" for key in rules_configmap["data"]]
    assert list(rules_configmap["data"]) == ["rules.yaml", "payments-rules.yaml"]


def test_default_rules_can_be_replaced_by_an_edited_copy(tmp_path):
    edited = (REPO_ROOT / "rules.yaml").read_text().replace("action: deny", "action: warn")
    objects = render({"rules": {"includeDefault": False, "extraFiles": {"rules-edited.yaml": edited}}})
    settings = _settings_from(objects, tmp_path)
    rules_configmap = next(o for o in objects if o["kind"] == "ConfigMap" and "rules-edited.yaml" in o.get("data", {}))
    assert [str(f) for f in settings.rules.files] == ["/etc/gatewatch/rules/rules-edited.yaml"]
    assert list(rules_configmap["data"]) == ["rules-edited.yaml"]


def test_no_rules_at_all_is_refused_at_render_time():
    with helm_python.Chart.load(CHART_DIR) as chart:
        with pytest.raises(helm_python.HelmRenderError,
                           match="rules.includeDefault is false and rules.extraFiles is empty"):
            chart.render({"rules": {"includeDefault": False}}, name="gatewatch", namespace=NAMESPACE)


def test_rules_configmap_carries_rules_yaml_unchanged(default_objects):
    rules_configmap = next(o for o in default_objects if o["kind"] == "ConfigMap" and "rules.yaml" in o["data"])
    assert rules_configmap["data"]["rules.yaml"] == (REPO_ROOT / "rules.yaml").read_text()


def test_the_chart_copy_of_rules_yaml_is_byte_identical():
    assert (CHART_DIR / "files" / "rules.yaml").read_bytes() == (REPO_ROOT / "rules.yaml").read_bytes(), (
        "charts/gatewatch/files/rules.yaml is stale: run .venv/bin/python scripts/render_manifests.py"
    )


def test_the_production_example_rules_load_with_the_default_rules(tmp_path):
    paths = [REPO_ROOT / "rules.yaml"]
    for name, content in production_values()["rules"]["extraFiles"].items():
        paths.append(tmp_path / name)
        paths[-1].write_text(content)
    ruleset = load_rules(paths)
    assert "payments-privileged-container" in {rule.id for rule in ruleset.rules}


def test_cert_manager_mode_mounts_the_issued_secret_for_the_config_paths(production_objects, tmp_path):
    settings = _settings_from(production_objects, tmp_path)
    certificate = _serving_certificate(production_objects)
    service = only(production_objects, "Service")
    pod_spec = only(production_objects, "Deployment")["spec"]["template"]["spec"]
    tls_volume = next(v for v in pod_spec["volumes"]
                      if v.get("secret", {}).get("secretName") == certificate["spec"]["secretName"])
    tls_mount = next(m for m in pod_spec["containers"][0]["volumeMounts"] if m["name"] == tls_volume["name"])
    assert settings.certificates.mode == "files"
    configured = {settings.certificates.cert_file, settings.certificates.key_file, settings.certificates.ca_file}
    assert {str(path) for path in configured} == {
        f"{tls_mount['mountPath']}/{key}" for key in ("tls.crt", "tls.key", "ca.crt")
    }
    # The API server calls https://<service>.<namespace>.svc: the certificate must name it.
    assert f"{service['metadata']['name']}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]


def _serving_certificate(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (serving,) = [o for o in objects if o["kind"] == "Certificate" and not o["spec"].get("isCA")]
    return serving


def test_cert_manager_default_is_a_private_ca_so_renewals_keep_the_ca_bundle(production_objects):
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in production_objects}
    serving = _serving_certificate(production_objects)
    ca_issuer = by_name[("Issuer", serving["spec"]["issuerRef"]["name"])]
    (ca_certificate,) = [o for o in production_objects if o["kind"] == "Certificate" and o["spec"].get("isCA")]
    assert ca_issuer["spec"]["ca"]["secretName"] == ca_certificate["spec"]["secretName"]
    root = by_name[("Issuer", ca_certificate["spec"]["issuerRef"]["name"])]
    assert root["spec"] == {"selfSigned": {}}
    # The serving certificate's key rotates; the CA outlives many serving certificates.
    assert serving["spec"]["privateKey"]["rotationPolicy"] == "Always"
    assert ca_certificate["spec"]["duration"] == "87600h"


def test_cert_manager_with_an_existing_issuer_creates_no_issuer():
    issuer_ref = {"name": "corp-ca", "kind": "ClusterIssuer"}
    objects = render({"certificates": {"mode": "cert-manager", "certManager": {"issuerRef": issuer_ref}}})
    assert not [o for o in objects if o["kind"] == "Issuer"]
    assert only(objects, "Certificate")["spec"]["issuerRef"] == {**issuer_ref, "group": "cert-manager.io"}


def test_alert_url_from_a_secret_is_mounted_not_written_into_the_config(production_objects, tmp_path):
    settings = _settings_from(production_objects, tmp_path)
    secret_ref = production_values()["alerts"]["http"]["existingSecret"]
    pod_spec = only(production_objects, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod_spec["volumes"] if v.get("secret", {}).get("secretName") == secret_ref["name"])
    mount = next(m for m in pod_spec["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert settings.alerts.http.url is None
    assert str(settings.alerts.http.url_file) == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    assert volume["secret"]["items"][0]["key"] == secret_ref["key"]


def test_the_alert_spill_file_lives_on_an_emptydir_of_its_own_sized_for_a_rewrite(tmp_path):
    objects = render({"alerts": {"http": {"url": "https://siem.example/in", "requestTimeoutSeconds": 5,
                                          "spill": {"enabled": True, "maxBytes": 1048576}}}})
    settings = _settings_from(objects, tmp_path)
    pod_spec = only(objects, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod_spec["volumes"] if v["name"] == "alert-spill")
    mount = next(m for m in pod_spec["containers"][0]["volumeMounts"] if m["name"] == "alert-spill")
    assert settings.alerts.http.spill_file.parent == Path(mount["mountPath"])
    assert settings.alerts.http.spill_max_bytes == 1048576
    assert volume["emptyDir"]["sizeLimit"] == 2 * 1048576 + 1048576
    assert settings.alerts.http.request_timeout_seconds == 5
    # Off by default: no volume, no file.
    (tmp_path / "default").mkdir()
    default = _settings_from(render(), tmp_path / "default")
    assert default.alerts.http.spill_file is None
    assert "alert-spill" not in {v["name"] for v in only(render(), "Deployment")["spec"]["template"]["spec"]["volumes"]}


# --- optional objects, names and notes ------------------------------------------------


def test_optional_objects_are_off_by_default(default_objects, production_objects):
    assert not {o["kind"] for o in default_objects} & {"ServiceMonitor", "NetworkPolicy", "Certificate", "Issuer"}
    assert {"ServiceMonitor", "NetworkPolicy", "Certificate", "Issuer"} <= {o["kind"] for o in production_objects}


def test_service_monitor_and_network_policy_select_the_operator_pods(production_objects):
    pod_labels = only(production_objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    monitor = only(production_objects, "ServiceMonitor")
    policy = only(production_objects, "NetworkPolicy")
    service = only(production_objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    allowed_ports = {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
    assert allowed_ports == {"webhook", "metrics"}
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress_ports = {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}
    assert {53, 443} <= egress_ports


def test_with_the_api_servers_addresses_only_they_reach_the_webhook_port():
    policy = only(render({"networkPolicy": {"enabled": True, "apiServerCIDRs": ["10.0.0.10/32", "fd00::10/128"]}}),
                  "NetworkPolicy")
    rules = {rule["ports"][0]["port"]: rule.get("from") for rule in policy["spec"]["ingress"]}
    assert rules["webhook"] == [{"ipBlock": {"cidr": "10.0.0.10/32"}}, {"ipBlock": {"cidr": "fd00::10/128"}}]
    assert rules["metrics"] is None  # scraping is not the API server's: metricsFrom decides
    # Extra peers (e.g. a control-plane tunnel agent's namespace) are added, not substituted.
    tunnel = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
              "podSelector": {"matchLabels": {"app": "konnectivity-agent"}}}
    policy = only(render({"networkPolicy": {"enabled": True, "apiServerCIDRs": ["10.0.0.10/32"],
                                            "webhookFrom": [tunnel]}}), "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["from"] == [{"ipBlock": {"cidr": "10.0.0.10/32"}}, tunnel]
    assert _chart_refuses({"networkPolicy": {"enabled": True, "apiServerCIDRs": ["control-plane"]}}) is not None


def test_notes_say_whether_anything_but_the_api_server_can_reach_the_webhook_port():
    def notes(values: dict[str, Any]) -> str:
        with helm_python.Chart.load(CHART_DIR) as chart:
            rendered = chart.render(values, name="gatewatch", namespace=NAMESPACE, is_install=True)
        return " ".join(next(text for name, text in rendered.items() if name.endswith("NOTES.txt")).split())

    assert "serves any TLS client that reaches it" in notes({})
    closed = notes({"networkPolicy": {"enabled": True, "apiServerCIDRs": ["10.0.0.10/32"]}})
    assert "admits only 10.0.0.10/32" in closed and "serves any TLS client" not in closed
    assert "serves any TLS client" in notes({"networkPolicy": {"enabled": True}})  # no addresses: still open


def test_server_limits_reach_gatewatch_and_what_it_refuses_the_chart_refuses():
    limits = {"maxConnections": 50, "objectBytes": 2 * 1024 * 1024, "deadlineSeconds": 3.5}
    settings = Settings.model_validate(config_of(render({"server": {"limits": limits}})))
    assert settings.server.limits.max_connections == 50 and settings.review_deadline_seconds == 3.5
    assert Settings.model_validate(config_of(render())).server.limits == ServerLimits()
    refusal = _chart_refuses({"server": {"limits": {"deadlineSeconds": 5}}})
    assert refusal is not None and "deadlineSeconds (5) must be less than webhook.timeoutSeconds (5)" in refusal
    assert _chart_refuses({"server": {"limits": {"maxConections": 50}}}) is not None  # a typo is refused
    assert _chart_refuses({"server": {"limits": {"maxConnections": 0}}}) is not None


def test_a_release_with_another_name_keeps_every_reference_consistent():
    objects = render(release="edge")
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    deployment = only(objects, "Deployment")
    pod_spec = deployment["spec"]["template"]["spec"]
    for volume in pod_spec["volumes"]:
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in names
    assert ("ServiceAccount", pod_spec["serviceAccountName"]) in names
    service = only(objects, "Service")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert config_of(objects)["webhook"]["service"]["name"] == service["metadata"]["name"] == "edge-gatewatch"


def test_notes_tell_the_user_how_to_see_it_work():
    with helm_python.Chart.load(CHART_DIR) as chart:
        rendered = chart.render(None, name="gatewatch", namespace=NAMESPACE, is_install=True)
    notes = next(text for name, text in rendered.items() if name.endswith("NOTES.txt"))
    assert "--image=busybox" in notes and "Warning:" in notes
    assert f"kubectl -n gatewatch-demo get events" in notes
    assert f"rollout status deployment/gatewatch" in notes and f"-n {NAMESPACE}" in notes


# --- values the schema cannot check alone, aligned with gatewatch's Settings ----------------


def _chart_refuses(values: dict[str, Any]) -> str | None:
    """Helm's refusal (schema or a template check), or None when the chart renders."""
    with helm_python.Chart.load(CHART_DIR) as chart:
        try:
            chart.render(values, name="gatewatch", namespace=NAMESPACE)
        except (helm_python.HelmValuesError, helm_python.HelmRenderError) as error:
            return str(error)
    return None


def _settings_refuse(values: dict[str, Any]) -> str | None:
    try:
        load_settings(environ={}, overrides={
            "webhook.timeoutSeconds": values["webhook"]["timeoutSeconds"],
            "podLookup.timeoutSeconds": values["podLookup"]["timeoutSeconds"],
        })
    except ConfigError as error:
        return str(error)
    return None


@pytest.mark.parametrize(
    ("timeout", "lookup"),
    [(1, 0.2), (2, 0.5), (3, 1), (3, 1.5), (3, 1.4), (4, 2), (5, 1), (30, 14.9), (30, 15), (31, 1)],
)
def test_the_chart_refuses_exactly_the_timeouts_gatewatch_refuses(timeout, lookup):
    values = {"webhook": {"timeoutSeconds": timeout}, "podLookup": {"timeoutSeconds": lookup},
              "terminationGracePeriodSeconds": 60}
    chart_refusal, settings_refusal = _chart_refuses(values), _settings_refuse(values)
    assert (chart_refusal is None) == (settings_refusal is None), (chart_refusal, settings_refusal)
    if settings_refusal is not None:
        assert "timeoutSeconds" in chart_refusal


# --- rolling updates -------------------------------------------------------------------------


def test_a_terminating_pod_keeps_serving_before_sigterm_within_its_grace_period(default_objects):
    pod_spec = only(default_objects, "Deployment")["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    # exec sleep, not the native sleep action (GA only in Kubernetes 1.34).
    assert container["lifecycle"]["preStop"] == {"exec": {"command": ["/bin/sleep", "5"]}}
    # The grace period covers the sleep plus the longest review in flight.
    config = config_of(default_objects)
    assert pod_spec["terminationGracePeriodSeconds"] >= (
        5 + config["server"]["drainSeconds"] + config["webhook"]["timeoutSeconds"])


def test_a_grace_period_too_short_for_the_sleep_the_drain_and_a_review_is_refused():
    # 10 s preStop + 5 s drain (default) + 5 s timeout (default) = 20 s
    refusal = _chart_refuses({"preStopSleepSeconds": 10, "terminationGracePeriodSeconds": 19})
    assert refusal is not None and "terminationGracePeriodSeconds (19) must cover" in refusal
    assert _chart_refuses({"preStopSleepSeconds": 10, "terminationGracePeriodSeconds": 20}) is None
    assert _chart_refuses({"preStopSleepSeconds": 10, "terminationGracePeriodSeconds": 15,
                           "server": {"drainSeconds": 0}}) is None


def test_no_pre_stop_hook_when_the_sleep_is_zero():
    container = only(render({"preStopSleepSeconds": 0}), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "lifecycle" not in container


# --- namespaces: the ignore label, cert-manager, label guard ----------------------------------


def test_the_ignore_label_is_off_unless_turned_on(default_objects, tmp_path):
    assert _settings_from(default_objects, tmp_path).namespaces.ignore_label is False
    assert _settings_from(render({"namespaces": {"ignoreLabel": True}}), tmp_path).namespaces.ignore_label is True


def test_protected_labels_and_the_enforce_failure_policy_reach_gatewatch(default_objects, tmp_path):
    defaults = _settings_from(default_objects, tmp_path)
    assert defaults.webhook.enforce_failure_policy == "Fail" and defaults.webhook.failure_policy == "Ignore"
    assert defaults.namespaces.protected_labels == ()
    settings = _settings_from(render({"namespaces": {"protectedLabels": ["tier"]},
                                      "webhook": {"enforceFailurePolicy": "Ignore"}}), tmp_path)
    assert settings.namespaces.protected_labels == ("tier",)
    assert settings.webhook.enforce_failure_policy == "Ignore"
    # As gatewatch refuses it: enforce namespaces never fail more open than the others.
    refusal = _chart_refuses({"webhook": {"failurePolicy": "Fail", "enforceFailurePolicy": "Ignore"}})
    assert refusal is not None and "enforceFailurePolicy: Ignore" in refusal
    assert _chart_refuses({"namespaces": {"protectedLabels": ["gatewatch.io/mode"]}}) is not None


def test_cert_manager_mode_exempts_cert_managers_namespace(default_objects, tmp_path):
    # With failurePolicy Fail, cert-manager must be able to start while gatewatch is down.
    objects = render({"certificates": {"mode": "cert-manager"}, "webhook": {"failurePolicy": "Fail"}})
    assert "cert-manager" in _settings_from(objects, tmp_path).excluded_namespaces
    custom = render({"certificates": {"mode": "cert-manager", "certManager": {"namespace": "security-certs"}},
                     "namespaces": {"exempt": ["monitoring"]}})
    assert set(_settings_from(custom, tmp_path).namespaces.exempt) == {"monitoring", "security-certs"}
    # Self-managed certificates depend on no other namespace.
    assert "cert-manager" not in _settings_from(default_objects, tmp_path).excluded_namespaces


def _policies(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects
            if o["apiVersion"] == "admissionregistration.k8s.io/v1" and o["kind"].startswith("ValidatingAdmissionPolicy")}


def test_the_label_guard_is_on_by_default_where_the_cluster_serves_admission_policies(default_objects,
                                                                                   production_objects):
    # Helm's default capabilities (`helm template` without --api-versions, a cluster before 1.30): none.
    assert _policies(default_objects) == {} and _policies(production_objects) == {}
    for values in (None, production_values()):
        assert set(_policies(render(values, api_versions=SERVES_ADMISSION_POLICIES))) == {
            "gatewatch-namespace-labels"}
    off = render({"namespaces": {"guardLabels": {"enabled": False}}}, api_versions=SERVES_ADMISSION_POLICIES)
    assert _policies(off) == {}


def test_notes_say_when_the_label_guard_could_not_be_created():
    assert "does not serve ValidatingAdmissionPolicy v1" in _notes(None)
    served = _notes(None, api_versions=SERVES_ADMISSION_POLICIES)
    assert "does not serve" not in served and "gatewatch-namespace-labels" in served
    assert "does not serve" not in _notes({"namespaces": {"guardLabels": {"enabled": False}}})


def test_the_namespace_label_guard_lets_only_the_listed_subjects_set_gatewatch_labels():
    objects = render({"namespaces": {"guardLabels": {
        "enabled": True, "allowedGroups": ["platform-admins"],
        "allowedUsers": ["system:serviceaccount:argocd:argocd-application-controller"]}}},
        api_versions=SERVES_ADMISSION_POLICIES)
    policy = next(o for o in objects if o["kind"] == "ValidatingAdmissionPolicy")
    binding = next(o for o in objects if o["kind"] == "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert "namespaces" in rule["resources"] and set(rule["operations"]) == {"CREATE", "UPDATE"}
    (condition,) = policy["spec"]["matchConditions"]
    assert '["platform-admins"]' in condition["expression"]
    assert '["system:serviceaccount:argocd:argocd-application-controller"]' in condition["expression"]
    # Whoever may update the policy (a cluster admin, whatever their group) could remove it anyway.
    assert ".name('gatewatch-namespace-labels').check('update').allowed()" in condition["expression"]
    assert all("gatewatch.io/" in variable["expression"] for variable in policy["spec"]["variables"]
               if variable["name"] != "rank")
    assert policy["spec"]["failurePolicy"] == "Fail"
    for obj in (policy, binding):  # ValidatingAdmissionPolicy v1 is Kubernetes 1.30+
        kubernetes_validate.validate(obj, kubernetes_validate.utils.latest_version(), strict=True)
        kubernetes_validate.validate(obj, "1.30", strict=True)


def test_the_webhook_configuration_guard_names_gatewatchs_service_account_and_configuration():
    objects = render({"webhook": {"guardConfiguration": True, "configurationName": "gw-edge"}}, release="edge")
    policy = next(o for o in objects if o["kind"] == "ValidatingAdmissionPolicy")
    binding = next(o for o in objects if o["kind"] == "ValidatingAdmissionPolicyBinding")
    service_account = only(objects, "ServiceAccount")["metadata"]["name"]
    service = only(objects, "Service")["metadata"]["name"]
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    (condition,) = policy["spec"]["matchConditions"]
    assert f"system:serviceaccount:{NAMESPACE}:{service_account}" in condition["expression"]
    name_check, target_check = (v["expression"] for v in policy["spec"]["validations"])
    assert "request.name == 'gw-edge'" in name_check
    assert f"service.name == '{service}'" in target_check and f"service.namespace == '{NAMESPACE}'" in target_check
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert set(rule["operations"]) == {"CREATE", "UPDATE", "DELETE"}
    for obj in (policy, binding):
        kubernetes_validate.validate(obj, "1.30", strict=True)


# --- webhook client authentication ---------------------------------------------------------


@pytest.mark.parametrize("source", ["secretName", "configMapName"])
def test_a_client_ca_is_mounted_where_the_config_says(source, tmp_path):
    objects = render({"webhook": {"clientCAFrom": {source: "apiserver-client-ca", "key": "bundle.pem"}}})
    settings = _settings_from(objects, tmp_path)
    pod_spec = only(objects, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod_spec["volumes"] if v["name"] == "client-ca")
    mount = next(m for m in pod_spec["containers"][0]["volumeMounts"] if m["name"] == "client-ca")
    kind = "secret" if source == "secretName" else "configMap"
    assert volume[kind][source if kind == "secret" else "name"] == "apiserver-client-ca"
    assert volume[kind]["items"] == [{"key": "bundle.pem", "path": "bundle.pem"}]
    assert mount["readOnly"] is True
    assert str(settings.webhook.client_ca) == f"{mount['mountPath']}/bundle.pem"


def test_without_a_client_ca_nothing_is_mounted_and_any_client_is_served(default_objects, tmp_path):
    assert _settings_from(default_objects, tmp_path).webhook.client_ca is None
    pod_spec = only(default_objects, "Deployment")["spec"]["template"]["spec"]
    assert "client-ca" not in {v["name"] for v in pod_spec["volumes"]}


def test_a_client_ca_from_both_a_secret_and_a_configmap_is_refused():
    refusal = _chart_refuses({"webhook": {"clientCAFrom": {"secretName": "a", "configMapName": "b"}}})
    assert refusal is not None and "not both" in refusal


# --- Helm 3 compatibility ----------------------------------------------------------------------

# Functions every Helm 3.8+ release knows: Go's text/template built-ins, Sprig v3.2 (Helm >= 3.5)
# and Helm's own. A function outside this list may exist in Helm 4 only: check before adding it.
HELM3_TEMPLATE_FUNCTIONS = {
    "and", "or", "not", "eq", "ne", "lt", "le", "gt", "ge", "len", "index", "print", "printf", "println",
    "include", "tpl", "required", "fail", "lookup", "toYaml", "fromYaml", "fromYamlArray", "toJson", "fromJson",
    "fromJsonArray", "toToml", "nindent", "indent", "quote", "squote", "default", "empty", "coalesce", "ternary",
    "trunc", "trimSuffix", "trimPrefix", "trim", "lower", "upper", "replace", "contains", "hasPrefix", "hasSuffix",
    "int", "int64", "float64", "toString", "add", "sub", "mul", "div", "mod", "max", "min", "addf", "subf", "mulf",
    "divf", "sha256sum", "b64enc", "b64dec", "dict", "list", "append", "set", "unset", "hasKey", "keys", "get",
    "uniq", "sortAlpha", "has", "without", "concat", "first", "last", "join", "split", "splitList", "toStrings", "kindIs",
    "typeIs", "semverCompare", "regexMatch", "now",
}
GO_TEMPLATE_KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
                        "nil", "true", "false"}


def _template_functions(text: str) -> set[str]:
    functions: set[str] = set()
    for action in re.findall(r"\{\{-?(.*?)-?\}\}", text, flags=re.S):
        action = re.sub(r"/\*.*?\*/", "", action, flags=re.S)  # comments
        action = re.sub(r'"(?:\\.|[^"\\])*"|`[^`]*`', "", action)  # string literals
        functions |= set(re.findall(r"(?<![.$\w])([A-Za-z_]\w*)", action)) - GO_TEMPLATE_KEYWORDS
    return functions


def test_the_chart_uses_only_what_helm_3_supports():
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"  # Helm 3 and 4; v3 charts would be Helm 4 only
    assert chart["kubeVersion"] == ">=1.28.0-0"
    used: set[str] = set()
    for path in (CHART_DIR / "templates").iterdir():
        used |= _template_functions(path.read_text())
    assert used - HELM3_TEMPLATE_FUNCTIONS == set()
    assert {"include", "toYaml", "fail", "fromJsonArray"} <= used  # the scan sees functions at all


def _notes(values: dict[str, Any] | None, *, api_versions: tuple[str, ...] = ()) -> str:
    with helm_python.Chart.load(CHART_DIR) as chart:
        rendered = render_manifests.render_templates(chart, values, name="gatewatch", namespace=NAMESPACE,
                                                     api_versions=api_versions)
    return next(text for name, text in rendered.items() if name.endswith("NOTES.txt"))


@pytest.mark.parametrize(
    ("values", "api_versions", "warned"),
    [
        (None, (), False),  # the label is off by default
        ({"namespaces": {"ignoreLabel": True}}, (), True),
        ({"namespaces": {"ignoreLabel": True}}, SERVES_ADMISSION_POLICIES, False),  # guarded
        ({"namespaces": {"ignoreLabel": True, "guardLabels": {"enabled": False}}}, SERVES_ADMISSION_POLICIES, True),
    ],
)
def test_notes_warn_that_anyone_who_labels_namespaces_can_opt_out(values, api_versions, warned):
    notes = _notes(values, api_versions=api_versions)
    assert ("WARNING: namespaces labelled gatewatch.io/ignore=true" in notes) is warned
    assert "A namespace label can only tighten the mode" in notes


def test_notes_say_where_an_outage_fails_closed():
    assert "refused in namespaces\nin enforce mode" in _notes(None)
    assert "admitted unchecked elsewhere" in _notes(None)
    assert "even in namespaces in\nenforce mode" in _notes({"webhook": {"enforceFailurePolicy": "Ignore"}})


def test_notes_point_at_client_authentication_until_it_is_set():
    assert "set webhook.clientCAFrom" in _notes(None)
    assert "set webhook.clientCAFrom" not in _notes({"webhook": {"clientCAFrom": {"secretName": "apiserver-ca"}}})


def _mode_lines(notes: str) -> dict[str, str]:
    """NOTES' "<mode>: <where>" lines, by mode."""
    return dict(re.findall(r"^  (enforce|warn|audit|off): (.*)$", notes, flags=re.M))


def test_notes_name_the_namespaces_that_now_deny():
    notes = _notes({"namespaces": {"modes": {"prod": "enforce", "sandbox": "off"},
                                   "selectors": [{"matchLabels": {"env": "prod"}, "mode": "enforce"}]}})
    lines = _mode_lines(notes)
    assert lines["enforce"] == 'namespace prod; namespaces matching {"matchLabels":{"env":"prod"}}'
    assert lines["warn"] == "every other namespace (the default mode)"
    assert lines["off"] == "namespace sandbox"
    assert "audit" not in lines
    assert "DENIES (403) requests matching a rule whose action is deny" in notes
    assert "(default mode: warn)" not in notes


def test_notes_say_every_namespace_denies_when_enforce_is_the_default():
    notes = _notes({"mode": "enforce", "namespaces": {"exempt": ["monitoring"]}})
    assert _mode_lines(notes) == {"enforce": "every namespace (the default mode)"}
    assert "never sent to gatewatch: kube-system, security, monitoring" in notes
    # The demo shows the denial, not a warning-only run.
    assert 'denied the request' in notes and "pod/demo created" not in notes


def test_notes_in_the_default_mode_deny_nowhere():
    notes = _notes(None)
    assert _mode_lines(notes) == {"warn": "every namespace (the default mode)"}
    assert "DENIES" not in notes


def test_an_empty_rule_set_is_refused_unless_the_chart_allows_it(default_objects, tmp_path):
    assert _settings_from(default_objects, tmp_path).rules.allow_empty is False
    allowed = render({"rules": {"allowEmpty": True}})
    (tmp_path / "allowed").mkdir()
    assert _settings_from(allowed, tmp_path / "allowed").rules.allow_empty is True


# --- rule packs ---------------------------------------------------------------------------


def test_the_default_install_turns_on_pod_security_baseline_at_warn(default_objects, tmp_path):
    settings = _settings_from(default_objects, tmp_path)
    assert [(pack.name, pack.action.value) for pack in settings.rules.packs] == [("pod-security-baseline", "warn")]
    assert not any(vars(settings.rules.pack_exemptions).values())


def test_packs_and_their_exemptions_reach_the_config(production_objects, tmp_path):
    settings = _settings_from(production_objects, tmp_path)
    assert [(pack.name, pack.action.value) for pack in settings.rules.packs] == [
        ("pod-security-baseline", "deny"), ("pod-security-restricted", "alert")]
    assert settings.rules.pack_exemptions.runtime_class_names == ("gvisor",)
    assert settings.rules.pack_exemptions.namespaces == ("monitoring",)


@pytest.mark.parametrize(
    ("values", "where", "reason"),
    [
        ({"rules": {"packs": [{"name": "pod-security-strict"}]}}, "/rules/packs/0/name", "must be one of"),
        ({"rules": {"packs": [{"name": "pod-security-baseline", "action": "block"}]}}, "/rules/packs/0/action",
         "must be one of"),
        ({"rules": {"packs": [{"action": "deny"}]}}, "/rules/packs/0", "name"),
        ({"rules": {"packExemptions": {"runtimeClasses": ["gvisor"]}}}, "/rules/packExemptions", "runtimeClasses"),
        ({"rules": {"packExemptions": {"namespaces": ["Kube_System"]}}}, "/rules/packExemptions/namespaces/0", ""),
    ],
)
def test_the_schema_rejects_bad_pack_values(values, where, reason):
    test_the_schema_rejects_bad_values_naming_the_key(values, where, reason)


@pytest.mark.parametrize("values_name", ["default", "enforce-production"])
def test_the_charts_own_pods_pass_both_pod_security_packs(values_name, tmp_path):
    # gatewatch's own Pods meet the Standards it enforces: checked with its packs.
    from gatewatch.decision import Mode
    from gatewatch.offline import run_check
    from gatewatch.rules.model import Action
    from gatewatch.rules.packs import PackSelection, load_ruleset
    import io

    values = None if values_name == "default" else production_values()
    workloads = [o for o in render(values) if o["kind"] in ("Deployment", "Job")]
    (tmp_path / "chart.yaml").write_text(yaml.safe_dump_all(workloads))
    ruleset = load_ruleset(
        None,
        packs=[PackSelection("pod-security-baseline", Action.DENY), PackSelection("pod-security-restricted", Action.DENY)],
    )
    out, err = io.StringIO(), io.StringIO()
    status = run_check(ruleset, [tmp_path], output_format="table", fail_on=Action.ALERT, mode=Mode.ENFORCE,
                       out=out, err=err)
    assert (status, out.getvalue()) == (0, "no rule matched\n")
    assert "2 object(s) checked, 0 match(es)" in err.getvalue()
