"""AdmissionReview / audit event / Pod -> the document Elastic's rules query."""
from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from gatewatch.documents import (
    ADMISSION_UNAVAILABLE_FIELDS,
    DOCUMENT_FIELDS,
    document_from_admission_review,
    document_from_audit_event,
    document_from_audit_line,
    document_from_pod,
    parse_admission_request,
)
from gatewatch.errors import InputError
from gatewatch.kql import compile_query, field_values

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOW = datetime(2026, 11, 22, 5, 11, 47, 208395, tzinfo=timezone.utc)
POD = "payments-api-7d9c6b5f4-x2x8l"

# The queries of the two Elastic rules the project started from
# (/work/shared/seeds), verbatim.
EXEC_INTO_POD = (
    'event.dataset : "kubernetes.audit_logs" and '
    'kubernetes.audit.annotations.authorization_k8s_io/decision:"allow" and '
    'kubernetes.audit.verb:"create" and kubernetes.audit.objectRef.resource:"pods" and '
    'kubernetes.audit.objectRef.subresource:"exec"'
)
DEBUG_IMAGE_POD = (
    'event.dataset:"kubernetes.audit_logs" and kubernetes.audit.stage:"ResponseComplete" and '
    'kubernetes.audit.annotations.authorization_k8s_io/decision:"allow" and '
    'kubernetes.audit.objectRef.resource:"pods" and kubernetes.audit.verb:"create" and '
    "kubernetes.audit.requestObject.spec.containers.image:(alpine* or busybox* or ubuntu\\:* or "
    "debian\\:* or *netshoot\\:* or *network-multitool\\:* or *curl\\:*)"
)
exec_into_pod = compile_query(EXEC_INTO_POD)
debug_image_pod = compile_query(DEBUG_IMAGE_POD)


def audit_events() -> list[dict[str, Any]]:
    lines = (EXAMPLES / "audit" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def audit_event(*, verb: str, subresource: str | None = None, user: str | None = None) -> dict[str, Any]:
    """The one example audit line with this verb, subresource and user."""
    found = [
        e
        for e in audit_events()
        if e["verb"] == verb
        and e["objectRef"].get("subresource") == subresource
        and (user is None or e["user"]["username"] == user)
    ]
    assert len(found) == 1, found
    return found[0]


def example_review(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / "reviews" / name).read_text())


def values(document: dict[str, Any], field: str) -> list[Any]:
    return field_values(document, field)


def exec_review(**request_changes: Any) -> dict[str, Any]:
    review = example_review("exec-review.json")
    review["request"].update(request_changes)
    return review


# --- the same action seen as AdmissionReview and as audit line ----------------


def test_exec_seen_either_way_gets_the_same_verdict() -> None:
    admission = document_from_admission_review(example_review("exec-review.json"), now=NOW)
    audit = document_from_audit_event(audit_event(verb="create", subresource="exec", user="alice"))
    assert exec_into_pod(admission) and exec_into_pod(audit)
    assert not debug_image_pod(admission) and not debug_image_pod(audit)


def test_exec_seen_either_way_gives_the_same_request_fields() -> None:
    admission = document_from_admission_review(example_review("exec-review.json"), now=NOW)
    audit = document_from_audit_event(audit_event(verb="create", subresource="exec", user="alice"))
    for field in (
        "event.dataset",
        "event.action",
        "event.outcome",
        "user.name",
        "kubernetes.audit.verb",
        "kubernetes.audit.stage",
        "kubernetes.audit.requestURI",
        "kubernetes.audit.objectRef",
        "kubernetes.audit.user",
        "kubernetes.audit.annotations.authorization_k8s_io/decision",
        "orchestrator.namespace",
        "orchestrator.resource",
        "gatewatch.exec",
    ):
        assert values(admission, field) == values(audit, field), field
    assert values(audit, "gatewatch.exec") == [{"command": ["sh"], "container": "app", "stdin": True, "tty": True}]


def test_busybox_pod_create_seen_either_way_gets_the_same_verdict() -> None:
    admission = document_from_admission_review(example_review("busybox-create-review.json"), now=NOW)
    audit = document_from_audit_event(audit_event(verb="create", user="alice"))
    assert debug_image_pod(admission) and debug_image_pod(audit)
    assert not exec_into_pod(admission) and not exec_into_pod(audit)
    assert values(admission, "kubernetes.audit.requestURI") == values(audit, "kubernetes.audit.requestURI")
    assert values(admission, "gatewatch.images.repository") == values(audit, "gatewatch.images.repository")


