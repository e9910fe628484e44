"""The default rules.yaml: the two Elastic seed rules kept faithful, and the
companions that close their gaps, judged on the documents gatewatch builds
from admission reviews and audit-log events."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gatewatch.documents import document_from_admission_review, document_from_audit_event, document_from_audit_line
from gatewatch.rules import Action, RuleType, Severity, load_rules
from gatewatch.rules.lint import has_errors, lint_ruleset

EXEC_SEED = "14de811c-d60f-11ec-9fd7-f661ea17fbce"
DEBUG_IMAGE_SEED = "93120a05-caf5-47f6-a305-e8abee463fb9"
EXEC_ATTACH_COMPANION = "gatewatch-exec-attach-any-verb"
EPHEMERAL_COMPANION = "gatewatch-ephemeral-container"
DEBUG_IMAGE_COMPANION = "gatewatch-debug-image-pod"


@pytest.fixture(scope="module")
def ruleset():
    return load_rules()


# --- input builders -----------------------------------------------------------------


def admission_review(
    *,
    operation: str,
    obj: dict[str, Any],
    subresource: str | None = None,
    user: str = "alice",
    namespace: str = "payments",
    name: str = "web-1",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": "6f1c2b7a-0000-4000-8000-000000000001",
        "kind": {"group": "", "version": "v1", "kind": obj.get("kind", "Pod")},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": user, "groups": ["system:authenticated"]},
        "object": obj,
        "dryRun": False,
    }
    if subresource:
        request["subResource"] = subresource
    if options is not None:
        request["options"] = options
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def connect_review(subresource: str, *, user: str = "alice") -> dict[str, Any]:
    kind = "PodExecOptions" if subresource == "exec" else "PodAttachOptions"
    options = {"kind": kind, "apiVersion": "v1", "stdin": True, "tty": True, "container": "app"}
    if subresource == "exec":
        options["command"] = ["sh"]
    return admission_review(operation="CONNECT", subresource=subresource, obj=options, user=user)


def pod(*, containers: list[str], init_containers: list[str] = (), name: str = "web-1") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(containers)]}
    if init_containers:
        spec["initContainers"] = [{"name": f"init{i}", "image": image} for i, image in enumerate(init_containers)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def pod_create_review(*, user: str = "alice", namespace: str = "payments", **pod_args: Any) -> dict[str, Any]:
    return admission_review(operation="CREATE", obj=pod(**pod_args), user=user, namespace=namespace)


def kubectl_debug_review(image: str = "busybox:1.36", *, user: str = "alice") -> dict[str, Any]:
    target = pod(containers=["registry.example/payments/api:2.1"])
    target["spec"]["ephemeralContainers"] = [{"name": "debugger-x1", "image": image, "stdin": True, "tty": True}]
    return admission_review(
        operation="UPDATE", subresource="ephemeralcontainers", obj=target, user=user,
        options={"kind": "PatchOptions", "apiVersion": "meta.k8s.io/v1"},
    )


def audit_line(*, verb: str, subresource: str | None, user: str = "alice", namespace: str = "payments") -> str:
    object_ref: dict[str, Any] = {"resource": "pods", "namespace": namespace, "name": "web-1", "apiVersion": "v1"}
    uri = f"/api/v1/namespaces/{namespace}/pods/web-1"
    if subresource:
        object_ref["subresource"] = subresource
        uri += f"/{subresource}?command=sh&container=app&stdin=true&stdout=true&tty=true"
    return json.dumps({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": "0b7c5f1e-3a2d-4c8e-9f61-2d7a8b4c1e90", "stage": "ResponseComplete",
        "requestURI": uri, "verb": verb,
        "user": {"username": user, "groups": ["system:authenticated"]},
        "sourceIPs": ["10.0.12.7"], "userAgent": "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46",
        "objectRef": object_ref, "responseStatus": {"metadata": {}, "code": 101},
        "requestReceivedTimestamp": "2026-11-22T05:10:02.401876Z",
        "stageTimestamp": "2026-11-22T05:10:02.404012Z",
        "annotations": {"authorization.k8s.io/decision": "allow"},
    })


def firing(ruleset, document: dict[str, Any]) -> set[str]:
    """Ids of the enabled rules whose query matches and no exception suppresses."""
    return {
        rule.id for rule in ruleset.rules
        if rule.enabled and rule.matcher(document) and not rule.is_excepted(document)
    }


# --- the seeds, faithful --------------------------------------------------------------


def test_exec_seed_is_elastics_rule(ruleset):
    rule = ruleset.get(EXEC_SEED)
    assert rule.name == "Kubernetes User Exec into Pod"
    assert (rule.type, rule.severity, rule.risk_score) == (RuleType.QUERY, Severity.MEDIUM, 47)
    assert " ".join(rule.query.split()) == (
        'event.dataset : "kubernetes.audit_logs" and kubernetes.audit.annotations.authorization_k8s_io/decision:"allow" '
        'and kubernetes.audit.verb:"create" and kubernetes.audit.objectRef.resource:"pods" '
        'and kubernetes.audit.objectRef.subresource:"exec"'
    )
    assert rule.tactic_ids == ("TA0002",) and rule.technique_ids == ("T1609",)


def test_debug_image_seed_is_elastics_new_terms_rule(ruleset):
    rule = ruleset.get(DEBUG_IMAGE_SEED)
    assert rule.name == "Kubernetes Pod Creation Using Common Debug or Base Images"
    assert (rule.type, rule.severity, rule.risk_score) == (RuleType.NEW_TERMS, Severity.LOW, 21)
    assert rule.new_terms.fields == ("source.ip", "user_agent.original", "user.name")
    assert "kubernetes.audit.requestObject.spec.containers.image:(alpine* or busybox* or ubuntu\\:*" in rule.query
    assert [(t.tactic.id, [x.id for x in t.techniques]) for t in rule.threat] == [
        ("TA0002", ["T1610", "T1609"]),
        ("TA0005", ["T1610"]),
    ]
    # At admission there is no source.ip or user agent: it keys on the user.
    assert rule.new_terms.admission_fields() == ("user.name",)


def test_every_default_rule_carries_attack_ids_and_an_action(ruleset):
    for rule in ruleset.rules:
        assert rule.tactic_ids and rule.technique_ids, rule.id
    actions = {rule.id: rule.action for rule in ruleset.rules}
    assert actions == {
        EXEC_SEED: Action.DENY,
        EXEC_ATTACH_COMPANION: Action.DENY,
        EPHEMERAL_COMPANION: Action.DENY,
        DEBUG_IMAGE_SEED: Action.WARN,
        DEBUG_IMAGE_COMPANION: Action.DENY,
        # Access paths (issue #9 item 7): only a command through the kubelet is refused.
        "gatewatch-pod-port-forward": Action.WARN,
        "gatewatch-pod-proxy": Action.WARN,
        "gatewatch-node-proxy-kubelet-exec": Action.DENY,
        "gatewatch-node-proxy-kubelet-api": Action.WARN,
    }


def test_default_rules_lint_clean(ruleset):
    findings = lint_ruleset(ruleset)
    assert not has_errors(findings)
    assert [f.level for f in findings if f.level == "warning"] == []


# --- exec and attach -------------------------------------------------------------------


def test_kubectl_exec_at_admission_fires_only_the_seed(ruleset):
    document = document_from_admission_review(connect_review("exec"))
    assert firing(ruleset, document) == {EXEC_SEED}


def test_kubectl_attach_at_admission_fires_the_companion(ruleset):
    document = document_from_admission_review(connect_review("attach"))
    assert firing(ruleset, document) == {EXEC_ATTACH_COMPANION}


@pytest.mark.parametrize(
    ("verb", "subresource", "expected"),
    [
        ("create", "exec", {EXEC_SEED}),                 # SPDY exec: Elastic's rule sees it
        ("get", "exec", {EXEC_ATTACH_COMPANION}),        # kubectl 1.31+ websocket exec: only the companion
        ("get", "attach", {EXEC_ATTACH_COMPANION}),
        ("create", "attach", {EXEC_ATTACH_COMPANION}),
        ("get", None, set()),                            # reading the pod is not an exec
        ("get", "log", set()),
    ],
)
def test_exec_and_attach_in_audit_logs(ruleset, verb, subresource, expected):
    document = document_from_audit_line(audit_line(verb=verb, subresource=subresource))
    assert firing(ruleset, document) == expected


@pytest.mark.parametrize("user", ["system:node:worker-1", "system:serviceaccount:kube-system:kubelet-probe"])
def test_no_identity_is_excepted_from_exec_attach_and_debug(ruleset, user):
    # A stolen kube-system service account token must not exec silently.
    assert firing(ruleset, document_from_admission_review(connect_review("exec", user=user))) == {EXEC_SEED}
    assert firing(ruleset, document_from_admission_review(connect_review("attach", user=user))) == {
        EXEC_ATTACH_COMPANION
    }
    assert firing(ruleset, document_from_admission_review(kubectl_debug_review(user=user))) == {EPHEMERAL_COMPANION}


def test_service_accounts_outside_kube_system_are_not_excepted(ruleset):
    document = document_from_admission_review(connect_review("exec", user="system:serviceaccount:ci:deployer"))
    assert firing(ruleset, document) == {EXEC_SEED}


# --- kubectl debug ------------------------------------------------------------------------


def test_kubectl_debug_fires_the_ephemeral_rule_once(ruleset):
    # A debug image in an ephemeral container: one rule, not also the image rules.
    document = document_from_admission_review(kubectl_debug_review("busybox:1.36"))
    assert firing(ruleset, document) == {EPHEMERAL_COMPANION}


# --- debug images -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("containers", "init_containers", "expected"),
    [
        (["alpine:3.19"], [], {DEBUG_IMAGE_SEED, DEBUG_IMAGE_COMPANION}),
        (["docker.io/library/alpine:3.19"], [], {DEBUG_IMAGE_COMPANION}),   # seed misses the full name
        (["docker.io/busybox@sha256:" + "a" * 64], [], {DEBUG_IMAGE_COMPANION}),  # registry + digest
        (["ubuntu"], [], {DEBUG_IMAGE_COMPANION}),                          # seed needs "ubuntu:"
        (["index.docker.io/nicolaka/netshoot"], [], {DEBUG_IMAGE_COMPANION}),
        (["registry.example/payments/api:2.1"], ["busybox:1.36"], {DEBUG_IMAGE_COMPANION}),  # init container
        (["nicolaka/netshoot:v0.13"], [], {DEBUG_IMAGE_SEED, DEBUG_IMAGE_COMPANION}),
        (["registry.example/payments/api:2.1"], [], set()),
        (["nginx:1.27"], [], set()),
        (["registry.example/alpine-tools/api:1"], [], set()),  # "alpine" inside another name
        # Mirrors and other registries: matched on the image name, the repository's last component.
        (["localhost:5000/busybox"], [], {DEBUG_IMAGE_COMPANION}),
        (["harbor.corp/dockerhub/busybox:1.36"], [], {DEBUG_IMAGE_COMPANION}),
        (["harbor.corp/dockerhub/library/busybox"], [], {DEBUG_IMAGE_COMPANION}),
        (["quay.io/prometheus/busybox"], [], {DEBUG_IMAGE_COMPANION}),
        (["registry.k8s.io/e2e-test-images/busybox:1.36.1-1"], [], {DEBUG_IMAGE_COMPANION}),
        (["ghcr.io/x/netshoot"], [], {DEBUG_IMAGE_COMPANION}),
        (["mirror.gcr.io/library/debian:12"], [], {DEBUG_IMAGE_COMPANION}),
        (["praqma/network-multitool"], [], {DEBUG_IMAGE_COMPANION}),
        (["curlimages/curl:8.5.0"], [], {DEBUG_IMAGE_SEED, DEBUG_IMAGE_COMPANION}),
        (["alpine/socat"], [], {DEBUG_IMAGE_SEED, DEBUG_IMAGE_COMPANION}),  # Docker Hub's alpine/* tools
        (["harbor.corp/dockerhub/alpine/git:2.45"], [], {DEBUG_IMAGE_COMPANION}),  # ... through a mirror
        # Decided: the name must be exactly the debug image's; a different image that
        # merely starts with or contains it is not that image.
        (["mycorp/busybox-exporter:1.0"], [], set()),
        (["busybox-exporter:1.0"], [], {DEBUG_IMAGE_SEED}),  # Elastic's busybox* prefix does match
        (["registry.example/tools/ubuntu-builder:22.04"], [], set()),
        (["registry.example/curl-exporter:1"], [], set()),
    ],
)
def test_debug_images_at_pod_creation(ruleset, containers, init_containers, expected):
    review = pod_create_review(containers=containers, init_containers=init_containers)
    assert firing(ruleset, document_from_admission_review(review)) == expected


def test_debug_image_companion_spares_kube_system_and_mirror_pods(ruleset):
    in_kube_system = pod_create_review(containers=["docker.io/library/busybox:1.36"], namespace="kube-system")
    assert DEBUG_IMAGE_COMPANION not in firing(ruleset, document_from_admission_review(in_kube_system))
    by_kubelet = pod_create_review(containers=["docker.io/library/busybox:1.36"], user="system:node:worker-1")
    assert DEBUG_IMAGE_COMPANION not in firing(ruleset, document_from_admission_review(by_kubelet))
    # A Deployment's pods are created by the kube-system replicaset controller in the
    # workload's namespace: still covered.
    by_controller = pod_create_review(
        containers=["docker.io/library/busybox:1.36"], user="system:serviceaccount:kube-system:replicaset-controller"
    )
    assert DEBUG_IMAGE_COMPANION in firing(ruleset, document_from_admission_review(by_controller))


def test_debug_image_companion_exception_for_nodes_cannot_be_had_by_impersonating(ruleset):
    # In the audit log an impersonated request names the impersonator in user and the
    # node in impersonatedUser: the node exception needs both to be a node.
    pod_object = pod(containers=["busybox:1.36"])
    by_node = _pod_create_audit_event(pod_object, user="system:node:worker-1")
    assert DEBUG_IMAGE_COMPANION not in firing(ruleset, document_from_audit_event(by_node))
    impersonating = _pod_create_audit_event(
        pod_object, user="mallory", impersonated_user="system:node:worker-1"
    )
    document = document_from_audit_event(impersonating)
    assert document["user"]["name"] == "mallory"  # as Elastic maps it
    assert document["gatewatch"]["user"]["effective"] == "system:node:worker-1"
    assert DEBUG_IMAGE_COMPANION in firing(ruleset, document)
    node_impersonating_a_user = _pod_create_audit_event(
        pod_object, user="system:node:worker-1", impersonated_user="alice"
    )
    assert DEBUG_IMAGE_COMPANION in firing(ruleset, document_from_audit_event(node_impersonating_a_user))


def _pod_create_audit_event(
    pod_object: dict[str, Any], *, user: str, impersonated_user: str | None = None
) -> dict[str, Any]:
    event = json.loads(audit_line(verb="create", subresource=None, user=user))
    event["requestObject"] = pod_object
    if impersonated_user is not None:
        event["impersonatedUser"] = {"username": impersonated_user, "groups": ["system:authenticated"]}
    return event


# --- an image swapped into a running pod (kubectl set image pod/...) -----------------------


def pod_update_review(*, old: list[str], new: list[str], patch: bool = True, user: str = "alice") -> dict[str, Any]:
    review = admission_review(
        operation="UPDATE", obj=pod(containers=new), user=user,
        options={"kind": "PatchOptions" if patch else "UpdateOptions", "apiVersion": "meta.k8s.io/v1"},
    )
    review["request"]["oldObject"] = pod(containers=old)
    return review


@pytest.mark.parametrize("patch", [True, False])
def test_pod_update_setting_a_debug_image_fires_the_companion(ruleset, patch):
    document = document_from_admission_review(pod_update_review(old=["nginx:1.27"], new=["busybox:1.36"], patch=patch))
    assert document["event"]["action"] == ("patch" if patch else "update")
    # Elastic's rule is about creations; the companion covers the update.
    assert firing(ruleset, document) == {DEBUG_IMAGE_COMPANION}


def test_pod_update_that_keeps_an_existing_debug_image_does_not_fire(ruleset):
    # Relabelling a running busybox pod (controllers do it constantly) is not a new debug image.
    review = pod_update_review(old=["busybox:1.36", "nginx:1.27"], new=["busybox:1.36", "nginx:1.27"])
    review["request"]["object"]["metadata"]["labels"] = {"touched": "yes"}
    assert firing(ruleset, document_from_admission_review(review)) == set()
    # Changing the other container's image to a harmless one does not report busybox either.
    review = pod_update_review(old=["busybox:1.36", "nginx:1.27"], new=["busybox:1.36", "nginx:1.28"])
    assert firing(ruleset, document_from_admission_review(review)) == set()


@pytest.mark.parametrize(
    "request_object",
    [
        # kubectl set image pod/web-1 c0=busybox:1.36: a strategic merge patch
        {"spec": {"containers": [{"name": "c0", "image": "busybox:1.36"}]}},
        # the same as a JSON patch
        [{"op": "replace", "path": "/spec/containers/0/image", "value": "quay.io/prometheus/busybox"}],
        [{"op": "add", "path": "/spec/initContainers/-", "value": {"name": "x", "image": "alpine"}}],
    ],
)
def test_pod_patch_in_the_audit_log_fires_the_companion(ruleset, request_object):
    event = json.loads(audit_line(verb="patch", subresource=None))
    event["requestObject"] = request_object
    assert firing(ruleset, document_from_audit_event(event)) == {DEBUG_IMAGE_COMPANION}


def test_pod_patch_in_the_audit_log_that_sets_no_debug_image_does_not_fire(ruleset):
    event = json.loads(audit_line(verb="patch", subresource=None))
    event["requestObject"] = [
        {"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:1.28"},
        {"op": "add", "path": "/metadata/labels/busybox", "value": "busybox"},
    ]
    assert firing(ruleset, document_from_audit_event(event)) == set()


def test_the_example_set_image_review_fires_the_companion(ruleset):
    review = json.loads((Path(__file__).resolve().parents[1] / "examples" / "reviews" / "set-image-review.json").read_text())
    assert firing(ruleset, document_from_admission_review(review)) == {DEBUG_IMAGE_COMPANION}
