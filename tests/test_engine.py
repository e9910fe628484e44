"""Engine and decision: what a user sees for a set of matches in each mode."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from gatewatch.decision import MAX_WARNING_LENGTH, MAX_WARNINGS_TOTAL, Mode, decide, effect_of
from gatewatch.documents import document_from_admission_review, document_from_audit_event
from gatewatch.engine import RuleEngine
from gatewatch.newterms import InMemoryNewTermsStore
from gatewatch.rules import Action, load_rules, load_rules_text

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)

THREAT = """
    threat:
      - framework: MITRE ATT&CK
        tactic: {id: TA0002, name: Execution, reference: "https://attack.mitre.org/tactics/TA0002/"}
        techniques:
          - {id: T1609, name: Container Administration Command, reference: "https://attack.mitre.org/techniques/T1609/"}
"""


def rule_yaml(rule_id: str, *, query: str, action: str = "deny", extra: str = "", name: str | None = None) -> str:
    return f"""
  - id: {rule_id}
    name: {name or 'Rule ' + rule_id}
    description: test rule
    severity: medium
    risk_score: 47
    type: query
    query: '{query}'
    action: {action}
{THREAT}{extra}"""


def ruleset(*rules: str):
    return load_rules_text("version: 1\nruleset: test\nrules:" + "".join(rules), file="test.yaml")


def exec_review(*, user: str = "alice", namespace: str = "payments", dry_run: bool = False) -> dict:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0b9c6f6e-1111-4a4a-9c9c-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "PodExecOptions"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "subResource": "exec",
            "requestKind": {"group": "", "version": "v1", "kind": "PodExecOptions"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "requestSubResource": "exec",
            "name": "api-0",
            "namespace": namespace,
            "operation": "CONNECT",
            "userInfo": {"username": user, "uid": "u-1", "groups": ["system:authenticated"]},
            "object": {
                "kind": "PodExecOptions",
                "apiVersion": "v1",
                "stdin": True,
                "stdout": True,
                "tty": True,
                "container": "app",
                "command": ["sh"],
            },
            "oldObject": None,
            "dryRun": dry_run,
            "options": None,
        },
    }


EXEC_QUERY = "kubernetes.audit.objectRef.subresource:exec and kubernetes.audit.verb:create"


def test_default_rules_deny_exec_in_enforce_and_warn_in_warn_mode() -> None:
    engine = RuleEngine(load_rules())
    document = document_from_admission_review(exec_review())
    matches = engine.evaluate(document)
    assert [m.rule.name for m in matches] == ["Kubernetes User Exec into Pod"]

    enforce = decide(matches, mode=Mode.ENFORCE)
    assert not enforce.allowed
    assert "Kubernetes User Exec into Pod" in enforce.message
    assert "T1609" in enforce.message and "exception" in enforce.message

    warn = decide(matches, mode=Mode.WARN)
    assert warn.allowed and warn.message is None
    assert warn.warnings == ["gatewatch: [T1609] Kubernetes User Exec into Pod (medium)"]

    audit = decide(matches, mode=Mode.AUDIT)
    assert audit.allowed and audit.warnings == []
    assert [o.effect for o in audit.outcomes] == [Action.ALERT]

    off = decide(matches, mode=Mode.OFF)
    assert off.allowed and off.outcomes == []


def test_exception_suppresses_a_match() -> None:
    rules = ruleset(
        rule_yaml("exec", query=EXEC_QUERY, extra="    exceptions: ['user.name:ops-*']\n"),
    )
    engine = RuleEngine(rules)
    assert engine.evaluate(document_from_admission_review(exec_review(user="alice")))
    assert engine.evaluate(document_from_admission_review(exec_review(user="ops-oncall"))) == []


def test_rule_action_caps_what_enforce_can_do() -> None:
    rules = ruleset(
        rule_yaml("a", query=EXEC_QUERY, action="alert"),
        rule_yaml("w", query=EXEC_QUERY, action="warn"),
    )
    decision = decide(RuleEngine(rules).evaluate(document_from_admission_review(exec_review())), mode=Mode.ENFORCE)
    assert decision.allowed
    assert [(o.match.rule.id, o.effect) for o in decision.outcomes] == [("a", Action.ALERT), ("w", Action.WARN)]
    assert len(decision.warnings) == 1 and "Rule w" in decision.warnings[0]


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("action", list(Action))
def test_effect_never_exceeds_mode_or_action(mode: Mode, action: Action) -> None:
    effect = effect_of(action, mode)
    if mode is Mode.OFF:
        assert effect is None
    else:
        assert effect <= action
        assert effect is not Action.DENY or mode is Mode.ENFORCE
        assert effect is not Action.WARN or mode >= Mode.WARN


def test_warnings_stay_within_kubernetes_limits() -> None:
    long_name = "A very long rule name " * 10
    rules = ruleset(*(rule_yaml(f"r{i}", query=EXEC_QUERY, action="warn", name=long_name + str(i)) for i in range(60)))
    matches = RuleEngine(rules).evaluate(document_from_admission_review(exec_review()))
    warnings = decide(matches, mode=Mode.WARN).warnings
    assert all(len(w) <= MAX_WARNING_LENGTH for w in warnings)
    assert sum(len(w) for w in warnings) <= MAX_WARNINGS_TOTAL
    assert warnings[-1].startswith("gatewatch: and ") and "more rule(s) matched" in warnings[-1]
    assert not any(w.lower().startswith("warning:") for w in warnings)


NEW_TERMS_RULES = """version: 1
ruleset: test
rules:
  - id: nt
    name: New user creates a pod
    description: test
    severity: low
    risk_score: 21
    type: new_terms
    query: 'kubernetes.audit.objectRef.resource:pods and kubernetes.audit.verb:create'
    new_terms: {fields: [user.name, source.ip], history_window: 7d}
    action: warn