def test_denied_exec_is_a_failure_and_does_not_match() -> None:
    document = document_from_audit_event(audit_event(verb="create", subresource="exec", user="bob"))
    assert document["event"]["outcome"] == "failure"
    assert not exec_into_pod(document)
    assert document["gatewatch"]["exec"]["command"] == ["cat", "/etc/secrets/db-password"]


def test_websocket_exec_is_verb_get_in_the_audit_log() -> None:
    # kubectl >= 1.30 execs over WebSocket (HTTP GET): Elastic's rule misses it,
    # gatewatch.exec still shows what ran.
    started, completed = (
        document_from_audit_event(e) for e in audit_events() if e["verb"] == "get" and "exec" in e["requestURI"]
    )
    assert not exec_into_pod(completed)
    assert completed["gatewatch"]["exec"]["command"] == ["/bin/bash", "-il"]
    assert started["kubernetes"]["audit"]["stage"] == "ResponseStarted"
    assert completed["@timestamp"] == "2026-11-22T05:14:02.877301Z"


# --- audit events: the Elastic ingest pipeline's fields ------------------------


def test_audit_event_maps_onto_elastic_fields() -> None:
    event = audit_event(verb="create", subresource="exec", user="alice")
    document = document_from_audit_event(event)
    assert document["@timestamp"] == event["stageTimestamp"]
    assert document["event"] == {
        "kind": "event",
        "dataset": "kubernetes.audit_logs",
        "action": "create",
        "outcome": "success",
    }
    assert document["data_stream"] == {"dataset": "kubernetes.audit_logs"}
    assert document["user"] == {"name": "alice"}
    assert document["user_agent"] == {"original": event["userAgent"]}
    assert document["source"] == {"ip": ["10.0.12.7"]} == document["client"]
    assert document["related"] == {"ip": ["10.0.12.7"], "user": ["alice"]}
    assert document["orchestrator"] == {
        "type": "kubernetes",
        "api_version": "audit.k8s.io/v1",
        "namespace": "payments",
        "resource": {"type": "pods", "name": POD},
    }
    assert document["gatewatch"]["source"] == "audit"
    annotations = document["kubernetes"]["audit"]["annotations"]
    assert set(annotations) == {"authorization_k8s_io/decision", "authorization_k8s_io/reason"}
    assert document["kubernetes"]["audit"]["auditID"] == event["auditID"]


def test_service_account_pod_create_names_user_id_and_controller() -> None:
    event = audit_event(verb="create", user="system:serviceaccount:kube-system:replicaset-controller")
    document = document_from_audit_event(event)
    assert document["user"] == {
        "name": "system:serviceaccount:kube-system:replicaset-controller",
        "id": event["user"]["uid"],
    }
    assert document["orchestrator"]["resource"] == {"type": "pods", "parent": {"type": "ReplicaSet"}}
    assert document["container"] == {"image": {"name": ["nginxinc/nginx-unprivileged:1.27-alpine"]}}
    # Metadata is kept (Elastic drops it): labels stay queryable.
    assert compile_query('kubernetes.audit.requestObject.metadata.labels.app.kubernetes.io/name:"web"')(document)


def test_ephemeral_container_patch_puts_the_debug_image_in_gatewatch_images() -> None:
    document = document_from_audit_event(audit_event(verb="patch", subresource="ephemeralcontainers"))
    assert document["event"]["action"] == "patch"
    assert document["gatewatch"]["images"] == [
        {
            "reference": "nicolaka/netshoot",
            "registry": "docker.io",
            "repository": "nicolaka/netshoot",
            "tag": "latest",
            "digest": None,
            "container_kind": "ephemeralContainers",
            "container_name": "debugger-p8k4v",
        }
    ]
    assert "container" not in document  # only spec.containers feeds container.image.name


def test_non_ip_source_entries_are_dropped_and_empty_user_fields_absent() -> None:
    event = audit_event(verb="list")
    event["sourceIPs"] = ["not-an-ip", "2001:db8::7", "10.0.0.1"]
    event["user"] = {"username": "alice", "uid": ""}
    document = document_from_audit_event(event)
    assert document["source"]["ip"] == ["2001:db8::7", "10.0.0.1"]
    assert document["user"] == {"name": "alice"}
    event["sourceIPs"] = ["nope"]
    assert "source" not in document_from_audit_event(event)


