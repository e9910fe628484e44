"""`gatewatch replay` reports requests: one verdict per auditID, and none for what the webhook never sees."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gatewatch.cli import main

EXEC_RULE = "14de811c-d60f-11ec-9fd7-f661ea17fbce"
DEBUG_IMAGE_RULE = "gatewatch-debug-image-pod"


def event(
    audit_id: str | None,
    stage: str,
    *,
    verb: str = "create",
    subresource: str | None = "exec",
    decision: str | None = "allow",
    code: int | None = 101,
    user: str = "mallory",
    stamp: str = "2026-11-01T12:00:00.000000Z",
    image: str | None = None,
) -> dict:
    """An audit event as the log backend writes it for one stage of a request."""
    object_ref = {"resource": "pods", "namespace": "payments", "name": "api-0", "apiVersion": "v1"}
    if subresource:
        object_ref["subresource"] = subresource
    uri = "/api/v1/namespaces/payments/pods" + (f"/api-0/{subresource}?command=sh" if subresource else "")
    written = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request", "stage": stage,
        "requestURI": uri, "verb": verb, "user": {"username": user, "groups": ["system:authenticated"]},
        "sourceIPs": ["10.0.0.7"], "userAgent": "kubectl/v1.31.0", "objectRef": object_ref,
        "requestReceivedTimestamp": stamp, "stageTimestamp": stamp,
    }
    if audit_id is not None:
        written["auditID"] = audit_id
    # RequestReceived is written before authorization: it has no decision yet.
    if decision is not None and stage != "RequestReceived":
        written["annotations"] = {"authorization.k8s.io/decision": decision}
    if code is not None and stage != "RequestReceived":
        written["responseStatus"] = {"metadata": {}, "code": code}
    if image is not None:
        written["requestObject"] = {
            "kind": "Pod", "apiVersion": "v1", "metadata": {"name": "api-0", "namespace": "payments"},
            "spec": {"containers": [{"name": "c", "image": image}]},
        }
    return written


def replay(tmp_path: Path, events: list[dict], *args: str):
    log = tmp_path / "audit.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in events))
    result = CliRunner().invoke(main, ["replay", "--format", "json", *args, str(log)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    alerts = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return alerts, result.stderr


def rule_lines(alerts: list[dict]) -> list[tuple[str, int]]:
    return [(a["rule"]["id"], a["gatewatch"]["replay"]["line"]) for a in alerts]


def test_one_exec_written_at_three_stages_is_one_request_reported_from_response_complete(tmp_path: Path) -> None:
    alerts, summary = replay(tmp_path, [
        event("exec-1", "RequestReceived"),
        event("exec-1", "ResponseStarted"),
        event("exec-1", "ResponseComplete"),
    ])
    assert rule_lines(alerts) == [(EXEC_RULE, 3)]
    assert "3 event(s) replayed, 1 match(es) in 1 request(s), 1 request(s) enforce mode would have denied" in summary


def test_without_response_complete_the_latest_stage_decides_whatever_the_line_order(tmp_path: Path) -> None:
    alerts, summary = replay(tmp_path, [
        event("exec-1", "ResponseStarted"),
        event("exec-1", "RequestReceived"),  # written later, but an earlier stage
    ])
    assert rule_lines(alerts) == [(EXEC_RULE, 1)]
    assert "1 request(s) enforce mode would have denied" in summary


@pytest.mark.parametrize("newest_first", [False, True])
def test_response_complete_without_a_match_overrides_an_earlier_stage_that_matched(
        tmp_path: Path, newest_first: bool) -> None:
    # Creating a Pod: only ResponseComplete carries the Pod (requestObject), and it is
    # a harmless image; a stage that matched a rule on its own must not count. Rotated
    # logs concatenated newest first put ResponseComplete before the earlier stage.
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nruleset: t\nrules:\n  - id: started\n    name: Stage started\n    description: d\n"
        "    severity: low\n    risk_score: 1\n    type: query\n    action: deny\n"
        "    query: 'kubernetes.audit.stage:ResponseStarted and not kubernetes.audit.requestObject.kind:Pod'\n"
    )
    stages = [
        event("create-1", "ResponseStarted", subresource=None, code=201),
        event("create-1", "ResponseComplete", subresource=None, code=201, image="nginx:1.27"),
    ]
    alerts, summary = replay(tmp_path, stages[::-1] if newest_first else stages, "--rules", str(rules))
    assert alerts == []
    assert "0 match(es) in 0 request(s), 0 request(s) enforce mode would have denied" in summary


def test_events_without_audit_id_are_requests_of_their_own(tmp_path: Path) -> None:
    alerts, summary = replay(tmp_path, [event(None, "ResponseComplete"), event(None, "ResponseComplete")])
    assert rule_lines(alerts) == [(EXEC_RULE, 1), (EXEC_RULE, 2)]
    assert "2 request(s) enforce mode would have denied" in summary


def test_requests_authorization_refused_are_skipped_and_counted(tmp_path: Path) -> None:
    # The webhook is called after authorization: it never sees a forbidden exec.
    alerts, summary = replay(tmp_path, [
        event("denied-1", "RequestReceived", decision=None),
        event("denied-1", "ResponseComplete", decision="forbid", code=403),
    ], "--rules", str(_rules_without_decision(tmp_path)))
    assert alerts == []
    assert "0 request(s) enforce mode would have denied" in summary
    assert "1 event(s) refused by authorization skipped" in summary


def _rules_without_decision(tmp_path: Path) -> Path:
    # Every default rule requires decision allow; this one does not, so only
    # the forbid skip can keep the forbidden exec out of the report.
    rules = tmp_path / "any-exec.yaml"
    rules.write_text(
        "version: 1\nruleset: t\nrules:\n  - id: any-exec\n    name: Any exec\n    description: d\n"
        "    severity: low\n    risk_score: 1\n    type: query\n    action: deny\n"
        "    query: 'kubernetes.audit.objectRef.subresource:exec'\n"
    )
    return rules


def test_a_request_the_api_server_refused_later_is_reported_and_said_to_be_refused_anyway(tmp_path: Path) -> None:
    # Allowed by authorization, then refused (e.g. by another admission plugin):
    # gatewatch would have seen it, but it did not happen either way.
    alerts, summary = replay(tmp_path, [
        event("create-1", "ResponseComplete", subresource=None, code=403, image="busybox:1.36"),
        event("create-2", "ResponseComplete", subresource=None, code=201, image="busybox:1.36", user="eve"),
    ])
    refused = {a["user"]["name"]: a["gatewatch"]["replay"].get("refused_by_api_server", False) for a in alerts
               if a["rule"]["id"] == DEBUG_IMAGE_RULE}
    assert refused == {"mallory": True, "eve": False}
    assert "2 request(s) enforce mode would have denied (1 refused by the API server anyway)" in summary


def test_mode_off_lists_matches_with_no_effect_and_denies_nothing(tmp_path: Path) -> None:
    alerts, summary = replay(tmp_path, [event("exec-1", "ResponseComplete")], "--mode", "off")
    assert [(a["rule"]["id"], a["gatewatch"].get("effect"), a["gatewatch"]["decision"]) for a in alerts] == [
        (EXEC_RULE, None, "allowed")
    ]
    assert "1 match(es) in 1 request(s), 0 request(s) off mode would have denied" in summary


def test_a_patch_that_removes_a_label_and_swaps_in_a_debug_image_is_evaluated(tmp_path: Path) -> None:
    # `kubectl label pod web canary-` deletes with null (merge patch); the same patch sets busybox.
    patch = event("patch-1", "ResponseComplete", verb="patch", subresource=None, code=200)
    patch["requestObject"] = {"metadata": {"labels": {"canary": None}},
                              "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}
    alerts, summary = replay(tmp_path, [patch])
    assert rule_lines(alerts) == [(DEBUG_IMAGE_RULE, 1)]
    assert "0 malformed line(s)" in summary


def test_every_event_reports_each_auditid_and_rule_once_whatever_the_webhook_would_have_seen(tmp_path: Path) -> None:
    # As Elastic's detection engine: forbidden requests and exempt namespaces
    # included, every stage evaluated; one report per (auditID, rule).
    rules = _rules_without_decision(tmp_path)
    exempt = event("exec-2", "ResponseComplete")
    exempt["objectRef"]["namespace"] = "kube-system"
    log = [
        event("exec-1", "RequestReceived"),
        event("exec-1", "ResponseComplete"),
        event("denied-1", "ResponseComplete", decision="forbid", code=403),
        exempt,
    ]
    alerts, summary = replay(tmp_path, log, "--rules", str(rules), "--every-event")
    reported = sorted((a["gatewatch"]["replay"]["audit_id"], a["gatewatch"]["replay"]["lines"]) for a in alerts)
    assert reported == [("denied-1", [3]), ("exec-1", [1, 2]), ("exec-2", [4])]
    assert all("decision" not in a["gatewatch"] and "effect" not in a["gatewatch"] for a in alerts)
    assert "4 event(s) evaluated, 3 (auditID, rule) match(es)" in summary
    # The webhook's question for the same log: the forbidden and exempt requests are skipped.
    alerts, _ = replay(tmp_path, log, "--rules", str(rules))
    assert rule_lines(alerts) == [("any-exec", 2)]
