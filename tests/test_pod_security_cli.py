"""Rule packs as a user meets them: `gatewatch rules packs`, `--pack` on check and replay,
the alerts' tags and offending fields, PSA-style exemptions."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from gatewatch.cli import main
from gatewatch.config import load_settings
from gatewatch.documents import document_from_admission_review, document_from_pod
from gatewatch.engine import RuleEngine
from gatewatch.errors import ConfigError
from gatewatch.evidence import offending_fields
from gatewatch.rules.model import Action
from gatewatch.rules.packs import Exemptions, PackSelection, load_ruleset

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "pod-security"
BOTH = ("--pack", "pod-security-baseline", "--pack", "pod-security-restricted")


def run(*args: str, stdin: str | None = None):
    return CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_rules_packs_lists_the_shipped_packs_with_their_rule_counts() -> None:
    result = run("rules", "packs")
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:]}
    assert rows == {"pod-security-baseline": "12", "pod-security-restricted": "7"}
    assert "Baseline profile" in result.stdout


def test_check_with_both_packs_reports_each_violation_with_its_control_tag_and_field() -> None:
    result = run("check", *BOTH, str(EXAMPLES))
    assert result.exit_code == 1
    text = result.stdout
    for control, field in [
        ("baseline/host-namespaces", "spec.hostNetwork, spec.hostPID"),
        ("baseline/privileged-containers", "spec.initContainers[0].securityContext.privileged"),
        ("baseline/capabilities", "spec.containers[0].securityContext.capabilities.add[1]"),
        ("baseline/hostpath-volumes", "spec.volumes[0].hostPath"),
        ("baseline/host-ports", "spec.containers[0].ports[0].hostPort"),
        ("baseline/apparmor", "metadata.annotations[container.apparmor.security.beta.kubernetes.io/agent]"),
        ("restricted/volume-types", "spec.volumes[0].nfs"),
        ("restricted/running-as-non-root-user", "spec.securityContext.runAsUser"),
        ("restricted/seccomp", "spec.containers[0].securityContext.seccompProfile"),
    ]:
        assert re.search(rf"Pod Security: {re.escape(control)} at [^\n]*{re.escape(field)}", text), control
    # The Deployment that meets Restricted is checked and not reported.
    assert "restricted-deployment" not in text and "Deployment api" not in text
    assert "3 object(s) checked, 17 match(es)" in result.stderr


def test_check_json_alerts_carry_the_tags_and_the_offending_fields() -> None:
    result = run("check", "--format", "json", *BOTH, str(EXAMPLES / "node-agent-daemonset.yaml"))
    alerts = {alert["rule"]["id"]: alert for alert in json_lines(result.stdout)}
    privileged = alerts["pss-baseline-privileged-containers"]
    assert privileged["tags"][0] == "Pod Security: baseline/privileged-containers"
    assert privileged["gatewatch"]["offending_fields"] == ["spec.initContainers[0].securityContext.privileged"]
    assert privileged["gatewatch"]["offending_containers"] == ["setup"]
    assert privileged["message"].endswith("(spec.initContainers[0].securityContext.privileged)")
    assert privileged["threat"]["technique"]["id"] == ["T1611", "T1610"]
    # A hygiene control has no ATT&CK mapping and says so in its tags.
    assert "threat" not in alerts["pss-baseline-host-ports"]
    assert "Rule Type: Hygiene" in alerts["pss-baseline-host-ports"]["tags"]


def test_a_pack_action_caps_every_rule_of_the_pack() -> None:
    result = run("check", "--pack", "pod-security-baseline=warn", str(EXAMPLES / "node-agent-daemonset.yaml"))
    # Nothing denies any more: --fail-on deny is not reached.
    assert result.exit_code == 0, result.output
    assert "WARN" in result.stdout and "DENY" not in result.stdout
    assert "6 match(es), 0 at or above --fail-on deny" in result.stderr


@pytest.mark.parametrize(("pack", "message"), [
    ("pod-security-strict", "unknown rule pack 'pod-security-strict'; the packs are: pod-security-baseline, "
                            "pod-security-restricted"),
    ("pod-security-baseline=block", "the action must be one of alert, warn, deny"),
    ("../rules", "unknown rule pack"),
])
def test_a_bad_pack_is_refused_with_exit_2(pack: str, message: str) -> None:
    result = run("check", "--pack", pack, str(EXAMPLES))
    assert result.exit_code == 2
    assert message in result.stderr


def test_without_pack_check_runs_the_default_rules_only() -> None:
    result = run("check", str(EXAMPLES / "node-agent-daemonset.yaml"))
    assert result.exit_code == 0 and "no rule matched" in result.stdout


def test_replay_with_a_pack_reports_pod_creations_from_an_audit_log(tmp_path: Path) -> None:
    pod = yaml.safe_load((EXAMPLES / "node-agent-daemonset.yaml").read_text())["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**pod["metadata"], "name": "agent-x"}, "spec": pod["spec"]}

    def event(audit_id: str, verb: str, request_object: Any) -> str:
        return json.dumps({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request", "auditID": audit_id,
            "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/monitoring/pods", "verb": verb,
            "user": {"username": "system:serviceaccount:kube-system:daemon-set-controller"},
            "objectRef": {"resource": "pods", "namespace": "monitoring", "name": "agent-x", "apiVersion": "v1"},
            "requestObject": request_object, "responseStatus": {"code": 201},
            "requestReceivedTimestamp": "2026-11-22T05:00:00.000000Z",
            "stageTimestamp": "2026-11-22T05:00:00.100000Z",
            "annotations": {"authorization.k8s.io/decision": "allow"},
        })

    broken = {**pod, "spec": {**pod["spec"], "securityContext": "privileged"}}
    log = tmp_path / "audit.log"
    log.write_text("\n".join([
        event("a1", "create", pod),
        # A patch body is not a Pod: no Pod Security verdict on it.
        event("a2", "patch", {"metadata": {"labels": {"tier": "node"}}}),
        # A Pod no API server would accept: as Elasticsearch would index it, the field of the
        # wrong type is ignored for matching (a warning names it) and the rest is evaluated.
        event("a3", "create", broken),
    ]) + "\n")
    result = run("replay", "--format", "json", "--pack", "pod-security-baseline", str(log))
    assert ("audit.log:3: warning: requestObject.spec.securityContext: expected an object, got str: "
            "ignored for matching") in result.stderr
    assert "0 malformed line(s), 1 field(s) of the wrong type ignored in 1 event(s)" in result.stderr
    alerts = json_lines(result.stdout)
    found = {line: {a["rule"]["id"] for a in alerts if a["gatewatch"]["replay"]["line"] == line} for line in (1, 2, 3)}
    assert found[1] == {
        "pss-baseline-host-namespaces", "pss-baseline-privileged-containers", "pss-baseline-capabilities",
        "pss-baseline-hostpath-volumes", "pss-baseline-host-ports", "pss-baseline-apparmor"}
    assert found[2] == set()
    assert found[3] and found[3] <= found[1]  # the same Pod, its securityContext unread


# --- exemptions ------------------------------------------------------------------------------

PRIVILEGED = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "payments"},
              "spec": {"runtimeClassName": "gvisor",
                       "containers": [{"name": "c", "image": "nginx", "securityContext": {"privileged": True}}]}}


def review(pod: dict[str, Any], *, user: str = "alice", namespace: str = "payments") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
        "name": "p", "namespace": namespace, "object": pod, "userInfo": {"username": user}}}


def pack_matches(document: dict[str, Any], exemptions: Exemptions) -> list[str]:
    ruleset = load_ruleset(packs=[PackSelection("pod-security-baseline")], exemptions=exemptions)
    return [m.rule.id for m in RuleEngine(ruleset).evaluate(document, new_terms=False)]


@pytest.mark.parametrize(("exemptions", "exempt"), [
    (Exemptions(), False),
    (Exemptions(usernames=("alice",)), True),
    (Exemptions(usernames=("Alice", "alice-bot", "system:serviceaccount:kube-system:replicaset-controller")), False),
    (Exemptions(namespaces=("payments",)), True),
    (Exemptions(namespaces=("payments-dev",)), False),
    (Exemptions(runtime_class_names=("gvisor",)), True),
    (Exemptions(runtime_class_names=("kata",)), False),
], ids=["none", "user", "other users (exact names)", "namespace", "other namespace", "runtime class",
        "other runtime class"])
def test_exemptions_have_the_meaning_of_psa_exemptions(exemptions: Exemptions, exempt: bool) -> None:
    document = document_from_admission_review(review(PRIVILEGED))
    assert pack_matches(document, exemptions) == ([] if exempt else ["pss-baseline-privileged-containers"])


def test_exemptions_leave_the_other_rules_and_the_rules_own_exceptions_alone() -> None:
    ruleset = load_ruleset(packs=[PackSelection("pod-security-baseline")], exemptions=Exemptions(usernames=("alice",)))
    plain = load_ruleset()
    default_rules = [rule for rule in ruleset.rules if rule.ruleset == "gatewatch-default"]
    assert [rule.exceptions for rule in default_rules] == [rule.exceptions for rule in plain.rules]
    privileged = ruleset.get("pss-baseline-privileged-containers")
    assert privileged is not None and privileged.exceptions == ('gatewatch.user.effective:("alice")',)
    busybox = {**PRIVILEGED, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    matches = RuleEngine(ruleset).evaluate(document_from_admission_review(review(busybox)), new_terms=False)
    assert "gatewatch-debug-image-pod" in [m.rule.id for m in matches]  # alice is exempt from the packs only


def test_a_runtime_class_exemption_does_not_exempt_a_pod_without_one() -> None:
    pod = {**PRIVILEGED, "spec": {**PRIVILEGED["spec"], "runtimeClassName": ""}}
    document = document_from_pod(pod)
    assert pack_matches(document, Exemptions(runtime_class_names=("gvisor",))) == ["pss-baseline-privileged-containers"]


def test_exemption_names_with_quotes_are_matched_exactly() -> None:
    odd = 'ci "robot" \\ x'
    document = document_from_admission_review(review(PRIVILEGED, user=odd))
    assert pack_matches(document, Exemptions(usernames=(odd,))) == []


def test_pack_settings_are_validated_with_the_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("rules:\n  packs:\n    - name: pod-security-baseline\n      action: Deny\n"
                      "    - name: pod-security-strict\n")
    with pytest.raises(ConfigError, match=r"line 5: rules.packs.1.name: .*unknown rule pack 'pod-security-strict'"):
        load_settings(config_file=config, environ={})
    config.write_text("rules:\n  packs: []\n  packExemptions: {usernames: [ci], runtimeClassNames: [gvisor]}\n")
    settings = load_settings(config_file=config, environ={})
    assert settings.rules.packs == () and settings.rules.pack_exemptions.runtime_class_names == ("gvisor",)
    assert [(p.name, p.action) for p in load_settings(environ={}).rules.packs] == [("pod-security-baseline", Action.WARN)]


# --- offending fields ------------------------------------------------------------------------


@pytest.mark.parametrize(("pod_spec", "rule_id", "fields"), [
    ({"hostIPC": True, "containers": [{"name": "a", "image": "x"}]}, "pss-baseline-host-namespaces", ["spec.hostIPC"]),
    ({"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"},
                                      {"name": "kernel.msgmax", "value": "1"}]},
      "containers": [{"name": "a", "image": "x"}]},
     "pss-baseline-sysctls", ["spec.securityContext.sysctls[1].name"]),
    ({"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "x", "securityContext": {
        "seLinuxOptions": {"type": "spc_t", "level": "s0"}}}]},
     "pss-baseline-selinux", ["spec.containers[1].securityContext.seLinuxOptions.type"]),
    ({"securityContext": {"seccompProfile": {"type": "Unconfined"}}, "containers": [{"name": "a", "image": "x"}]},
     "pss-baseline-seccomp", ["spec.securityContext.seccompProfile.type"]),
    ({"ephemeralContainers": [{"name": "dbg", "image": "x", "securityContext": {"procMount": "Unmasked"}}],
      "containers": [{"name": "a", "image": "x"}]},
     "pss-baseline-proc-mount", ["spec.ephemeralContainers[0].securityContext.procMount"]),
    ({"containers": [{"name": "a", "image": "x", "readinessProbe": {"tcpSocket": {"host": "10.0.0.1", "port": 1}}}]},
     "pss-baseline-host-probes-lifecycle-hooks", ["spec.containers[0].readinessProbe.tcpSocket.host"]),
    ({"securityContext": {"runAsNonRoot": False}, "containers": [{"name": "a", "image": "x"}]},
     "pss-restricted-running-as-non-root", ["spec.securityContext.runAsNonRoot", "spec.containers[0].securityContext.runAsNonRoot"]),
], ids=["host namespace", "sysctl", "selinux", "seccomp", "proc mount", "probe host", "run as non-root"])
def test_offending_fields_name_the_pod_field_as_psa_does(pod_spec: dict[str, Any], rule_id: str, fields: list[str]) -> None:
    ruleset = load_ruleset(packs=[PackSelection("pod-security-baseline"), PackSelection("pod-security-restricted")])
    rule = ruleset.get(rule_id)
    document = document_from_pod({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod_spec})
    assert rule is not None and rule.matcher(document)
    assert offending_fields(rule.matcher, document) == fields


def test_an_esql_rule_matching_a_pod_alerts_without_offending_fields(tmp_path: Path) -> None:
    # kql.explain walks KQL only: an ES|QL rule's alert simply names no field.
    rules = tmp_path / "esql.yaml"
    rules.write_text("""version: 1
ruleset: esql-pods
rules:
  - id: esql-privileged
    name: Privileged pod (ES|QL)
    description: A pod with hostPID.
    severity: high
    risk_score: 73
    language: esql
    action: warn
    query: |
      FROM logs-kubernetes.audit_logs-*
      | WHERE kubernetes.audit.objectRef.resource == "pods" AND kubernetes.audit.requestObject.spec.hostPID == true
""")
    result = run("check", "--format", "json", "--rules", str(rules), "--pack", "pod-security-baseline",
                 str(EXAMPLES / "node-agent-daemonset.yaml"))
    alerts = {alert["rule"]["id"]: alert for alert in json_lines(result.stdout)}
    assert "offending_fields" not in alerts["esql-privileged"]["gatewatch"]
    assert alerts["pss-baseline-host-namespaces"]["gatewatch"]["offending_fields"] == ["spec.hostNetwork", "spec.hostPID"]
