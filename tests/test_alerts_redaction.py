"""Alerts leave the cluster: environment values, managedFields and last-applied-configuration are redacted."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from gatewatch.cli import main

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
SECRET = "s3cret-db-password"

# A rule that reads an env value: it must still see the real one.
ENV_RULE = f"""version: 1
ruleset: t
rules:
  - {{id: env-secret, name: Password in env, description: d, severity: high, risk_score: 73, type: query, action: deny,
     query: 'kubernetes.audit.requestObject.spec.initContainers.env.value:"{SECRET}"'}}
"""


def pod_with_secrets() -> dict:
    env = [
        {"name": "DB_PASSWORD", "value": SECRET},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}},
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "dbg",
            "namespace": "payments",
            "labels": {"app": "dbg"},
            "annotations": {LAST_APPLIED: json.dumps({"spec": {"env": env}}), "team": "payments"},
            "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {
            "containers": [{"name": "main", "image": "busybox:1.36", "env": env}],
            "initContainers": [{"name": "init", "image": "alpine:3.20", "env": [{"name": "P", "value": SECRET}]}],
        },
    }


def alerts_of(*args: str) -> list[dict]:
    result = CliRunner().invoke(main, [*args], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_check_alert_redacts_env_values_managed_fields_and_last_applied(tmp_path: Path) -> None:
    manifest = tmp_path / "pod.json"
    manifest.write_text(json.dumps(pod_with_secrets()))
    rules = tmp_path / "rules.yaml"
    rules.write_text(ENV_RULE)

    alerts = alerts_of("check", "--format", "json", "--rules", str(rules), str(manifest))

    # The rule matched the real value; the alert does not carry it anywhere.
    assert [a["rule"]["id"] for a in alerts] == ["env-secret"]
    (alert,) = alerts
    assert SECRET not in json.dumps(alert)
    pod = alert["kubernetes"]["audit"]["requestObject"]
    assert pod["spec"]["containers"][0]["env"] == [
        {"name": "DB_PASSWORD", "value": "[redacted]"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}},
    ]
    assert pod["spec"]["initContainers"][0]["env"] == [{"name": "P", "value": "[redacted]"}]
    assert "managedFields" not in pod["metadata"]
    assert pod["metadata"]["annotations"] == {"team": "payments"}
    assert pod["metadata"]["labels"] == {"app": "dbg"}
    assert pod["spec"]["containers"][0]["image"] == "busybox:1.36"


def test_replay_alert_redacts_request_and_response_objects(tmp_path: Path) -> None:
    pod = pod_with_secrets()
    event = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse", "auditID": "a-1",
        "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/payments/pods", "verb": "create",
        "user": {"username": "alice"}, "objectRef": {"resource": "pods", "namespace": "payments", "name": "dbg",
                                                     "apiVersion": "v1"},
        "responseStatus": {"code": 201}, "requestObject": pod, "responseObject": pod,
        "requestReceivedTimestamp": "2026-11-01T12:00:00.000000Z", "stageTimestamp": "2026-11-01T12:00:00.000000Z",
        "annotations": {"authorization.k8s.io/decision": "allow"},
    }
    log = tmp_path / "audit.jsonl"
    log.write_text(json.dumps(event) + "\n")
    result = CliRunner().invoke(main, ["replay", "--format", "json", str(log)], catch_exceptions=False)
    alerts = [json.loads(line) for line in result.stdout.splitlines()]
    assert "gatewatch-debug-image-pod" in {a["rule"]["id"] for a in alerts}
    for alert in alerts:
        assert SECRET not in json.dumps(alert)
        audit = alert["kubernetes"]["audit"]
        for key in ("requestObject", "responseObject"):
            assert audit[key]["spec"]["containers"][0]["env"][0] == {"name": "DB_PASSWORD", "value": "[redacted]"}
            assert "managedFields" not in audit[key]["metadata"]
            assert LAST_APPLIED not in audit[key]["metadata"]["annotations"]
        # The audit event's own annotations are not the object's: they stay.
        assert audit["annotations"] == {"authorization_k8s_io/decision": "allow"}


def test_building_an_alert_leaves_the_matched_document_as_it_was() -> None:
    # The operator builds alerts from the document the rules matched; a later
    # rule, alert or Event must still see the real object.
    import copy

    from gatewatch.alerts import build_alert
    from gatewatch.documents import document_from_pod
    from gatewatch.engine import RuleEngine
    from gatewatch.rules import load_rules

    document = document_from_pod(pod_with_secrets())
    before = copy.deepcopy(document)
    matches = RuleEngine(load_rules()).evaluate(document, new_terms=False)
    assert matches
    for match in matches:
        assert SECRET not in json.dumps(build_alert(match, document))
    assert document == before


def test_json_patch_operations_on_env_have_their_values_redacted() -> None:
    from gatewatch.alerts import redact_object

    patch = [
        {"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "DB_PASSWORD", "value": SECRET}},
        {"op": "replace", "path": "/spec/containers/0/env/0/value", "value": SECRET},
        {"op": "add", "path": "/spec/containers/1/env", "value": [{"name": "TOKEN", "value": SECRET}]},
        {"op": "replace", "path": "/spec/containers/0/image", "value": "busybox:1.36"},
    ]
    redacted = redact_object(patch)
    assert SECRET not in json.dumps(redacted)
    assert redacted[0]["value"] == {"name": "DB_PASSWORD", "value": "[redacted]"}
    assert redacted[2]["value"] == [{"name": "TOKEN", "value": "[redacted]"}]
    assert redacted[3] == patch[3]  # what the rule matched on stays readable
    assert patch[1]["value"] == SECRET  # a copy: the document the rules saw is untouched


def test_secret_data_is_redacted_keys_kept_in_objects_lists_and_patches(tmp_path: Path) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "payments"},
              "data": {"password": "aHVudGVyMg=="}, "stringData": {"token": SECRET}}
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nruleset: t\nrules:\n  - id: secret-write\n    name: Secret written\n    description: d\n"
        "    severity: low\n    risk_score: 1\n    type: query\n    action: alert\n"
        "    query: 'kubernetes.audit.objectRef.resource:secrets and kubernetes.audit.verb:(create or patch)'\n"
    )
    def audit_event(audit_id: str, verb: str, request_object) -> dict:
        return {
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse", "auditID": audit_id,
            "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/payments/secrets", "verb": verb,
            "user": {"username": "alice"}, "responseStatus": {"code": 201}, "requestObject": request_object,
            "objectRef": {"resource": "secrets", "namespace": "payments", "name": "db", "apiVersion": "v1"},
            "requestReceivedTimestamp": "2026-11-01T12:00:00.000000Z",
            "stageTimestamp": "2026-11-01T12:00:00.000000Z",
            "annotations": {"authorization.k8s.io/decision": "allow"},
        }
    log = tmp_path / "audit.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in (
        audit_event("s-1", "create", secret),
        audit_event("s-2", "patch", {"stringData": {"token": SECRET}}),  # merge patch: no kind
        audit_event("s-3", "patch", [{"op": "replace", "path": "/data/password", "value": SECRET}]),
    )))
    result = CliRunner().invoke(main, ["replay", "--format", "json", "--rules", str(rules), str(log)],
                                catch_exceptions=False)
    alerts = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(alerts) == 3
    assert all(SECRET not in json.dumps(alert) and "aHVudGVyMg==" not in json.dumps(alert) for alert in alerts)
    created = alerts[0]["kubernetes"]["audit"]["requestObject"]
    assert created["data"] == {"password": "[redacted]"} and created["metadata"]["name"] == "db"
