"""What the docs show kubectl printing for `kubectl run` is what gatewatch answers.

Every `kubectl -n <ns> run <name> --image=<image> ...` in README.md, docs/*.md and
the chart's NOTES (rendered for each default mode) is turned into the Pod CREATE
review kubectl causes and answered by gatewatch's own pipeline with the default
rules: review -> document -> engine -> decision -> response. The output lines the
docs show after the command (`Warning: ...`, `Error from server (Forbidden): ...`,
`pod/<name> created`) must be what kubectl prints for that response, in order.

Each file is read as a user follows it: one new_terms history per file, the same
user throughout (a new_terms rule warns the first time only).
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import pytest

from gatewatch.admission import check_review, review_response
from gatewatch.decision import Mode, decide
from gatewatch.documents import document_from_admission_request
from gatewatch.engine import RuleEngine
from gatewatch.kube.webhook_configuration import webhook_entry_name
from gatewatch.rules import load_rules

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART_DIR = REPO_ROOT / "charts" / "gatewatch"
RUN_COMMAND = re.compile(r"^\s*(?:\$\s+)?(kubectl\s+-n\s+\S+\s+run\s+.*?)\s*$")
OUTPUT_LINE = re.compile(r"^\s*(?:#\s*)?(Warning: .*|Error from server .*|pod/\S+ created)\s*$")
# The next command ends the output shown for a `kubectl run` (prose such as "kubectl prints ..." does not).
NEXT_COMMAND = re.compile(
    r"^\s*(?:\$\s+)?(?:kubectl\s+(?:-n\s+\S+\s+)?(?:run|create|get|label|apply|delete|exec|attach|debug|describe"
    r"|logs|rollout|set|port-forward|events)\b|helm\s|gatewatch\s)"
)
USER = {"username": "alice@example.com", "uid": "u-1", "groups": ["system:authenticated"]}


@dataclass
class DocumentedRun:
    where: str
    command: str
    output: list[str]


def documented_runs(text: str, *, where: str) -> list[DocumentedRun]:
    lines = text.splitlines()
    runs = []
    for number, line in enumerate(lines):
        command = RUN_COMMAND.match(line)
        if not command:
            continue
        output = []
        for following in lines[number + 1:]:
            if NEXT_COMMAND.match(following):
                break
            shown = OUTPUT_LINE.match(following)
            if shown:
                output.append(shown.group(1))
        runs.append(DocumentedRun(where=f"{where}:{number + 1}", command=command.group(1), output=output))
    return runs


def pod_review(command: str) -> dict[str, Any]:
    """The Pod CREATE review `kubectl -n NS run NAME --image=IMAGE [--restart=R] [-- ARGS]` causes."""
    words = shlex.split(command)
    args: list[str] = []
    if "--" in words:
        args = words[words.index("--") + 1:]
        words = words[: words.index("--")]
    assert words[:2] == ["kubectl", "-n"] and words[3] == "run", command
    namespace, name = words[2], words[4]
    flags = dict(word[2:].split("=", 1) for word in words[5:] if word.startswith("--") and "=" in word)
    container: dict[str, Any] = {"name": name, "image": flags["image"], "imagePullPolicy": "IfNotPresent"}
    if args:
        container["args"] = args
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"run": name}},
        "spec": {"containers": [container], "restartPolicy": flags.get("restart", "Always"),
                 "dnsPolicy": "ClusterFirst"},
    }
    group_version_kind = {"group": "", "version": "v1", "kind": "Pod"}
    resource = {"group": "", "version": "v1", "resource": "pods"}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": f"uid-{namespace}-{name}", "kind": group_version_kind, "resource": resource,
        "requestKind": group_version_kind, "requestResource": resource, "name": name, "namespace": namespace,
        "operation": "CREATE", "userInfo": USER, "object": pod, "oldObject": None, "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions", "fieldManager": "kubectl-run"},
    }}


def kubectl_output(engine: RuleEngine, command: str, *, mode: Mode) -> list[str]:
    """What kubectl prints for gatewatch's answer: the warnings, then the error or the created Pod."""
    review = pod_review(command)
    checked = check_review(review, webhook="pods")
    matches = engine.evaluate(document_from_admission_request(checked.request))
    response = review_response(review, decide(matches, mode=mode))["response"]
    printed = [f"Warning: {warning}" for warning in response.get("warnings", [])]
    if response["allowed"]:
        printed.append(f"pod/{review['request']['name']} created")
    else:
        # Only the entry of enforce namespaces denies: the entries are split by mode.
        printed.append(f'Error from server (Forbidden): admission webhook "{webhook_entry_name("pods", mode)}" '
                       f"denied the request: {response['status']['message']}")
    return printed


