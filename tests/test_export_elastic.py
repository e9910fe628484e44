"""gatewatch rules -> Elastic detection rules (detection-rules TOML, Kibana's import
NDJSON), and back: import -> export -> import gives the same rules."""
from __future__ import annotations

import csv
import dataclasses
import json
import re
import tomllib
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from gatewatch.cli import main
from gatewatch.kql import compile_query
from gatewatch.rules import Action, Rule, load_rules, load_rules_text
from gatewatch.rules.elastic_export import export_rule, to_ndjson, to_toml, toml_file_names
from gatewatch.rules.elastic_import import import_elastic_rules
from gatewatch.rules.elastic_meta import RULE_ID_NAMESPACE
from shared_corpus import ELASTIC_RULES

TODAY = date(2026, 11, 22)
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")  # detection-rules' UUIDString
DEBUG_IMAGE_COMPANION = "gatewatch-debug-image-pod"  # a shipped rule with exceptions
NEW_TERMS_RULE = "93120a05-caf5-47f6-a305-e8abee463fb9"


def days(rule: Rule) -> str:
    return f"{rule.new_terms.history_window.days}d"


def same(rule: Rule) -> Rule:
    """A rule as compared across a round trip: where it was loaded from does not count."""
    return dataclasses.replace(rule, origin=None, ruleset=None)


def round_trip(rules: list[Rule], tmp_path: Path, *, keep_action: bool) -> dict[str, list[Rule]]:
    """Export ``rules`` in both forms, import each, and load what the import wrote."""
    exported = [export_rule(rule, today=TODAY) for rule in rules]
    ndjson = tmp_path / "rules.ndjson"
    ndjson.write_text(to_ndjson(exported))
    toml_dir = tmp_path / "toml"
    toml_dir.mkdir()
    toml_files = []
    for name, rule in zip(toml_file_names(exported), exported):
        (toml_dir / name).write_text(to_toml(rule))
        toml_files.append(toml_dir / name)
    back = {}
    for form, paths in (("ndjson", [ndjson]), ("toml", toml_files)):
        result = import_elastic_rules(paths, keep_action=keep_action)
        assert result.failures == [], (form, result.failures)
        back[form] = list(load_rules_text(result.rules_yaml, file=f"<{form}>", allow_empty=True).rules)
    return back


# --- round trips -------------------------------------------------------------------------------


def test_the_shipped_rules_come_back_the_same_through_both_forms(tmp_path):
    rules = list(load_rules().rules)
    for form, back in round_trip(rules, tmp_path, keep_action=True).items():
        assert [same(rule) for rule in back] == [same(rule) for rule in rules], form


def test_a_disabled_rule_comes_back_disabled_and_kibana_gets_it_disabled(tmp_path):
    rule = dataclasses.replace(load_rules().rules[0], enabled=False)
    assert export_rule(rule, today=TODAY).api["enabled"] is False
    for back in round_trip([rule], tmp_path, keep_action=True).values():
        assert [same(r) for r in back] == [same(rule)]


def test_without_keep_action_the_rules_come_back_alerting_and_the_import_says_so(tmp_path):
    rules = list(load_rules().rules)
    for back in round_trip(rules, tmp_path, keep_action=False).values():
        assert {rule.action for rule in back} == {Action.ALERT}
        assert [same(dataclasses.replace(r, action=Action.ALERT)) for r in rules] == [same(r) for r in back]
    exported = tmp_path / "again.ndjson"
    exported.write_text(to_ndjson([export_rule(rules[0], today=TODAY)]))
    result = import_elastic_rules([exported])
    assert [w for _, w in result.warnings] == [
        "exported by gatewatch with action deny: imported with action alert (--keep-action keeps it)"
    ]


def _corpus_rules() -> list[Rule]:
    index = ELASTIC_RULES / "INDEX.tsv"
    if not index.is_file():
        pytest.skip(f"Elastic's Kubernetes rule files are not at {ELASTIC_RULES} (set GATEWATCH_ELASTIC_RULES)")
    rules = []
    with index.open() as lines:
        for row in csv.DictReader(lines, delimiter="\t"):
            result = import_elastic_rules([ELASTIC_RULES / row["filename"]])
            if not result.failures:
                rules.append(load_rules_text(result.rules_yaml).rules[0])
    return rules


