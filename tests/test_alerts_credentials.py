"""Alerts redact credentials in commands and args; the rules still see the real values.

Issue 9: bearer tokens in exec commands (``curl -H "Authorization: Bearer ..."``)
and passwords in container args appeared verbatim in alerts; deeply nested
objects made alert building raise RecursionError, and those alerts were lost.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from gatewatch.alerts import MAX_ALERT_DEPTH, TRUNCATED, alert_line, build_alert, redact_object
from gatewatch.credentials import CREDENTIAL_PATTERNS, MAX_SCANNED_CHARS, REDACTED, redact_argv, redact_text
from gatewatch.documents import document_from_admission_review, document_from_pod
from gatewatch.engine import Match, RuleEngine
from gatewatch.query_string import query_pairs
from gatewatch.rules import load_rules_text

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "reviews"
JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a3ViZS1zeXN0ZW0ifQ.c2lnbmF0dXJlLXNpZw"
OPAQUE = "opaque-token-0f9e8d7c"
PASSWORD = "Hunter2-s3cret"


# --- the table ----------------------------------------------------------------------


@pytest.mark.parametrize("row", CREDENTIAL_PATTERNS, ids=lambda row: row.name)
def test_every_row_of_the_table_redacts_its_example(row) -> None:
    match = row.pattern.search(row.example)
    assert match is not None and match.group("secret")
    redacted = redact_text(row.example)
    assert match.group("secret") not in redacted and REDACTED in redacted
    # What is around the secret stays: the alert still says what was run.
    assert redacted.startswith(row.example[: match.start("secret")].split()[0])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["curl", "-H", f"Authorization: Bearer {JWT}", "https://api"],
         ["curl", "-H", "Authorization: Bearer [redacted]", "https://api"]),
        (["curl", "-H", f"authorization:bearer {OPAQUE}", "https://api"],
         ["curl", "-H", "authorization:bearer [redacted]", "https://api"]),
        (["sh", "-c", f"curl -sH 'Authorization: Bearer {OPAQUE}' https://api | sh"],
         ["sh", "-c", "curl -sH 'Authorization: Bearer [redacted]' https://api | sh"]),
        (["app", f"--password={PASSWORD}", "--verbose"], ["app", "--password=[redacted]", "--verbose"]),
        (["app", "--db-password", PASSWORD, "--port", "5432"], ["app", "--db-password", "[redacted]", "--port", "5432"]),
        (["/usr/bin/mysql", "-u", "root", f"-p{PASSWORD}", "shop"], ["/usr/bin/mysql", "-u", "root", "-p[redacted]", "shop"]),
        (["sh", "-c", f"mysqldump -uroot -p{PASSWORD} shop > /tmp/d"], ["sh", "-c", "mysqldump -uroot -p[redacted] shop > /tmp/d"]),
        (["sshpass", "-p", PASSWORD, "ssh", "host"], ["sshpass", "-p", "[redacted]", "ssh", "host"]),
        # user:password as the element after the option, as a container's args or an exec's command give it
        (["curl", "-u", f"admin:{PASSWORD}", "https://db"], ["curl", "-u", "admin:[redacted]", "https://db"]),
        (["wget", "--user", f"admin:{PASSWORD}", "https://db"], ["wget", "--user", "admin:[redacted]", "https://db"]),
        (["curl", "-U", f"proxy:{PASSWORD}", "-x", "http://p", "https://a"],
         ["curl", "-U", "proxy:[redacted]", "-x", "http://p", "https://a"]),
        (["kubectl", f"--token={JWT}", "get", "secrets"], ["kubectl", "--token=[redacted]", "get", "secrets"]),
        (["env", f"API_TOKEN={OPAQUE}", "./run"], ["env", "API_TOKEN=[redacted]", "./run"]),
        (["git", "clone", "https://ghp_0123456789abcdefghijABCDEFGHIJ012345@github.com/o/r"],
         ["git", "clone", "https://[redacted]@github.com/o/r"]),
        (["aws", "s3", "ls", "--access-key", "AKIAIOSFODNN7EXAMPLE"], ["aws", "s3", "ls", "--access-key", "[redacted]"]),
        (["echo", JWT], ["echo", "[redacted]"]),
    ],
)
def test_credentials_in_argument_vectors_are_redacted(argv: list[str], expected: list[str]) -> None:
    assert redact_argv(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["sh", "-c", "ls -la /tmp && cat /etc/os-release"],
        ["nginx", "-g", "daemon off;"],
        ["ps", "-u", "root", "-o", "pid,cmd"],
        ["app", "--port=8080", "-p", "8080", "--token-file=/var/run/secrets/token", "--password-file", "/etc/pw"],
        ["docker", "run", "-p", "8080:80", "busybox:1.36"],
        ["python", "-m", "http.server", "--bind", "0.0.0.0"],
        ["sh", "-c", "echo compass bypass=1 && curl https://example.com/path?q=1"],
    ],
)
def test_ordinary_commands_are_left_as_they_are(argv: list[str]) -> None:
    assert redact_argv(argv) == argv


def test_redaction_is_linear_whatever_the_text() -> None:
    # Each pattern's prefix repeated: a backtracking or rescanning pattern would be
    # hundreds of times slower than on harmless text of the same length.
    def best(text: str) -> float:
        timings = []
        for _ in range(5):
            start = time.perf_counter()
            redact_text(text)
            timings.append(time.perf_counter() - start)
        return min(timings)

    harmless = best("x" * MAX_SCANNED_CHARS)
    for fragment in ["mysql ", "a.", "sk-", "-----BEGIN A PRIVATE KEY-----", "authorization: ", "eyJa.eyJb.",
                     "--a.", "a_", "://a:", "-u a:", "redis-cli ", "PASSWORD= ", "a.b", "-a-", " -p", "a:b@"]:
        text = (fragment * (MAX_SCANNED_CHARS // len(fragment) + 1))[:MAX_SCANNED_CHARS]
        assert best(text) < 150 * harmless, fragment


def test_long_strings_are_cut_before_they_are_scanned() -> None:
    redacted = redact_text("a" * (MAX_SCANNED_CHARS + 5) + f" --password={PASSWORD}")
    assert len(redacted) < MAX_SCANNED_CHARS + 100 and PASSWORD not in redacted and "more characters" in redacted


def test_a_text_seen_before_is_answered_as_the_first_time() -> None:
    # redact_text remembers short texts without a credential: a clean text again, and a credential however
    # often it comes, are answered as the first time (and a text that held one is never remembered).
    texts = ["sh", "-c", f"--password={PASSWORD}", "nginx", f"Authorization: Bearer {OPAQUE}", "x" * 300]
    first = [redact_text(text) for text in texts]
    for _ in range(3):
        assert [redact_text(text) for text in texts] == first
    assert first[:2] == ["sh", "-c"] and PASSWORD not in first[2] and OPAQUE not in first[4]
    assert redact_argv(["mysql", "-p" + PASSWORD]) == redact_argv(["mysql", "-p" + PASSWORD]) == ["mysql", "-p[redacted]"]


def test_an_exec_uris_query_is_read_as_parse_qsl_reads_it() -> None:
    # The requestURI's command is read without urllib's generality when the query has no escape: the same
    # pairs, for any query of these characters.
    rng = random.Random(2207)
    for _ in range(20_000):
        query = "".join(rng.choice("ac=&;%+2 d") for _ in range(rng.randint(0, 14)))
        assert query_pairs(query, keep_blank_values=True) == parse_qsl(query, keep_blank_values=True), query
        assert query_pairs(query) == parse_qsl(query), query  # an exec review's document reads it so


# --- in alerts ------------------------------------------------------------------------


def exec_review(command: list[str]) -> dict[str, Any]:
    review = json.loads((EXAMPLES / "exec-review.json").read_text())
    review["request"]["object"]["command"] = command
    return review


def test_an_exec_alert_redacts_the_bearer_token_and_the_rule_saw_it() -> None:
    command = ["curl", "-H", f"Authorization: Bearer {OPAQUE}", "https://kubernetes.default/api"]
    document = document_from_admission_review(exec_review(command))
    # A rule that needs the real header value: it must still match.
    rules = load_rules_text(
        "version: 1\nruleset: t\nrules:\n  - id: bearer-in-exec\n    name: Token in exec\n    description: d\n"
        "    severity: high\n    risk_score: 73\n"
        f"    query: 'kubernetes.audit.requestObject.command:\"Authorization: Bearer {OPAQUE}\"'\n"
    )
    (match,) = RuleEngine(rules).evaluate(document)
    alert = build_alert(match, document)
    line = alert_line(alert)
    assert OPAQUE not in line
    audit = alert["kubernetes"]["audit"]
    assert audit["requestObject"]["command"] == [
        "curl", "-H", "Authorization: Bearer [redacted]", "https://kubernetes.default/api"]
    assert "command=Authorization%3A%20Bearer%20%5Bredacted%5D" in audit["requestURI"]
    assert audit["requestURI"].startswith(document["kubernetes"]["audit"]["requestURI"].split("?")[0] + "?")
    # The document the rules matched is untouched.
    assert document["kubernetes"]["audit"]["requestObject"]["command"] == command


@pytest.mark.parametrize("padding", [0, 5000], ids=["remembered", "too-long-to-remember"])
def test_an_exec_uri_seen_before_is_redacted_as_the_first_time(padding: int) -> None:
    # Exec URIs are remembered once redacted (the same exec comes again and again): a repeat, with a token or
    # without, is answered as the first time, whatever its length.
    rule = load_rules_text("version: 1\nruleset: t\nrules:\n  - id: any\n    name: Any\n    description: d\n"
                           "    severity: low\n    risk_score: 21\n    query: 'kubernetes.audit.verb:*'\n").rules[0]
    commands = [["curl", "-H", f"Authorization: Bearer {OPAQUE}", "x" * padding], ["sh", "-c", "x" * padding]]
    first = []
    for _ in range(3):
        uris = []
        for command in commands:
            document = document_from_admission_review(exec_review(command))
            uris.append(build_alert(Match(rule=rule, new_terms_key=None), document)["kubernetes"]["audit"]["requestURI"])
        first = first or uris
        assert uris == first
    assert OPAQUE not in first[0] and "Bearer%20%5Bredacted%5D" in first[0]
    assert first[1] == document["kubernetes"]["audit"]["requestURI"]  # nothing to hide: as the API server wrote it


def test_a_pod_alert_redacts_container_args_and_probe_commands() -> None:
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-client", "namespace": "shop"},
        "spec": {
            "containers": [{
                "name": "client", "image": "nicolaka/netshoot:v0.13",
                "command": ["mysql"], "args": ["-h", "db", "-uroot", f"-p{PASSWORD}"],
                "livenessProbe": {"exec": {"command": ["sh", "-c", f"redis-cli -a {PASSWORD} ping"]}},
            }],
        },
    }
    document = document_from_pod(pod, namespace="shop")
    matches = RuleEngine(load_rules_text(
        "version: 1\nruleset: t\nrules:\n  - id: any-pod\n    name: Any pod\n    description: d\n"
        "    severity: low\n    risk_score: 1\n    query: 'kubernetes.audit.objectRef.resource:pods'\n"
    )).evaluate(document, new_terms=False)
    alert = build_alert(matches[0], document)
    assert PASSWORD not in alert_line(alert)
    container = alert["kubernetes"]["audit"]["requestObject"]["spec"]["containers"][0]
    assert container["args"] == ["-h", "db", "-uroot", "-p[redacted]"]
    assert container["livenessProbe"]["exec"]["command"] == ["sh", "-c", "redis-cli -a [redacted] ping"]
    assert container["image"] == "nicolaka/netshoot:v0.13"


def test_json_patch_operations_on_args_are_redacted() -> None:
    patch = [
        {"op": "replace", "path": "/spec/containers/0/args", "value": ["--password", PASSWORD]},
        {"op": "add", "path": "/spec/containers/0/args/-", "value": f"--token={OPAQUE}"},
        {"op": "replace", "path": "/spec/containers/0/image", "value": "busybox:1.36"},
    ]
    redacted = json.dumps(redact_object(patch))
    assert PASSWORD not in redacted and OPAQUE not in redacted and "busybox:1.36" in redacted


def test_a_deeply_nested_object_still_gives_an_alert_cut_at_the_bound() -> None:
    # Deeper than Python's recursion limit: building the alert raised RecursionError before.
    deep: Any = {"leaf": "x"}
    for _ in range(5_000):
        deep = {"n": deep}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "deep", "namespace": "shop",
                                                            "annotations": {"a": "b"}},
           "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}], "extra": deep}}
    document = document_from_pod(pod, namespace="shop")
    matches = RuleEngine(load_rules_text(
        "version: 1\nruleset: t\nrules:\n  - id: any-pod\n    name: Any pod\n    description: d\n"
        "    severity: low\n    risk_score: 1\n    query: 'kubernetes.audit.objectRef.resource:pods'\n"
    )).evaluate(document, new_terms=False)
    line = alert_line(build_alert(matches[0], document))
    assert TRUNCATED in line and str(MAX_ALERT_DEPTH) in TRUNCATED
    assert json.loads(line)["kubernetes"]["audit"]["requestObject"]["spec"]["containers"][0]["image"] == "busybox:1.36"
