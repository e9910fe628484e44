"""An alert's audit event is redacted and loses the nulls of its mappings in one walk: the same as redacting
it (``redact_object``) and then dropping the nulls, for the benchmark's whole mix of events and odd ones; and
encoded once for all the alerts of one event (replay) or review (the webhook), the same bytes as alerts built whole."""
from __future__ import annotations

import dataclasses
import itertools
import json
import random
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from gatewatch.alerts import SharedAuditPart, alert_line, build_alert, encoded_audit, redact_object, shared_alert_line
from gatewatch.documents import document_from_admission_request, document_from_audit_event
from gatewatch.decision import Mode
from gatewatch.engine import Match
from gatewatch.offline.report import alert_bytes
from gatewatch.rules import load_rules
from gatewatch.rules.model import Action
from gatewatch.rules.packs import pack_path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from audit_log import audit_lines  # noqa: E402  (the benchmark's realistic log)

SECRET = "s3cret-in-env"
# (effect, mode, decision) of a replay's alerts, and of an alert with none of them.
OUTCOMES = [(Action.DENY, Mode.ENFORCE, "denied"), (Action.WARN, Mode.WARN, "allowed"), (None, None, None)]
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


def test_an_alert_with_its_audit_part_spliced_in_is_the_alert_built_whole() -> None:
    # Replay encodes an event's audit part once (encoded_audit) and splices it into each of its alerts.
    rules = load_rules().rules
    now = datetime(2026, 12, 2, tzinfo=timezone.utc)
    odd = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": "create", "auditID": "odd",
           "objectRef": {"resource": "pods", "namespace": "a", "name": "x"},
           "requestObject": {"kind": "Pod", "metadata": {"name": "x", "labels": {"big": 2**70, "text": "\ud800"}}}}
    spliced = 0
    for event in [*events(), odd]:
        document = document_from_audit_event(event)
        encoded = encoded_audit(document)
        for rule in rules[:2]:  # two alerts of one event share the part
            match = Match(rule=rule, new_terms_key=None)
            whole = alert_bytes(build_alert(match, document, now=now, extra={"replay": {"line": 1}}))
            if encoded is None:
                continue
            alert = build_alert(match, document, now=now, extra={"replay": {"line": 1}},
                                spliced_audit=orjson.Fragment(encoded))
            assert orjson.dumps(alert, default=str, option=orjson.OPT_APPEND_NEWLINE) == whole
            assert SECRET.encode() not in whole
            spliced += 1
    assert encoded is None  # orjson cannot write the odd event: its alerts are built whole
    assert spliced > 600


def test_an_alert_with_its_rules_part_spliced_in_is_the_alert_built_whole() -> None:
    # Replay's alerts carry their rule's tags, rule and threat as encoded once per rule: every rule (the packs'
    # too), one without tags, ATT&CK or reference, and one orjson cannot write (its alerts are built whole).
    shipped = [*load_rules().rules, *load_rules(pack_path("pod-security-baseline")).rules]
    bare = dataclasses.replace(shipped[0], id="bare", tags=(), threat=(), references=(), ruleset=None)
    odd = dataclasses.replace(shipped[0], id="odd", name="lone \ud800 surrogate")
    now = datetime(2026, 12, 2, tzinfo=timezone.utc)
    documents = [document_from_audit_event(event) for event in events()[:40]]
    built = 0
    for rule in [*shipped, bare, odd]:
        for document, (effect, mode, decision) in zip(documents, itertools.cycle(OUTCOMES)):
            match = Match(rule=rule, new_terms_key=None)
            fields = {"effect": effect, "mode": mode, "decision": decision, "now": now,
                      "extra": {"replay": {"line": 7, "audit_id": "a"}}}
            whole = alert_bytes(build_alert(match, document, **fields))
            encoded = encoded_audit(document)
            assert encoded is not None
            alert = build_alert(match, document, spliced_audit=orjson.Fragment(encoded), **fields)
            try:
                spliced = orjson.dumps(alert, default=str, option=orjson.OPT_APPEND_NEWLINE)
            except orjson.JSONEncodeError:
                assert rule is odd  # built whole by replay (_alert_line), as before
                continue
            assert spliced == whole, rule.id
            assert (b'"threat"' in whole) is bool(rule.threat)  # an empty part is left out, not null
            built += 1
    assert built == 40 * (len(shipped) + 1)


