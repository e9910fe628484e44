"""import-elastic on Elastic's 72 published Kubernetes rule files (../shared/corpus,
read at test time, never copied): every KQL rule imports, metadata never fails a
rule, and a rule that cannot be converted is named with its reason in one line."""
from __future__ import annotations

import csv
import tomllib
from pathlib import Path

import pytest

from gatewatch.kql import parse
from gatewatch.rules import load_rules_text
from gatewatch.rules.eql import event_category
from gatewatch.rules.elastic_import import import_elastic_rules

from shared_corpus import ELASTIC_RULES as CORPUS


def _index() -> list[dict[str, str]]:
    index = CORPUS / "INDEX.tsv"
    if not index.is_file():
        pytest.skip(
            f"Elastic's Kubernetes rule files are not at {CORPUS} (set GATEWATCH_ELASTIC_RULES; not part of the repository)"
        )
    with index.open(encoding="utf-8") as lines:
        return list(csv.DictReader(lines, delimiter="\t"))


@pytest.fixture(scope="module")
def corpus() -> list[dict[str, str]]:
    return _index()


@pytest.fixture(scope="module")
def per_file(corpus):
    """Each file imported on its own (the corpus holds two versions of some rules)."""
    return {row["filename"]: import_elastic_rules([CORPUS / row["filename"]]) for row in corpus}


def test_the_corpus_is_the_one_the_figures_are_about(corpus):
    assert len(corpus) == 72
    kinds = sorted({(row["rule_type"], row["rule_language"]) for row in corpus})
    assert kinds == [("eql", "eql"), ("esql", "esql"), ("new_terms", "kuery"), ("query", "kuery")]


def test_every_kql_rule_imports_and_loads(corpus, per_file):
    kql = [row["filename"] for row in corpus if row["rule_language"] == "kuery"]
    failed = {name: per_file[name].failures for name in kql if per_file[name].failures}
    assert not failed
    for name in kql:
        (rule,) = load_rules_text(per_file[name].rules_yaml, file=name).rules
        source = tomllib.loads((CORPUS / name).read_text())["rule"]
        assert rule.id == source["rule_id"] and parse(rule.query) == parse(source["query"])


@pytest.mark.parametrize("name", [
    "credential_access_kubernetes_secrets.toml",  # T1552.007 as a technique id
    "defense_evasion_kubernetes_workload_sidecar_injection.toml",  # T1055
    "impact_kubernetes_coredns_or_kube_dns_configuration_modified.toml",  # T1565
    "persistence_kubernetes_admission_webhook_created_or_modified.toml",  # T1546
    "persistence_anonymous_user_bound_to_clusterrole.toml",  # T1098 with T1133's URL
])
def test_the_rules_that_failed_on_metadata_import_with_their_mapping(corpus, per_file, name):
    result = per_file[name]
    assert result.failures == []
    (rule,) = load_rules_text(result.rules_yaml).rules
    source = tomllib.loads((CORPUS / name).read_text())["rule"]
    written = {t["id"] for entry in source["threat"] for t in entry.get("technique", [])}
    # every id Elastic wrote is there, a sub-technique under its technique
    assert written <= set(rule.technique_ids)
    assert {entry["tactic"]["id"] for entry in source["threat"]} == set(rule.tactic_ids)


def test_metadata_oddities_are_warnings_naming_the_file(per_file):
    secrets = per_file["credential_access_kubernetes_secrets.toml"]
    assert [w for _, w in secrets.warnings] == ["T1552.007 is a sub-technique: imported under its technique T1552"]
    anonymous = per_file["persistence_anonymous_user_bound_to_clusterrole.toml"]
    assert [w for _, w in anonymous.warnings] == [
        "the reference of T1098 points at T1133 ('https://attack.mitre.org/techniques/T1133/'): ATT&CK's page of T1098 used"
    ]