def test_decision_other_than_allow_or_forbid_gives_no_outcome() -> None:
    event = audit_event(verb="list")
    event["annotations"] = {"authorization.k8s.io/decision": "something-new"}
    assert "outcome" not in document_from_audit_event(event)["event"]
    del event["annotations"]
    document = document_from_audit_event(event)
    assert "outcome" not in document["event"] and "annotations" not in document["kubernetes"]["audit"]


def test_v1beta1_event_and_timestamp_fallbacks() -> None:
    event = audit_event(verb="get", subresource=None)
    event["apiVersion"] = "audit.k8s.io/v1beta1"
    del event["stageTimestamp"]
    assert document_from_audit_event(event)["@timestamp"] == event["requestReceivedTimestamp"]
    del event["requestReceivedTimestamp"]
    event["timestamp"] = "2026-11-22T05:10:02Z"
    document = document_from_audit_event(event)
    assert document["@timestamp"] == "2026-11-22T05:10:02Z"
    assert document["orchestrator"]["api_version"] == "audit.k8s.io/v1beta1"


def test_mapping_does_not_change_its_input() -> None:
    events = audit_events()
    before = copy.deepcopy(events)
    for event in events:
        document_from_audit_event(event)
    assert events == before
    review = example_review("busybox-create-review.json")
    before_review = copy.deepcopy(review)
    document_from_admission_review(review, now=NOW)
    assert review == before_review


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ([], "must be a JSON object"),
        ({"kind": "Pod", "verb": "create"}, "kind: expected Event"),
        ({"kind": "Event", "apiVersion": "audit.k8s.io/v2", "verb": "get"}, "apiVersion"),
        ({"kind": "Event", "apiVersion": "audit.k8s.io/v1"}, "verb: missing"),
        ({"kind": "Event", "verb": "get", "annotations": ["x"]}, "annotations: expected an object"),
        ({"kind": "Event", "verb": "get", "sourceIPs": "10.0.0.1"}, "sourceIPs: expected a list"),
        ({"kind": "Event", "verb": "get", "user": "alice"}, "user: expected an object"),
    ],
)
def test_malformed_audit_event_is_an_input_error(event: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        document_from_audit_event(event)


def test_audit_line_errors_name_file_and_line() -> None:
    with pytest.raises(InputError) as caught:
        document_from_audit_line('{"kind": "Event", "verb": ', source="audit.log", line=7)
    assert str(caught.value).startswith("audit.log:7: not valid JSON")
    with pytest.raises(InputError) as caught:
        document_from_audit_line('{"kind": "Event"}', source="audit.log", line=8)
    assert str(caught.value) == "audit.log:8: verb: missing or not a string: not an audit event"


def test_every_example_audit_line_maps() -> None:
    lines = (EXAMPLES / "audit" / "audit.jsonl").read_text().splitlines()
    documents = [document_from_audit_line(line, source="audit.jsonl", line=n) for n, line in enumerate(lines, 1)]
    assert 10 <= len(documents) <= 12
    assert sum(exec_into_pod(d) for d in documents) == 1  # alice's SPDY exec; bob's is forbidden
    assert sum(debug_image_pod(d) for d in documents) == 1  # kubectl run busybox


# --- admission reviews -----------------------------------------------------------


def test_exec_review_becomes_the_audit_event_of_the_allowed_request() -> None:
    document = document_from_admission_review(example_review("exec-review.json"), now=NOW)
    audit = document["kubernetes"]["audit"]
    assert audit["stage"] == "ResponseComplete"
    assert audit["verb"] == "create"
    assert audit["annotations"] == {"authorization_k8s_io/decision": "allow"}
    assert audit["objectRef"] == {"resource": "pods", "namespace": "payments", "name": POD, "apiVersion": "v1", "subresource": "exec"}
    assert audit["requestObject"]["kind"] == "PodExecOptions"
    assert audit["user"] == {"username": "alice", "groups": ["payments-devs", "system:authenticated"]}
    assert document["@timestamp"] == "2026-11-22T05:11:47.208395Z"
    assert document["gatewatch"]["admission"] == {"uid": "3f2b6a9e-8c41-4d7e-9b1a-6c2d0e5f7a18"}
    assert document["gatewatch"]["dry_run"] is False
    assert document["gatewatch"]["source"] == "admission"


def test_admission_document_has_no_audit_id_user_agent_or_source_ip() -> None:
    document = document_from_admission_review(example_review("exec-review.json"), now=NOW)
    for field in ("kubernetes.audit.auditID", "user_agent.original", "source.ip", "client.ip", "related.ip"):
        assert values(document, field) == [], field


def test_admission_unavailable_fields_are_absent_from_admission_documents_only() -> None:
    reviews = [example_review("exec-review.json"), example_review("busybox-create-review.json")]
    admission = [document_from_admission_review(r, now=NOW) for r in reviews]
    audit = [document_from_audit_event(e) for e in audit_events()]
    for field in ADMISSION_UNAVAILABLE_FIELDS:
        assert all(values(d, field) == [] for d in admission), field
    seen_in_audit = {field for field in ADMISSION_UNAVAILABLE_FIELDS if any(values(d, field) for d in audit)}
    assert {"source.ip", "user_agent.original", "kubernetes.audit.auditID"} <= seen_in_audit


def test_exec_request_uri_is_built_as_kubectl_builds_it() -> None:
    review = exec_review(
        object={
            "kind": "PodExecOptions",
            "apiVersion": "v1",
            "stdin": False,
            "stdout": True,
            "stderr": True,
            "tty": False,
            "container": "app",
            "command": ["sh", "-c", "echo a&b=c; cat /etc/passwd"],
        }
    )
    document = document_from_admission_review(review, now=NOW)
    assert document["kubernetes"]["audit"]["requestURI"] == (
        f"/api/v1/namespaces/payments/pods/{POD}/exec"
        "?command=sh&command=-c&command=echo+a%26b%3Dc%3B+cat+%2Fetc%2Fpasswd"
        "&container=app&stderr=true&stdout=true"
    )
    assert document["gatewatch"]["exec"] == {
        "command": ["sh", "-c", "echo a&b=c; cat /etc/passwd"],
        "container": "app",
        "stdin": False,
        "tty": False,
    }


def test_attach_review() -> None:
    review = exec_review(
        kind={"group": "", "version": "v1", "kind": "PodAttachOptions"},
        subResource="attach",
        requestSubResource="attach",
        object={"kind": "PodAttachOptions", "apiVersion": "v1", "stdin": True, "stdout": True, "tty": True, "container": "app"},
    )
    document = document_from_admission_review(review, now=NOW)
    expected = audit_event(verb="create", subresource="attach")
    assert document["kubernetes"]["audit"]["requestURI"] == expected["requestURI"]
    assert document["kubernetes"]["audit"]["verb"] == "create"
    assert not exec_into_pod(document)


def test_pod_create_review_builds_collection_uri_with_options() -> None:
    document = document_from_admission_review(example_review("busybox-create-review.json"), now=NOW)
    audit = document["kubernetes"]["audit"]
    assert audit["requestURI"] == "/api/v1/namespaces/default/pods?fieldManager=kubectl-run"
    assert audit["objectRef"] == {"resource": "pods", "namespace": "default", "name": "bb", "apiVersion": "v1"}
    assert document["container"] == {"image": {"name": ["busybox:1.36"]}}
    assert document["event"]["outcome"] == "success"


def test_kubectl_debug_review_is_a_patch_whose_ephemeral_image_is_normalized() -> None:
    pod = example_review("busybox-create-review.json")["request"]["object"]
    pod["metadata"]["name"] = POD
    pod["spec"]["ephemeralContainers"] = [
        {"name": "debugger-p8k4v", "image": "docker.io/nicolaka/netshoot@sha256:" + "ab" * 32, "targetContainerName": "app"}
    ]
    review = exec_review(
        kind={"group": "", "version": "v1", "kind": "Pod"},
        subResource="ephemeralcontainers",
        requestSubResource="ephemeralcontainers",
        operation="UPDATE",
        object=pod,
        oldObject=copy.deepcopy(pod),
        options={"kind": "PatchOptions", "apiVersion": "meta.k8s.io/v1"},
    )
    document = document_from_admission_review(review, now=NOW)
    audit = document["kubernetes"]["audit"]
    assert audit["verb"] == "patch"
    assert audit["requestURI"] == f"/api/v1/namespaces/payments/pods/{POD}/ephemeralcontainers"
    kinds = {(i["container_kind"], i["repository"], i["tag"]) for i in document["gatewatch"]["images"]}
    assert kinds == {("containers", "library/busybox", "1.36"), ("ephemeralContainers", "nicolaka/netshoot", None)}
    assert compile_query('gatewatch.images.repository:*netshoot and kubernetes.audit.verb:"patch"')(document)


@pytest.mark.parametrize(
    ("operation", "options", "verb"),
    [
        ("UPDATE", {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}, "update"),
        ("UPDATE", None, "update"),
        ("DELETE", {"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1"}, "delete"),
    ],
)
def test_verbs_of_other_operations(operation: str, options: Any, verb: str) -> None:
    pod = example_review("busybox-create-review.json")["request"]["object"]
    review = exec_review(
        kind={"group": "", "version": "v1", "kind": "Pod"},
        subResource="",
        requestSubResource="",
        operation=operation,
        object=None if operation == "DELETE" else pod,
        options=options,
    )
    audit = document_from_admission_review(review, now=NOW)["kubernetes"]["audit"]
    assert audit["verb"] == verb
    assert audit["requestURI"] == f"/api/v1/namespaces/payments/pods/{POD}"


def test_non_core_group_uri_and_api_group() -> None:
    review = {
        "uid": "u-1",
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "namespace": "shop",
        "operation": "CREATE",
        "object": {"kind": "Deployment", "metadata": {"name": "web"}, "spec": {}},
        "options": {"kind": "CreateOptions", "dryRun": ["All"], "fieldManager": "kubectl-client-side-apply"},
    }
    audit = document_from_admission_review(review, now=NOW)["kubernetes"]["audit"]
    assert audit["requestURI"] == "/apis/apps/v1/namespaces/shop/deployments?dryRun=All&fieldManager=kubectl-client-side-apply"
    assert audit["objectRef"]["apiGroup"] == "apps"


def test_bare_request_and_v1beta1_map_like_the_wrapped_v1_review() -> None:
    wrapped = example_review("exec-review.json")
    v1beta1 = {**wrapped, "apiVersion": "admission.k8s.io/v1beta1"}
    bare = wrapped["request"]
    expected = document_from_admission_review(wrapped, now=NOW)
    assert document_from_admission_review(v1beta1, now=NOW) == expected
    assert document_from_admission_review(bare, now=NOW) == expected


def test_timestamp_is_now_in_utc() -> None:
    review = example_review("exec-review.json")
    eastern = NOW.astimezone(timezone(timedelta(hours=-5)))
    assert document_from_admission_review(review, now=eastern)["@timestamp"] == "2026-11-22T05:11:47.208395Z"
    assert document_from_admission_review(review, now=NOW.replace(tzinfo=None))["@timestamp"] == "2026-11-22T05:11:47.208395Z"
    before = datetime.now(timezone.utc)
    stamp = document_from_admission_review(review)["@timestamp"]
    assert before <= datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z")


def _without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: _without(r, "request"), "request: missing"),
        (lambda r: {**r, "apiVersion": "admission.k8s.io/v2"}, "apiVersion: expected one of"),
        (lambda r: {**r, "kind": "ConversionReview"}, "kind: expected AdmissionReview"),
        (lambda r: {**r, "request": _without(r["request"], "uid")}, "request.uid: missing"),
        (lambda r: {**r, "request": {**r["request"], "uid": ""}}, "request.uid: expected a non-empty string"),
        (lambda r: {**r, "request": _without(r["request"], "kind")}, "request.kind: missing"),
        (lambda r: {**r, "request": {**r["request"], "kind": {"group": ""}}}, "request.kind.version: missing"),
        (lambda r: {**r, "request": _without(r["request"], "resource")}, "request.resource: missing"),
        (lambda r: {**r, "request": _without(r["request"], "operation")}, "request.operation: expected one of"),
        (lambda r: {**r, "request": {**r["request"], "operation": "PATCH"}}, "request.operation: expected one of"),
        (lambda r: {**r, "request": {**r["request"], "object": "sh"}}, "request.object: expected an object for CONNECT"),
        (lambda r: {**r, "request": _without(r["request"], "object")}, "request.object: expected an object"),
        (lambda r: {**r, "request": {**r["request"], "userInfo": "alice"}}, "request.userInfo: expected an object"),
        (lambda r: {**r, "request": {**r["request"], "dryRun": "no"}}, "request.dryRun: expected true or false"),
        (lambda r: {**r, "request": {**r["request"], "namespace": 3}}, "request.namespace"),
        (lambda r: [r], "must be a JSON object"),
    ],
)
def test_malformed_review_is_an_input_error_naming_the_field(change: Any, message: str) -> None:
    review = change(example_review("exec-review.json"))
    with pytest.raises(InputError, match=message):
        parse_admission_request(review)
    with pytest.raises(InputError, match=message):
        document_from_admission_review(review, now=NOW)


