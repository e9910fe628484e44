"""EQL sequence rules in ``gatewatch rules import-elastic`` and ``gatewatch replay``.

The rule is Elastic's "Kubernetes Sensitive RBAC Change Followed by Workload
Modification", imported from the shared corpus at test time (skipped when
absent); the audit events are built here, one JSON line each.
"""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from gatewatch.cli import main
from gatewatch.rules import load_rules_text

from audit_events import audit_event, audit_log
from shared_corpus import ELASTIC_RULES as CORPUS

RBAC_THEN_WORKLOAD = "privilege_escalation_sensitive_rbac_change_followed_by_workload_modification.toml"
RULE_ID = "3c82bf84-5941-495b-ac41-0302f28e1a90"


@pytest.fixture
def sequence_rules(tmp_path: Path) -> Path:
    if not (CORPUS / RBAC_THEN_WORKLOAD).is_file():
        pytest.skip(f"no Elastic rule corpus in {CORPUS}")
    path = tmp_path / "elastic.yaml"
    result = CliRunner().invoke(main, ["rules", "import-elastic", str(CORPUS / RBAC_THEN_WORKLOAD), "-o", str(path)])
    assert result.exit_code == 0, result.output + result.stderr
    assert "EQL sequence spans many events; replay only" in result.stderr
    return path


def replay(tmp_path: Path, rules_file: Path, events: list[dict], *, output_format: str = "json") -> tuple[str, str]:
    log = tmp_path / "audit.log"
    log.write_text(audit_log(*events))
    result = CliRunner().invoke(
        main, ["replay", "--rules", str(rules_file), "--format", output_format, str(log)], catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    return result.stdout, result.stderr


def _escalation(workload_after: timedelta) -> list[dict]:
    return [
        audit_event("patch", "clusterroles", user="mallory", namespace=None, name="edit", at=timedelta(0)),
        audit_event("get", "pods", user="mallory", at=timedelta(seconds=30)),
        audit_event("patch", "deployments", user="bob", at=timedelta(seconds=40)),  # another user
        audit_event("patch", "deployments", user="mallory", name="payments", at=workload_after),
    ]


def test_the_imported_rule_loads_as_eql_kept_verbatim(sequence_rules: Path):
    (rule,) = load_rules_text(sequence_rules.read_text()).rules
    assert rule.id == RULE_ID and rule.sequence
    assert rule.query.startswith("sequence by user.name with maxspan=5m")


def test_rbac_change_then_workload_by_the_same_user_is_reported_with_both_events(tmp_path, sequence_rules):
    stdout, stderr = replay(tmp_path, sequence_rules, _escalation(timedelta(minutes=2)))
    (alert,) = [json.loads(line) for line in stdout.splitlines()]
    assert alert["rule"]["id"] == RULE_ID
    sequence = alert["gatewatch"]["sequence"]
    assert sequence["join_key"] == {"user.name": "mallory"}
    assert [event["replay"]["line"] for event in sequence["events"]] == [1, 4]
    assert [event["kubernetes"]["audit"]["objectRef"]["resource"] for event in sequence["events"]] == [
        "clusterroles", "deployments"]
    assert alert["gatewatch"]["replay"]["lines"] == [1, 4]
    # The alert is the last event's: the workload change, at its time.
    assert alert["kubernetes"]["audit"]["objectRef"]["name"] == "payments"
    assert alert["@timestamp"] == sequence["events"][1]["@timestamp"]
    assert alert["message"] == ("Kubernetes Sensitive RBAC Change Followed by Workload Modification: "
                                "mallory patch clusterroles edit, then mallory patch deployments prod/payments")
    assert "1 EQL sequence(s) from 1 rule(s)" in stderr


def test_a_workload_change_after_maxspan_is_no_sequence(tmp_path, sequence_rules):
    stdout, stderr = replay(tmp_path, sequence_rules, _escalation(timedelta(minutes=5, seconds=1)))
    assert stdout == ""
    assert "0 EQL sequence(s) from 1 rule(s)" in stderr


def test_the_table_lists_the_sequence_and_its_lines(tmp_path, sequence_rules):
    stdout, _ = replay(tmp_path, sequence_rules, _escalation(timedelta(minutes=2)), output_format="table")
    section = stdout.split("EQL sequences (replay only: ordered events over event time)\n", 1)[1]
    header, row = section.splitlines()[:2]
    assert header.split() == ["LAST", "EVENT", "RULE", "ID", "RULE", "BY", "LINES"]
    assert RULE_ID in row and "mallory" in row and row.endswith("1, 4")


def test_sequence_events_are_seen_in_exempt_namespaces_and_kept_out_by_exceptions(tmp_path, sequence_rules):
    # Elastic's rule reads every event: an exempt namespace (the webhook's) does not hide a step.
    log = tmp_path / "audit.log"
    log.write_text(audit_log(*_escalation(timedelta(minutes=2))))
    result = CliRunner().invoke(main, ["replay", "--rules", str(sequence_rules), "--format", "json",
                                       "--exempt-namespace", "prod", str(log)], catch_exceptions=False)
    assert [json.loads(line)["rule"]["id"] for line in result.stdout.splitlines()] == [RULE_ID]
    # An exception matching the workload change leaves that event out of the sequence.
    excepted = tmp_path / "excepted.yaml"
    excepted.write_text(sequence_rules.read_text().replace(
        "  action: alert\n", "  action: alert\n  exceptions:\n  - kubernetes.audit.objectRef.name:payments\n"))
    stdout, _ = replay(tmp_path, excepted, _escalation(timedelta(minutes=2)))
    assert stdout == ""


@pytest.mark.parametrize("options", [["--workers", "2"], ["--every-event"]], ids=["two-workers", "every-event"])
def test_the_sequence_is_found_whatever_the_replay_options(tmp_path, sequence_rules, options):
    # A sequence spans the whole log: replay reads it in one process, and --every-event changes
    # how single-event rules are reported, not sequences.
    log = tmp_path / "audit.log"
    log.write_text(audit_log(*_escalation(timedelta(minutes=2))))
    result = CliRunner().invoke(main, ["replay", "--rules", str(sequence_rules), "--format", "json", *options,
                                       str(log)], catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    (alert,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert alert["rule"]["id"] == RULE_ID and alert["gatewatch"]["replay"]["lines"] == [1, 4]
