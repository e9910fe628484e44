"""Elastic rule TOML -> rules.yaml: converted rules load back, keep Elastic's
metadata, and give the verdicts Elastic's own semantics give on audit-log lines
and admission requests (documents built by gatewatch.documents)."""
from __future__ import annotations

import json
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gatewatch.documents import document_from_admission_review, document_from_audit_line
from gatewatch.rules import Action, Language, RuleType, load_rules, load_rules_text
from gatewatch.rules.elastic_import import import_elastic_rules

FIXTURES = Path(__file__).parent / "data" / "elastic"
CONVERTIBLE = [
    "query_user_exec_to_pod.toml",
    "new_terms_debug_image.toml",
    "eql_interactive_session.toml",
    "eql_events_deleted.toml",
    "esql_secret_burst.toml",
    "eql_sequence.toml",
]
NOT_CONVERTIBLE = {
    "threshold_forbidden_requests.toml": "threshold rules are not supported",
    "broken.toml": "invalid TOML",
    "eql_sequence_endpoint.toml": "endpoint-data rule (EQL 'process where')",
}


@pytest.fixture(scope="module")
def result():
    return import_elastic_rules([FIXTURES / name for name in sorted(CONVERTIBLE + list(NOT_CONVERTIBLE))])


@pytest.fixture(scope="module")
def imported(result):
    return load_rules_text(result.rules_yaml, file="imported.yaml")


# --- documents ---------------------------------------------------------------------------


def audit_document(
    *, verb: str, resource: str = "pods", subresource: str | None = None, user: str = "alice",
    namespace: str = "payments", request_object: dict | None = None,
) -> dict[str, Any]:
    object_ref: dict[str, Any] = {"resource": resource, "namespace": namespace, "name": "web-1", "apiVersion": "v1"}
    if subresource:
        object_ref["subresource"] = subresource
    event: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request", "auditID": "a1",
        "stage": "ResponseComplete", "requestURI": f"/api/v1/namespaces/{namespace}/{resource}/web-1",
        "verb": verb, "user": {"username": user, "groups": ["system:authenticated"]},
        "sourceIPs": ["10.0.12.7"], "userAgent": "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46",
        "objectRef": object_ref, "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": "2026-11-22T05:10:02.401876Z", "stageTimestamp": "2026-11-22T05:10:02.404012Z",
        "annotations": {"authorization.k8s.io/decision": "allow"},
    }
    if request_object is not None:
        event["requestObject"] = request_object
    return document_from_audit_line(json.dumps(event))


def admission_document(*, operation: str, subresource: str | None = None, user: str = "alice",
                       namespace: str = "payments", obj: dict | None = None) -> dict[str, Any]:
    if obj is None:
        obj = {"kind": "PodExecOptions", "apiVersion": "v1", "stdin": True, "tty": True, "command": ["sh"]}
    request: dict[str, Any] = {
        "uid": "u1", "kind": {"group": "", "version": "v1", "kind": obj.get("kind", "Pod")},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "name": "web-1", "namespace": namespace, "operation": operation,
        "userInfo": {"username": user, "groups": ["system:authenticated"]}, "object": obj,
    }
    if subresource:
        request["subResource"] = subresource
    return document_from_admission_review({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})


def alpine_pod() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1"},
            "spec": {"containers": [{"name": "c", "image": "alpine:3.19"}]}}


# --- conversion ----------------------------------------------------------------------------


def test_every_convertible_file_is_converted_and_the_others_are_named(result):
    failed = {Path(path).name: reason for path, reason in result.failures}
    assert set(failed) == set(NOT_CONVERTIBLE)
    for name, reason in NOT_CONVERTIBLE.items():
        assert reason in failed[name], failed[name]
    assert len(result.rule_ids) == len(CONVERTIBLE)


def test_broken_toml_names_the_line(result):
    reason = dict((Path(p).name, r) for p, r in result.failures)["broken.toml"]
    assert "line 5" in reason


def test_output_round_trips_through_the_loader(result, imported, tmp_path):
    assert result.rules_yaml.startswith("# Imported from Elastic")
    out = tmp_path / "imported.yaml"
    out.write_text(result.rules_yaml)
    assert [rule.id for rule in load_rules(out).rules] == [rule.id for rule in imported.rules]


def test_elastic_metadata_is_kept(imported):
    source = tomllib.loads((FIXTURES / "query_user_exec_to_pod.toml").read_text())["rule"]
    rule = imported.get(source["rule_id"])
    assert rule.name == source["name"]
    assert (rule.severity.value, rule.risk_score) == (source["severity"], source["risk_score"])
    assert list(rule.references) == source["references"]
    assert list(rule.tags) == source["tags"]
    assert rule.false_positives[0].startswith("An administrator may need to exec")
    assert (rule.tactic_ids, rule.technique_ids) == (("TA0002",), ("T1609",))


def test_imported_rules_only_alert(imported):
    assert {rule.action for rule in imported.rules} == {Action.ALERT}


def test_new_terms_fields_and_history_window_are_kept(imported):
    rule = imported.get("93120a05-caf5-47f6-a305-e8abee463fb9")
    assert rule.type is RuleType.NEW_TERMS
    assert rule.new_terms.fields == ("source.ip", "user_agent.original", "user.name")
    assert rule.new_terms.history_window == timedelta(days=5)