def test_elastics_rules_import_export_import_to_the_same_rules(tmp_path):
    rules = _corpus_rules()
    assert len(rules) == 66  # the EQL sequence included: it exports as type eql, its query as written
    for position, rule in enumerate(rules):  # one at a time: the corpus holds two versions of some rules
        where = tmp_path / str(position)
        where.mkdir()
        for form, back in round_trip([rule], where, keep_action=False).items():
            assert [same(r) for r in back] == [same(rule)], (rule.id, form)


# --- what Elastic gets ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> dict[str, Rule]:
    return {rule.id: rule for rule in load_rules().rules}


def test_ndjson_lines_are_kibanas_rule_import_format(shipped):
    lines = to_ndjson([export_rule(rule, today=TODAY) for rule in shipped.values()]).splitlines()
    assert len(lines) == len(shipped)
    for line, rule in zip(lines, shipped.values()):
        api = json.loads(line)
        assert UUID.match(api["rule_id"])
        assert (api["name"], api["description"], api["risk_score"], api["severity"]) == (
            rule.name, rule.description, rule.risk_score, str(rule.severity)
        )
        assert (api["language"], api["index"]) == ("kuery", ["logs-kubernetes.audit_logs-*"])
        assert api["enabled"] is rule.enabled
        for entry, threat in zip(api["threat"], rule.threat):
            assert entry["framework"] == "MITRE ATT&CK" and entry["tactic"]["id"] == threat.tactic.id
            assert [t["id"] for t in entry["technique"]] == [t.id for t in threat.techniques]
        assert api["meta"]["gatewatch"]["action"] == str(rule.action)
    new_terms = json.loads(lines[list(shipped).index(NEW_TERMS_RULE)])
    assert new_terms["type"] == "new_terms"
    assert new_terms["new_terms_fields"] == list(shipped[NEW_TERMS_RULE].new_terms.fields)
    assert new_terms["history_window_start"] == "now-" + days(shipped[NEW_TERMS_RULE])


def test_toml_is_detection_rules_layout_and_reads_back_as_written(shipped):
    for rule in shipped.values():
        exported = export_rule(rule, today=TODAY)
        text = to_toml(exported)
        document = tomllib.loads(text)
        assert document == exported.toml
        assert list(document) == ["metadata", "rule"]
        assert document["metadata"]["creation_date"] == "2026/11/22"
        assert UUID.match(document["rule"]["rule_id"]) and document["rule"]["author"]
    new_terms = tomllib.loads(to_toml(export_rule(shipped[NEW_TERMS_RULE], today=TODAY)))["rule"]["new_terms"]
    assert new_terms == {
        "field": "new_terms_fields", "value": list(shipped[NEW_TERMS_RULE].new_terms.fields),
        "history_window_start": [{"field": "history_window_start", "value": "now-" + days(shipped[NEW_TERMS_RULE])}],
    }


def test_a_gatewatch_id_becomes_a_stable_uuid_and_an_elastic_one_stays(shipped):
    import uuid

    companion = export_rule(shipped[DEBUG_IMAGE_COMPANION], today=TODAY)
    assert companion.rule_id == str(uuid.uuid5(RULE_ID_NAMESPACE, DEBUG_IMAGE_COMPANION))
    assert companion.api["meta"]["gatewatch"]["rule_id"] == DEBUG_IMAGE_COMPANION
    elastic = export_rule(shipped[NEW_TERMS_RULE], today=TODAY)
    assert elastic.rule_id == NEW_TERMS_RULE and "rule_id" not in elastic.api["meta"]["gatewatch"]


def _documents() -> list[dict]:
    def pod(namespace: str, image: str, user: str = "alice") -> dict:
        return {
            "event": {"dataset": "kubernetes.audit_logs"}, "user": {"name": user},
            "gatewatch": {"user": {"effective": user}, "images": [{"name": image, "repository": f"library/{image}"}]},
            "kubernetes": {"audit": {
                "verb": "create", "objectRef": {"resource": "pods", "namespace": namespace},
                "annotations": {"authorization_k8s_io/decision": "allow"},
            }},
        }
    return [pod("payments", "alpine"), pod("kube-system", "alpine"), pod("payments", "nginx"),
            pod("payments", "busybox", user="system:node:worker-1")]


