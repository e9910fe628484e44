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