def test_endpoint_data_rules_are_refused_in_one_line_naming_why(corpus, per_file):
    endpoint = [
        row["filename"] for row in corpus
        if row["rule_language"] == "eql"
        and event_category(tomllib.loads((CORPUS / row["filename"]).read_text())["rule"]["query"]) not in (None, "any")
    ]
    assert len(endpoint) == 6
    for name in endpoint:
        ((_, reason),) = per_file[name].failures
        assert "\n" not in reason
        assert reason.startswith("endpoint-data rule (EQL 'process where')") or reason.startswith(
            "endpoint-data rule (EQL 'file where')"
        ), reason
        assert "Elastic Defend for Containers" in reason and "not Kubernetes audit logs" in reason


def test_single_event_eql_rules_import(corpus, per_file):
    any_where = [
        row["filename"] for row in corpus
        if row["rule_language"] == "eql"
        and event_category(tomllib.loads((CORPUS / row["filename"]).read_text())["rule"]["query"]) == "any"
    ]
    assert len(any_where) == 6
    assert all(per_file[name].failures == [] for name in any_where)


def test_every_refusal_is_one_line_naming_the_file(per_file):
    for name, result in per_file.items():
        for path, reason in result.failures:
            assert Path(path).name == name and reason and "\n" not in reason, (name, reason)


def test_importing_all_files_at_once_names_the_second_copy_of_a_rule(corpus, per_file):
    result = import_elastic_rules([CORPUS / row["filename"] for row in corpus])
    duplicates = [reason for _, reason in result.failures if reason.startswith("duplicate rule_id")]
    ids = [per_file[row["filename"]].rule_ids[0] for row in corpus if not per_file[row["filename"]].failures]
    assert len(duplicates) == len(ids) - len(set(ids)) > 0
    assert len(load_rules_text(result.rules_yaml).rules) == len(result.rule_ids)


def test_elastics_eql_parser_reads_every_eql_rule_and_only_the_subset_is_refused(corpus):
    from gatewatch.errors import EqlSyntaxError
    from gatewatch.rules.eql import eql_to_ast

    outcomes = {}
    for row in corpus:
        if row["rule_language"] != "eql":
            continue
        query = tomllib.loads((CORPUS / row["filename"]).read_text())["rule"]["query"]
        try:
            eql_to_ast(query)
            outcomes[row["filename"]] = "translated"
        except EqlSyntaxError as error:
            assert error.unsupported, f"{row['filename']}: {error}"  # never a syntax error
            outcomes[row["filename"]] = error.reason
    assert len(outcomes) == 13
    assert sum(outcome == "translated" for outcome in outcomes.values()) == 6
    sequences = [name for name, outcome in outcomes.items() if "sequence queries are not supported" in outcome]
    assert sequences == [SEQUENCE_RULE]


SEQUENCE_RULE = "privilege_escalation_sensitive_rbac_change_followed_by_workload_modification.toml"


def test_only_endpoint_data_rules_are_not_imported(per_file):
    refused = {name: result.failures[0][1] for name, result in per_file.items() if result.failures}
    endpoint = {name for name, reason in refused.items() if reason.startswith("endpoint-data rule")}
    assert set(refused) == endpoint
    assert (len(endpoint), len(per_file) - len(refused)) == (6, 66)


def test_the_eql_sequence_imports_as_written_for_replay(per_file):
    from gatewatch.rules import Language

    result = per_file[SEQUENCE_RULE]
    assert not result.failures
    assert [message for _, message in result.warnings] == [
        "EQL sequence spans many events; replay only (never evaluated at admission)"
    ]
    (rule,) = load_rules_text(result.rules_yaml, file=SEQUENCE_RULE).rules
    source = tomllib.loads((CORPUS / SEQUENCE_RULE).read_text())["rule"]
    assert rule.language is Language.EQL and rule.query == source["query"].strip()
    assert rule.sequence and rule.replay_only
    assert rule.matcher.keys == (("user.name",), ("user.name",))
    assert rule.matcher.maxspan.total_seconds() == 300
