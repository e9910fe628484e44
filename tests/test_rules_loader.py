"""rules.yaml loading: what loads, and errors that name file, line, rule and field."""
from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from gatewatch.errors import RuleError
from gatewatch.rules import Action, Language, RuleSet, RuleType, default_rules_path, load_rules, load_rules_text
from gatewatch.rules.lint import lint_ruleset

GOOD_RULE = """\
version: 1
ruleset: team-extra
rules:
  - id: team-exec-prod
    name: Exec into a production pod
    description: Someone opened a shell in production.
    severity: high
    risk_score: 73
    query: kubernetes.audit.objectRef.subresource:"exec" and orchestrator.namespace:prod
    threat:
      - framework: MITRE ATT&CK
        tactic: {id: TA0002, name: Execution, reference: "https://attack.mitre.org/tactics/TA0002/"}
        techniques:
          - id: T1053
            name: Scheduled Task/Job
            subtechniques:
              - {id: T1053.007, name: Container Orchestration Job}
    action: warn
    exceptions:
      - user.name:"breakglass"
"""


def rules_text(rule_body: str, *, header: str = "version: 1\nruleset: test\nrules:\n") -> str:
    """A rules file with one rule whose body (YAML, unindented) starts at line 4."""
    return header + textwrap.indent(textwrap.dedent(rule_body), "    ").replace("    ", "  - ", 1)


def load_error(text: str, file: str = "rules.yaml") -> RuleError:
    with pytest.raises(RuleError) as caught:
        load_rules_text(text, file=file)
    return caught.value


MINIMAL = """\
id: r1
name: R1
description: d
severity: medium
risk_score: 47
query: kubernetes.audit.verb:create
"""


def test_a_good_rule_loads_with_defaults_filled_in():
    ruleset = load_rules_text(GOOD_RULE, file="extra.yaml")
    (rule,) = ruleset.rules
    assert ruleset.name == "team-extra" and ruleset.version == 1
    assert rule.type is RuleType.QUERY and rule.language is Language.KUERY and rule.enabled
    assert rule.action is Action.WARN
    assert rule.technique_ids == ("T1053", "T1053.007") and rule.tactic_ids == ("TA0002",)
    # The reference and the name come from the ATT&CK data when left out.
    sub = rule.threat[0].techniques[0].subtechniques[0]
    assert sub.reference == "https://attack.mitre.org/techniques/T1053/007/"
    assert str(rule.origin) == "extra.yaml:4"
    prod_exec = {"kubernetes": {"audit": {"objectRef": {"subresource": "exec"}}}, "orchestrator": {"namespace": "prod"}}
    assert rule.matcher(prod_exec)
    assert rule.is_excepted({**prod_exec, "user": {"name": "breakglass"}})
    assert not rule.is_excepted({**prod_exec, "user": {"name": "mallory"}})


def test_minimal_rule_defaults():
    (rule,) = load_rules_text(rules_text(MINIMAL)).rules
    assert rule.action is Action.ALERT and rule.threat == () and rule.exceptions == ()
    assert rule.tags == () and rule.references == () and rule.false_positives == ()


def test_the_packaged_default_is_the_top_level_rules_yaml():
    assert default_rules_path().resolve() == (Path(__file__).parent.parent / "rules.yaml").resolve()
    assert len(load_rules()) >= 5


def test_severity_error_names_file_line_rule_and_field():
    error = load_error(rules_text(MINIMAL.replace("severity: medium", "severity: urgent")))
    assert str(error) == (
        "rules.yaml:7, rule 'r1', field 'severity': must be one of low, medium, high, critical (got 'urgent')"
    )
    assert (error.file, error.line, error.rule_id, error.field) == ("rules.yaml", 7, "r1", "severity")


@pytest.mark.parametrize("score", ["101", "-1", "47.5", "'47'", "true"])
def test_risk_score_must_be_an_integer_from_0_to_100(score):
    error = load_error(rules_text(MINIMAL.replace("risk_score: 47", f"risk_score: {score}")))
    assert error.field == "risk_score" and error.line == 8
    assert "integer from 0 to 100" in error.reason


