"""ES|QL STATS rules in replay: run on their schedule (Elastic's interval and from) over an audit log.

The rule is Elastic's "Kubernetes Secret Retrieval Burst" imported from the
shared corpus at test time (skipped when absent), plus small rules of our own
for the schedule's edges. The audit events are built here, one JSON line each.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gatewatch.cli import main
from gatewatch.esql import compile_esql
from gatewatch.esql.schedule import ScheduledStats
from gatewatch.rules import load_rules_text
from gatewatch.rules.elastic_import import import_elastic_rules
from gatewatch.rules.lint import lint_ruleset
from test_esql_admission import CORPUS

BURST = "credential_access_kubernetes_multiple_secret_retrieval_burst.toml"
T0 = datetime(2026, 6, 1, 12, 0, 30, tzinfo=timezone.utc)


def secret_get(name: str, *, at: datetime, user: str = "alice", ip: str = "198.51.100.4", audit_id: str = "") -> dict:
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": audit_id or f"{user}-{name}",
        "stage": "ResponseComplete", "requestURI": f"/api/v1/namespaces/prod/secrets/{name}", "verb": "get",
        "user": {"username": user}, "sourceIPs": [ip], "userAgent": "curl/8.5.0",
        "objectRef": {"resource": "secrets", "namespace": "prod", "name": name, "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": stamp, "stageTimestamp": stamp,
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""},
    }


def replay(tmp_path: Path, rules_file: Path, events: list[dict], *, output_format: str = "json") -> tuple[str, str]:
    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(event) + "\n" for event in events))
    result = CliRunner().invoke(
        main, ["replay", "--rules", str(rules_file), "--format", output_format, str(log)], catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    return result.stdout, result.stderr


@pytest.fixture
def burst_rules(tmp_path: Path) -> Path:
    if not (CORPUS / BURST).is_file():
        pytest.skip(f"no Elastic rule corpus in {CORPUS}")
    imported = import_elastic_rules([CORPUS / BURST])
    assert not imported.failures
    path = tmp_path / "burst.yaml"
    path.write_text(imported.rules_yaml)
    return path


def test_the_imported_stats_rule_keeps_elastics_schedule_and_lint_says_replay_only(burst_rules: Path):
    ruleset = load_rules_text(burst_rules.read_text())
    (rule,) = ruleset.rules
    assert rule.aggregates and rule.schedule.lookback == timedelta(minutes=6)
    findings = [f for f in lint_ruleset(ruleset) if "replay only" in f.message]
    assert findings and findings[0].level == "warning"


def test_three_secrets_read_within_the_window_give_one_result(tmp_path: Path, burst_rules: Path):
    events = [secret_get(f"db-{n}", at=T0 + timedelta(seconds=40 * n)) for n in range(3)]
    events.append(secret_get("db-0", at=T0, user="bob", ip="198.51.100.9"))
    stdout, stderr = replay(tmp_path, burst_rules, events)
    alerts = [json.loads(line) for line in stdout.splitlines()]
    assert len(alerts) == 1
    (alert,) = alerts
    assert alert["rule"]["name"] == "Kubernetes Rapid Secret GET Activity Against Multiple Objects"
    row = alert["gatewatch"]["esql"]
    assert row["user.name"] == "alice" and row["source.ip"] == "198.51.100.4"
    assert row["Esql.unique_credentials"] == 3 and row["Esql.secrets_names"] == ["db-0", "db-1", "db-2"]
    assert alert["gatewatch"]["replay"]["window"] == {"start": "2026-06-01T11:59:00.000Z",
                                                      "end": "2026-06-01T12:05:00.000Z"}
    assert alert["threat"]["technique"]["id"] == ["T1552"]
    assert "1 ES|QL STATS result(s) from 1 rule(s)" in stderr


def test_the_same_reads_spread_over_an_hour_give_nothing(tmp_path: Path, burst_rules: Path):
    events = [secret_get(f"db-{n}", at=T0 + timedelta(minutes=20 * n)) for n in range(3)]
    stdout, stderr = replay(tmp_path, burst_rules, events)
    assert stdout == "" and "0 ES|QL STATS result(s)" in stderr


def test_the_table_lists_results_after_the_requests(tmp_path: Path, burst_rules: Path):
    events = [secret_get(f"db-{n}", at=T0 + timedelta(seconds=n)) for n in range(4)]
    stdout, _ = replay(tmp_path, burst_rules, events, output_format="table")
    section = stdout[stdout.index("ES|QL STATS results"):]
    assert "2026-06-01T12:05:00.000Z" in section and "Esql.unique_credentials=4" in section


RULES = """\
version: 1
ruleset: stats
rules:
  - id: exec-count
    name: Many execs by one user
    description: A user opens two or more exec sessions within a window.
    severity: medium
    risk_score: 47
    language: esql
    schedule: {{interval: {interval}, from: {lookback}}}
    query: |
      FROM logs-kubernetes.audit_logs-*
      | WHERE kubernetes.audit.objectRef.subresource == "exec"
      | STATS n = COUNT(*), last = MAX(@timestamp) BY user.name
      | WHERE n >= 2 AND last >= NOW() - 10 minutes
