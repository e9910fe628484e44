"""`gatewatch check`, `replay` and `rules lint` as a user runs them."""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from gatewatch.cli import main

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def run(*args: str, stdin: bytes | str | None = None):
    runner = CliRunner()
    return runner.invoke(main, list(args), input=stdin, catch_exceptions=False)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_check_reports_debug_image_with_t1610_and_fails_on_deny() -> None:
    result = run("check", str(EXAMPLES / "pods" / "netshoot.yaml"))
    assert result.exit_code == 1
    assert "Common Debug or Base Image" in result.stdout
    assert "T1610" in result.stdout


def test_check_reports_exec_review_with_t1609_as_json_alerts() -> None:
    result = run("check", "--format", "json", str(EXAMPLES / "reviews" / "exec-review.json"))
    assert result.exit_code == 1
    alerts = json_lines(result.stdout)
    assert [a["rule"]["name"] for a in alerts] == ["Kubernetes User Exec into Pod"]
    alert = alerts[0]
    assert alert["event"]["kind"] == "alert"
    assert alert["threat"]["framework"] == "MITRE ATT&CK"
    assert alert["threat"]["technique"]["id"] == ["T1609"]
    assert alert["threat"]["tactic"]["id"] == ["TA0002"]
    assert alert["file"]["path"].endswith("exec-review.json")
    assert alert["kubernetes"]["audit"]["objectRef"]["subresource"] == "exec"
    assert alert["gatewatch"]["action"] == "deny"
    assert alert["orchestrator"]["namespace"] == "payments"


def test_check_benign_workload_passes() -> None:
    result = run("check", str(EXAMPLES / "pods" / "web-deployment.yaml"))
    assert result.exit_code == 0, result.output
    assert "no rule matched" in result.stdout


def test_check_fail_on_threshold(tmp_path: Path) -> None:
    # The new_terms seed rule (action warn) alone matches an alpine pod spelled as Elastic expects.
    manifest = tmp_path / "alpine.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: default}\n"
        "spec: {containers: [{name: a, image: 'alpine:3.20'}]}\n"
    )
    strict = run("check", "--fail-on", "warn", str(manifest))
    assert strict.exit_code == 1
    assert "(new_terms: every match reported)" in strict.stdout


