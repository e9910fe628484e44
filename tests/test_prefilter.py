"""The rule index never changes what matches, only how much is evaluated."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.documents import document_from_admission_review, document_from_audit_event
from gatewatch.engine import RuleEngine
from gatewatch.kql import And, Exists, Nested, Not, Or, Range, Term, Wildcard, compile_query, parse, to_kql
from gatewatch.prefilter import REQUEST_FIELDS, RuleIndex, requirements
from gatewatch.rules import load_rules
from gatewatch.rules.model import Rule, RuleSet, RuleType, Severity

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RESOURCE = "kubernetes.audit.objectRef.resource"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("kubernetes.audit.objectRef.resource:pods", {"pods"}),
        ('x:1 and kubernetes.audit.objectRef.resource:("pods" or deployments)', {"pods", "deployments"}),
        ("kubernetes.audit.objectRef.resource:pods or x:1", None),
        ("not kubernetes.audit.objectRef.resource:pods", None),
        ("kubernetes.audit.objectRef.resource:pod*", {"pod*"}),
        ("kubernetes.audit.objectRef.resource:10", {"10"}),  # the number 10 too: the compiler's test decides
        ("kubernetes.audit.objectRef.resource:pods and kubernetes.audit.objectRef.resource:(pods or jobs)", {"pods"}),
        ("x:1 and not kubernetes.audit.objectRef.resource:*", {"ABSENT"}),
        ("not kubernetes.audit.objectRef.resource:* or kubernetes.audit.objectRef.resource:pods", {"ABSENT", "pods"}),
        ("not (kubernetes.audit.objectRef.resource:*)", {"ABSENT"}),
        ("kubernetes.audit.objectRef.resource:* and x:1", {"PRESENT"}),
        ("not (not kubernetes.audit.objectRef.resource:pods)", {"pods"}),
        ("not (kubernetes.audit.objectRef.resource:* or x:1)", {"ABSENT"}),
        ("not (kubernetes.audit.objectRef.resource:pods and x:1)", None),
        ("kubernetes.audit.objectRef.resource > a", None),
        # A nested query: what its inner query requires of one element, on the flattened path.
        ("kubernetes.audit:{ objectRef.resource:pods }", {"pods"}),
        ("kubernetes.audit:{ objectRef.resource:* and x:1 }", {"PRESENT"}),
        # Not an absence: another element may have what this one lacks.
        ("kubernetes.audit:{ not objectRef.resource:* }", None),
        ("kubernetes.audit:{ not objectRef.resource:pods }", None),
        ("pods", None),  # free text
        ("(kubernetes.audit.objectRef.resource:pods and x:1) or (kubernetes.audit.objectRef.resource:jobs and y:2)",
         {"pods", "jobs"}),
    ],
)
def test_requirements(query: str, expected: set[str] | None) -> None:
    found = requirements(parse(query)).get(RESOURCE)
    readable = None if found is None else {_readable(atom) for atom in found}
    assert readable == expected


def _readable(atom) -> str:
    if isinstance(atom, Term):
        return atom.value
    if isinstance(atom, Wildcard):
        return "*".join(atom.parts)
    return repr(atom)


def test_requirements_on_several_fields() -> None:
    found = requirements(parse(
        'kubernetes.audit.verb:create and kubernetes.audit.objectRef.namespace:team-a and user.name:(alice or bob) '
        'and container.image.name:busybox* and not kubernetes.audit.objectRef.subresource:*'))
    assert {field: {_readable(atom) for atom in atoms} for field, atoms in found.items()} == {
        "kubernetes.audit.verb": {"create"},
        "kubernetes.audit.objectRef.namespace": {"team-a"},
        "user.name": {"alice", "bob"},
        "container.image.name": {"busybox*"},
        "kubernetes.audit.objectRef.subresource": {"ABSENT"},
    }


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


DEFAULT_RULES = load_rules()
DEFAULT_ENGINE = RuleEngine(DEFAULT_RULES)  # evaluate(new_terms=False) keeps no state between examples


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    resource=st.one_of(st.none(), st.sampled_from(["pods", "secrets", "Pods", "pods/exec", ""]), st.integers(0, 3),
                       st.lists(st.sampled_from(["pods", "jobs"]), max_size=3)),
    verb=st.one_of(st.none(), st.sampled_from(["create", "get", "patch", "update", "list"])),
    subresource=st.sampled_from([None, "exec", "attach", "ephemeralcontainers", "status", "", [], ["status"]]),
)
def test_index_agrees_with_evaluating_every_rule(resource, verb, subresource) -> None:
    ruleset, engine = DEFAULT_RULES, DEFAULT_ENGINE
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
    assert [m.rule.id for m in engine.evaluate(document, new_terms=False)] == naive_matches(ruleset, document)


def test_unconstrained_rules_are_always_candidates() -> None:
    nodes = [parse("not a:1"), parse("kubernetes.audit.objectRef.resource:pods"), parse("a:1")]
    index = RuleIndex(["free", "pods-only", "a-only"], nodes)
    assert index.candidates({"kubernetes": {"audit": {"objectRef": {"resource": "secrets"}}}}) == ("free",)
    assert index.candidates({"kubernetes": {"audit": {"objectRef": {"resource": "pods"}}}}) == ("free", "pods-only")
    assert index.candidates({"a": 1}) == ("free", "a-only")  # `a:1` matches the number: the compiler's test decides
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
    # Default rules plus ones on fields the raw event cannot answer for (user.name,
    # the rewritten annotations), a prefix, a negation.
    rules = [*load_rules().rules]
    nodes = [rule.matcher.node for rule in rules] + [
        parse('user.name:"bob"'),
        parse("kubernetes.audit.objectRef.resource:pod*"),
        parse("not kubernetes.audit.verb:get"),
        parse("kubernetes.audit.verb:(get or list) and kubernetes.audit.objectRef.resource:secrets"),
        parse("kubernetes.audit.annotations.authorization_k8s_io/decision:allow"),
    ]
    index = RuleIndex(list(range(len(nodes))), nodes)
    event: dict = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": verb, "stage": "ResponseComplete"}
    if dotted_resource:
        event["objectRef.resource"] = resource
    if not object_ref_absent:
        event["objectRef"] = {"resource": None if dotted_resource else resource, "subresource": subresource}
    document = {"kubernetes": {"audit": event}, "event": {"dataset": "kubernetes.audit_logs"}}
    from_event, from_document = set(index.candidates_for_audit_event(event)), set(index.candidates(document))
    assert from_document <= from_event
    # Rules that require only fields the raw event holds as the document does get the same answer.
    audit_only = {
        position for position, node in enumerate(nodes)
        if all(field.startswith("kubernetes.audit.")
               and field.removeprefix("kubernetes.audit.").split(".")[0] in REQUEST_FIELDS
               for field in requirements(node))
    }
    assert from_event & audit_only == from_document & audit_only
    # user.name and annotations are not read from the raw event; `not` requires nothing.
    assert {len(rules), len(rules) + 2, len(rules) + 4} <= from_event


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


# --- any field, any query: the index never leaves out a rule that matches --------------------

INDEXED_FIELDS = [
    "kubernetes.audit.verb", "kubernetes.audit.objectRef.namespace", "kubernetes.audit.objectRef.subresource",
    "user.name", "container.image.name",
]
WORDS = ["create", "get", "team-a", "team-b", "alice", "busybox:1.36", "10", "true", "10.0.0.1", "", "Alice"]
PATTERNS = [("busy", ""), ("team-", ""), ("", ":1.36"), ("", "a", ""), ("1", ""), ("al", "ce"), ("", "")]


def _leaf(rng: random.Random, fields: list[str] = INDEXED_FIELDS):
    field = rng.choice(fields)
    kind = rng.randrange(7)
    if kind <= 1:
        return Term(field, rng.choice(WORDS))
    if kind == 2:
        return Wildcard(field, rng.choice(PATTERNS))
    if kind == 3:
        return Term(field, rng.choice(WORDS).upper(), True) if rng.random() < 0.5 else \
            Wildcard(field, tuple(part.upper() for part in rng.choice(PATTERNS)), True)
    if kind == 4:
        return Exists(field)
    if kind == 5:
        return Range(field, rng.choice(["<", ">="]), rng.choice(["5", "m"]))
    return Term(None, rng.choice(WORDS)) if rng.random() < 0.3 else Not(Exists(field))


def random_query(rng: random.Random, depth: int = 0):
    if depth >= 3 or rng.random() < 0.35:
        return _leaf(rng)
    kind = rng.choice(["and", "and", "or", "not"])
    if kind == "not":
        return Not(random_query(rng, depth + 1))
    items = tuple(random_query(rng, depth + 1) for _ in range(rng.randint(2, 4)))
    return And(items) if kind == "and" else Or(items)


queries = st.randoms(use_true_random=False).map(random_query)
field_values = st.one_of(
    st.none(), st.sampled_from(WORDS), st.integers(0, 12), st.booleans(), st.just({}), st.just({"x": 1}),
    st.lists(st.one_of(st.sampled_from(WORDS), st.integers(9, 11), st.none()), max_size=3),
)


@st.composite
def documents(draw) -> dict:
    document: dict = {}
    for field in INDEXED_FIELDS:
        value = draw(field_values)
        if draw(st.integers(0, 9)) == 0:
            document[field] = value  # a flat dotted key, as some exporters write
            continue
        *parents, last = field.split(".")
        node = document
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return document


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.lists(queries, min_size=1, max_size=8), documents())
def test_every_matching_rule_is_a_candidate(nodes, document) -> None:
    index = RuleIndex(list(range(len(nodes))), nodes)
    candidates = index.candidates(document)
    matching = [position for position, node in enumerate(nodes) if compile_query(node)(document)]
    assert set(matching) <= set(candidates), [to_kql(nodes[position], strict=False) for position in matching]
    assert list(candidates) == sorted(candidates)  # rule-set order


def test_a_nested_query_requires_an_object_in_its_field() -> None:
    found = requirements(parse("spec.containers:{ not privileged:true }"))
    assert {field: {repr(atom) for atom in atoms} for field, atoms in found.items()} == {
        "spec.containers": {"ELEMENT"}}
    index = RuleIndex(["nested"], [parse("spec.containers:{ not privileged:true }")])
    assert index.candidates({"spec": {"containers": [{}]}}) == ("nested",)  # {} is an element, absent to `:*`
    assert index.candidates({"spec": {"containers": ["x"]}}) == ()
    assert index.candidates({"spec": {}}) == ()


# Nested queries over a list of objects whose elements may be anything a document holds.
NESTED_FIELDS = ["name", "image", "securityContext.privileged", "ports.hostPort"]


def random_nested_query(rng: random.Random, depth: int = 0):
    if depth >= 3 or rng.random() < 0.35:
        leaf = _leaf(rng) if rng.random() < 0.3 else _leaf(rng, NESTED_FIELDS)
        return Nested("spec.containers", leaf) if depth == 0 or rng.random() < 0.3 else leaf
    kind = rng.choice(["and", "and", "or", "not", "nested"])
    if kind == "nested":
        return Nested("spec.containers", random_nested_query(rng, depth + 1))
    if kind == "not":
        return Not(random_nested_query(rng, depth + 1))
    items = tuple(random_nested_query(rng, depth + 1) for _ in range(rng.randint(2, 4)))
    return And(items) if kind == "and" else Or(items)


element_values = st.one_of(
    st.none(), st.sampled_from(WORDS), st.booleans(), st.just({}), st.just([]),
    st.lists(st.sampled_from(WORDS), max_size=2),
)


@st.composite
def container_lists(draw):
    """spec.containers: objects (empty ones too), scalars among them, nested lists, dotted keys."""
    elements = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            elements.append(draw(st.sampled_from(WORDS)))
            continue
        element: dict = {}
        for field in NESTED_FIELDS:
            if draw(st.booleans()):
                continue
            value = draw(element_values)
            if "." in field and draw(st.integers(0, 3)) == 0:
                element[field] = value  # a flat dotted key
            else:
                *parents, last = field.split(".")
                node = element
                for part in parents:
                    node = node.setdefault(part, {})
                node[last] = value
        elements.append([element] if kind == 1 else element)
    return elements


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(st.lists(st.randoms(use_true_random=False).map(random_nested_query), min_size=1, max_size=8),
       container_lists(), documents())
def test_every_rule_matching_in_a_nested_query_is_a_candidate(nodes, containers, document) -> None:
    document = {**document, "spec": {"containers": containers}}
    index = RuleIndex(list(range(len(nodes))), nodes)
    candidates = index.candidates(document)
    matching = [position for position, node in enumerate(nodes) if compile_query(node)(document)]
    assert set(matching) <= set(candidates), [to_kql(nodes[position], strict=False) for position in matching]


def _rule(position: int, node, *, exceptions: tuple = ()) -> Rule:
    return Rule(
        id=f"rule-{position:04d}", name=f"rule {position}", description="", severity=Severity.LOW, risk_score=1,
        type=RuleType.QUERY, query=to_kql(node, strict=False), matcher=compile_query(node),
        exceptions=tuple(to_kql(e, strict=False) for e in exceptions),
        exception_matchers=tuple(compile_query(e) for e in exceptions),
    )


def thousand_rules() -> RuleSet:
    """1,000 rules: the shipped ones, copies bound to one namespace or user each (as the
    benchmarks' generated sets are), random queries over the indexed fields, some with exceptions."""
    rng = random.Random(1000)
    shipped = [rule.matcher.node for rule in load_rules().rules]
    nodes = list(shipped)
    for position in range(300):
        bound = Term("kubernetes.audit.objectRef.namespace", f"team-{position % 3}") if position % 2 else \
            Term("user.name", rng.choice(["alice", "bob", "alice@example.com"]))
        nodes.append(And((shipped[position % len(shipped)], bound)))
    while len(nodes) < 1000:
        nodes.append(random_query(rng))
    rules = [
        _rule(position, node, exceptions=(random_query(rng),) if position % 7 == 0 else ())
        for position, node in enumerate(nodes)
    ]
    return RuleSet(name="thousand", version=1, rules=tuple(rules))


THOUSAND = thousand_rules()
THOUSAND_ENGINE = RuleEngine(THOUSAND)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(documents(), st.sampled_from(example_documents()))
def test_index_agrees_with_evaluating_every_rule_of_a_thousand(random_document, example) -> None:
    for document in (random_document, example, {**example, **random_document}):
        found = [match.rule.id for match in THOUSAND_ENGINE.evaluate(document, new_terms=False)]
        assert found == naive_matches(THOUSAND, document)


def test_candidates_grow_with_the_rules_that_could_match_not_with_the_rule_count() -> None:
    shipped = [rule.matcher.node for rule in load_rules().rules]
    elsewhere = [And((shipped[position % len(shipped)], Term("kubernetes.audit.objectRef.namespace", f"team-{position}")))
                 for position in range(900)]
    small, large = RuleIndex(list(range(5)), shipped), RuleIndex(list(range(905)), [*shipped, *elsewhere])
    for document in example_documents():
        assert large.candidates(document) == small.candidates(document)
    team_7 = example_documents()[-1]
    team_7["kubernetes"]["audit"]["objectRef"]["namespace"] = "team-7"
    assert set(large.candidates(team_7)) - set(small.candidates(team_7)) <= {5 + 7}


def test_a_field_with_several_values_can_meet_two_requirements_at_once() -> None:
    index = RuleIndex(["both"], [parse("user.name:alice and user.name:bob and kubernetes.audit.verb:(get or list)")])
    document = {"user": {"name": ["alice", "bob"]}, "kubernetes": {"audit": {"verb": ["list", "watch"]}}}
    assert compile_query("user.name:alice and user.name:bob")(document)
    assert index.candidates(document) == ("both",)
    assert index.candidates({"user": {"name": ["carol"]}, "kubernetes": {"audit": {"verb": "list"}}}) == ()


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(
    stage=st.sampled_from(["RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"]),
    request_object=st.one_of(st.none(), st.just({"kind": "Pod", "spec": {"containers": [{"image": "busybox:1"}]}})),
    code=st.sampled_from([None, 200, 403]),
    decision=st.sampled_from([None, "allow", "forbid"]),
)
def test_every_stage_of_a_request_gets_the_same_raw_event_answer(stage, request_object, code, decision) -> None:
    # Replay skips a stage no rule can match; a skipped ResponseComplete could not overrule
    # an earlier stage that matched, so the answer must not depend on what differs by stage.
    nodes = [rule.matcher.node for rule in load_rules().rules] + [
        parse("kubernetes.audit.stage:ResponseStarted and not kubernetes.audit.requestObject.kind:Pod"),
        parse("kubernetes.audit.responseStatus.code:403 and kubernetes.audit.verb:create"),
    ]
    index = RuleIndex(list(range(len(nodes))), nodes)
    request = {"auditID": "a-1", "verb": "create", "objectRef": {"resource": "pods", "namespace": "a"},
               "user": {"username": "alice"}}
    first = {**request, "stage": "RequestReceived"}
    later = {**request, "stage": stage, "requestObject": request_object,
             "responseStatus": None if code is None else {"code": code},
             "annotations": None if decision is None else {"authorization.k8s.io/decision": decision}}
    assert index.candidates_for_audit_event(later) == index.candidates_for_audit_event(first)