"""


def exec_event(user: str, at: datetime, number: int) -> dict:
    event = secret_get("x", at=at, user=user, audit_id=f"e-{number}")
    event["objectRef"] = {"resource": "pods", "namespace": "prod", "name": "web", "subresource": "exec"}
    event["verb"] = "create"
    return event


@pytest.mark.parametrize("interval, lookback, gap, expected_runs", [
    ("5m", "now-6m", 60, 1),     # both in one window
    ("5m", "now-6m", 400, 0),    # never together in 6 minutes
    ("1m", "now-10m", 60, 9),    # overlapping windows: each run that sees both reports them
])
def test_windows_follow_the_rules_schedule(tmp_path: Path, interval, lookback, gap, expected_runs):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(interval=interval, lookback=lookback))
    events = [exec_event("alice", T0, 1), exec_event("alice", T0 + timedelta(seconds=gap), 2)]
    stdout, _ = replay(tmp_path, rules, events)
    assert len(stdout.splitlines()) == expected_runs


def test_now_after_stats_is_the_run_time():
    compiled = compile_esql(
        "FROM logs | STATS last = MAX(@timestamp) BY u | WHERE last >= NOW() - 1 minute")
    runner = ScheduledStats(compiled, interval=timedelta(minutes=5), lookback=timedelta(minutes=5))
    runner.add({"@timestamp": "2026-06-01T12:00:10Z", "u": "early"})  # 4m50s before the run at 12:05
    runner.add({"@timestamp": "2026-06-01T12:04:30Z", "u": "late"})
    assert [result.columns["u"] for result in runner.results()] == ["late"]


def test_an_event_without_a_timestamp_is_in_no_window():
    runner = ScheduledStats(compile_esql("FROM logs | STATS n = COUNT(*)"), interval=timedelta(minutes=5),
                            lookback=timedelta(minutes=6))
    runner.add({"u": "x"})
    assert list(runner.results()) == [] and runner.undated == 1


def test_now_before_stats_is_refused_when_the_rule_loads():
    text = RULES.format(interval="5m", lookback="now-6m").replace(
        '| WHERE kubernetes.audit.objectRef.subresource == "exec"',
        '| WHERE kubernetes.audit.objectRef.subresource == "exec" AND @timestamp > NOW() - 1 hour')
    with pytest.raises(Exception, match="NOW\\(\\) before or in STATS is not supported"):
        load_rules_text(text)


def test_a_stats_rule_never_matches_one_event():
    (rule,) = load_rules_text(RULES.format(interval="5m", lookback="now-6m")).rules
    document = {"@timestamp": "2026-06-01T12:00:00Z", "kubernetes": {"audit": {"objectRef": {"subresource": "exec"}}},
                "user": {"name": "alice"}}
    assert rule.aggregates and rule.matcher(document) is False
    assert yaml.safe_load(RULES.format(interval="5m", lookback="now-6m"))["rules"][0]["schedule"]["from"] == "now-6m"
