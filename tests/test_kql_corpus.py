"""Real-world KQL: Elastic's public detection-rule queries, and the two seed rules."""
from __future__ import annotations

import json
import random

import pytest
from kql_documents import matching_document, near_miss
from shared_corpus import KQL_QUERIES as CORPUS  # found from a clone or a worktree alike

from gatewatch.kql import compile_query, parse, to_kql
from gatewatch.kql.codegen import compile_program


def _corpus_queries() -> list[dict]:
    if not CORPUS.is_file():
        pytest.skip(f"KQL corpus not found at {CORPUS} (set GATEWATCH_KQL_CORPUS to its path); it is not part of the repository")
    with CORPUS.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def test_every_corpus_query_parses_and_compiles():
    rules = _corpus_queries()
    assert rules, f"{CORPUS} holds no queries"
    failures = []
    for rule in rules:
        try:
            compiled = compile_query(rule["query"])
            compiled({})  # evaluating an empty document must not crash
        except Exception as error:  # noqa: BLE001 - collect them all, then report
            failures.append(f"{rule['file']}: {error}")
    assert not failures, "\n".join(failures)


def test_every_corpus_query_renders_back_to_the_same_tree():
    failures = [
        rule["file"] for rule in _corpus_queries() if parse(to_kql(parse(rule["query"]))) != parse(rule["query"])
    ]
    assert not failures, failures


# --- the seed rules ---------------------------------------------------------------

DEBUG_IMAGE_POD_QUERY = (
    'event.dataset:"kubernetes.audit_logs" and kubernetes.audit.stage:"ResponseComplete" and '
    'kubernetes.audit.annotations.authorization_k8s_io/decision:"allow" and kubernetes.audit.objectRef.resource:"pods" '
    'and kubernetes.audit.verb:"create" and kubernetes.audit.requestObject.spec.containers.image:(alpine* or busybox* '
    "or ubuntu\\:* or debian\\:* or *netshoot\\:* or *network-multitool\\:* or *curl\\:*)"
)

EXEC_INTO_POD_QUERY = """
event.dataset : "kubernetes.audit_logs"
  and kubernetes.audit.annotations.authorization_k8s_io/decision:"allow"
  and kubernetes.audit.verb:"create"
  and kubernetes.audit.objectRef.resource:"pods"
  and kubernetes.audit.objectRef.subresource:"exec"
"""


def _audit_document(*, verb: str, resource: str, subresource: str | None = None, images: list[str] = (),
                    decision: str = "allow") -> dict:
    object_ref = {"resource": resource, "namespace": "default", "name": "debug", "apiVersion": "v1"}
    if subresource:
        object_ref["subresource"] = subresource
    return {
        "event": {"dataset": "kubernetes.audit_logs", "action": verb},
        "kubernetes": {
            "audit": {
                "stage": "ResponseComplete",
                "verb": verb,
                "objectRef": object_ref,
                "annotations": {"authorization_k8s_io/decision": decision},
                "requestObject": {"spec": {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]}},
            }
        },
    }


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        (["busybox"], True),
        (["nginx:1.25", "busybox:1.36"], True),
        (["ubuntu:22.04"], True),
        (["ubuntu"], False),  # the rule wants a tag: `ubuntu\:*`
        (["docker.io/nicolaka/netshoot:latest"], True),
        (["registry.example/curlimages/curl:8.5.0"], True),
        (["nginx:1.25"], False),
        (["Busybox"], False),  # case-sensitive, as on keyword fields
    ],
)
def test_debug_image_seed_rule_on_pod_create(images, expected):
    rule = compile_query(DEBUG_IMAGE_POD_QUERY)
    assert rule(_audit_document(verb="create", resource="pods", images=images)) is expected


def test_debug_image_seed_rule_needs_an_allowed_create():
    rule = compile_query(DEBUG_IMAGE_POD_QUERY)
    assert not rule(_audit_document(verb="create", resource="pods", images=["busybox"], decision="forbid"))
    assert not rule(_audit_document(verb="update", resource="pods", images=["busybox"]))


def test_exec_seed_rule():
    rule = compile_query(EXEC_INTO_POD_QUERY)
    assert rule(_audit_document(verb="create", resource="pods", subresource="exec"))
    assert not rule(_audit_document(verb="create", resource="pods", subresource="attach"))
    assert not rule(_audit_document(verb="create", resource="pods"))
    assert rule.fields == frozenset({
        "event.dataset",
        "kubernetes.audit.annotations.authorization_k8s_io/decision",
        "kubernetes.audit.verb",
        "kubernetes.audit.objectRef.resource",
        "kubernetes.audit.objectRef.subresource",
    })


def test_exec_seed_rule_on_flat_dotted_keys():
    # The same event as a flat document, as some exporters write it.
    document = {
        "event.dataset": "kubernetes.audit_logs",
        "kubernetes.audit.annotations.authorization_k8s_io/decision": "allow",
        "kubernetes.audit.verb": "create",
        "kubernetes.audit.objectRef": {"resource": "pods", "subresource": "exec"},
    }
    assert compile_query(EXEC_INTO_POD_QUERY)(document)


# --- the whole corpus as one generated program ----------------------------------------------------


def test_generated_code_compiles_the_whole_corpus_with_the_closures_verdicts():
    rules = _corpus_queries()
    nodes = [parse(rule["query"]) for rule in rules]
    program = compile_program(nodes)
    closures = [compile_query(node) for node in nodes]
    rng = random.Random(729)
    documents: list[dict] = [{}]
    for node in nodes:  # for each query a document it matches, and a near miss
        document = matching_document(node, base={}, rng=rng)
        documents += [document, near_miss(document, node, rng=rng)]
    matched = 0
    for document in documents:
        values = program.values(document)
        verdicts = [function(values) for function in program.functions]
        assert verdicts == [closure(document) for closure in closures]
        matched += sum(verdicts)
    assert matched >= len(nodes)  # the documents do match: the comparison is not all False