def test_parse_returns_the_request_itself() -> None:
    review = example_review("exec-review.json")
    assert parse_admission_request(review) is review["request"]


# --- manifests --------------------------------------------------------------------


def netshoot_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "dbg"},
        "spec": {
            "initContainers": [{"name": "fetch", "image": f"index.docker.io/library/busybox@sha256:{'c' * 64}"}],
            "containers": [{"name": "main", "image": "registry.example.com:5000/ops/app:2.1"}],
        },
    }


def test_pod_is_evaluated_as_the_create_it_would_cause() -> None:
    document = document_from_pod(netshoot_pod(), now=NOW)
    audit = document["kubernetes"]["audit"]
    assert (audit["verb"], audit["stage"], audit["requestURI"]) == ("create", "ResponseComplete", "/api/v1/namespaces/default/pods")
    assert document["orchestrator"]["namespace"] == "default"
    assert document["gatewatch"]["source"] == "manifest"
    assert "admission" not in document["gatewatch"]
    assert "user" not in document and "user" not in audit


def test_namespace_argument_overrides_the_pods_own() -> None:
    pod = netshoot_pod()
    pod["metadata"]["namespace"] = "team-a"
    assert document_from_pod(pod, now=NOW)["orchestrator"]["namespace"] == "team-a"
    assert document_from_pod(pod, namespace="team-b", now=NOW)["orchestrator"]["namespace"] == "team-b"


