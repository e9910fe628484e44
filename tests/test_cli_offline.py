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


# Subprocesses here are bounded by pytest-timeout (pyproject.toml), not by subprocess's
# ``timeout=``: Popen.wait(timeout) polls with time.sleep, which raises OSError (EINVAL)
# under the date check (README, "Dates"): libfaketime 0.9.10 with
# FAKETIME_DONT_FAKE_MONOTONIC breaks Python >= 3.11's clock_nanosleep(TIMER_ABSTIME)
# (wolfcw/libfaketime#426).


def test_console_script_is_installed() -> None:
    exe = shutil.which("gatewatch", path=str(Path(sys.executable).parent))
    assert exe, "pip install puts `gatewatch` next to the interpreter"
    done = subprocess.run([exe, "check", str(EXAMPLES / "reviews" / "exec-review.json")],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert "T1609" in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_wheel_ships_the_default_rules(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                   check=True)
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


# --- inputs with fields of the wrong type: a message naming file, line and field, never a traceback ---

POD = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
    "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
}


def _pod(**changes) -> dict:
    pod = json.loads(json.dumps(POD))
    for path, value in changes.items():
        target = pod
        *parents, last = path.split("__")
        for part in parents:
            target = target[part] if not part.isdigit() else target[int(part)]
        target[last] = value
    return pod


def _review(obj=None, **request_changes) -> dict:
    review = json.loads((EXAMPLES / "reviews" / "busybox-create-review.json").read_text())
    if obj is not None:
        review["request"]["object"] = obj
    review["request"].update(request_changes)
    return review


BAD_CHECK_INPUTS = [
    ("containers-a-string", _pod(spec__containers="busybox"), "spec.containers"),
    ("image-a-number", _pod(spec__containers=[{"name": "c", "image": 5}]), "spec.containers[0].image"),
    ("labels-a-list", _pod(metadata__labels=[]), "metadata.labels"),
    ("label-value-a-number", _pod(metadata__labels={"tier": 1}), "metadata.labels['tier']"),
    ("name-a-number", _pod(metadata__name=5), "metadata.name"),
    ("namespace-a-list", _pod(metadata__namespace=["a"]), "metadata.namespace"),
    ("env-a-string", _pod(spec__containers=[{"name": "c", "image": "nginx", "env": "A=b"}]), "spec.containers[0].env"),
    ("review-object-a-string", _review(obj="x"), "request.object"),
    ("review-containers-a-string", _review(obj=_pod(spec__containers="busybox")), "request.object.spec.containers"),
    ("review-image-a-number", _review(obj=_pod(spec__containers=[{"image": 5}])), "request.object.spec.containers[0].image"),
    ("review-labels-a-list", _review(obj=_pod(metadata__labels=[])), "request.object.metadata.labels"),
    ("review-namespace-a-number", _review(obj=_pod(metadata__namespace=5)), "request.object.metadata.namespace"),
    ("review-operation-a-list", _review(operation=["CREATE"]), "request.operation"),
    ("review-username-a-list", _review(userInfo={"username": ["alice"]}), "request.userInfo.username"),
]


