"""``rules lint``: what a rule will (not) do at admission, and likely mistakes."""
from __future__ import annotations

import pytest

from gatewatch.rules import load_rules_text
from gatewatch.rules.lint import format_findings, has_errors, lint_ruleset

ATTACK = """\
    threat:
      - tactic: {id: TA0002}
        techniques: [{id: T1609}]
"""


def rule_yaml(*, query: str, extra: str = "", severity: str = "medium", action: str = "alert", attack: bool = True) -> str:
    return (
        "version: 1\nruleset: lint-test\nrules:\n"
        "  - id: r1\n    name: R1\n    description: d\n"
        f"    severity: {severity}\n    risk_score: 50\n    action: {action}\n"
        f"    query: '{query}'\n" + (ATTACK if attack else "") + extra
    )


def findings_for(text: str):
    return lint_ruleset(load_rules_text(text, file="team.yaml"))


def messages(findings, validator: str) -> list[str]:
    return [f"{f.level}: {f.message}" for f in findings if f.validator == validator]


def test_a_clean_rule_has_no_findings():
    findings = findings_for(rule_yaml(query='kubernetes.audit.objectRef.subresource:"exec"'))
    assert findings == []
    assert format_findings(findings) == "no findings"


def test_fields_admission_never_carries_are_named():
    findings = findings_for(rule_yaml(query='kubernetes.audit.verb:create and not source.ip:"10.0.0.0/8"'))
    (message,) = messages(findings, "admission-unavailable-fields")
    assert message.startswith("warning:") and "source.ip" in message and "replay" in message


def test_fields_beneath_an_unavailable_field_are_unavailable_too():
    findings = findings_for(rule_yaml(query="kubernetes.audit.responseObject.spec.nodeName:*"))
    assert any("kubernetes.audit.responseObject.spec.nodeName" in m for m in messages(findings, "admission-unavailable-fields"))
    assert any("can never match at admission" in m for m in messages(findings, "admission-reachability"))


def test_exceptions_on_unavailable_fields_are_flagged():
    extra = "    exceptions:\n      - 'user_agent.original:kubectl*'\n"
    findings = findings_for(rule_yaml(query="kubernetes.audit.verb:create", extra=extra))
    assert any("exception 1 uses user_agent.original" in m for m in messages(findings, "admission-unavailable-fields"))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ("[source.ip, user_agent.original, user.name]", "at admission it keys on user.name only"),
        ("[source.ip, user_agent.original]", "every admission match counts as new"),
    ],
)
def test_new_terms_rules_say_what_they_key_on_at_admission(fields, expected):
    extra = f"    type: new_terms\n    new_terms:\n      fields: {fields}\n"
    findings = findings_for(rule_yaml(query="kubernetes.audit.verb:create", extra=extra))
    (message,) = messages(findings, "admission-unavailable-fields")
    assert message.startswith("info:") and expected in message


def test_a_dataset_other_than_audit_logs_can_never_match():
    findings = findings_for(rule_yaml(query='event.dataset:"aws.cloudtrail" and event.action:RunInstances'))
    assert has_errors(findings)
    (message,) = messages(findings, "admission-reachability")[:1]
    assert message.startswith("error:") and "can never match" in message


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ('kubernetes.audit.objectRef.resource:"secrets" and kubernetes.audit.verb:"get"', "objectRef.resource"),
        ('kubernetes.audit.objectRef.resource:pods and kubernetes.audit.verb:(get or list)', "kubernetes.audit.verb"),
        ('kubernetes.audit.objectRef.subresource:"log"', "objectRef.subresource"),
        ('kubernetes.audit.annotations.authorization_k8s_io/decision:"forbid"', "decision"),
    ],
)
def test_audit_only_queries_are_warned_about(query, field):
    findings = findings_for(rule_yaml(query=query))
    reach = messages(findings, "admission-reachability")
    assert reach and all(m.startswith("warning:") for m in reach)
    assert any(field in m and "only matches audit logs" in m for m in reach)
    assert not has_errors(findings)


def test_queries_that_reach_admission_through_an_or_are_not_flagged():
    findings = findings_for(rule_yaml(query="kubernetes.audit.verb:(get or create) and kubernetes.audit.objectRef.resource:pod*"))
    assert messages(findings, "admission-reachability") == []


def test_a_constraint_under_not_is_not_treated_as_required():
    findings = findings_for(rule_yaml(query='kubernetes.audit.verb:create and not kubernetes.audit.objectRef.resource:"secrets"'))
    assert messages(findings, "admission-reachability") == []


def test_missing_attack_mapping_is_a_warning():
    findings = findings_for(rule_yaml(query="kubernetes.audit.verb:create", attack=False))
    assert messages(findings, "attack-mapping") == ["warning: no ATT&CK mapping (threat): add its tactic and technique"]


def test_deny_on_a_low_severity_rule_is_a_warning():
    findings = findings_for(rule_yaml(query="kubernetes.audit.verb:create", severity="low", action="deny"))
    assert [f.level for f in findings if f.validator == "deny-on-low-severity"] == ["warning"]
    assert findings_for(rule_yaml(query="kubernetes.audit.verb:create", severity="low", action="warn")) == []


def test_format_findings_names_file_line_level_and_rule():
    findings = findings_for(rule_yaml(query="kubernetes.audit.verb:create", attack=False))
    assert format_findings(findings) == (
        "team.yaml:4: warning: rule 'r1': no ATT&CK mapping (threat): add its tactic and technique [attack-mapping]"
    )


def test_wildcard_field_names_and_free_text_are_flagged_as_expensive():
    findings = findings_for(rule_yaml(
        query="kubernetes.audit.objectRef.subresource:exec and kubernetes.audit.requestObject.metadata.labels.*a*a*b:x",
        extra="    exceptions: ['nc']\n",
    ))
    found = messages(findings, "expensive-query")
    assert len(found) == 2
    assert found[0].startswith("warning: query has a wildcard field name "
                               "'kubernetes.audit.requestObject.metadata.labels.*a*a*b'")
    assert "walks every field of the document" in found[0]
    assert found[1].startswith("warning: exception 1 has a free-text term 'nc' (no field)")


def test_named_fields_are_not_expensive():
    findings = findings_for(rule_yaml(query='kubernetes.audit.objectRef.subresource:exec and container.image.name:*nc*'))
    assert messages(findings, "expensive-query") == []


def test_reachability_reads_wildcards_as_the_compiler_does():
    assert messages(findings_for(rule_yaml(query="event.dataset:*u*e*audit*")), "admission-reachability") == []
    findings = findings_for(rule_yaml(query="event.dataset:*a*a*a*b"))
    (message,) = messages(findings, "admission-reachability")
    assert message.startswith("error:") and "can never match" in message