def admission_documents() -> list[dict[str, Any]]:
    """The webhook's documents: the example reviews, and a Pod CREATE with a secret in an env value and in a
    command, text orjson writes as UTF-8 (not an alert line's ASCII), a DEL, a lone surrogate, a big integer."""
    reviews = [json.loads(path.read_text()) for path in sorted((REPO / "examples" / "reviews").glob("*.json"))]
    create = next(review for review in reviews if review["request"]["operation"] == "CREATE")
    odd_values: list[Any] = [None, "caf\u00e9", "\u2603 \U0001f600", "del \x7f", "\ud800", 2**70, 1.5, True]
    variants = []
    for value in odd_values:
        review = json.loads(json.dumps(create))
        pod = review["request"]["object"]
        pod["status"] = {"odd": value}  # not a field the document checks (a label must be a string)
        if isinstance(value, str):
            pod["metadata"]["labels"]["odd"] = value
        container = pod["spec"]["containers"][0]
        container["env"] = [{"name": "P", "value": SECRET}, {"name": "N", "value": None}]
        container["command"] = ["curl", "-H", f"Authorization: Bearer {SECRET}"]
        variants.append(review)
    now = datetime(2026, 12, 2, tzinfo=timezone.utc)
    return [document_from_admission_request(review["request"], now=now) for review in [*reviews, *variants]]


def test_a_webhook_alert_line_with_its_audit_part_shared_is_the_alert_line_built_whole() -> None:
    # The webhook's alerts of one review share their audit part (SharedAuditPart, encoded by the first of them)
    # and carry their rule's part as encoded once per rule: each line is alert_line of the alert built whole.
    shipped = [*load_rules().rules, *load_rules(pack_path("pod-security-baseline")).rules]
    rules = [*shipped[:3], dataclasses.replace(shipped[0], id="accent", name="Caf\u00e9 r\u00e8gle"),
             dataclasses.replace(shipped[0], id="odd", name="lone \ud800 surrogate")]
    now = datetime(2026, 12, 2, 0, 0, 1, tzinfo=timezone.utc)
    extra = {"mode_source": "label", "pod_lookup": "found", "pod": {"name": "web", "labels": {"a": None, "b": "c"}}}
    documents = [*admission_documents(), *(document_from_audit_event(event) for event in events()[:60])]
    checked = 0
    for document in documents:
        before = json.dumps(document, default=str)
        shared = SharedAuditPart(document)
        for rule, (effect, mode, decision) in zip(rules, itertools.cycle(OUTCOMES)):
            match = Match(rule=rule, new_terms_key=None)
            fields = {"effect": effect, "mode": mode, "decision": decision, "now": now, "extra": extra}
            whole = alert_line(build_alert(match, document, **fields))
            assert shared_alert_line(match, document, audit=shared, **fields) == whole, rule.id
            assert SECRET not in whole
            checked += 1
        assert json.dumps(document, default=str) == before  # the document the rules matched is left as it was
    assert checked == len(documents) * len(rules)


def test_a_reviews_alerts_redact_and_encode_their_audit_part_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import gatewatch.alerts as alerts

    walks: list[int] = []
    redacted_audit = alerts._redacted_audit
    monkeypatch.setattr(alerts, "_redacted_audit", lambda *a, **k: walks.append(1) or redacted_audit(*a, **k))
    document = admission_documents()[0]
    shared = SharedAuditPart(document)
    lines = [shared_alert_line(Match(rule=rule, new_terms_key=None), document, audit=shared)
             for rule in load_rules().rules[:3]]
    assert len(walks) == 1
    assert all(json.loads(line)["kubernetes"]["audit"] == json.loads(lines[0])["kubernetes"]["audit"]
               for line in lines)


