"""Replay only skims the events no rule can match; that must never change what it reports."""
from __future__ import annotations

import json
import random
import sys
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from gatewatch.cli import main
from gatewatch.documents import check_audit_event, document_from_audit_event
from gatewatch.engine import RuleEngine
from gatewatch.errors import InputError
from gatewatch.rules.loader import default_rules_path
from gatewatch.shapes import audit_event_refusal, audit_event_view

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from engine_throughput import synthetic_audit_event  # noqa: E402  (the benchmark's own mix)

# Rule files next to the defaults. Constrained ones keep the shortcut working
# (most reads still skip); one the index cannot narrow makes every event a
# candidate, reads included.
CONSTRAINED_RULES = """version: 1
ruleset: constrained
rules:
  - {id: secret-reads, name: Secret reads, description: d, severity: low, risk_score: 1, type: query, action: warn,
     query: 'kubernetes.audit.objectRef.resource:secrets and kubernetes.audit.verb:(get or list) and user.name:bob'}
"""
UNCONSTRAINED_RULES = """version: 1
ruleset: unconstrained
rules:
  - {id: any-bob, name: Anything by bob, description: d, severity: low, risk_score: 1, type: query, action: alert,
     query: 'user.name:bob and event.dataset:"kubernetes.audit_logs"'}
  - {id: not-a-read, name: Not a read, description: d, severity: low, risk_score: 1, type: query, action: alert,
     query: 'not kubernetes.audit.verb:(get or list or watch) and kubernetes.audit.objectRef.resource:pod*'}
"""


def mixed_log(path: Path) -> Path:
    """The benchmark's synthetic events, the example log, every stage of some requests, odd and broken lines."""
    rng = random.Random(11)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    lines = [json.dumps(synthetic_audit_event(rng, i, start)) for i in range(3000)]
    lines += (REPO / "examples" / "audit" / "audit.jsonl").read_text().splitlines()
    for i in range(0, 3000, 97):  # the same request again at its other stages
        event = json.loads(lines[i])
        for stage in ("RequestReceived", "ResponseStarted"):
            lines.append(json.dumps({**event, "stage": stage}))
        lines.append(json.dumps({**event, "annotations": {"authorization.k8s.io/decision": "forbid"}}))
        # No decision yet (RequestReceived), or one only another spelling of the key gives the document.
        bare = {key: value for key, value in event.items() if key != "annotations"}
        lines.append(json.dumps({**bare, "stage": "RequestReceived"}))
        lines.append(json.dumps({**bare, "auditID": f"{i}-no-decision"}))
        for n, spelling in enumerate(["authorization_k8s_io/decision", "authorization.k8s_io/decision"]):
            lines.append(json.dumps({**bare, "auditID": f"{i}-spelling-{n}", "annotations": {spelling: "allow"}}))
        lines.append(json.dumps({**bare, "auditID": f"{i}-dotted", "annotations.authorization_k8s_io/decision": "allow"}))
        escaped = json.dumps({**bare, "auditID": f"{i}-escaped", "annotations": {"authorization.k8s.io/decision": "allow"}})
        lines.append(escaped.replace('"authorization.k8s.io/decision"', '"authorization.k8s.io/\\u0064ecision"'))
        lines.append(json.dumps({**event, "auditID": f"{i}-forbid-then-allow",
                                 "annotations": {"authorization.k8s.io/decision": "forbid",
                                                 "authorization_k8s_io/decision": "allow"}}))
    lines += [
        "{not json",
        json.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": "get", "objectRef": "pods"}),
        json.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": "get",
                    "objectRef": {"resource": "secrets"}, "annotations": {"authorization.k8s.io/decision": []}}),
        json.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": "list",
                    "objectRef": {"resource": ["pods"]}, "user": {"username": "bob"}}),
        json.dumps({"kind": "Event", "verb": "get", "objectRef.resource": "secrets", "user": {"username": "bob"}}),
        # No rule can match a configmap creation; a ConfigMap's metadata is not a Pod's business.
        json.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": "create",
                    "objectRef": {"resource": "configmaps"}, "requestObject": {"metadata": 5}}),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def without_shortcut(monkeypatch) -> None:
    """Every line parsed whole and every event offered to every rule."""
    monkeypatch.setattr("gatewatch.offline.replay.skim_block", lambda block: None)
    monkeypatch.setattr("gatewatch.offline.replay.skim_line", lambda raw: None)
    monkeypatch.setattr(RuleEngine, "may_match_audit_event", lambda self, event: True)