def test_user_can_be_given() -> None:
    document = document_from_pod(netshoot_pod(), user={"username": "ci-bot", "groups": ["ci"]}, now=NOW)
    assert document["user"] == {"name": "ci-bot"}


def test_init_container_with_registry_prefix_and_digest_cannot_hide_busybox() -> None:
    document = document_from_pod(netshoot_pod(), now=NOW)
    assert not debug_image_pod(document)  # Elastic's rule only reads spec.containers
    ours = compile_query('gatewatch.images.repository:"library/busybox"')
    assert ours(document)
    (init,) = [i for i in document["gatewatch"]["images"] if i["container_kind"] == "initContainers"]
    assert (init["registry"], init["tag"], init["container_name"]) == ("docker.io", None, "fetch")


@pytest.mark.parametrize(
    ("pod", "message"),
    [
        ("not a pod", "must be an object"),
        ({"kind": "Deployment", "spec": {}}, "kind: expected Pod"),
        ({"kind": "Pod", "metadata": {"name": "x"}}, "spec: missing"),
        ({"kind": "Pod", "metadata": ["x"], "spec": {}}, "metadata: expected an object"),
    ],
)
def test_malformed_pod_is_an_input_error(pod: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        document_from_pod(pod, now=NOW)


# --- the mapping table --------------------------------------------------------------


def _all_documents() -> list[dict[str, Any]]:
    documents = [document_from_audit_event(e) for e in audit_events()]
    documents += [document_from_admission_review(example_review(n), now=NOW) for n in ("exec-review.json", "busybox-create-review.json")]
    pod = netshoot_pod()
    documents.append(document_from_pod(pod, now=NOW, workload_kind="Deployment"))
    return documents


def _leaf_paths(node: Any, prefix: str, table: set[str]) -> set[str]:
    """Paths in the document down to the table's fields (a table field's value is a leaf)."""
    if prefix in table or not isinstance(node, dict):
        return {prefix}
    paths: set[str] = set()
    for key, value in node.items():
        paths |= _leaf_paths(value, f"{prefix}.{key}" if prefix else key, table)
    return paths


def test_documents_carry_exactly_the_fields_of_the_mapping_table() -> None:
    table = {field for field, _ in DOCUMENT_FIELDS}
    produced: set[str] = set()
    for document in _all_documents():
        produced |= _leaf_paths(document, "", table)
    assert produced == table