""" + THREAT.replace("\n    ", "\n    ")


def audit_create(user: str, at: datetime, ip: str = "10.0.0.1") -> dict:
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Request",
        "auditID": f"id-{user}-{at.timestamp()}",
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/default/pods",
        "verb": "create",
        "user": {"username": user},
        "sourceIPs": [ip],
        "objectRef": {"resource": "pods", "namespace": "default", "name": "p", "apiVersion": "v1"},
        "requestObject": {"kind": "Pod", "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
        "responseStatus": {"code": 201},
        "requestReceivedTimestamp": at.isoformat().replace("+00:00", "Z"),
        "stageTimestamp": at.isoformat().replace("+00:00", "Z"),
        "annotations": {"authorization.k8s.io/decision": "allow"},
    }


def test_new_terms_alerts_once_per_window() -> None:
    engine = RuleEngine(load_rules_text(NEW_TERMS_RULES, file="nt.yaml"))
    first = engine.evaluate(document_from_audit_event(audit_create("alice", T0)))
    assert [m.new_terms_evaluated for m in first] == [True]
    assert engine.evaluate(document_from_audit_event(audit_create("alice", T0 + timedelta(hours=1)))) == []
    # A new source IP is a new combination.
    assert engine.evaluate(document_from_audit_event(audit_create("alice", T0 + timedelta(hours=2), ip="10.9.9.9")))
    # Past the window, the combination is new again.
    assert engine.evaluate(document_from_audit_event(audit_create("alice", T0 + timedelta(days=8))))


def test_new_terms_at_admission_keys_on_the_fields_admission_carries() -> None:
    engine = RuleEngine(load_rules_text(NEW_TERMS_RULES, file="nt.yaml"))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default", "name": "p", "operation": "CREATE",
            "userInfo": {"username": "bob"}, "object": pod,
        },
    }
    first = engine.evaluate(document_from_admission_review(review), now=T0)
    assert len(first) == 1 and first[0].new_terms_key == ("bob",)
    assert engine.evaluate(document_from_admission_review(review), now=T0 + timedelta(minutes=5)) == []


def test_dry_run_leaves_no_new_terms_history() -> None:
    store = InMemoryNewTermsStore()
    engine = RuleEngine(load_rules_text(NEW_TERMS_RULES, file="nt.yaml"), new_terms_store=store)
    document = document_from_audit_event(audit_create("carol", T0))
    assert engine.evaluate(document, record=False)
    assert len(store) == 0
    assert engine.evaluate(document)
    assert len(store) == 1


def test_new_terms_store_snapshot_round_trip() -> None:
    store = InMemoryNewTermsStore()
    assert store.is_new("r", ("a", "b"), at=T0, window=timedelta(days=1))
    other = InMemoryNewTermsStore()
    other.restore(store.snapshot())
    assert not other.is_new("r", ("a", "b"), at=T0 + timedelta(hours=1), window=timedelta(days=1))
    assert other.is_new("r", ("a", "c"), at=T0 + timedelta(hours=1), window=timedelta(days=1))
    assert other.prune(before=T0 + timedelta(days=2)) == 2
    assert len(other) == 0


def test_rule_set_swap_applies_to_next_evaluation() -> None:
    engine = RuleEngine(ruleset(rule_yaml("one", query=EXEC_QUERY)))
    document = document_from_admission_review(exec_review())
    assert [m.rule.id for m in engine.evaluate(document)] == ["one"]
    engine.replace_rules(ruleset(rule_yaml("two", query="kubernetes.audit.objectRef.subresource:attach")))
    assert engine.evaluate(document) == []