@pytest.mark.parametrize(("manifest", "field"), [(m, f) for _, m, f in BAD_CHECK_INPUTS], ids=[i for i, _, _ in BAD_CHECK_INPUTS])
@pytest.mark.parametrize("output_format", ["table", "json"])
def test_check_reports_a_wrongly_typed_field_with_file_line_and_field(
    tmp_path: Path, manifest: dict, field: str, output_format: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\n---\n" + json.dumps(manifest) + "\n")
    result = run("check", "--format", output_format, str(bad), str(EXAMPLES / "pods" / "netshoot.yaml"))
    assert result.exit_code == 2, result.output
    message = [line for line in result.stderr.splitlines() if f"{bad}:5:" in line]
    assert message and field in message[0], result.stderr
    assert "please report" not in result.stderr  # a reason, not our fallback for surprises
    assert "T1610" in result.stdout  # the good file is still checked


BAD_AUDIT_EVENTS = [
    ("namespace-a-list", {"objectRef": {"resource": "pods", "namespace": ["payments"]}}, "objectRef.namespace"),
    ("resource-a-number", {"objectRef": {"resource": 5}}, "objectRef.resource"),
    ("subresource-a-list", {"objectRef": {"resource": "pods", "subresource": ["exec"]}}, "objectRef.subresource"),
    ("username-a-list", {"user": {"username": ["alice"]}}, "user.username"),
    ("decision-a-list", {"annotations": {"authorization.k8s.io/decision": []}}, "annotations['authorization.k8s.io/decision']"),
    ("audit-id-a-number", {"auditID": 7}, "auditID"),
    ("code-a-string", {"responseStatus": {"code": "201"}}, "responseStatus.code"),
    ("pod-image-a-number", {"requestObject": {"kind": "Pod", "spec": {"containers": [{"image": 5}]}}},
     "requestObject.spec.containers[0].image"),
    ("pod-labels-a-list", {"requestObject": {"kind": "Pod", "metadata": {"labels": []}}}, "requestObject.metadata.labels"),
]


@pytest.mark.parametrize(("change", "field"), [(c, f) for _, c, f in BAD_AUDIT_EVENTS], ids=[i for i, _, _ in BAD_AUDIT_EVENTS])
@pytest.mark.parametrize("output_format", ["table", "json"])
def test_replay_ignores_a_wrongly_typed_field_with_a_warning(tmp_path: Path, change: dict, field: str, output_format: str) -> None:
    # Elastic's semantics: the field is absent for matching; the event is still evaluated.
    lines = (EXAMPLES / "audit" / "audit.jsonl").read_text().splitlines()
    bad = json.loads(lines[6])  # a busybox pod creation in namespace default
    for key, value in change.items():
        bad[key] = {**bad[key], **value} if isinstance(value, dict) and isinstance(bad.get(key), dict) else value
    log = tmp_path / "audit.jsonl"
    log.write_text("\n".join([*lines, json.dumps(bad)]) + "\n")
    result = run("replay", "--format", output_format, "--all-namespaces", str(log))
    assert result.exit_code == 0, result.output
    assert f"{log}:{len(lines) + 1}: warning: {field}" in result.stderr
    assert "0 malformed line(s), 1 field(s) of the wrong type ignored in 1 event(s)" in result.stderr


def test_replay_drops_only_what_is_not_an_audit_event(tmp_path: Path) -> None:
    lines = (EXAMPLES / "audit" / "audit.jsonl").read_text().splitlines()
    bad = {**json.loads(lines[6]), "apiVersion": ["audit.k8s.io/v1"]}
    log = tmp_path / "audit.jsonl"
    log.write_text("\n".join([*lines, json.dumps(bad)]) + "\n")
    result = run("replay", "--all-namespaces", str(log))
    assert f"{log}:{len(lines) + 1}: skipped malformed line: apiVersion" in result.stderr
    assert "1 malformed line(s)" in result.stderr


def test_check_reads_stdin_given_as_dash() -> None:
    result = run("check", "-", stdin=(EXAMPLES / "pods" / "netshoot.yaml").read_text())
    assert result.exit_code == 1, result.output
    assert "Pod netshoot" in result.stdout and "T1610" in result.stdout


def test_check_with_every_input_unreadable_claims_nothing_and_exits_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Pod\nmetadata: {name: x\n")
    typed = tmp_path / "typed.json"
    typed.write_text(json.dumps(_pod(spec__containers="busybox")))
    result = run("check", str(broken), str(typed))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "broken.yaml" in result.stderr and "typed.json" in result.stderr
    assert "0 object(s) checked" in result.stderr


def test_check_mode_off_lists_matches_with_no_effect_and_keeps_the_exit_status() -> None:
    # The exit status comes from the rules' actions and --fail-on in every mode:
    # simulating off must not switch a CI gate off.
    netshoot = str(EXAMPLES / "pods" / "netshoot.yaml")
    enforce, off = run("check", netshoot), run("check", "--mode", "off", netshoot)
    assert enforce.exit_code == off.exit_code == 1
    assert "DENY" in enforce.stdout
    assert "NONE" in off.stdout and "DENY" not in off.stdout and "no rule matched" not in off.stdout
    alerts = json_lines(run("check", "--mode", "off", "--format", "json", netshoot).stdout)
    assert alerts and all("effect" not in a["gatewatch"] and a["gatewatch"]["mode"] == "off" for a in alerts)
    assert run("check", "--mode", "off", "--fail-on", "deny", str(EXAMPLES / "pods" / "web-deployment.yaml")).exit_code == 0


def test_check_reports_a_manifest_that_contains_itself(tmp_path: Path) -> None:
    # A YAML alias inside its own anchor would build a list that contains itself: refused when read.
    looped = tmp_path / "looped.yaml"
    looped.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: busybox\n"
        "    env: &env\n    - {name: A, value: x, again: *env}\n"
    )
    result = run("check", "--format", "json", str(looped), str(EXAMPLES / "pods" / "netshoot.yaml"))
    assert result.exit_code == 2
    assert (
        f"{looped}:1: document 1: a YAML alias inside its own anchor (anchored at line 8)"
        " makes it contain itself, which no Kubernetes object can\n"
    ) in result.stderr
    assert "Traceback" not in result.stderr and "gatewatch bug" not in result.stderr
    assert json_lines(result.stdout)  # the other file is still checked


def test_json_nested_deeper_than_python_recurses_is_bad_input_not_a_traceback(tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    manifest = tmp_path / "deep.json"
    manifest.write_text(deep)
    result = run("check", str(manifest), str(EXAMPLES / "pods" / "netshoot.yaml"))
    assert result.exit_code == 2
    assert f"gatewatch: {manifest}: invalid JSON: nested too deeply\n" in result.stderr
    assert "1 object(s) checked" in result.stderr  # the other file still is

    log = tmp_path / "audit.jsonl"
    log.write_text(deep + "\n" + (EXAMPLES / "audit" / "audit.jsonl").read_text())
    result = run("replay", str(log))
    assert result.exit_code == 0
    assert f"{log}:1: skipped malformed line: not JSON: nested too deeply\n" in result.stderr
    assert "1 malformed line(s)" in result.stderr


@pytest.mark.parametrize("review", ["busybox-create-review.json", "exec-review.json", "set-image-review.json"])
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_check_takes_a_bare_admission_request_as_it_takes_the_review(tmp_path: Path, review: str, suffix: str) -> None:
    # kwctl and Kubewarden's policy test data write the `request` without the AdmissionReview envelope.
    wrapped = EXAMPLES / "reviews" / review
    bare = tmp_path / f"request{suffix}"
    bare.write_text(json.dumps(json.loads(wrapped.read_text())["request"], indent=2))
    as_review, as_request = (run("check", "--format", "json", str(path)) for path in (wrapped, bare))
    assert as_request.exit_code == as_review.exit_code == 1, as_request.output
    assert [a["rule"]["id"] for a in json_lines(as_request.stdout)] == [a["rule"]["id"] for a in json_lines(as_review.stdout)]
    assert "1 object(s) checked" in as_request.stderr
    table = run("check", str(bare))
    assert "AdmissionRequest" in table.stdout and "skipped" not in table.stderr


def test_check_names_the_field_of_a_malformed_bare_admission_request(tmp_path: Path) -> None:
    request = json.loads((EXAMPLES / "reviews" / "busybox-create-review.json").read_text())["request"]
    request["object"]["spec"]["containers"] = "busybox"
    bare = tmp_path / "request.json"
    bare.write_text(json.dumps(request))
    result = run("check", str(bare))
    assert result.exit_code == 2
    assert "object.spec.containers: expected a list, got str" in result.stderr
