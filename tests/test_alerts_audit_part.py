"""An alert's audit event is redacted and loses the nulls of its mappings in one walk: the same as redacting
it (``redact_object``) and then dropping the nulls, for the benchmark's whole mix of events and odd ones."""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

from gatewatch.alerts import build_alert, redact_object
from gatewatch.documents import document_from_audit_event
from gatewatch.engine import Match
from gatewatch.rules import load_rules

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from audit_log import audit_lines  # noqa: E402  (the benchmark's realistic log)

SECRET = "s3cret-in-env"
OBJECTS = ("requestObject", "responseObject")


def nulls_dropped(value: Any) -> Any:
    """What an alert promises: no null value in a mapping reached through mappings (lists are kept as they are)."""
    if isinstance(value, dict):
        return {key: nulls_dropped(item) for key, item in value.items() if item is not None}
    return value


def expected_audit(audit: dict[str, Any]) -> dict[str, Any]:
    secrets = (audit.get("objectRef") or {}).get("resource") == "secrets"
    redacted = {key: redact_object(value, secret=secrets and key in OBJECTS, depth=1)
                for key, value in audit.items() if key != "requestURI"}
    return nulls_dropped(redacted)


def with_nulls(event: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """``event`` with some values in its objects set to null: in mappings, in lists, at every depth."""
    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: None if rng.random() < 0.15 else walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [None if rng.random() < 0.15 else walk(item) for item in value]
        return value
    return {**event, **{key: walk(event[key]) for key in OBJECTS if key in event}, "annotations": None}


def events() -> list[dict[str, Any]]:
    rng = random.Random(12)
    mix = [json.loads(line) for line in audit_lines(6000)]
    with_objects = [event for event in mix if any(key in event for key in OBJECTS)]
    examples = [json.loads(line) for line in (REPO / "examples" / "audit" / "audit.jsonl").read_text().splitlines()]
    secret = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": "create", "auditID": "s",
              "objectRef": {"resource": "secrets", "namespace": "a", "name": "db"},
              "requestObject": {"kind": "Secret", "metadata": {"name": "db", "labels": None},
                                "data": {"password": SECRET}, "type": None}}
    patch = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": "patch", "auditID": "p",
             "objectRef": {"resource": "pods", "namespace": "a", "name": "x"},
             "requestObject": [{"op": "add", "path": "/spec/containers/0/env/0",
                                "value": {"name": "P", "value": SECRET, "valueFrom": None}}]}
    chosen = [*examples, *with_objects[:300], secret, patch]
    return chosen + [with_nulls(event, rng) for event in chosen]


def test_the_alerts_audit_event_is_redacted_without_nulls_as_redacting_then_dropping_them() -> None:
    rule = load_rules().rules[0]
    checked = 0
    for event in events():
        document = document_from_audit_event(event)
        audit = document["kubernetes"]["audit"]
        before = json.dumps(audit)
        alert = build_alert(Match(rule=rule, new_terms_key=None), document)
        got = {key: value for key, value in alert["kubernetes"]["audit"].items() if key != "requestURI"}
        assert got == expected_audit(audit), event.get("auditID")
        assert json.dumps(audit) == before  # the document the rules matched is left as it was
        line = json.dumps(alert)
        assert SECRET not in line
        checked += any(key in event for key in OBJECTS)
    assert checked > 300


def test_nulls_inside_lists_stay_and_nulls_in_mappings_go() -> None:
    event = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": "create", "auditID": "n",
             "objectRef": {"resource": "pods", "namespace": "a", "name": "x"}, "stage": None,
             "requestObject": {"kind": "Pod", "metadata": {"name": "x", "creationTimestamp": None},
                               "spec": {"containers": [{"name": "c", "image": None, "env": [None]}],
                                        "nodeName": None}}}
    document = document_from_audit_event(event)
    alert = build_alert(Match(rule=load_rules().rules[0], new_terms_key=None), document)
    audit = alert["kubernetes"]["audit"]
    assert "stage" not in audit
    assert audit["requestObject"]["metadata"] == {"name": "x"}
    assert audit["requestObject"]["spec"] == {"containers": [{"name": "c", "image": None, "env": [None]}]}