def problems(stderr: str) -> tuple[list[str], list[str]]:
    """(malformed-line reports, field warnings) of a replay's stderr."""
    lines = stderr.splitlines()
    return [line for line in lines if "skipped malformed line" in line], [line for line in lines if ": warning: " in line]


def run_replay(log: Path, extra_rules: list[Path], *, with_defaults: bool = True) -> tuple[list[dict], str]:
    rules = ["--rules", str(default_rules_path())] if with_defaults else []
    for path in extra_rules:
        rules += ["--rules", str(path)]
    result = CliRunner().invoke(
        main, ["replay", "--format", "json", "--all-namespaces", *rules, str(log)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    alerts = [json.loads(line) for line in result.stdout.splitlines()]
    for alert in alerts:
        del alert["@timestamp"]  # when the alert was made
    return alerts, result.stderr


@pytest.mark.parametrize(
    ("extra", "expected_rules"),
    [
        ({}, set()),
        ({"constrained.yaml": CONSTRAINED_RULES}, {"secret-reads"}),
        ({"constrained.yaml": CONSTRAINED_RULES, "unconstrained.yaml": UNCONSTRAINED_RULES},
         {"secret-reads", "any-bob", "not-a-read"}),
    ],
    ids=["default-rules", "plus-constrained", "plus-unconstrained"],
)
def test_replay_reports_the_same_with_and_without_the_raw_event_shortcut(
    tmp_path: Path, monkeypatch, extra: dict[str, str], expected_rules: set[str]
) -> None:
    log = mixed_log(tmp_path / "mixed.jsonl")
    extra_rules = []
    for name, text in extra.items():
        extra_rules.append(tmp_path / name)
        extra_rules[-1].write_text(text)

    with_shortcut = run_replay(log, extra_rules)
    without_shortcut(monkeypatch)
    parsed_whole = run_replay(log, extra_rules)

    assert with_shortcut[0] == parsed_whole[0]
    malformed, warnings = problems(with_shortcut[1])
    assert malformed == problems(parsed_whole[1])[0]
    assert set(warnings) <= set(problems(parsed_whole[1])[1])  # skimmed events are not read field by field
    alerts, summary = with_shortcut
    found = {alert["rule"]["id"] for alert in alerts}
    default_rules = {"gatewatch-debug-image-pod", "14de811c-d60f-11ec-9fd7-f661ea17fbce", "gatewatch-exec-attach-any-verb"}
    assert default_rules | expected_rules <= found
    assert "1 malformed line(s)" in summary
    assert "0 event(s) refused by authorization" not in summary


# Lines that are not audit events at all: the only ones replay drops.
REFUSED_EVENTS = [
    [],
    "text",
    {"kind": "Pod", "verb": "get"},
    {"apiVersion": "audit.k8s.io/v2", "verb": "get"},
    {"apiVersion": 1, "verb": "get"},
    {"kind": "Event"},
    {"verb": ""},
    {"verb": 5},
    # Unhashable values where a value is looked up in a set.
    {"apiVersion": [], "verb": "get"},
    {"apiVersion": {"v": 1}, "verb": "get"},
]
# Audit events with a field of the wrong type: evaluated without it, with a warning.
ODD_FIELD_EVENTS = [
    {"verb": "get", "user": "alice"},
    {"verb": "get", "objectRef": ["pods"]},
    {"verb": "get", "annotations": []},
    {"verb": "get", "requestObject": "x"},
    {"verb": "get", "stageTimestamp": 5},
    {"verb": "get", "requestReceivedTimestamp": {"t": 1}},
    {"verb": "get", "timestamp": 1.5},
    {"verb": "get", "annotations": {"authorization.k8s.io/decision": []}},
    {"verb": "get", "annotations": {"authorization_k8s_io/decision": {"a": 1}}},
    {"verb": "create", "objectRef": {"resource": "pods", "subresource": []}},
]


def odd_events() -> list:
    """REFUSED_EVENTS, and every field of every example event set to each odd value in turn."""
    odd_values = [None, 5, 1.5, True, "x", "", [], ["x"], [{"a": 1}], {}, {"a": 5}]
    events: list = [*REFUSED_EVENTS, *ODD_FIELD_EVENTS]

    def variants(node, rebuild):
        if isinstance(node, dict):
            for key, value in node.items():
                for odd in odd_values:
                    events.append(rebuild({**node, key: odd}))
                variants(value, lambda new, key=key, node=node: rebuild({**node, key: new}))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                variants(value, lambda new, index=index, node=node: rebuild([*node[:index], new, *node[index + 1:]]))

    for line in (REPO / "examples" / "audit" / "audit.jsonl").read_text().splitlines():
        variants(json.loads(line), lambda new: new)
    return events


def documents_reason(event, *, pod_fields: bool = True) -> str | None:
    """What gatewatch.documents says of ``event`` when it builds its document: its refusal, None when it accepts it.

    ``pod_fields``: with the normalized Pod lists, which a rule set reads or not (RuleEngine.reads_pod_fields).
    """
    try:
        document_from_audit_event(event, pod_fields=pod_fields)
    except InputError as error:
        return error.reason
    return None


def checked_reason(event) -> str | None:
    """What check_audit_event says of ``event``, without building its document."""
    try:
        check_audit_event(event)
    except InputError as error:
        return error.reason
    return None


def test_only_what_is_not_an_audit_event_is_refused_and_nothing_crashes() -> None:
    # One policy (gatewatch.shapes): check_audit_event, building the document
    # and the shape module refuse the same events in the same words, and every
    # other event maps (a TypeError here is an odd value used as a set or dict key).
    events = odd_events()
    assert len(events) > 2000
    refused = warned = 0
    for event in events:
        expected = audit_event_refusal(event)
        assert checked_reason(event) == expected, json.dumps(event)[:300]
        assert documents_reason(event) == expected, json.dumps(event)[:300]
        refused += expected is not None
        warned += expected is None and bool(audit_event_view(event).warnings)
    assert refused == len(REFUSED_EVENTS) + sum(1 for e in events[len(REFUSED_EVENTS):] if audit_event_refusal(e))
    assert warned > 500, "the odd events exercise the shape policy's warnings"


@pytest.mark.parametrize(
    ("rules_text", "with_defaults"),
    # Secret reads only: the shortcut skips building almost every document,
    # pod creations included. The defaults and more: it skips fewer.
    [(CONSTRAINED_RULES, False), (UNCONSTRAINED_RULES, True)],
    ids=["secret-reads-only", "defaults-plus-unconstrained"],
)
def test_replay_reports_the_same_malformed_lines_with_and_without_the_shortcut(
    tmp_path: Path, monkeypatch, rules_text: str, with_defaults: bool
) -> None:
    events = odd_events()
    log = tmp_path / "odd.jsonl"
    log.write_text("".join(json.dumps(event) + "\n" for event in events))
    # List every malformed line, not only the first few, so all are compared.
    monkeypatch.setattr("gatewatch.offline.report.MALFORMED_LISTED", len(events))
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text)

    with_shortcut = run_replay(log, [rules], with_defaults=with_defaults)
    without_shortcut(monkeypatch)
    parsed_whole = run_replay(log, [rules], with_defaults=with_defaults)

    assert with_shortcut[0] == parsed_whole[0]
    assert problems(with_shortcut[1])[0] == problems(parsed_whole[1])[0]
    stderr = with_shortcut[1]
    for line_no, event in enumerate(events, start=1):
        reason = documents_reason(event, pod_fields=False)  # neither rule set reads the Pod lists
        if reason is not None:  # in gatewatch.documents's words, shortcut or not
            assert f"{log}:{line_no}: skipped malformed line: {reason}\n" in stderr


@pytest.mark.parametrize("event", REFUSED_EVENTS, ids=lambda e: json.dumps(e)[:60])
def test_replay_reports_a_malformed_event_in_the_words_documents_uses(tmp_path: Path, event) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text(json.dumps(event) + "\n")
    result = CliRunner().invoke(main, ["replay", str(log)], catch_exceptions=False)
    assert f"{log}:1: skipped malformed line: {documents_reason(event)}\n" in result.stderr


@pytest.mark.parametrize("event", ODD_FIELD_EVENTS, ids=lambda e: json.dumps(e)[:60])
def test_replay_warns_of_a_field_of_the_wrong_type_in_the_words_of_the_shape_policy(tmp_path: Path, event) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text(json.dumps(event) + "\n")
    result = CliRunner().invoke(main, ["replay", str(log)], catch_exceptions=False)
    (warning,) = audit_event_view(event).warnings
    assert f"{log}:1: warning: {warning}: ignored for matching\n" in result.stderr
    assert "0 malformed line(s), 1 field(s) of the wrong type ignored in 1 event(s)" in result.stderr


def test_a_skim_never_takes_a_line_the_shape_policy_would_refuse_or_warn_about_in_its_fields() -> None:
    # The skim's schema spells out the gate (kind, apiVersion, verb) and wants plain strings in the
    # fields it builds; anything else goes to the full parse, where the shape policy speaks.
    from msgspec import UNSET

    from gatewatch.offline.lines import SKIMMED_FIELDS, skim_line

    for event in odd_events():
        skim = skim_line(json.dumps(event).encode())
        if skim is None:
            continue
        assert audit_event_refusal(event) is None, event
        view = audit_event_view(event)
        for key in SKIMMED_FIELDS:
            value = getattr(skim, key)
            if isinstance(value, msgspec.Struct):  # objectRef: its fields as the event has them, no other held
                fields = value.__struct_fields__
                held = {name: getattr(value, name) for name in fields if getattr(value, name) is not UNSET}
                assert held == {name: item for name, item in view.event[key].items() if name in fields}, event
                continue
            assert (None if value is UNSET else value) == view.event.get(key), (key, event)


def test_a_rule_on_an_object_ref_field_the_skim_does_not_hold_still_matches(tmp_path: Path) -> None:
    # The skim holds objectRef's ObjectReference fields only; an index reading another asks for the whole event.
    rules = tmp_path / "rules.yaml"
    rules.write_text("""version: 1
ruleset: odd
rules:
  - {id: odd-ref, name: Odd objectRef, description: d, severity: low, risk_score: 1, type: query, action: alert,
     query: 'kubernetes.audit.objectRef.shard:"7" and kubernetes.audit.verb:get'}
""")
    base = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": "ResponseComplete", "verb": "get",
            "annotations": {"authorization.k8s.io/decision": "allow"}}
    log = tmp_path / "audit.jsonl"
    log.write_text("".join(json.dumps({**base, "auditID": f"a{n}", "objectRef": {"resource": "pods", "shard": shard}})
                           + "\n" for n, shard in enumerate(["1", "7", "2", "7"])))

    alerts, _ = run_replay(log, [rules], with_defaults=False)

    assert sorted(alert["kubernetes"]["audit"]["auditID"] for alert in alerts) == ["a1", "a3"]