def test_check_bad_input_exit_2_names_file_and_line_and_keeps_going(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x\nspec: [\n")
    result = run("check", str(broken), str(EXAMPLES / "pods" / "netshoot.yaml"))
    assert result.exit_code == 2
    assert "broken.yaml:" in result.stderr
    assert "T1610" in result.stdout  # the good file is still checked


def test_check_usage_error_is_exit_2() -> None:
    assert run("check").exit_code == 2
    assert run("check", "--fail-on", "panic", str(EXAMPLES)).exit_code == 2


def test_replay_summarizes_by_rule_namespace_and_user() -> None:
    result = run("replay", str(EXAMPLES / "audit" / "audit.jsonl"))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Matches by rule" in out and "Matches by namespace" in out and "Matches by user" in out
    assert "Kubernetes User Exec into Pod" in out
    assert "malformed" in result.stderr


def test_replay_gzip_and_stdin_give_the_same_alerts(tmp_path: Path) -> None:
    plain = (EXAMPLES / "audit" / "audit.jsonl").read_bytes()
    packed = tmp_path / "audit.jsonl.gz"
    packed.write_bytes(gzip.compress(plain))
    from_file = json_lines(run("replay", "--format", "json", str(EXAMPLES / "audit" / "audit.jsonl")).stdout)
    from_gzip = json_lines(run("replay", "--format", "json", str(packed)).stdout)
    from_stdin = json_lines(run("replay", "--format", "json", "-", stdin=plain).stdout)
    key = lambda alerts: [(a["rule"]["id"], a["kubernetes"]["audit"].get("auditID")) for a in alerts]  # noqa: E731
    assert key(from_file) == key(from_gzip) == key(from_stdin)
    assert from_file, "the example log holds matching events"
    assert all(a["kubernetes"]["audit"].get("auditID") for a in from_file)


def test_replay_counts_malformed_lines_with_line_numbers(tmp_path: Path) -> None:
    lines = (EXAMPLES / "audit" / "audit.jsonl").read_text().splitlines()
    log = tmp_path / "mixed.jsonl"
    log.write_text("\n".join([lines[0], "{not json", *lines[1:], "[1, 2]", ""]) + "\n")
    good = run("replay", "--format", "json", str(EXAMPLES / "audit" / "audit.jsonl"))
    mixed = run("replay", "--format", "json", str(log))
    assert mixed.exit_code == 0
    assert f"{log}:2:" in mixed.stderr
    assert f"{log}:{len(lines) + 2}:" in mixed.stderr
    assert "2 malformed line(s)" in mixed.stderr
    assert len(json_lines(mixed.stdout)) == len(json_lines(good.stdout))  # nothing lost


def test_replay_applies_new_terms_in_event_time_order(tmp_path: Path) -> None:
    def create(user: str, stamp: str, audit_id: str) -> str:
        return json.dumps({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request", "auditID": audit_id,
            "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/default/pods", "verb": "create",
            "user": {"username": user}, "sourceIPs": ["10.1.1.1"], "userAgent": "kubectl/v1.31.0",
            "objectRef": {"resource": "pods", "namespace": "default", "name": "dbg", "apiVersion": "v1"},
            "requestObject": {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "dbg"},
                              "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}},
            "responseStatus": {"code": 201}, "requestReceivedTimestamp": stamp, "stageTimestamp": stamp,
            "annotations": {"authorization.k8s.io/decision": "allow"},
        })

    log = tmp_path / "ooo.jsonl"
    # Written out of order: the later event first.
    log.write_text(
        create("mallory", "2026-11-01T12:05:00.000000Z", "late") + "\n"
        + create("mallory", "2026-11-01T12:00:00.000000Z", "early") + "\n"
    )
    alerts = json_lines(run("replay", "--format", "json", str(log)).stdout)
    seed = [a for a in alerts if a["rule"]["id"] == "93120a05-caf5-47f6-a305-e8abee463fb9"]
    assert [a["kubernetes"]["audit"]["auditID"] for a in seed] == ["early"]
    assert seed[0]["gatewatch"]["new_terms"] is True


def test_replay_unreadable_file_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    result = run("replay", str(bad))
    assert result.exit_code == 2
    assert "cannot read" in result.stderr


def test_rules_lint_default_names_fields_admission_lacks() -> None:
    result = run("rules", "lint")
    assert result.exit_code == 0, result.output
    assert "source.ip" in result.output and "user_agent.original" in result.output
    assert "user.name" in result.output  # what the seed new_terms rule keys on instead


def test_rules_lint_broken_file_names_file_rule_and_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nruleset: t\nrules:\n  - id: broken\n    name: b\n    description: d\n"
        "    severity: medium\n    risk_score: 10\n    type: query\n    query: 'a:(b or'\n    action: alert\n"
    )
    result = run("rules", "lint", str(bad))
    assert result.exit_code == 2
    assert "bad.yaml" in result.stderr and "broken" in result.stderr and "^" in result.stderr


def test_console_script_is_installed() -> None:
    exe = shutil.which("gatewatch", path=str(Path(sys.executable).parent))
    assert exe, "pip install puts `gatewatch` next to the interpreter"
    done = subprocess.run(
        [exe, "check", str(EXAMPLES / "reviews" / "exec-review.json")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "T1609" in done.stdout


@pytest.mark.slow
def test_wheel_ships_the_default_rules(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("gatewatch-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = archive.read("gatewatch/data/rules.yaml")
        names = archive.namelist()
    assert packaged == (REPO / "rules.yaml").read_bytes()
    assert "gatewatch/kql/kql.lark" in names


def test_replay_skips_namespaces_the_webhook_never_sees() -> None:
    log = str(EXAMPLES / "audit" / "audit.jsonl")
    default = json_lines(run("replay", "--format", "json", log).stdout)
    everything = json_lines(run("replay", "--format", "json", "--all-namespaces", log).stdout)
    namespaces = lambda alerts: {a["kubernetes"]["audit"]["objectRef"].get("namespace") for a in alerts}  # noqa: E731
    assert "kube-system" not in namespaces(default)
    assert "kube-system" in namespaces(everything)
    assert len(everything) > len(default)