def test_unknown_key_is_rejected_with_a_suggestion():
    error = load_error(rules_text(MINIMAL + "serverity: high\n"))
    assert (error.line, error.rule_id, error.field) == (10, "r1", "serverity")
    assert "did you mean 'severity'" in error.reason


def test_unknown_top_level_key_is_rejected():
    error = load_error("version: 1\nruleset: x\nrules: []\nrule: []\n")
    assert error.line == 4 and error.field == "rule"


def test_missing_required_field():
    error = load_error(rules_text(MINIMAL.replace("description: d\n", "")))
    assert error.field == "description" and error.rule_id == "r1" and "missing" in error.reason


def test_unsupported_format_version():
    error = load_error("version: 2\nruleset: x\nrules: []\n")
    assert error.line == 1 and "version 2" in error.reason


def test_duplicate_yaml_key_is_an_error_not_a_silent_overwrite():
    error = load_error(rules_text(MINIMAL + "severity: low\n"))
    assert error.line == 10 and "duplicate key 'severity' (first at line 7)" in error.reason


def test_invalid_yaml_names_the_line():
    error = load_error("version: 1\nruleset: x\nrules:\n  - id: [unclosed\n")
    assert error.file == "rules.yaml" and error.line is not None and "invalid YAML" in error.reason


def test_kql_syntax_error_reports_the_file_line_of_the_query_line_and_a_caret():
    body = MINIMAL.replace(
        "query: kubernetes.audit.verb:create\n",
        "query: |\n  kubernetes.audit.verb:create\n    and (user.name:alice\n",
    )
    error = load_error(rules_text(body))
    # The query text starts at file line 10; its second line (file line 11) is unbalanced.
    assert (error.line, error.rule_id, error.field) == (11, "r1", "query")
    assert "KQL syntax error at query line 2" in error.reason
    assert "and (user.name:alice" in str(error) and "^" in str(error)


def test_kql_error_in_an_exception_names_the_exception():
    error = load_error(rules_text(MINIMAL + "exceptions:\n  - user.name:alice\n  - 'user.name:(bob'\n"))
    assert (error.line, error.field) == (12, "exceptions[1]")


def test_eql_rules_load_and_match_case_insensitively():
    body = MINIMAL.replace(
        "query: kubernetes.audit.verb:create\n",
        'language: eql\nquery: \'any where kubernetes.audit.verb : "CREATE"\'\n',
    )
    (rule,) = load_rules_text(rules_text(body)).rules
    assert rule.language is Language.EQL
    assert rule.matcher({"kubernetes": {"audit": {"verb": "create"}}})
    assert not rule.matcher({"kubernetes": {"audit": {"verb": "delete"}}})


def test_eql_syntax_error_in_a_rule_is_located():
    body = MINIMAL.replace(
        "query: kubernetes.audit.verb:create\n", 'language: eql\nquery: any where a == "x" | head 1\n'
    )
    error = load_error(rules_text(body))
    assert error.field == "query" and error.line == 10
    assert "EQL syntax error" in error.reason and "pipes" in error.reason


def test_ids_must_be_unique_within_a_file():
    text = rules_text(MINIMAL) + textwrap.indent(MINIMAL, "    ").replace("    ", "  - ", 1)
    error = load_error(text)
    assert error.rule_id == "r1" and error.line == 10
    assert "first defined at rules.yaml:4" in error.reason


def test_duplicate_ids_across_files_name_both_places(tmp_path):
    first = tmp_path / "default.yaml"
    second = tmp_path / "extra.yaml"
    first.write_text(rules_text(MINIMAL))
    second.write_text(rules_text(MINIMAL, header="version: 1\nruleset: extra\n\nrules:\n"))
    with pytest.raises(RuleError) as caught:
        load_rules([first, second])
    assert caught.value.file == str(second) and caught.value.line == 5
    assert f"first defined at {first}:4" in str(caught.value)


