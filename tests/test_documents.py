"""AdmissionReview / audit event / Pod -> the document Elastic's rules query."""
from __future__ import annotations

import copy
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from gatewatch.documents import (
    format_timestamp,
    ADMISSION_UNAVAILABLE_FIELDS,
    DOCUMENT_FIELDS,
    check_audit_event,
    document_from_admission_review,
    document_from_audit_event,
    document_from_audit_line,
    document_from_pod,
    parse_admission_request,
)
from gatewatch.errors import InputError
from gatewatch.shapes import audit_event_view
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
            "name": "netshoot",
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
    ],
)
def test_what_is_not_an_audit_event_is_an_input_error(event: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        document_from_audit_event(event)


@pytest.mark.parametrize(
    ("event", "absent", "message"),
    [
        ({"kind": "Event", "verb": "get", "annotations": ["x"]}, "annotations", "annotations: expected an object"),
        ({"kind": "Event", "verb": "get", "user": "alice"}, "user", "user: expected an object"),
    ],
)
def test_a_field_of_the_wrong_type_is_absent_and_named(event: Any, absent: str, message: str) -> None:
    view = audit_event_view(event)
    assert any(warning.startswith(message) for warning in view.warnings), view.warnings
    assert absent not in document_from_audit_event(event)["kubernetes"]["audit"]


def test_a_single_value_where_a_list_is_expected_is_a_list_of_one() -> None:
    # Elasticsearch indexes an object and a list of one object alike.
    event = audit_event(verb="create", user="alice")
    event["sourceIPs"] = "10.0.0.1"
    event["requestObject"]["spec"]["containers"] = {"name": "c", "image": "busybox:1.36"}
    view = audit_event_view(event)
    assert view.warnings == []
    document = document_from_audit_event(event)
    assert document["source"]["ip"] == ["10.0.0.1"]
    assert document["container"]["image"]["name"] == ["busybox:1.36"]
    assert [image["name"] for image in document["gatewatch"]["images"]] == ["busybox"]


def test_a_crds_spec_containers_is_not_type_checked() -> None:
    event = audit_event(verb="create", user="alice")
    event["objectRef"] = {"resource": "workflows", "apiGroup": "argoproj.io", "namespace": "ci", "apiVersion": "v1alpha1"}
    event["requestObject"] = {"kind": "Workflow", "spec": {"containers": "not a list", "templates": []}}
    assert audit_event_view(event).warnings == []
    document = document_from_audit_event(event)
    assert document["kubernetes"]["audit"]["requestObject"]["spec"]["containers"] == "not a list"
    assert "container" not in document


def test_audit_line_errors_name_file_and_line() -> None:
    with pytest.raises(InputError) as caught:
        document_from_audit_line('{"kind": "Event", "verb": ', source="audit.log", line=7)
    assert str(caught.value).startswith("audit.log:7: not valid JSON")
    with pytest.raises(InputError) as caught:
        document_from_audit_line('{"kind": "Event"}', source="audit.log", line=8)
    assert str(caught.value) == "audit.log:8: verb: missing or not a string: not an audit event"
    with pytest.raises(InputError) as caught:
        document_from_audit_line("[" * 100_000 + "]" * 100_000, source="audit.log", line=9)
    assert str(caught.value) == "audit.log:9: not valid JSON: nested too deeply"


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
    before_debug = copy.deepcopy(pod)
    pod["spec"]["ephemeralContainers"] = [
        {"name": "debugger-p8k4v", "image": "docker.io/nicolaka/netshoot@sha256:" + "ab" * 32, "targetContainerName": "app"}
    ]
    review = exec_review(
        kind={"group": "", "version": "v1", "kind": "Pod"},
        subResource="ephemeralcontainers",
        requestSubResource="ephemeralcontainers",
        operation="UPDATE",
        object=pod,
        oldObject=before_debug,
        options={"kind": "PatchOptions", "apiVersion": "meta.k8s.io/v1"},
    )
    document = document_from_admission_review(review, now=NOW)
    audit = document["kubernetes"]["audit"]
    assert audit["verb"] == "patch"
    assert audit["requestURI"] == f"/api/v1/namespaces/payments/pods/{POD}/ephemeralcontainers"
    # Only what the update adds: the pod's own busybox container is unchanged.
    kinds = {(i["container_kind"], i["repository"], i["tag"]) for i in document["gatewatch"]["images"]}
    assert kinds == {("ephemeralContainers", "nicolaka/netshoot", None)}
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


def hardened_pod() -> dict[str, Any]:
    """A Pod that sets something of every kind gatewatch normalizes (podspec.py)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "annotations": {"container.apparmor.security.beta.kubernetes.io/app": "runtime/default"}},
        "spec": {
            "securityContext": {"runAsNonRoot": True},
            "volumes": [{"name": "logs", "hostPath": {"path": "/var/log"}}, {"name": "scratch"}],
            "containers": [{
                "name": "app", "image": "nginx:1.27",
                "securityContext": {"capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}},
                "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 443}],
                "livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}},
                "lifecycle": {"preStop": {"tcpSocket": {"port": 80}}},
            }],
            "initContainers": [{"name": "init", "image": "busybox:1.36", "securityContext": {"privileged": True}}],
        },
    }


def _all_documents() -> list[dict[str, Any]]:
    documents = [document_from_audit_event(e) for e in audit_events()]
    documents += [document_from_admission_review(example_review(n), now=NOW) for n in ("exec-review.json", "busybox-create-review.json")]
    pod = netshoot_pod()
    documents.append(document_from_pod(pod, now=NOW, workload_kind="Deployment"))
    documents.append(document_from_pod(hardened_pod(), now=NOW))
    return documents


def test_a_whole_pod_is_normalized_with_the_path_of_every_element() -> None:
    gatewatch = document_from_pod(hardened_pod(), now=NOW)["gatewatch"]
    assert [(c["container_kind"], c["container_index"], c["path"]) for c in gatewatch["containers"]] == [
        ("containers", 0, "spec.containers[0]"), ("initContainers", 0, "spec.initContainers[0]")]
    assert gatewatch["containers"][1]["securityContext"] == {"privileged": True}
    assert [(c["level"], c.get("container_name"), c["path"]) for c in gatewatch["security_contexts"]] == [
        ("pod", None, "spec.securityContext"),
        ("container", "app", "spec.containers[0].securityContext"),
        ("container", "init", "spec.initContainers[0].securityContext"),
    ]
    assert gatewatch["added_capabilities"] == [{
        "name": "NET_ADMIN", "container_kind": "containers", "container_index": 0, "container_name": "app",
        "path": "spec.containers[0].securityContext.capabilities.add[0]"}]
    assert gatewatch["volumes"] == [
        {"name": "logs", "type": "hostPath", "path": "spec.volumes[0].hostPath", "host_path": "/var/log"},
        {"name": "scratch", "type": "emptyDir", "path": "spec.volumes[1]"},  # no source: the API server's default
    ]
    assert [(p["port"], p["path"]) for p in gatewatch["host_ports"]] == [(8080, "spec.containers[0].ports[0].hostPort")]
    assert [(p["host"], p["handler"], p["path"]) for p in gatewatch["probe_hosts"]] == [
        ("10.0.0.1", "livenessProbe.httpGet", "spec.containers[0].livenessProbe.httpGet.host")]
    assert gatewatch["annotations"] == [{
        "key": "container.apparmor.security.beta.kubernetes.io/app", "value": "runtime/default",
        "path": "metadata.annotations[container.apparmor.security.beta.kubernetes.io/app]"}]


@pytest.mark.parametrize(("change", "field"), [
    (lambda pod: pod["spec"]["containers"][0].update(securityContext="privileged"),
     "spec.containers[0].securityContext: expected an object, got str"),
    (lambda pod: pod["spec"]["containers"][0]["securityContext"]["capabilities"].update(add="SYS_ADMIN"),
     "spec.containers[0].securityContext.capabilities.add: expected a list of strings, got str"),
    (lambda pod: pod["spec"]["containers"][0]["securityContext"]["capabilities"].update(add=[1]),
     "spec.containers[0].securityContext.capabilities.add[0]: expected a string, got int"),
    (lambda pod: pod["spec"].update(volumes={"name": "x"}), "spec.volumes: expected a list, got dict"),
    (lambda pod: pod["spec"]["containers"][0].update(ports=[80]), "spec.containers[0].ports[0]: expected an object, got int"),
    (lambda pod: pod["metadata"]["annotations"].update(flag=True), "metadata.annotations['flag']: expected a string, got bool"),
], ids=["securityContext", "add", "add item", "volumes", "ports", "annotation"])
def test_a_normalized_field_of_the_wrong_type_is_named(change: Any, field: str) -> None:
    pod = hardened_pod()
    change(pod)
    with pytest.raises(InputError, match=re.escape(field)):
        document_from_pod(pod, now=NOW)
    event = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": "create", "stage": "ResponseComplete",
             "objectRef": {"resource": "pods", "namespace": "default"}, "requestObject": pod}
    # In an audit log the event is evaluated as Elasticsearch indexes it: a single volume is a
    # list of one; a field of the wrong type is set aside, and named in a warning.
    check_audit_event(event)
    warnings = audit_event_view(event).warnings
    gatewatch = document_from_audit_event(event)["gatewatch"]
    if field.startswith("spec.volumes:"):  # one value where a list is expected: a list of one
        assert warnings == [] and [volume["name"] for volume in gatewatch["volumes"]] == ["x"]
    elif ".capabilities.add:" in field:
        assert warnings == [] and "SYS_ADMIN" in [added["name"] for added in gatewatch["added_capabilities"]]
    else:
        assert [w for w in warnings if w.startswith("requestObject." + field.split(":")[0])], warnings
        assert "containers" in document_from_audit_event(event)["gatewatch"]
    assert "containers" not in document_from_audit_event(event, pod_fields=False)["gatewatch"]


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


# --- updates: only what they change -----------------------------------------------------


def pod_update_review(old_images: list[str], new_images: list[str], *, options: Any = None) -> dict[str, Any]:
    def pod(images: list[str]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "payments"},
                "spec": {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]}}

    review = example_review("busybox-create-review.json")
    review["request"].update(
        operation="UPDATE", name="web", namespace="payments", object=pod(new_images), oldObject=pod(old_images),
        options=options if options is not None else {"kind": "PatchOptions", "apiVersion": "meta.k8s.io/v1"},
    )
    return review


def test_pod_update_lists_only_the_images_it_changes() -> None:
    document = document_from_admission_review(pod_update_review(["nginx:1.27", "envoy:1.30"], ["busybox:1.36", "envoy:1.30"]), now=NOW)
    assert document["kubernetes"]["audit"]["verb"] == "patch"
    assert document["kubernetes"]["audit"]["requestURI"] == "/api/v1/namespaces/payments/pods/web"
    assert [(i["container_name"], i["reference"]) for i in document["gatewatch"]["images"]] == [("c0", "busybox:1.36")]
    # Elastic's field stays what the audit log's requestObject holds: every container.
    assert document["container"]["image"]["name"] == ["busybox:1.36", "envoy:1.30"]


def test_pod_update_that_changes_no_image_lists_none() -> None:
    review = pod_update_review(["busybox:1.36"], ["busybox:1.36"], options={"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"})
    document = document_from_admission_review(review, now=NOW)
    assert document["kubernetes"]["audit"]["verb"] == "update"
    assert "images" not in document["gatewatch"]


def _pod_audit_event(verb: str, request_object: Any) -> dict[str, Any]:
    event = copy.deepcopy(audit_event(verb="create", user="alice"))
    event.update(verb=verb, requestObject=request_object, requestURI="/api/v1/namespaces/default/pods/bb")
    event["objectRef"]["name"] = "bb"
    return event


@pytest.mark.parametrize(
    ("request_object", "expected"),
    [
        # kubectl set image pod/bb bb=busybox:1.36 (strategic merge patch)
        ({"spec": {"containers": [{"name": "bb", "image": "busybox:1.36"}]}}, [("containers", "bb", "busybox")]),
        # a strategic merge patch element without an image, and $setElementOrder, set none
        ({"spec": {"$setElementOrder/containers": [{"name": "bb"}], "containers": [{"name": "bb", "$patch": "delete"}]}}, []),
        # JSON patches, at each depth
        ([{"op": "replace", "path": "/spec/containers/0/image", "value": "quay.io/prometheus/busybox"}], [("containers", None, "busybox")]),
        ([{"op": "add", "path": "/spec/initContainers/-", "value": {"name": "x", "image": "alpine:3"}}], [("initContainers", "x", "alpine")]),
        ([{"op": "replace", "path": "/spec/containers", "value": [{"name": "a", "image": "ghcr.io/x/netshoot"}]}], [("containers", "a", "netshoot")]),
        ([{"op": "replace", "path": "/spec", "value": {"containers": [{"name": "a", "image": "curlimages/curl"}]}}], [("containers", "a", "curl")]),
        ([{"op": "test", "path": "/spec/containers/0/image", "value": "busybox"},
          {"op": "remove", "path": "/spec/containers/1"},
          {"op": "replace", "path": "/metadata/labels/app", "value": "busybox"}], []),
    ],
)
def test_pod_patch_in_the_audit_log_lists_the_images_the_patch_sets(request_object: Any, expected: list[Any]) -> None:
    document = document_from_audit_event(_pod_audit_event("patch", request_object))
    images = document["gatewatch"].get("images", [])
    assert [(i["container_kind"], i["container_name"], i["name"]) for i in images] == expected


def test_pod_update_in_the_audit_log_lists_every_image_it_holds() -> None:
    # No oldObject in an audit log: replay cannot tell which image changed.
    pod = {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "bb"},
           "spec": {"containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "nginx"}]}}
    document = document_from_audit_event(_pod_audit_event("update", pod))
    assert [i["name"] for i in document["gatewatch"]["images"]] == ["busybox", "nginx"]


@pytest.mark.parametrize(
    "reference",
    ["busybox", "docker.io/library/busybox:1.36", "localhost:5000/busybox", "harbor.corp/dockerhub/busybox",
     "quay.io/prometheus/busybox", "registry.k8s.io/e2e-test-images/busybox:1.36.1-1", f"busybox@sha256:{'a' * 64}"],
)
def test_image_name_is_the_last_repository_component_whatever_the_registry(reference: str) -> None:
    pod = netshoot_pod()
    pod["spec"]["containers"][0]["image"] = reference
    document = document_from_pod(pod, now=NOW)
    assert compile_query('gatewatch.images.name:busybox and gatewatch.images.container_kind:"containers"')(document)


# --- who acted -------------------------------------------------------------------------------


def test_impersonated_audit_event_keeps_user_name_and_adds_the_effective_user() -> None:
    event = copy.deepcopy(audit_event(verb="create", user="alice"))
    event["impersonatedUser"] = {"username": "system:serviceaccount:ci:deployer", "groups": ["system:serviceaccounts"]}
    document = document_from_audit_event(event)
    assert document["user"]["name"] == event["user"]["username"]  # as Elastic's pipeline maps it
    assert document["gatewatch"]["user"] == {"effective": "system:serviceaccount:ci:deployer"}


def test_effective_user_without_impersonation_is_the_user() -> None:
    document = document_from_admission_review(example_review("busybox-create-review.json"), now=NOW)
    assert document["gatewatch"]["user"] == {"effective": "alice"} and document["user"]["name"] == "alice"


# --- wrongly typed fields: an InputError naming the field, never a TypeError ---------------------


def _set(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    *parents, last = path.split(".")
    target: Any = changed
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return changed


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("request.object.spec.containers", "busybox", r"request\.object\.spec\.containers: expected a list, got str"),
        ("request.object.spec.containers.0", "busybox", r"request\.object\.spec\.containers\[0\]: expected an object, got str"),
        ("request.object.spec.containers.0.image", 5, r"request\.object\.spec\.containers\[0\]\.image: expected a string, got int"),
        ("request.object.spec.initContainers", {"image": "busybox"}, r"request\.object\.spec\.initContainers: expected a list, got dict"),
        ("request.object.spec", "busybox", r"request\.object\.spec: expected an object, got str"),
        ("request.object.metadata", [], r"request\.object\.metadata: expected an object, got list"),
        ("request.object.metadata.labels", [], r"request\.object\.metadata\.labels: expected an object of strings, got list"),
        ("request.object.metadata.name", 5, r"request\.object\.metadata\.name: expected a string, got int"),
        ("request.object.spec", None, r"request\.object\.spec: expected an object, got null"),
        ("request.userInfo.username", 5, r"request\.userInfo\.username: expected a string, got int"),
        ("request.userInfo.groups", "admins", r"request\.userInfo\.groups: expected a list of strings"),
        ("request.object.metadata.ownerReferences", {}, r"request\.object\.metadata\.ownerReferences: expected a list"),
        ("request.object", "x", r"request\.object: expected an object for CREATE, got str"),
        ("request.userInfo", [], r"request\.userInfo: expected an object, got list"),
        ("request.oldObject", 3, r"request\.oldObject: expected an object, got int"),
    ],
)
def test_wrongly_typed_review_field_is_an_input_error_naming_it(path: str, value: Any, message: str) -> None:
    review = _set(example_review("busybox-create-review.json"), path, value)
    with pytest.raises(InputError, match=message):
        document_from_admission_review(review, now=NOW)


def test_wrongly_typed_old_object_spec_is_an_input_error_naming_it() -> None:
    review = pod_update_review(["nginx"], ["busybox"])
    review["request"]["oldObject"]["spec"]["containers"] = "nginx"
    with pytest.raises(InputError, match=r"request\.oldObject\.spec\.containers: expected a list, got str"):
        document_from_admission_review(review, now=NOW)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: _set(e, "requestObject", []), r"requestObject: expected an object, got list"),  # verb create
        (lambda e: _set(e, "requestObject.spec.containers", "busybox"), r"requestObject\.spec\.containers: expected an object"),
        (lambda e: _set(e, "requestObject.spec.containers.0.image", 5), r"requestObject\.spec\.containers\[0\]\.image: expected a string"),
        (lambda e: _set(e, "requestObject.metadata.labels", []), r"requestObject\.metadata\.labels: expected an object"),
        (lambda e: _set(e, "impersonatedUser", []), r"impersonatedUser: expected an object, got list"),
        (lambda e: _set(e, "user", []), r"user: expected an object, got list"),
        (lambda e: _set({**e, "verb": "patch"}, "requestObject", ["x"]), r"requestObject\[0\]: expected a JSON patch operation"),
        (lambda e: _set({**e, "verb": "patch"}, "requestObject", [{"op": "add", "path": 3}]), r"requestObject\[0\]\.path: expected a string"),
        (lambda e: _set({**e, "verb": "patch"}, "requestObject", [{"op": "add", "path": "/spec/containers/0/image", "value": 5}]),
         r"requestObject\[0\]\.value \(written at /spec/containers/0/image\) as spec\.containers\[0\]\.image: expected a string, got int"),
        (lambda e: _set({**e, "verb": "patch"}, "requestObject", "x"), r"requestObject: expected an object or a JSON patch, got str"),
    ],
)
def test_wrongly_typed_audit_field_is_set_aside_with_a_warning_naming_it(change: Any, message: str) -> None:
    event = change(audit_event(verb="create", user="alice"))
    warnings = audit_event_view(event).warnings
    assert any(re.match(message, warning) for warning in warnings), warnings
    document_from_audit_event(event)  # still mapped


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: _set(p, "spec.containers", "busybox"), r"<input>: spec\.containers: expected a list, got str"),
        (lambda p: _set(p, "spec.containers.0.image", 5), r"<input>: spec\.containers\[0\]\.image: expected a string, got int"),
        (lambda p: _set(p, "metadata.labels", []), r"<input>: metadata\.labels: expected an object of strings, got list"),
    ],
)
def test_wrongly_typed_pod_field_is_an_input_error_naming_it(change: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        document_from_pod(change(netshoot_pod()), now=NOW)


# --- values that cannot be looked up: never a TypeError -----------------------------

# Odd values where gatewatch.documents looks a value up in a set or a dict; JSON
# makes lists and objects, which are unhashable.
UNHASHABLE = [[], ["audit.k8s.io/v1"], {}, {"a": 1}]


@pytest.mark.parametrize("value", UNHASHABLE, ids=repr)
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("apiVersion", r"apiVersion: expected one of \['audit\.k8s\.io/v1', 'audit\.k8s\.io/v1beta1'\], got "),
        ("kind", r"kind: expected Event, got "),
    ],
)
def test_unhashable_audit_field_is_an_input_error_naming_it(path: str, value: Any, message: str) -> None:
    event = copy.deepcopy(audit_event(verb="create", subresource="exec", user="alice"))
    event[path] = value
    for check in (check_audit_event, document_from_audit_event):
        with pytest.raises(InputError, match=message):
            check(event)


@pytest.mark.parametrize("value", UNHASHABLE, ids=repr)
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("annotations.authorization.k8s.io/decision", r"annotations\['authorization\.k8s\.io/decision'\]: expected a string, got "),
        ("annotations.authorization_k8s_io/decision", r"annotations\['authorization_k8s_io/decision'\]: expected a string, got "),
        ("objectRef.subresource", r"objectRef\.subresource: expected a string, got "),
    ],
)
def test_unhashable_audit_field_is_absent_for_matching(path: str, value: Any, message: str) -> None:
    event = copy.deepcopy(audit_event(verb="create", subresource="exec", user="alice"))
    target, _, key = path.partition(".")
    event[target][key] = value
    check_audit_event(event)  # an audit event all the same
    view = audit_event_view(event)
    assert any(re.match(message, warning) for warning in view.warnings)
    assert key not in view.event[target]
    document_from_audit_event(event)


@pytest.mark.parametrize("value", UNHASHABLE, ids=repr)
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r, v: {**r, "apiVersion": v}, r"<input>: apiVersion: expected one of"),
        (lambda r, v: {**r, "request": {**r["request"], "operation": v}}, r"<input>: request\.operation: expected one of"),
        (lambda r, v: {**r["request"], "operation": v}, r"<input>: operation: expected one of"),  # a bare request
    ],
)
def test_unhashable_review_field_is_an_input_error_naming_it(change: Any, value: Any, message: str) -> None:
    review = change(example_review("exec-review.json"), value)
    with pytest.raises(InputError, match=message):
        parse_admission_request(review)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # CONNECT: the object is the options (PodExecOptions).
        (lambda r: _set(r, "request.object", {**r["request"]["object"], 1: "x"}), r"<input>: request\.object: keys must be strings, got 1"),
        (lambda r: {**r, "request": {**r["request"], "operation": "UPDATE", "options": {("a",): 1}}},
         r"<input>: request\.options: keys must be strings, got \('a',\)"),
    ],
)
def test_options_key_that_is_not_a_string_is_an_input_error(change: Any, message: str) -> None:
    # Only YAML (gatewatch check reads AdmissionReviews from YAML) makes such a key.
    with pytest.raises(InputError, match=message):
        document_from_admission_review(change(example_review("exec-review.json")), now=NOW)


@pytest.mark.parametrize("key", ["name", "generateName", "namespace"])
@pytest.mark.parametrize("value", [5, True, *UNHASHABLE], ids=repr)
def test_pod_name_or_namespace_that_is_not_a_string_is_an_input_error(key: str, value: Any) -> None:
    pod = netshoot_pod()
    pod["metadata"][key] = value
    with pytest.raises(InputError, match=rf"<input>: metadata\.{key}: expected a string, got {type(value).__name__}$"):
        document_from_pod(pod, now=NOW)


def test_pod_generate_name_and_namespace_reach_object_ref() -> None:
    pod = netshoot_pod()
    pod["metadata"] = {"generateName": "dbg-", "namespace": "team-a"}
    audit = document_from_pod(pod, now=NOW)["kubernetes"]["audit"]
    assert audit["objectRef"] == {"resource": "pods", "namespace": "team-a", "name": "dbg-", "apiVersion": "v1"}


def test_exec_options_of_the_wrong_type_are_input_errors() -> None:
    # The API server builds PodExecOptions from the URL: a command that is no list of strings is forged.
    review = example_review("busybox-create-review.json")
    request = review["request"]
    request.update(operation="CONNECT", subResource="exec",
                   kind={"group": "", "version": "v1", "kind": "PodExecOptions"},
                   object={"kind": "PodExecOptions", "apiVersion": "v1", "command": ["sh", 5]})
    with pytest.raises(InputError, match=r"request\.object\.command\[1\]: expected a string, got int"):
        parse_admission_request(review)
    request["object"] = {"kind": "PodExecOptions", "apiVersion": "v1", "command": ["sh"], "tty": "yes"}
    with pytest.raises(InputError, match=r"request\.object\.tty: expected true or false, got str"):
        parse_admission_request(review)


def test_review_object_name_that_is_not_a_string_is_refused_naming_it() -> None:
    # The API server never sends one: a forged or broken review (a 4xx at the webhook).
    review = example_review("busybox-create-review.json")
    review["request"].pop("name", None)
    review["request"]["object"]["metadata"]["name"] = 5
    with pytest.raises(InputError, match=r"request\.object\.metadata\.name: expected a string, got int"):
        document_from_admission_review(review, now=NOW)


@pytest.mark.parametrize("request_uri", ["//[", "/api/v1/namespaces/ns/pods/p/exec?command=sh&x=[#frag"])
def test_exec_request_uri_that_is_no_url_still_maps(request_uri: str) -> None:
    event = {**audit_event(verb="create", subresource="exec", user="alice"), "requestURI": request_uri}
    document = document_from_audit_event(event)
    expected = ["sh"] if "command=sh" in request_uri else []
    assert document["gatewatch"]["exec"]["command"] == expected


def test_check_audit_event_accepts_every_example_line_and_changes_nothing() -> None:
    for event in audit_events():
        before = copy.deepcopy(event)
        assert check_audit_event(event) is None
        assert event == before


def test_timestamps_are_rfc3339_utc_with_microseconds_whatever_came_before() -> None:
    # format_timestamp works out the text up to the second once per second: each moment gets its own text
    # (the same second again, the next one, another day, year or zone, a naive one, a year before 1000, which
    # strftime writes unpadded).
    def expected(moment: datetime) -> str:
        moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
        return f"{moment.year}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:" \
               f"{moment.second:02d}.{moment.microsecond:06d}Z"

    start = datetime(2026, 12, 2, 23, 59, 58, 999_999, tzinfo=timezone.utc)
    moments = [start + timedelta(microseconds=step) for step in (0, 0, 1, 2, 1_000_000, 1_000_001, 2_000_000)]
    moments += [start.replace(year=2027), start.replace(tzinfo=None), start.replace(microsecond=0),
                start.astimezone(timezone(timedelta(hours=5, minutes=30))), start.replace(year=999), start]
    texts = [format_timestamp(moment) for moment in moments]
    assert texts == [expected(moment) for moment in moments]
    assert texts[:4] == ["2026-12-02T23:59:58.999999Z", "2026-12-02T23:59:58.999999Z",
                         "2026-12-02T23:59:59.000000Z", "2026-12-02T23:59:59.000001Z"]