def test_exact_eql_becomes_kql_and_case_insensitive_eql_stays_eql(imported):
    events_deleted = imported.get("33c27b4e-8ec6-406f-b8e5-345dc024aa97")
    assert events_deleted.language is Language.KUERY
    assert 'kubernetes.audit.verb:"delete"' in events_deleted.query
    assert events_deleted.technique_ids == ("T1070", "T1070.004")
    interactive = imported.get("0f6f3e0a-5b0c-4f1e-9d53-4a7c2b1e8d11")
    assert interactive.language is Language.EQL and interactive.query.startswith("any where")


# --- verdicts --------------------------------------------------------------------------------


EXEC = "14de811c-d60f-11ec-9fd7-f661ea17fbce"
DEBUG_IMAGE = "93120a05-caf5-47f6-a305-e8abee463fb9"
INTERACTIVE = "0f6f3e0a-5b0c-4f1e-9d53-4a7c2b1e8d11"
EVENTS_DELETED = "33c27b4e-8ec6-406f-b8e5-345dc024aa97"

VERDICTS = [
    # (case, document builder, rule id, Elastic's verdict)
    ("audit: exec create", lambda: audit_document(verb="create", subresource="exec"), EXEC, True),
    ("audit: exec get (websocket)", lambda: audit_document(verb="get", subresource="exec"), EXEC, False),
    ("admission: exec CONNECT", lambda: admission_document(operation="CONNECT", subresource="exec"), EXEC, True),
    ("admission: pod CREATE", lambda: admission_document(operation="CREATE", obj=alpine_pod()), EXEC, False),
    # new_terms query part (history is the engine's business)
    ("audit: alpine pod create", lambda: audit_document(verb="create", request_object=alpine_pod()), DEBUG_IMAGE, True),
    ("admission: alpine pod CREATE", lambda: admission_document(operation="CREATE", obj=alpine_pod()), DEBUG_IMAGE, True),
    ("audit: alpine pod get", lambda: audit_document(verb="get", request_object=alpine_pod()), DEBUG_IMAGE, False),
    # EQL: `:` is case-insensitive ("CREATE" matches create), `in` exact, like~ case-insensitive
    ("audit: exec create by alice", lambda: audit_document(verb="create", subresource="exec"), INTERACTIVE, True),
    ("audit: attach get by alice", lambda: audit_document(verb="get", subresource="attach"), INTERACTIVE, True),
    ("admission: attach CONNECT", lambda: admission_document(operation="CONNECT", subresource="attach"), INTERACTIVE, True),
    ("audit: portforward", lambda: audit_document(verb="create", subresource="portforward"), INTERACTIVE, False),
    ("audit: exec by node", lambda: audit_document(verb="create", subresource="exec", user="system:node:w1"), INTERACTIVE, False),
    ("audit: exec by kube-system SA, other case",
     lambda: audit_document(verb="create", subresource="exec", user="system:serviceaccount:kube-system:x"), INTERACTIVE, False),
    ("audit: exec in kube-system", lambda: audit_document(verb="create", subresource="exec", namespace="kube-system"),
     INTERACTIVE, False),
    ("admission: exec by another SA",
     lambda: admission_document(operation="CONNECT", subresource="exec", user="system:serviceaccount:ci:deployer"),
     INTERACTIVE, True),
    ("audit: events deleted", lambda: audit_document(verb="delete", resource="events"), EVENTS_DELETED, True),
    ("audit: events listed", lambda: audit_document(verb="list", resource="events"), EVENTS_DELETED, False),
    ("audit: pod deleted", lambda: audit_document(verb="delete"), EVENTS_DELETED, False),
]


@pytest.mark.parametrize(("case", "build", "rule_id", "expected"), VERDICTS, ids=[v[0] for v in VERDICTS])
def test_imported_rules_give_elastics_verdicts(imported, case, build, rule_id, expected):
    assert imported.get(rule_id).matcher(build()) is expected


def test_a_wrong_attack_name_is_a_warning_and_the_rule_imports(tmp_path):
    bad = (FIXTURES / "query_user_exec_to_pod.toml").read_text().replace(
        'name = "Container Administration Command"', 'name = "Deploy Container"'
    )
    path = tmp_path / "bad_attack.toml"
    path.write_text(bad)
    result = import_elastic_rules([path])
    assert result.failures == [] and result.rule_ids == ["14de811c-d60f-11ec-9fd7-f661ea17fbce"]
    assert (str(path), "T1609 is named 'Container Administration Command' in ATT&CK Enterprise v18.1, "
            "not 'Deploy Container': Elastic's name kept") in result.warnings


def test_duplicate_rule_ids_across_files_fail_the_second(tmp_path):
    copy = tmp_path / "copy.toml"
    copy.write_text((FIXTURES / "query_user_exec_to_pod.toml").read_text())
    result = import_elastic_rules([FIXTURES / "query_user_exec_to_pod.toml", copy])
    assert result.rule_ids == ["14de811c-d60f-11ec-9fd7-f661ea17fbce"]
    ((failed, reason),) = result.failures
    assert failed == str(copy) and "duplicate rule_id" in reason


def test_a_missing_file_is_a_failure_not_a_crash(tmp_path):
    result = import_elastic_rules([tmp_path / "missing.toml"])
    ((_, reason),) = result.failures
    assert reason.startswith("cannot read")