def test_several_files_load_into_one_set(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text(GOOD_RULE)
    ruleset = load_rules([default_rules_path(), extra])
    assert ruleset.rules[-1].id == "team-exec-prod"
    assert ruleset.name == "gatewatch-default+team-extra"
    assert ruleset.sources == (str(default_rules_path()), str(extra))
    assert ruleset.rules[-1].ruleset == "team-extra"


def test_a_missing_file_is_a_rule_error(tmp_path):
    with pytest.raises(RuleError) as caught:
        load_rules(tmp_path / "nope.yaml")
    assert caught.value.file == str(tmp_path / "nope.yaml")


def test_disabled_rules_are_loaded_and_marked():
    ruleset = load_rules_text(rules_text(MINIMAL + "enabled: false\n"), allow_empty=True)
    assert len(ruleset.rules) == 1 and not ruleset.rules[0].enabled
    assert ruleset.enabled_rules == ()


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("version: 1\nruleset: t\nrules: []\n", "no rules"),
        ("version: 1\nruleset: t\nrules:\n", "no rules"),
        (rules_text(MINIMAL + "enabled: false\n"), "all 1 rule(s) are disabled"),
    ],
)
def test_a_rule_set_that_evaluates_nothing_is_refused_unless_allowed(text: str, what: str):
    # An update to `rules: []` would silently turn protection off.
    error = load_error(text)
    assert str(error).startswith(f"rules.yaml:3: {what}: nothing would be evaluated")
    assert "rules.allowEmpty" in str(error)
    assert load_rules_text(text, allow_empty=True).enabled_rules == ()


def test_an_empty_file_beside_rules_is_fine(tmp_path):
    empty, team = tmp_path / "empty.yaml", tmp_path / "team.yaml"
    empty.write_text("version: 1\nruleset: e\nrules: []\n")
    team.write_text(rules_text(MINIMAL))
    assert [rule.id for rule in load_rules([empty, team]).rules] == ["r1"]
    empty_too = tmp_path / "empty2.yaml"
    empty_too.write_text("version: 1\nruleset: e2\nrules: []\n")
    with pytest.raises(RuleError, match=f"^{empty}, {empty_too}: no rules"):
        load_rules([empty, empty_too])


def test_enabled_must_be_a_boolean():
    error = load_error(rules_text(MINIMAL + "enabled: 'no'\n"))
    assert error.field == "enabled" and error.line == 10


# --- new_terms ----------------------------------------------------------------------------


def new_terms_rule(new_terms: str) -> str:
    return rules_text(MINIMAL.replace("risk_score: 47\n", "risk_score: 47\ntype: new_terms\n") + new_terms)


@pytest.mark.parametrize(
    ("window", "expected"),
    [("7d", timedelta(days=7)), ("now-5d", timedelta(days=5)), ("12h", timedelta(hours=12)), ("2w", timedelta(weeks=2))],
)
def test_new_terms_history_window(window, expected):
    text = new_terms_rule(f"new_terms:\n  fields: [user.name, source.ip]\n  history_window: {window}\n")
    (rule,) = load_rules_text(text).rules
    assert rule.new_terms.history_window == expected
    assert rule.new_terms.fields == ("user.name", "source.ip")
    assert rule.new_terms.admission_fields() == ("user.name",)


def test_new_terms_window_defaults_to_7_days():
    (rule,) = load_rules_text(new_terms_rule("new_terms:\n  fields: [user.name]\n")).rules
    assert rule.new_terms.history_window == timedelta(days=7)


@pytest.mark.parametrize(
    ("new_terms", "field", "reason"),
    [
        ("", "new_terms", "needs new_terms.fields"),
        ("new_terms:\n  fields: []\n", "new_terms.fields", "at least one field"),
        ("new_terms:\n  fields: [a, a]\n", "new_terms.fields", "twice"),
        ("new_terms:\n  fields: [a]\n  history_window: 7 days\n", "new_terms.history_window", "positive duration"),
        ("new_terms:\n  fields: [a]\n  window: 7d\n", "new_terms.window", "unknown key"),
    ],
)
def test_new_terms_errors(new_terms, field, reason):
    error = load_error(new_terms_rule(new_terms))
    assert error.field == field and reason in error.reason


def test_new_terms_block_on_a_query_rule_is_an_error():
    error = load_error(rules_text(MINIMAL + "new_terms:\n  fields: [user.name]\n"))
    assert error.field == "new_terms" and error.line == 10


