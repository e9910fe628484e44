"""The rule index never changes what matches, only how much is evaluated."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.documents import document_from_admission_review, document_from_audit_event
from gatewatch.engine import RuleEngine
from gatewatch.kql import parse
from gatewatch.prefilter import ABSENT, RuleIndex, required_values
from gatewatch.rules import load_rules

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RESOURCE = "kubernetes.audit.objectRef.resource"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("kubernetes.audit.objectRef.resource:pods", {"pods"}),
        ('x:1 and kubernetes.audit.objectRef.resource:("pods" or deployments)', {"pods", "deployments"}),
        ("kubernetes.audit.objectRef.resource:pods or x:1", None),
        ("not kubernetes.audit.objectRef.resource:pods", None),
        ("kubernetes.audit.objectRef.resource:pod*", None),
        ("kubernetes.audit.objectRef.resource:10", None),  # also matches the number 10
        ("kubernetes.audit.objectRef.resource:pods and kubernetes.audit.objectRef.resource:(pods or jobs)", {"pods"}),
        ("x:1 and not kubernetes.audit.objectRef.resource:*", {"absent"}),
        ("not kubernetes.audit.objectRef.resource:* or kubernetes.audit.objectRef.resource:pods", {"absent", "pods"}),
        ("not (kubernetes.audit.objectRef.resource:*)", {"absent"}),
        ("not kubernetes.audit.objectRef.resource:* and kubernetes.audit.objectRef.resource:pods", set()),
    ],
)
def test_required_values(query: str, expected: set[str] | None) -> None:
    found = required_values(parse(query), RESOURCE)
    readable = None if found is None else {"absent" if value is ABSENT else value for value in found}
    assert readable == expected


def naive_matches(ruleset, document) -> list[str]:
    return [r.id for r in ruleset.rules if r.enabled and r.matcher(document) and not r.is_excepted(document)]


def example_documents() -> list[dict]:
    documents = [
        document_from_audit_event(json.loads(line))
        for line in (EXAMPLES / "audit" / "audit.jsonl").read_text().splitlines()
        if line.strip()
    ]
    for review in (EXAMPLES / "reviews").glob("*.json"):
        documents.append(document_from_admission_review(json.loads(review.read_text())))
    return documents


def test_index_agrees_with_evaluating_every_rule_on_the_examples() -> None:
    ruleset = load_rules()
    engine = RuleEngine(ruleset)
    documents = example_documents()
    assert any(naive_matches(ruleset, d) for d in documents)
    for document in documents:
        assert [m.rule.id for m in engine.evaluate(document, new_terms=False)] == naive_matches(ruleset, document)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    resource=st.one_of(st.none(), st.sampled_from(["pods", "secrets", "Pods", "pods/exec", ""]), st.integers(0, 3),
                       st.lists(st.sampled_from(["pods", "jobs"]), max_size=3)),
    verb=st.one_of(st.none(), st.sampled_from(["create", "get", "patch", "update", "list"])),
    subresource=st.sampled_from([None, "exec", "attach", "ephemeralcontainers", "status", "", [], ["status"]]),
)
def test_index_agrees_with_evaluating_every_rule(resource, verb, subresource) -> None:
    ruleset = load_rules()
    audit = {
        "annotations": {"authorization_k8s_io/decision": "allow"},
        "stage": "ResponseComplete",
        "objectRef": {"resource": resource, "subresource": subresource, "namespace": "default"},
        "verb": verb,
        "requestObject": {"spec": {"containers": [{"image": "busybox:1.36"}]}},
    }
    document = {
        "event": {"dataset": "kubernetes.audit_logs"},
        "kubernetes": {"audit": audit},
        "user": {"name": "alice"},
        "gatewatch": {"images": [{"repository": "library/busybox", "name": "busybox"}]},
    }
    engine = RuleEngine(ruleset)
    assert [m.rule.id for m in engine.evaluate(document, new_terms=False)] == naive_matches(ruleset, document)


def test_unconstrained_rules_are_always_candidates() -> None:
    nodes = [parse("a:1"), parse("kubernetes.audit.objectRef.resource:pods")]
    index = RuleIndex(["free", "pods-only"], nodes)
    assert index.candidates({"kubernetes": {"audit": {"objectRef": {"resource": "secrets"}}}}) == ("free",)
    assert index.candidates({"kubernetes": {"audit": {"objectRef": {"resource": "pods"}}}}) == ("free", "pods-only")
    assert index.candidates({}) == ("free",)


# --- the raw-event check replay uses before building a document -----------------

# Shapes an objectRef.resource / verb can take in a log line, odd ones included:
# absent, null, lists, numbers, and keys written with dots (which field paths
# also resolve).
RAW_VALUES = st.one_of(
    st.none(),
    st.sampled_from(["pods", "secrets", "configmaps", "create", "get", "list", "patch", "update", "", "Pods"]),
    st.integers(0, 3),
    st.lists(st.sampled_from(["pods", "get", "create"]), max_size=2),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    resource=RAW_VALUES,
    verb=RAW_VALUES,
    subresource=st.sampled_from([None, "exec", "attach", "ephemeralcontainers", "status"]),
    dotted_resource=st.booleans(),
    object_ref_absent=st.booleans(),
)
def test_raw_audit_event_gives_the_candidates_of_its_document(
    resource, verb, subresource, dotted_resource, object_ref_absent
) -> None:
    # Default rules plus ones the index cannot narrow (no resource/verb constraint,
    # a wildcard, a negation): those must stay candidates of every event.
    rules = [*load_rules().rules]
    nodes = [rule.matcher.node for rule in rules] + [
        parse('user.name:"bob"'),
        parse("kubernetes.audit.objectRef.resource:pod*"),
        parse("not kubernetes.audit.verb:get"),
        parse("kubernetes.audit.verb:(get or list) and kubernetes.audit.objectRef.resource:secrets"),
    ]
    index = RuleIndex(list(range(len(nodes))), nodes)
    event: dict = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": verb, "stage": "ResponseComplete"}
    if dotted_resource:
        event["objectRef.resource"] = resource
    if not object_ref_absent:
        event["objectRef"] = {"resource": None if dotted_resource else resource, "subresource": subresource}
    document = {"kubernetes": {"audit": event}, "event": {"dataset": "kubernetes.audit_logs"}}
    assert index.candidates_for_audit_event(event) == index.candidates(document)
    assert {len(rules), len(rules) + 1, len(rules) + 2} <= set(index.candidates_for_audit_event(event))


def test_raw_audit_event_check_agrees_with_the_built_document_on_the_examples() -> None:
    ruleset = load_rules()
    engine = RuleEngine(ruleset)
    lines = [line for line in (EXAMPLES / "audit" / "audit.jsonl").read_text().splitlines() if line.strip()]
    skipped = 0
    for line in lines:
        event = json.loads(line)
        document = document_from_audit_event(event)
        if not engine.may_match_audit_event(event):
            skipped += 1
            assert naive_matches(ruleset, document) == []
    assert skipped, "the example log holds reads no default rule can match"


def test_a_rule_for_pods_themselves_is_no_candidate_for_their_subresources() -> None:
    # `not objectRef.subresource:*`: kubelets' pods/status patches (most pod writes in a
    # cluster) never reach the debug-image rule, so replay neither evaluates nor remembers them.
    engine = RuleEngine(load_rules())
    status_patch = {"verb": "patch", "objectRef": {"resource": "pods", "subresource": "status", "namespace": "a"}}
    pod_patch = {"verb": "patch", "objectRef": {"resource": "pods", "namespace": "a"}}
    assert not engine.may_match_audit_event(status_patch)
    assert engine.may_match_audit_event(pod_patch)


# --- what a candidate is left to evaluate (residual_query) ------------------------

INDEX_QUERIES = [
    'kubernetes.audit.objectRef.resource:"pods" and kubernetes.audit.verb:("create" or "update" or "patch") and x:1',
    "kubernetes.audit.objectRef.resource:pods and (not kubernetes.audit.objectRef.subresource:* "
    "or kubernetes.audit.objectRef.subresource:ephemeralcontainers) and x:1",
    "kubernetes.audit.verb:create and kubernetes.audit.verb:(create or get)",
    "kubernetes.audit.objectRef.resource:pods",
    "kubernetes.audit.objectRef.resource:10 and x:1",  # not plain: left to the query
    "kubernetes.audit.objectRef.resource:pods or x:1",
    "not kubernetes.audit.verb:get and kubernetes.audit.objectRef.resource:pods",
    "x:1 and not kubernetes.audit.objectRef.subresource:*",
]


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    query=st.sampled_from(INDEX_QUERIES),
    resource=RAW_VALUES,
    verb=RAW_VALUES,
    subresource=st.one_of(st.none(), st.sampled_from(["exec", "ephemeralcontainers", ""]),
                          st.lists(st.sampled_from(["exec", "status"]), max_size=2)),
    x=st.sampled_from([None, 1, "1", 2]),
)
def test_a_candidate_with_exact_index_values_matches_its_residual_query_as_its_query(
    query, resource, verb, subresource, x
) -> None:
    from gatewatch.kql import compile_query
    from gatewatch.prefilter import residual_query

    node = parse(query)
    index = RuleIndex(["rule"], [node])
    document = {"x": x, "kubernetes": {"audit": {"verb": verb, "objectRef": {"resource": resource,
                                                                              "subresource": subresource}}}}
    candidates, exact = index.lookup(document)
    if candidates and exact:
        assert compile_query(residual_query(node))(document) == compile_query(node)(document)
    elif not candidates:
        assert not compile_query(node)(document)


def test_the_residual_of_a_pod_security_rule_is_its_pod_condition() -> None:
    from gatewatch.kql import to_kql
    from gatewatch.prefilter import residual_query
    from gatewatch.rules.packs import PackSelection, load_ruleset

    rule = load_ruleset([], packs=[PackSelection("pod-security-baseline")]).get("pss-baseline-privileged-containers")
    assert rule is not None
    assert to_kql(residual_query(rule.matcher.node)) == (
        'gatewatch.containers:* and gatewatch.containers:{ securityContext.privileged:"true" }')
