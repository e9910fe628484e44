"""The pod-security packs: every control, in every container kind and every spelling the
Pod Security Standards allow, against pods that violate it and pods that are allowed.

Each case builds a Pod from a base that passes the whole Restricted profile and
checks the exact set of controls the two packs report for it (so a case also
fails when an unrelated control fires). When Kubernetes' own fixtures are at
hand (``GATEWATCH_PSA_TESTDATA``: the ``test/testdata`` directory of
k8s.io/pod-security-admission), the packs are also run against them.
"""
from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatewatch.documents import document_from_admission_review, document_from_audit_event, document_from_pod
from gatewatch.engine import RuleEngine
from gatewatch.rules.packs import PackSelection, load_ruleset

BASELINE, RESTRICTED = "pod-security-baseline", "pod-security-restricted"
KINDS = ("containers", "initContainers", "ephemeralContainers")
TAG_PREFIX = "Pod Security: "

ENGINE = RuleEngine(load_ruleset(packs=[PackSelection(BASELINE), PackSelection(RESTRICTED)]))
BASELINE_ENGINE = RuleEngine(load_ruleset(packs=[PackSelection(BASELINE)]))


def controls(pod: dict[str, Any], *, engine: RuleEngine = ENGINE) -> set[str]:
    """The Pod Security controls (``baseline/privileged-containers``) the packs report for ``pod``."""
    found = set()
    for match in engine.evaluate(document_from_pod(pod), new_terms=False):
        found |= {tag.removeprefix(TAG_PREFIX) for tag in match.rule.tags if tag.startswith(TAG_PREFIX)}
    return found


def restricted_container(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": "registry.example.com/app:1.0",
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }


def base_pod() -> dict[str, Any]:
    """A Pod that passes the whole Restricted profile, with a container of every kind."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "payments"},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [restricted_container("app"), restricted_container("sidecar")],
            "initContainers": [restricted_container("init")],
            "ephemeralContainers": [restricted_container("debugger")],
        },
    }


Mutation = Callable[[dict[str, Any]], None]


def pod_with(*mutations: Mutation) -> dict[str, Any]:
    pod = base_pod()
    for mutate in mutations:
        mutate(pod)
    return pod


def spec(**fields: Any) -> Mutation:
    return lambda pod: pod["spec"].update(fields)


def pod_context(**fields: Any) -> Mutation:
    return lambda pod: pod["spec"].setdefault("securityContext", {}).update(copy.deepcopy(fields))


def no_pod_context(*keys: str) -> Mutation:
    def mutate(pod: dict[str, Any]) -> None:
        for key in keys:
            pod["spec"]["securityContext"].pop(key, None)
    return mutate


def container(kind: str, index: int = -1, **fields: Any) -> Mutation:
    return lambda pod: pod["spec"][kind][index].update(copy.deepcopy(fields))


def context(kind: str, index: int = -1, **fields: Any) -> Mutation:
    return lambda pod: pod["spec"][kind][index].setdefault("securityContext", {}).update(copy.deepcopy(fields))


def every_context(**fields: Any) -> Mutation:
    def mutate(pod: dict[str, Any]) -> None:
        for kind in KINDS:
            for item in pod["spec"][kind]:
                item.setdefault("securityContext", {}).update(copy.deepcopy(fields))
    return mutate


def no_context(kind: str, *keys: str) -> Mutation:
    def mutate(pod: dict[str, Any]) -> None:
        for key in keys:
            pod["spec"][kind][-1].get("securityContext", {}).pop(key, None)
    return mutate


def annotations(**values: str) -> Mutation:
    return lambda pod: pod["metadata"].setdefault("annotations", {}).update(values)


def volumes(*items: dict[str, Any]) -> Mutation:
    return lambda pod: pod["spec"].setdefault("volumes", []).extend(copy.deepcopy(list(items)))


CASES: list[tuple[str, list[Mutation], set[str]]] = [("restricted base", [], set())]


def case(name: str, mutations: list[Mutation], expected: set[str]) -> None:
    CASES.append((name, mutations, expected))


# --- baseline -----------------------------------------------------------------------------

# hostprocess: pod and every container kind; only true is forbidden.
case("hostProcess true on the pod", [pod_context(windowsOptions={"hostProcess": True})], {"baseline/hostprocess"})
case("hostProcess false on the pod", [pod_context(windowsOptions={"hostProcess": False})], set())
for kind in KINDS:
    case(f"hostProcess true in {kind}", [context(kind, windowsOptions={"hostProcess": True})], {"baseline/hostprocess"})
    case(f"hostProcess false in {kind}", [context(kind, windowsOptions={"hostProcess": False})], set())
    case(f"windowsOptions without hostProcess in {kind}",
         [context(kind, windowsOptions={"runAsUserName": "app"})], set())

# host-namespaces
for field in ("hostNetwork", "hostPID", "hostIPC"):
    case(f"{field} true", [spec(**{field: True})], {"baseline/host-namespaces"})
    case(f"{field} false", [spec(**{field: False})], set())

# privileged-containers
for kind in KINDS:
    case(f"privileged in {kind}", [context(kind, privileged=True)], {"baseline/privileged-containers"})
    case(f"privileged false in {kind}", [context(kind, privileged=False)], set())
    case(f"privileged null in {kind}", [context(kind, privileged=None)], set())

# capabilities (baseline: the default set; restricted: only NET_BIND_SERVICE may be added)
DEFAULT_SET = ("AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
               "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT")
for kind in KINDS:
    case(f"SYS_ADMIN added in {kind}",
         [context(kind, capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]})],
         {"baseline/capabilities", "restricted/capabilities"})
    case(f"NET_BIND_SERVICE added in {kind}",
         [context(kind, capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})], set())
    case(f"the whole default set added in {kind}",
         [context(kind, capabilities={"drop": ["ALL"], "add": list(DEFAULT_SET)})], {"restricted/capabilities"})
    case(f"empty add in {kind}", [context(kind, capabilities={"drop": ["ALL"], "add": []})], set())
    for spelling in ("CAP_SYS_ADMIN", "sys_admin", "chown", "ALL"):
        case(f"{spelling} added in {kind}",
             [context(kind, capabilities={"drop": ["ALL"], "add": [spelling]})],
             {"baseline/capabilities", "restricted/capabilities"})
    case(f"a default and a forbidden one added in {kind}",
         [context(kind, capabilities={"drop": ["ALL"], "add": ["CHOWN", "NET_RAW"]})],
         {"baseline/capabilities", "restricted/capabilities"})
for capability in DEFAULT_SET:
    case(f"{capability} added (baseline allows it)",
         [context("containers", capabilities={"drop": ["ALL"], "add": [capability]})],
         set() if capability == "NET_BIND_SERVICE" else {"restricted/capabilities"})

# hostpath-volumes (restricted's volume-types forbids them too)
case("hostPath volume", [volumes({"name": "root", "hostPath": {"path": "/"}})],
     {"baseline/hostpath-volumes", "restricted/volume-types"})
case("hostPath volume with a type", [volumes({"name": "sock", "hostPath": {"path": "/run/containerd/containerd.sock",
                                                                          "type": "Socket"}})],
     {"baseline/hostpath-volumes", "restricted/volume-types"})
case("hostPath null", [volumes({"name": "data", "hostPath": None, "emptyDir": {}})], set())

# host-ports: undefined and 0 are allowed
for kind in KINDS:
    case(f"hostPort in {kind}", [container(kind, ports=[{"containerPort": 80, "hostPort": 8080}])],
         {"baseline/host-ports"})
    case(f"hostPort 0 in {kind}", [container(kind, ports=[{"containerPort": 80, "hostPort": 0}])], set())
    case(f"no hostPort in {kind}", [container(kind, ports=[{"containerPort": 80}])], set())
    case(f"hostPort 0 and 443 in {kind}",
         [container(kind, ports=[{"containerPort": 80, "hostPort": 0}, {"containerPort": 443, "hostPort": 443}])],
         {"baseline/host-ports"})

# host-probes-lifecycle-hooks: host undefined or "" only
HANDLERS = [("livenessProbe", None), ("readinessProbe", None), ("startupProbe", None),
            ("lifecycle", "postStart"), ("lifecycle", "preStop")]


def handler(field: str, hook: str | None, action: str, host: Any) -> dict[str, Any]:
    target: dict[str, Any] = {"port": 8080}
    if host is not ...:
        target["host"] = host
    body = {action: target}
    return {field: {hook: body} if hook else body}


for kind in KINDS:
    for field, hook in HANDLERS:
        for action in ("httpGet", "tcpSocket"):
            where = f"{field}.{hook}.{action}" if hook else f"{field}.{action}"
            case(f"{where}.host in {kind}", [container(kind, **handler(field, hook, action, "169.254.169.254"))],
                 {"baseline/host-probes-lifecycle-hooks"})
            case(f'{where}.host "" in {kind}', [container(kind, **handler(field, hook, action, ""))], set())
            case(f"{where} without host in {kind}", [container(kind, **handler(field, hook, action, ...))], set())

# apparmor: the field on the pod and every container kind, and the annotations
case("appArmorProfile Unconfined on the pod", [pod_context(appArmorProfile={"type": "Unconfined"})],
     {"baseline/apparmor"})
for allowed in ({"type": "RuntimeDefault"}, {"type": "Localhost", "localhostProfile": "k8s-apparmor-example"}):
    case(f"appArmorProfile {allowed['type']} on the pod", [pod_context(appArmorProfile=allowed)], set())
for kind in KINDS:
    case(f"appArmorProfile Unconfined in {kind}", [context(kind, appArmorProfile={"type": "Unconfined"})],
         {"baseline/apparmor"})
    case(f"appArmorProfile RuntimeDefault in {kind}", [context(kind, appArmorProfile={"type": "RuntimeDefault"})],
         set())
    case(f"appArmorProfile Localhost in {kind}",
         [context(kind, appArmorProfile={"type": "Localhost", "localhostProfile": "p"})], set())
APPARMOR = "container.apparmor.security.beta.kubernetes.io/"
for value, expected in (("unconfined", {"baseline/apparmor"}), ("anything-else", {"baseline/apparmor"}),
                        ("runtime/default", set()), ("localhost/k8s-apparmor-example", set()), ("", set())):
    for name in ("app", "init", "debugger", "not-a-container"):
        case(f"apparmor annotation {value!r} for {name}", [annotations(**{APPARMOR + name: value})], expected)
case("one good and one bad apparmor annotation",
     [annotations(**{APPARMOR + "app": "runtime/default", APPARMOR + "init": "unconfined"})], {"baseline/apparmor"})
case("an unrelated annotation with value unconfined", [annotations(**{"example.com/apparmor": "unconfined"})], set())

# selinux: type from the allowed set or "", user and role unset or ""
SELINUX_TYPES = ("", "container_t", "container_init_t", "container_kvm_t", "container_engine_t")
for where, mutate in [("the pod", lambda **f: pod_context(seLinuxOptions=f))] + [
    (kind, (lambda kind: lambda **f: context(kind, seLinuxOptions=f))(kind)) for kind in KINDS
]:
    case(f"SELinux type spc_t on {where}", [mutate(type="spc_t")], {"baseline/selinux"})
    for allowed in SELINUX_TYPES:
        case(f"SELinux type {allowed!r} on {where}", [mutate(type=allowed)], set())
    case(f"SELinux user on {where}", [mutate(user="sysadm_u")], {"baseline/selinux"})
    case(f"SELinux role on {where}", [mutate(role="sysadm_r")], {"baseline/selinux"})
    case(f"SELinux empty user and role on {where}", [mutate(user="", role="")], set())
    case(f"SELinux level on {where}", [mutate(level="s0:c123,c456")], set())

# proc-mount: Default or unset; baseline allows any value in a user namespace (hostUsers false), restricted never
for kind in KINDS:
    case(f"procMount Unmasked in {kind}", [context(kind, procMount="Unmasked")],
         {"baseline/proc-mount", "restricted/proc-mount"})
    case(f"procMount Default in {kind}", [context(kind, procMount="Default")], set())
    case(f"procMount Unmasked in {kind}, hostUsers false", [context(kind, procMount="Unmasked"), spec(hostUsers=False)],
         {"restricted/proc-mount"})
    case(f"procMount Unmasked in {kind}, hostUsers true", [context(kind, procMount="Unmasked"), spec(hostUsers=True)],
         {"baseline/proc-mount", "restricted/proc-mount"})

# seccomp: baseline forbids Unconfined wherever it is set; restricted requires RuntimeDefault or Localhost
case("seccomp Unconfined on the pod", [pod_context(seccompProfile={"type": "Unconfined"})],
     {"baseline/seccomp", "restricted/seccomp"})
case("seccomp Localhost on the pod",
     [pod_context(seccompProfile={"type": "Localhost", "localhostProfile": "profiles/audit.json"})], set())
case("seccomp Unconfined on the pod, RuntimeDefault in every container",
     [pod_context(seccompProfile={"type": "Unconfined"}), every_context(seccompProfile={"type": "RuntimeDefault"})],
     {"baseline/seccomp", "restricted/seccomp"})
case("no seccomp on the pod, RuntimeDefault in every container",
     [no_pod_context("seccompProfile"), every_context(seccompProfile={"type": "RuntimeDefault"})], set())
for kind in KINDS:
    case(f"seccomp Unconfined in {kind}", [context(kind, seccompProfile={"type": "Unconfined"})],
         {"baseline/seccomp", "restricted/seccomp"})
    case(f"seccomp Localhost in {kind}",
         [context(kind, seccompProfile={"type": "Localhost", "localhostProfile": "p.json"})], set())
    case(f"no seccomp on the pod nor in {kind}",
         [no_pod_context("seccompProfile"), every_context(seccompProfile={"type": "RuntimeDefault"}),
          no_context(kind, "seccompProfile")],
         {"restricted/seccomp"})
case("no seccomp anywhere", [no_pod_context("seccompProfile")], {"restricted/seccomp"})
case("no seccomp anywhere, Windows pod", [no_pod_context("seccompProfile"), spec(os={"name": "windows"})], set())
case("no seccomp anywhere, Linux pod", [no_pod_context("seccompProfile"), spec(os={"name": "linux"})],
     {"restricted/seccomp"})

# sysctls: the safe set of the latest policy version
SAFE_SYSCTLS = ("kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem",
                "net.ipv4.tcp_wmem", "net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat")
case("every safe sysctl", [pod_context(sysctls=[{"name": name, "value": "1"} for name in SAFE_SYSCTLS])], set())
for name in ("kernel.msgmax", "net.core.somaxconn", "net.ipv4.ip_forward", "vm.swappiness", "kernel.shm*", ""):
    case(f"sysctl {name!r}", [pod_context(sysctls=[{"name": name, "value": "1"}])], {"baseline/sysctls"})
case("a safe and an unsafe sysctl",
     [pod_context(sysctls=[{"name": "net.ipv4.tcp_syncookies", "value": "1"}, {"name": "kernel.sem", "value": "1"}])],
     {"baseline/sysctls"})
case("empty sysctls", [pod_context(sysctls=[])], set())

# --- restricted ------------------------------------------------------------------------------

ALLOWED_VOLUMES = {
    "configMap": {"name": "settings"}, "csi": {"driver": "inline.storage.kubernetes.io"},
    "downwardAPI": {"items": []}, "emptyDir": {}, "ephemeral": {"volumeClaimTemplate": {"spec": {}}},
    "image": {"reference": "registry.example.com/data:1"}, "persistentVolumeClaim": {"claimName": "data"},
    "projected": {"sources": []}, "secret": {"secretName": "tls"},
}
for source, body in ALLOWED_VOLUMES.items():
    case(f"{source} volume", [volumes({"name": "v", source: body})], set())
case("volume without a source (defaulted to emptyDir)", [volumes({"name": "scratch"})], set())
RESTRICTED_VOLUMES = ("gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi", "glusterfs", "rbd",
                      "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile", "vsphereVolume", "quobyte",
                      "azureDisk", "portworxVolume", "photonPersistentDisk", "scaleIO", "storageos",
                      "aFutureVolumeType")
for source in RESTRICTED_VOLUMES:
    case(f"{source} volume", [volumes({"name": "v", source: {"x": "y"}})], {"restricted/volume-types"})
case("an allowed and a restricted volume",
     [volumes({"name": "a", "emptyDir": {}}, {"name": "b", "nfs": {"server": "nfs", "path": "/"}})],
     {"restricted/volume-types"})

# privilege-escalation: must be false in every container; Windows pods are exempt
for kind in KINDS:
    case(f"allowPrivilegeEscalation true in {kind}", [context(kind, allowPrivilegeEscalation=True)],
         {"restricted/privilege-escalation"})
    case(f"allowPrivilegeEscalation unset in {kind}", [no_context(kind, "allowPrivilegeEscalation")],
         {"restricted/privilege-escalation"})
    case(f"allowPrivilegeEscalation null in {kind}", [context(kind, allowPrivilegeEscalation=None)],
         {"restricted/privilege-escalation"})
    case(f"no securityContext in {kind}", [container(kind, securityContext=None)],
         {"restricted/privilege-escalation", "restricted/capabilities"})
    case(f"allowPrivilegeEscalation unset in {kind}, Windows pod",
         [no_context(kind, "allowPrivilegeEscalation"), spec(os={"name": "windows"})], set())

# running-as-non-root: true on the pod, or on every container; false anywhere is forbidden
case("runAsNonRoot false on the pod", [pod_context(runAsNonRoot=False)], {"restricted/running-as-non-root"})
case("runAsNonRoot false on the pod, true in every container",
     [pod_context(runAsNonRoot=False), every_context(runAsNonRoot=True)], {"restricted/running-as-non-root"})
case("runAsNonRoot unset on the pod, true in every container",
     [no_pod_context("runAsNonRoot"), every_context(runAsNonRoot=True)], set())
case("runAsNonRoot unset everywhere", [no_pod_context("runAsNonRoot")], {"restricted/running-as-non-root"})
case("runAsNonRoot unset everywhere, hostUsers false", [no_pod_context("runAsNonRoot"), spec(hostUsers=False)], set())
case("runAsNonRoot false on the pod, hostUsers false", [pod_context(runAsNonRoot=False), spec(hostUsers=False)], set())
case("runAsNonRoot unset everywhere, Windows pod", [no_pod_context("runAsNonRoot"), spec(os={"name": "windows"})],
     {"restricted/running-as-non-root"})
for kind in KINDS:
    case(f"runAsNonRoot false in {kind}", [context(kind, runAsNonRoot=False)], {"restricted/running-as-non-root"})
    case(f"runAsNonRoot unset on the pod and in {kind}",
         [no_pod_context("runAsNonRoot"), every_context(runAsNonRoot=True), no_context(kind, "runAsNonRoot")],
         {"restricted/running-as-non-root"})
    case(f"runAsNonRoot true in {kind}", [context(kind, runAsNonRoot=True)], set())

# running-as-non-root-user: runAsUser 0 anywhere; hostUsers false exempts
case("runAsUser 0 on the pod", [pod_context(runAsUser=0)], {"restricted/running-as-non-root-user"})
case("runAsUser 1000 on the pod", [pod_context(runAsUser=1000)], set())
case("runAsUser 0 on the pod, hostUsers false", [pod_context(runAsUser=0), spec(hostUsers=False)], set())
for kind in KINDS:
    case(f"runAsUser 0 in {kind}", [context(kind, runAsUser=0)], {"restricted/running-as-non-root-user"})
    case(f"runAsUser 65534 in {kind}", [context(kind, runAsUser=65534)], set())
    case(f"runAsUser 0 in {kind}, hostUsers false", [context(kind, runAsUser=0), spec(hostUsers=False)], set())

# capabilities (restricted): drop must contain ALL, exactly spelt
for kind in KINDS:
    case(f"capabilities unset in {kind}", [no_context(kind, "capabilities")], {"restricted/capabilities"})
    case(f"drop all (lower case) in {kind}", [context(kind, capabilities={"drop": ["all"]})],
         {"restricted/capabilities"})
    case(f"drop NET_RAW only in {kind}", [context(kind, capabilities={"drop": ["NET_RAW"]})],
         {"restricted/capabilities"})
    case(f"drop NET_RAW and ALL in {kind}", [context(kind, capabilities={"drop": ["NET_RAW", "ALL"]})], set())
    case(f"capabilities unset in {kind}, Windows pod", [no_context(kind, "capabilities"), spec(os={"name": "windows"})],
         set())


@pytest.mark.parametrize(("name", "mutations", "expected"), CASES, ids=[name for name, _, _ in CASES])
def test_pod_security_controls(name: str, mutations: list[Mutation], expected: set[str]) -> None:
    assert controls(pod_with(*mutations)) == expected


def test_every_control_has_a_violating_and_an_allowed_case() -> None:
    ruleset = ENGINE.ruleset
    tags = {tag.removeprefix(TAG_PREFIX) for rule in ruleset.rules for tag in rule.tags if tag.startswith(TAG_PREFIX)}
    violated = set().union(*(expected for _, _, expected in CASES))
    assert violated == tags
    assert any(not expected for _, mutations, expected in CASES if mutations)


def test_a_default_pod_passes_baseline_and_fails_restricted() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
           "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}
    assert controls(pod, engine=BASELINE_ENGINE) == set()
    assert controls(pod) == {"restricted/privilege-escalation", "restricted/running-as-non-root",
                             "restricted/seccomp", "restricted/capabilities"}


# --- the packs' control names and ATT&CK mapping ---------------------------------------------

ISSUE_CONTROLS = {
    "baseline": {"hostprocess", "host-namespaces", "privileged-containers", "capabilities", "hostpath-volumes",
                 "host-ports", "apparmor", "selinux", "proc-mount", "seccomp", "sysctls"},
    "restricted": {"volume-types", "privilege-escalation", "running-as-non-root", "running-as-non-root-user",
                   "seccomp", "capabilities"},
}
# Controls the Standards gained after the list above was written (v1.34, v1.35).
LATER_CONTROLS = {"baseline": {"host-probes-lifecycle-hooks"}, "restricted": {"proc-mount"}}


@pytest.mark.parametrize("level", ["baseline", "restricted"])
def test_each_pack_rule_carries_one_control_tag_and_an_attack_mapping_or_says_it_is_hygiene(level: str) -> None:
    ruleset = load_ruleset([], packs=[PackSelection(f"pod-security-{level}")])
    pack_rules = [rule for rule in ruleset.rules if rule.ruleset == f"pod-security-{level}"]
    seen = set()
    for rule in pack_rules:
        control_tags = [tag for tag in rule.tags if tag.startswith(TAG_PREFIX)]
        assert len(control_tags) == 1, rule.id
        tag_level, _, control = control_tags[0].removeprefix(TAG_PREFIX).partition("/")
        assert tag_level == level
        seen.add(control)
        if rule.threat:
            assert "ATT&CK" in rule.description and all(t in rule.description for t in rule.technique_ids), rule.id
        else:
            assert "Rule Type: Hygiene" in rule.tags and "Hygiene" in rule.description, rule.id
    assert seen == ISSUE_CONTROLS[level] | LATER_CONTROLS[level]


# --- the same answer from a review, an audit event and a manifest -------------------------------


def admission_review(pod: dict[str, Any], *, operation: str = "CREATE", subresource: str | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": "0d3c1e3a-0000-4000-8000-000000000001",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": operation, "name": "web", "namespace": "payments", "object": pod,
        "userInfo": {"username": "alice"},
    }
    if subresource:
        request["subResource"] = subresource
    if operation == "UPDATE":
        request["oldObject"] = base_pod()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def audit_event(pod: Any, *, verb: str = "create", subresource: str | None = None) -> dict[str, Any]:
    object_ref = {"resource": "pods", "namespace": "payments", "name": "web", "apiVersion": "v1"}
    if subresource:
        object_ref["subresource"] = subresource
    return {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse", "auditID": "a1",
        "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/payments/pods", "verb": verb,
        "user": {"username": "alice"}, "objectRef": object_ref, "requestObject": pod,
        "annotations": {"authorization.k8s.io/decision": "allow"},
    }


def matched_controls(document: dict[str, Any]) -> set[str]:
    return {tag.removeprefix(TAG_PREFIX) for match in ENGINE.evaluate(document, new_terms=False)
            for tag in match.rule.tags if tag.startswith(TAG_PREFIX)}


PRIVILEGED_INIT = pod_with(context("initContainers", privileged=True))


@pytest.mark.parametrize("document", [
    document_from_pod(PRIVILEGED_INIT),
    document_from_admission_review(admission_review(PRIVILEGED_INIT)),
    document_from_admission_review(admission_review(PRIVILEGED_INIT, operation="UPDATE")),
    document_from_admission_review(admission_review(PRIVILEGED_INIT, operation="UPDATE",
                                                    subresource="ephemeralcontainers")),
    document_from_audit_event(audit_event(PRIVILEGED_INIT)),
    document_from_audit_event(audit_event(PRIVILEGED_INIT, verb="update")),
], ids=["manifest", "review create", "review update", "review ephemeralcontainers", "audit create", "audit update"])
def test_a_whole_pod_is_evaluated_wherever_it_comes_from(document: dict[str, Any]) -> None:
    assert matched_controls(document) == {"baseline/privileged-containers"}


@pytest.mark.parametrize("event", [
    # A patch body is not a Pod: "no seccomp, no runAsNonRoot" would be false alarms.
    audit_event({"spec": {"containers": [{"name": "app", "image": "nginx:1.28"}]}}, verb="patch"),
    audit_event({"metadata": {"labels": {"canary": "true"}}}, verb="patch"),
    # Status updates and bindings carry a Pod or a Binding, not a spec the user wrote.
    audit_event(pod_with(context("containers", privileged=True)), verb="update", subresource="status"),
    audit_event({"kind": "Binding", "target": {"kind": "Node", "name": "n1"}}, subresource="binding"),
], ids=["spec patch", "label patch", "status update", "binding"])
def test_what_is_not_a_whole_pod_is_not_evaluated(event: dict[str, Any]) -> None:
    assert matched_controls(document_from_audit_event(event)) == set()


# --- Kubernetes' own fixtures, when present ---------------------------------------------------

PSA_TESTDATA = os.environ.get("GATEWATCH_PSA_TESTDATA")
# PSA check id (the fixtures' file names) -> the control it tests.
PSA_CHECKS = {
    "allowprivilegeescalation": "restricted/privilege-escalation", "apparmorprofile": "baseline/apparmor",
    "capabilities_baseline": "baseline/capabilities", "capabilities_restricted": "restricted/capabilities",
    "hostnamespaces": "baseline/host-namespaces", "hostpathvolumes": "baseline/hostpath-volumes",
    "hostports": "baseline/host-ports", "hostprobesandhostlifecycle": "baseline/host-probes-lifecycle-hooks",
    "privileged": "baseline/privileged-containers", "procmount": "baseline/proc-mount",
    "procmount_restricted": "restricted/proc-mount", "restrictedvolumes": "restricted/volume-types",
    "runasnonroot": "restricted/running-as-non-root", "runasuser": "restricted/running-as-non-root-user",
    "seccompprofile_baseline": "baseline/seccomp", "seccompprofile_restricted": "restricted/seccomp",
    "selinuxoptions": "baseline/selinux", "sysctls": "baseline/sysctls", "windowshostprocess": "baseline/hostprocess",
}


def psa_fixtures() -> list[tuple[str, str, Path]]:
    if not PSA_TESTDATA:
        return []
    root = Path(PSA_TESTDATA)
    versions = sorted((path.name for path in (root / "baseline").iterdir()),
                      key=lambda name: tuple(int(part) for part in name.removeprefix("v").split(".")))
    latest = versions[-1]
    return [(level, outcome, path) for level in ("baseline", "restricted") for outcome in ("pass", "fail")
            for path in sorted((root / level / latest / outcome).glob("*.yaml"))]


@pytest.mark.skipif(not PSA_TESTDATA, reason="GATEWATCH_PSA_TESTDATA (k8s.io/pod-security-admission test/testdata) not set")
@pytest.mark.parametrize(("level", "outcome", "path"), psa_fixtures(),
                         ids=[f"{level}/{outcome}/{path.stem}" for level, outcome, path in psa_fixtures()])
def test_kubernetes_pod_security_admission_fixtures(level: str, outcome: str, path: Path) -> None:
    engine = BASELINE_ENGINE if level == "baseline" else ENGINE
    found = controls(yaml.safe_load(path.read_text()), engine=engine)
    if outcome == "pass":
        assert found == set()
    else:
        assert PSA_CHECKS[re.sub(r"\d+$", "", path.stem)] in found
