"""Replay on several processes, in blocks of lines, says exactly what one process says."""
from __future__ import annotations

import gzip
import io
import json
import random
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gatewatch.cli import main
from gatewatch.decision import Mode
from gatewatch.offline import parallel, run_replay
from gatewatch.rules.loader import default_rules_path
from gatewatch.rules import load_rules

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from audit_log import audit_lines  # noqa: E402

# A rule the index cannot narrow and one that matches RequestReceived stages too, beside the defaults.
EXTRA_RULES = """version: 1
ruleset: extra
rules:
  - {id: any-alice, name: Anything by alice, description: d, severity: low, risk_score: 1, type: query, action: warn,
     query: 'user.name:"alice@example.com"'}
  - {id: any-exec, name: Any exec, description: d, severity: low, risk_score: 1, type: query, action: deny,
     query: 'kubernetes.audit.objectRef.subresource:exec'}
"""


def log_lines() -> list[str]:
    """The realistic log, the example log, odd and broken lines, and requests whose stages lie far apart."""
    rng = random.Random(5)
    lines = list(audit_lines(6_000, seed=3))
    lines += (REPO / "examples" / "audit" / "audit.jsonl").read_text().splitlines()
    for index in rng.sample(range(len(lines)), 40):  # a stage of the same request, much later, refused or not
        event = json.loads(lines[index])
        later = {**event, "stage": "ResponseComplete" if event["stage"] == "RequestReceived" else "Panic"}
        if rng.random() < 0.5:
            later["annotations"] = {"authorization.k8s.io/decision": "forbid"}
        lines.insert(rng.randrange(len(lines)), json.dumps(later))
    odd = [
        "{not json", "", "   ", "[]", '{"kind":"Event","verb":"get","objectRef":"pods"}',
        '{"kind":"Event","apiVersion":"audit.k8s.io/v1","verb":"create","objectRef":{"resource":"pods"},'
        '"requestObject":{"spec":{"containers":{"name":"c","image":"busybox"}}},"user":{"username":"alice@example.com"}}',
        '{"kind":"Event","verb":"get","x":NaN}', '{"kind":"Event","verb":"get","n":123456789012345678901234567890}',
    ]
    for line in odd:
        lines.insert(rng.randrange(len(lines)), line)
    return lines


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("logs")
    text = "\n".join(log_lines()) + "\n"
    plain = folder / "audit.jsonl"
    plain.write_text(text)
    packed = folder / "audit.jsonl.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    rules = folder / "extra.yaml"
    rules.write_text(EXTRA_RULES)
    return {"plain": plain, "gz": packed, "rules": rules}


def replay(source: Path, rules: Path, *, workers: int, every_event: bool) -> tuple[list[dict], str]:
    ruleset = load_rules([default_rules_path(), rules])
    out, err = io.StringIO(), io.StringIO()
    code = run_replay(ruleset, str(source), output_format="json", mode=Mode.ENFORCE, progress=False, out=out, err=err,
                      workers=workers, every_event=every_event)
    assert code == 0, err.getvalue()
    alerts = [json.loads(line) for line in out.getvalue().splitlines()]
    for alert in alerts:
        del alert["@timestamp"]  # when the alert was made
    return alerts, err.getvalue()


@pytest.mark.parametrize("every_event", [False, True], ids=["requests", "every-event"])
@pytest.mark.parametrize("kind", ["plain", "gz"])
def test_two_workers_and_any_block_size_report_what_one_process_reports(
    logs: dict[str, Path], monkeypatch, kind: str, every_event: bool
) -> None:
    one = replay(logs[kind], logs["rules"], workers=1, every_event=every_event)
    monkeypatch.setattr(parallel, "BLOCK_BYTES", 64 << 10)  # ~130 blocks: stages of a request fall in different ones
    small_blocks = replay(logs[kind], logs["rules"], workers=1, every_event=every_event)
    two = replay(logs[kind], logs["rules"], workers=2, every_event=every_event)
    assert small_blocks == one
    assert two == one
    alerts, summary = one
    assert len(alerts) > 100 and {a["rule"]["id"] for a in alerts} >= {"any-alice", "any-exec"}
    assert "1 malformed line(s)" not in summary and "malformed line(s)" in summary
    assert "field(s) of the wrong type ignored" in summary


def test_stdin_on_two_workers(logs: dict[str, Path], monkeypatch) -> None:
    monkeypatch.setattr(parallel, "BLOCK_BYTES", 64 << 10)
    args = ["replay", "--format", "json", "--rules", str(default_rules_path()), "--rules", str(logs["rules"])]
    runner = CliRunner()
    from_file = runner.invoke(main, [*args, str(logs["plain"])], catch_exceptions=False)
    from_stdin = runner.invoke(main, [*args, "--workers", "2", "-"], input=logs["gz"].read_bytes(), catch_exceptions=False)
    assert from_stdin.exit_code == 0, from_stdin.output

    def without_time(text: str) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if k != "@timestamp"} for line in text.splitlines()]

    assert without_time(from_stdin.stdout) == without_time(from_file.stdout)
    assert from_stdin.stderr.replace("-:", "") == from_file.stderr.replace(f"{logs['plain']}:", "")


def test_two_workers_reading_a_file_each_show_progress_and_report_what_one_process_reports(
    logs: dict[str, Path], monkeypatch
) -> None:
    # Each worker reads the file whole; the parent's bar follows the first one.
    monkeypatch.setattr(parallel, "BLOCK_BYTES", 64 << 10)
    monkeypatch.setattr(parallel, "PROGRESS_MIN_BYTES", 1)
    monkeypatch.setattr(parallel, "_PROGRESS_SECONDS", 0.001)
    ruleset = load_rules([default_rules_path(), logs["rules"]])
    reports = []
    for workers in (1, 2):
        out, err = io.StringIO(), io.StringIO()
        assert run_replay(ruleset, str(logs["plain"]), output_format="table", mode=Mode.ENFORCE, progress=True,
                          out=out, err=err, workers=workers) == 0
        assert f"replaying {logs['plain']}" in err.getvalue()
        reports.append(out.getvalue())
    assert reports[0] == reports[1] and "enforce mode" in reports[0]