def assert_documented_output_is_real(runs: list[DocumentedRun]) -> None:
    engine = RuleEngine(load_rules())  # a fresh new_terms history: the reader's first time
    for run in runs:
        # A shown denial means the namespace enforces; otherwise the docs' default, warn.
        mode = Mode.ENFORCE if any(line.startswith("Error from server") for line in run.output) else Mode.WARN
        real = kubectl_output(engine, run.command, mode=mode)
        if not run.output:
            continue  # the docs show no output for this command
        shown = run.output
        # The docs may leave out the trailing "pod/... created", and end a long denial with "...".
        if not shown[-1].startswith(("pod/", "Error")) and real[-1].startswith("pod/"):
            real = real[:-1]
        assert len(shown) == len(real), f"{run.where}: shown {shown}, gatewatch answers {real}"
        for shown_line, real_line in zip(shown, real):
            if shown_line.endswith("...") and shown_line.startswith("Error from server"):
                assert real_line.startswith(shown_line[:-3].rstrip()), f"{run.where}: {shown_line!r} vs {real_line!r}"
            else:
                assert shown_line == real_line, f"{run.where}: shown {shown_line!r}, gatewatch answers {real_line!r}"


def notes(values: dict[str, Any] | None) -> str:
    with helm_python.Chart.load(CHART_DIR) as chart:
        rendered = chart.render(values, name="gatewatch", namespace="gatewatch", is_install=True)
    return next(text for name, text in rendered.items() if name.endswith("NOTES.txt"))


MARKDOWN_FILES = sorted([REPO_ROOT / "README.md", CHART_DIR / "README.md", *(REPO_ROOT / "docs").glob("*.md")])


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_the_kubectl_output_markdown_shows_is_what_gatewatch_answers(path: Path):
    assert_documented_output_is_real(documented_runs(path.read_text(), where=str(path.relative_to(REPO_ROOT))))


@pytest.mark.parametrize("mode", [mode.value for mode in Mode])
def test_the_kubectl_output_the_chart_notes_show_is_what_gatewatch_answers(mode: str):
    runs = documented_runs(notes({"mode": mode}), where=f"NOTES.txt (mode {mode})")
    assert len(runs) == 1 and runs[0].output, runs
    assert_documented_output_is_real(runs)


def test_the_busybox_examples_are_found_and_show_output():
    # The test above must not pass because the parser found nothing.
    shown = {run.where.split(":")[0]: run for path in (REPO_ROOT / "README.md", REPO_ROOT / "docs" / "install.md")
             for run in documented_runs(path.read_text(), where=str(path.relative_to(REPO_ROOT)))}
    assert {"README.md", "docs/install.md"} <= set(shown)
    assert all(run.output for run in shown.values())


def test_an_invented_warning_is_caught():
    text = ("kubectl -n demo run dbg --image=busybox:1.36 --restart=Never -- sleep 60\n"
            "# Warning: gatewatch: [T1610,T1609] Kubernetes Pod Created or Updated with a Common Debug or Base Image"
            " ... (medium)\n")
    with pytest.raises(AssertionError, match="shown"):
        assert_documented_output_is_real(documented_runs(text, where="example"))