def test_the_whole_alert_is_built_without_nulls_in_the_order_of_its_fields() -> None:
    # build_alert puts gatewatch's own fields only when set and copies only what the document and the caller
    # give to drop their nulls; the line must be that of the alert with every field in place (nulls too,
    # ``extra`` over them) and then the nulls of its mappings dropped, whatever carries nulls.
    rules = [rule for rule in load_rules().rules if rule.new_terms is None][:3] + \
        [rule for rule in load_rules().rules if rule.new_terms is not None][:1]
    now = datetime(2026, 12, 2, 12, 0, 0, 123456, tzinfo=timezone.utc)
    rng = random.Random(7)
    documents = []
    for event in events()[:40]:
        document = document_from_audit_event(event)
        documents.append(document)
        odd = json.loads(json.dumps(document))
        for field in ("orchestrator", "user", "source", "container", "user_agent"):
            odd[field] = with_nulls({"x": {"a": 1, "b": None}, "n": None, "l": [None, {"c": None}]}, rng)
        odd["event"]["action"] = rng.choice([None, {"a": None, "b": 1}, "create"])
        odd["gatewatch"]["source"] = rng.choice([None, {"k": None, "v": 1}, "admission"])
        documents.append(odd)
    extras = [None, {"mode_source": "default"},
              {"decision": "x", "mode": None, "pod": {"name": None, "labels": {"a": None}}, "z": None, "l": [None]}]
    checked = 0
    for document, extra, rule, (effect, mode, decision) in itertools.product(documents, extras, rules, OUTCOMES):
        match = Match(rule=rule, new_terms_key=("a", "b") if rule.new_terms else None)
        alert = build_alert(match, document, effect=effect, mode=mode, decision=decision, now=now, extra=extra,
                            file_path="m.yaml" if checked % 2 else None)
        assert json.dumps(alert) == json.dumps(reference_alert(match, document, alert, effect=effect, mode=mode,
                                                               decision=decision, extra=extra))
        checked += 1
    assert checked > 2000


def reference_alert(match: Match, document: dict[str, Any], alert: dict[str, Any], *, effect: Any, mode: Any,
                    decision: Any, extra: Any) -> dict[str, Any]:
    """The alert with every field in its place (as docs/alerts.md lists them), then its nulls dropped; the parts
    other tests hold (message, rule, threat, the audit event, offending fields) taken from ``alert``."""
    rule = match.rule
    whole: dict[str, Any] = {
        "@timestamp": alert["@timestamp"],
        "event": {"kind": "alert", "dataset": "gatewatch.alerts", "module": "gatewatch",
                  "action": document.get("event", {}).get("action"), "severity": rule.risk_score,
                  "risk_score": rule.risk_score},
        "message": alert["message"],
        **{key: alert[key] for key in ("tags", "rule", "threat") if key in alert},
        "kubernetes": alert["kubernetes"],
        "gatewatch": {
            "action": rule.action.value, "effect": getattr(effect, "value", effect), "decision": decision,
            "mode": getattr(mode, "value", mode), "severity": rule.severity.value,
            "new_terms": rule.new_terms is not None, "new_terms_evaluated": False,
            "source": document.get("gatewatch", {}).get("source"),
            "offending_fields": alert["gatewatch"].get("offending_fields"),
            "offending_containers": alert["gatewatch"].get("offending_containers"),
        },
    }
    for field in ("orchestrator", "user", "user_agent", "source", "container"):
        if field in document:
            whole[field] = document[field]
    if match.new_terms_key is not None:
        whole["gatewatch"]["new_terms_fields"] = alert["gatewatch"]["new_terms_fields"]
        whole["gatewatch"]["new_terms_values"] = list(match.new_terms_key)
    if "file" in alert:
        whole["file"] = alert["file"]
    whole["gatewatch"].update(extra or {})
    return nulls_dropped(whole)