def test_elastic_alerts_where_gatewatch_matches_the_exceptions_folded_in(shipped):
    rule = shipped[DEBUG_IMAGE_COMPANION]
    assert rule.exceptions
    elastic_query = compile_query(export_rule(rule, today=TODAY).api["query"])
    verdicts = [(rule.matcher(d) and not rule.is_excepted(d), elastic_query(d)) for d in _documents()]
    assert [gatewatch for gatewatch, _ in verdicts] == [True, False, False, False]
    assert all(gatewatch == elastic for gatewatch, elastic in verdicts)


# --- coming back from Elastic ----------------------------------------------------------------------


def test_a_query_changed_in_kibana_wins_and_the_import_says_so(shipped, tmp_path):
    api = export_rule(shipped[DEBUG_IMAGE_COMPANION], today=TODAY).api
    api["query"] = api["query"] + ' and not user.name:"bob"'
    path = tmp_path / "edited.ndjson"
    path.write_text(json.dumps(api) + "\n")
    result = import_elastic_rules([path])
    (rule,) = load_rules_text(result.rules_yaml).rules
    assert rule.query == api["query"] and rule.exceptions == () and rule.id == DEBUG_IMAGE_COMPANION
    assert any("the query differs from meta.gatewatch's query with its exceptions folded in" in w for _, w in result.warnings)


def test_a_kibana_export_file_is_read_line_by_line(shipped, tmp_path):
    lines = [json.dumps(export_rule(rule, today=TODAY).api) for rule in list(shipped.values())[:2]]
    lines.insert(1, "{not json")
    lines.append(json.dumps({"list_id": "trusted-users", "type": "detection", "name": "Trusted users"}))
    lines.append(json.dumps({"exported_count": 3, "exported_rules_count": 2, "missing_rules": []}))
    path = tmp_path / "export.ndjson"
    path.write_text("\n".join(lines) + "\n")
    result = import_elastic_rules([path], keep_action=True)
    assert result.rule_ids == list(shipped)[:2]
    assert [(where, reason.split(":")[0]) for where, reason in result.failures] == [(f"{path}:2", "invalid JSON")]
    assert (f"{path}:4", "Kibana exception list 'trusted-users' is not imported") in result.warnings


# --- the command ------------------------------------------------------------------------------------


def test_export_elastic_writes_ndjson_to_stdout_and_toml_files_into_a_directory(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["rules", "export-elastic"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == len(load_rules().rules)
    result = runner.invoke(main, ["rules", "export-elastic", "--format", "toml", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "out").glob("*.toml"))
    assert len(files) == len(load_rules().rules)
    back = runner.invoke(main, ["rules", "import-elastic", "--keep-action", *map(str, files)])
    assert back.exit_code == 0, back.output
    assert "Actions as a gatewatch export recorded them" in back.stdout
    result = runner.invoke(main, ["rules", "export-elastic", "--format", "toml"])
    assert result.exit_code == 2 and "give a directory with -o" in result.stderr


def test_a_new_terms_rule_over_eql_has_no_elastic_form_and_is_named(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nruleset: t\nrules:\n"
        "  - {id: kept, name: Kept, description: d, severity: low, risk_score: 21, query: 'user.name:alice'}\n"
        "  - id: eql-new-terms\n    name: EQL new terms\n    description: d\n    severity: low\n    risk_score: 21\n"
        "    type: new_terms\n    language: eql\n    query: 'any where user.name : \"ALICE\"'\n"
        "    new_terms: {fields: [user.name]}\n"
    )
    result = CliRunner().invoke(main, ["rules", "export-elastic", str(rules)])
    assert result.exit_code == 1
    assert "rule 'eql-new-terms': Elastic's new_terms rules are KQL only; this one is eql: not exported" in result.stderr
    assert [json.loads(line)["name"] for line in result.stdout.splitlines()] == ["Kept"]


def test_the_pod_security_packs_come_back_the_same(tmp_path):
    from gatewatch.rules.packs import PackSelection, load_ruleset, available_packs

    selections = [PackSelection.parse(pack.name) for pack in available_packs()]
    rules = [rule for rule in load_ruleset([], packs=selections).rules if rule.ruleset != "gatewatch-default"]
    assert rules
    for form, back in round_trip(rules, tmp_path, keep_action=True).items():
        assert [same(rule) for rule in back] == [same(rule) for rule in rules], form