# --- ATT&CK ------------------------------------------------------------------------------


def threat_rule(threat: str) -> str:
    return rules_text(MINIMAL + "threat:\n" + textwrap.indent(textwrap.dedent(threat), "  "))


def test_unknown_technique_id_without_a_name_is_an_error():
    error = load_error(threat_rule("- tactic: {id: TA0002}\n  techniques:\n    - {id: T9999}\n"))
    assert error.field == "threat[0].techniques[0].id" and error.line == 13
    assert "ATT&CK technique T9999 is not in ATT&CK Enterprise v18.1" in error.reason
    assert "give its name" in error.reason


def test_an_id_newer_than_the_shipped_attack_loads_with_its_name_and_lint_says_so():
    (rule,) = load_rules_text(threat_rule(
        "- tactic: {id: TA0099, name: Defense Impairment}\n  techniques:\n    - {id: T9999, name: Future Technique}\n"
    )).rules
    assert (rule.tactic_ids, rule.technique_ids) == (("TA0099",), ("T9999",))
    technique = rule.threat[0].techniques[0]
    assert (technique.name, technique.reference) == ("Future Technique", "https://attack.mitre.org/techniques/T9999/")
    messages = [f.message for f in lint_ruleset(RuleSet("r", 1, (rule,))) if f.validator == "attack-ids"]
    assert messages == ["tactic TA0099 is not in ATT&CK Enterprise v18.1", "T9999 is not in ATT&CK Enterprise v18.1"]


def test_revoked_and_deprecated_ids_load_as_written_and_lint_names_the_replacement():
    (rule,) = load_rules_text(threat_rule(
        "- tactic: {id: TA0002}\n  techniques:\n    - {id: T1086}\n    - {id: T1064}\n"
    )).rules
    assert [(t.id, t.name) for t in rule.threat[0].techniques] == [("T1086", "PowerShell"), ("T1064", "Scripting")]
    messages = [f.message for f in lint_ruleset(RuleSet("r", 1, (rule,))) if f.validator == "attack-ids"]
    assert messages == [
        "T1086 (PowerShell) was revoked in ATT&CK; it is now T1059.001 PowerShell",
        "T1064 (Scripting) is deprecated in ATT&CK (no replacement)",
    ]


def test_another_name_for_a_current_id_loads_and_lint_names_attacks_name():
    # ATT&CK renames; Elastic's rules say "Stealth" for TA0005 ahead of the shipped version
    (rule,) = load_rules_text(threat_rule("- tactic: {id: TA0005, name: Stealth}\n")).rules
    assert (rule.tactic_ids, rule.threat[0].tactic.name) == (("TA0005",), "Stealth")
    (finding,) = [f for f in lint_ruleset(RuleSet("r", 1, (rule,))) if f.validator == "attack-ids"]
    assert finding.level == "warning"
    assert finding.message == "TA0005 is named 'Defense Evasion' in ATT&CK Enterprise v18.1, not 'Stealth'"


def test_malformed_ids_and_foreign_subtechniques():
    error = load_error(threat_rule("- tactic: {id: T1609}\n"))
    assert "tactic id must be TA followed by 4 digits" in error.reason
    error = load_error(threat_rule(
        "- tactic: {id: TA0002}\n  techniques:\n    - id: T1609\n      subtechniques: [{id: T1053.007}]\n"
    ))
    assert "T1053.007 does not belong to technique T1609" in error.reason


def test_wrong_reference_is_an_error():
    error = load_error(threat_rule("- tactic: {id: TA0002, reference: 'https://example.com/'}\n"))
    assert error.field == "threat[0].tactic.reference"
    assert "https://attack.mitre.org/tactics/TA0002/" in error.reason


def test_action_enum_is_ordered_by_strength():
    assert Action.ALERT < Action.WARN < Action.DENY
    assert max(Action.WARN, Action.DENY, Action.ALERT) is Action.DENY
    assert sorted([Action.DENY, Action.ALERT, Action.WARN]) == [Action.ALERT, Action.WARN, Action.DENY]
