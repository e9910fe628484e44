"""The hot path of an evaluated event, held to its general path on varied and odd inputs.

Each fast path gives the same answer as the code it short-cuts, byte for byte:

- ``_build_document`` (its helper calls inlined, ``_images`` without an old spec, the exec options
  remembered per query) against the mapping as it was before (tests/reference_mapping.py);
- ``audit_event_view``'s generated shape check against the careful path (``_careful_view``);
- a field path's straight-line resolver (a list of dicts before the last segment) against the walk
  that locates every value (``located_values``);
- the rule index's inlined ``_mask`` and the engine's shared Matches and new_terms keys against
  the index's own ``admitted`` and the key's formula.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference_mapping
from gatewatch.documents import document_from_audit_event
from gatewatch.documents.container_images import _images
from gatewatch.documents.mapping import _build_document
from gatewatch.engine import RuleEngine, new_terms_key
from gatewatch.kql import parse
from gatewatch.kql.fields import FieldValues, compile_path, located_values
from gatewatch.prefilter import RuleIndex
from gatewatch.rules import load_rules
from gatewatch.shapes import _careful_view, audit_event_refusal, audit_event_view

# --- inputs: mostly shaped like an audit event, with odd values anywhere --------------------------

ODD_TEXT = ["", "pods", "exec", "attach", "ephemeralcontainers", "status", "allow", "forbid", "é\u00e9", "\ud800",
            "a.b.c", "10.0.0.1", "::1", "203.0.113.7", "not an ip", "alpine:3.20", "nicolaka/netshoot:v0.13",
            "busybox@sha256:" + "a" * 64, "Upper:Tag!", "kube-system", "system:masters", "日本"]
TEXT = st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=5))
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.just(2**70), st.just(-(2**64) - 1),
                   st.floats(allow_nan=False), TEXT)
# Fresh containers (st.builds), never st.just([]): odd_event writes into what it draws.
WRONG = st.one_of(SCALAR, st.builds(list), st.builds(dict), st.lists(SCALAR, max_size=2),
                  st.dictionaries(TEXT, SCALAR, max_size=2), st.builds(lambda: [None]))


def deep(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = {"d": value} if level % 2 else [value]
    return value


def maybe(right: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``right`` mostly, now and then a value of a wrong type (or null)."""
    return st.one_of(right, right, right, right, WRONG)


def obj(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """An object with some of ``fields`` (and now and then an unknown key)."""
    return st.builds(lambda known, more: {**more, **known}, st.fixed_dictionaries({}, optional=fields),
                     st.dictionaries(st.sampled_from(["x", "a.b"]), WRONG, max_size=1))


def list_or_one(item: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(item, max_size=3), st.lists(item, min_size=1, max_size=3), item)


IMAGE = st.sampled_from(ODD_TEXT[13:19] + ["", "busybox"])
CONTAINER = obj(name=TEXT, image=IMAGE, securityContext=obj(privileged=st.booleans()),
                ports=st.lists(obj(hostPort=st.integers()), max_size=1))
POD = obj(
    kind=st.sampled_from(["Pod", "Deployment"]),
    metadata=obj(name=TEXT, annotations=st.dictionaries(TEXT, TEXT, max_size=3),
                 labels=st.dictionaries(TEXT, TEXT, max_size=3),
                 ownerReferences=list_or_one(obj(kind=TEXT, controller=st.booleans(), name=TEXT))),
    spec=obj(containers=list_or_one(CONTAINER), initContainers=list_or_one(CONTAINER),
             ephemeralContainers=list_or_one(CONTAINER), volumes=st.lists(obj(hostPath=obj(path=TEXT)), max_size=1)),
)
PATCH = st.lists(obj(op=st.sampled_from(["add", "replace", "remove", "copy"]),
                     path=st.sampled_from(["/spec/containers/0/image", "/spec/containers/-", "/spec",
                                           "/metadata/labels", ""]),
                     value=st.one_of(IMAGE, CONTAINER, obj(containers=st.lists(CONTAINER, max_size=2)))), max_size=3)
USER = obj(username=TEXT, uid=TEXT, groups=st.lists(TEXT, max_size=2), extra=st.dictionaries(
    TEXT, st.lists(TEXT, max_size=2), max_size=2))
URI = st.one_of(
    st.sampled_from(["/api/v1/namespaces/a/pods/p/exec?command=sh&command=-c&container=app&stdin=true&tty=1",
                     "/api/v1/namespaces/a/pods/p/attach?container=%E9&stdin=T&tty=false#frag",
                     "/api/v1/namespaces/a/pods/p/exec?command=a+b&command=%zz&stdin&tty=True",
                     "/api/v1/namespaces/a/pods/p/exec", "//[?command=x", ""]),
    st.text(alphabet="?&=%+#/abc1", max_size=12))
# Every field of the shape policy's type (as an API server writes them)...
WELL_TYPED = st.builds(
    lambda required, optional: {**required, **optional},
    st.fixed_dictionaries({"kind": st.just("Event"), "apiVersion": st.sampled_from(["audit.k8s.io/v1",
                                                                                  "audit.k8s.io/v1beta1"]),
                           "verb": st.sampled_from(["create", "update", "patch", "get", "delete"])}),
    st.fixed_dictionaries({}, optional={
        "level": st.just("Request"),
        "annotations": st.dictionaries(st.sampled_from(["authorization.k8s.io/decision", "a.b.c", "x"]),
                                       st.sampled_from(["allow", "forbid", "é"]), max_size=3),
        "user": USER,
        "impersonatedUser": USER,
        "objectRef": obj(resource=st.sampled_from(["pods", "deployments", ""]),
                         subresource=st.sampled_from(["", "exec", "attach", "ephemeralcontainers", "status"]),
                         name=TEXT, namespace=TEXT),
        "requestObject": st.one_of(POD, POD, POD, PATCH),
        "responseObject": st.builds(lambda: {"kind": "Pod"}),
        "responseStatus": obj(code=st.one_of(st.integers(), st.just(2**70))),
        "requestURI": URI,
        "sourceIPs": st.lists(TEXT, max_size=2),
        "userAgent": TEXT,
        "stageTimestamp": TEXT,
        "requestReceivedTimestamp": TEXT,
        "deep": st.integers(min_value=1, max_value=60).map(deep),
    }),
)


def _places(value: Any, found: list[tuple[int, Any, Any]], depth: int = 1) -> list[tuple[int, Any, Any]]:
    """Every (depth, container, key or index) in ``value``: where an odd value can be put."""
    if isinstance(value, dict):
        for key, item in value.items():
            found.append((depth, value, key))
            _places(item, found, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.append((depth, value, index))
            _places(item, found, depth + 1)
    return found


@st.composite
def odd_event(draw: st.DrawFn) -> dict[str, Any]:
    """A well-typed event with a few places made odd (now and then many): a wrong type, a null, a Mapping
    that is not a dict, a single value where a list is expected, a list where a single value is."""
    event = draw(WELL_TYPED)
    for _ in range(draw(st.one_of(st.integers(min_value=1, max_value=3), st.just(10)))):
        places = [(depth, where, key) for depth, where, key in _places(event, [])
                  if where is not event or key not in ("kind", "apiVersion", "verb")]
        deepest = draw(st.sampled_from([2, 3, 100]))  # the shape policy's fields are near the top: mostly there
        places = [place for place in places if place[0] <= deepest] or places
        if not places:
            break
        _, where, key = draw(st.sampled_from(places))
        current = where[key]
        where[key] = draw(st.one_of(
            WRONG,
            st.just(MappingProxyType(current) if isinstance(current, dict) else current),
            st.just(current[0] if isinstance(current, list) and current else current),
            st.just([current]),
        ))
    return event


EVENT = st.one_of(WELL_TYPED, odd_event(), odd_event())


def canonical(value: Any) -> Any:
    """``value`` with every type and key order spelled out (``==`` alone takes 1 == True and ignores order)."""
    if isinstance(value, Mapping):
        return ("object", type(value).__name__, [(key, canonical(item)) for key, item in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [canonical(item) for item in value])
    return (type(value).__name__, value)


def outcome(function: Any, *args: Any, **kwargs: Any) -> Any:
    """What a call gives: its value (canonical), or the exception it raises (type and words)."""
    try:
        return canonical(function(*args, **kwargs))
    except Exception as error:  # noqa: BLE001 - the two paths must fail alike too
        return ("raised", type(error).__name__, str(error))


# --- the mapping ------------------------------------------------------------------------------------


@settings(max_examples=600, deadline=None)
@given(EVENT, st.booleans())
def test_an_audit_document_is_the_general_mappings(event: dict[str, Any], pod_fields: bool) -> None:
    view = audit_event_view(event).event
    timestamp = view.get("stageTimestamp")
    for mapped in (view, event):  # the view, and the event as it came (odd types reach the mapping)
        assert outcome(_build_document, mapped, source="audit", timestamp=timestamp, object_checked=True,
                       with_pod_fields=pod_fields) == \
            outcome(reference_mapping._build_document, mapped, source="audit", timestamp=timestamp,
                    object_checked=True, with_pod_fields=pod_fields)


@settings(max_examples=400, deadline=None)
@given(EVENT, st.one_of(st.none(), POD), st.sampled_from(["admission", "manifest"]), st.booleans(),
       st.one_of(st.none(), st.sampled_from(["Deployment", "CronJob"])), st.one_of(st.none(), st.booleans()))
def test_an_admission_document_is_the_general_mappings(event: dict[str, Any], old_object: Any, source: str,
                                                        checked: bool, workload_kind: str | None,
                                                        dry_run: bool | None) -> None:
    admission = {"uid": "u-1"} if dry_run is None else {"uid": "u-1", "dryRun": dry_run}
    kwargs = dict(source=source, timestamp="2026-11-01T00:00:00Z",
                  admission=admission if source == "admission" else None, workload_kind=workload_kind, object_field="request.object.", old_object=old_object,
                  object_checked=checked, with_pod_fields=True)
    assert outcome(_build_document, event, **kwargs) == outcome(reference_mapping._build_document, event, **kwargs)


@settings(max_examples=400, deadline=None)
@given(obj(containers=list_or_one(st.one_of(CONTAINER, WRONG, CONTAINER.map(MappingProxyType))),
           initContainers=list_or_one(CONTAINER),
           ephemeralContainers=list_or_one(st.one_of(CONTAINER, WRONG, obj(name=WRONG, image=IMAGE)))))
def test_the_images_of_a_spec_are_the_general_paths(spec: Any) -> None:
    assert outcome(_images, spec) == outcome(reference_mapping._images, spec)


def test_documents_of_one_exec_query_share_no_list() -> None:
    event = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": "create",
             "objectRef": {"resource": "pods", "subresource": "exec", "name": "p"},
             "requestURI": "/api/v1/namespaces/a/pods/p/exec?command=sh&command=-c&stdin=true"}
    first, second = document_from_audit_event(event), document_from_audit_event(event)
    assert first["gatewatch"]["exec"] == {"command": ["sh", "-c"], "container": None, "stdin": True, "tty": False}
    first["gatewatch"]["exec"]["command"].append("mutated")
    assert second["gatewatch"]["exec"]["command"] == ["sh", "-c"]
    assert document_from_audit_event(event)["gatewatch"]["exec"]["command"] == ["sh", "-c"]


# --- the view ---------------------------------------------------------------------------------------


@settings(max_examples=1500, deadline=None)
@given(EVENT)
def test_the_views_fast_path_is_the_careful_path(event: dict[str, Any]) -> None:
    assert audit_event_refusal(event) is None
    fast, careful = audit_event_view(event), _careful_view(event)
    assert canonical(fast.event) == canonical(careful.event)
    assert fast.warnings == careful.warnings


def _pod_create() -> dict[str, Any]:
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": "create", "stage": "ResponseComplete",
            "user": {"username": "alice", "groups": ["a", "b"], "extra": {"k": ["v", "w"]}},
            "sourceIPs": ["10.0.0.1", "10.0.0.2"], "objectRef": {"resource": "pods", "namespace": "prod"},
            "responseStatus": {"code": 201},
            "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": "r"},
            "requestObject": {"metadata": {"labels": {"a": "1", "b": "2"}, "annotations": {"x": "1", "y": "2"}},
                              "spec": {"containers": [{"name": "a", "image": "alpine"}, {"name": "b", "image": "x",
                                                        "env": [{"name": "A"}, {"name": "B"}]}]}}}


@pytest.mark.parametrize("odd", [
    lambda e: e["responseStatus"].update(code="201"),
    lambda e: e["responseStatus"].update(code=True),
    lambda e: e["annotations"].update({"authorization.k8s.io/reason": 1}),
    lambda e: e["user"].update(groups=["a", 2]),
    lambda e: e["user"]["extra"].update(k=["v", None, 3]),
    lambda e: e.update(sourceIPs="10.0.0.1"),
    lambda e: e["objectRef"].update(namespace=["prod"]),
    lambda e: e["requestObject"]["metadata"]["labels"].update(b=2),
    lambda e: e["requestObject"]["metadata"]["annotations"].update(y=None, z=[]),
    lambda e: e["requestObject"]["spec"]["containers"][1].update(image=2**70),
    lambda e: e["requestObject"]["spec"]["containers"][1]["env"].append({"name": 1}),
    lambda e: e["requestObject"]["spec"].update(containers={"name": "c", "image": "busybox"}),
    lambda e: e["requestObject"].update(spec=MappingProxyType(e["requestObject"]["spec"])),
    lambda e: e.update(responseObject=[]),
    lambda e: e.update(requestObject="\ud800"),
], ids=lambda odd: "")
def test_one_odd_field_takes_the_careful_path(odd: Any) -> None:
    event = _pod_create()
    assert audit_event_view(event).event is event and not audit_event_view(event).warnings
    odd(event)
    fast, careful = audit_event_view(event), _careful_view(event)
    assert canonical(fast.event) == canonical(careful.event)
    assert fast.warnings == careful.warnings


# --- field paths ------------------------------------------------------------------------------------

PATHS = ["kubernetes.audit.requestObject.spec.containers.image", "kubernetes.audit.requestObject.spec.containers",
         "gatewatch.images.name", "kubernetes.audit.sourceIPs", "kubernetes.audit.deep.d", "a.b.c", "a.b", "a"]
NODE = st.recursive(st.one_of(SCALAR, st.sampled_from([2**70, "é", "\ud800"])),
                    lambda inner: st.one_of(
                        st.lists(inner, max_size=3),
                        st.dictionaries(st.sampled_from(["a", "b", "c", "b.c", "a.b", "image", "name"]), inner,
                                        max_size=3),
                        st.dictionaries(st.sampled_from(["b", "c", "b.c"]), inner, max_size=2).map(MappingProxyType),
                        st.lists(inner, max_size=2).map(tuple)),
                    max_leaves=12)


@settings(max_examples=600, deadline=None)
@given(EVENT, NODE, st.sampled_from(PATHS))
def test_a_paths_straight_line_resolver_finds_what_the_walk_finds(event: dict[str, Any], node: Any, path: str) -> None:
    document = document_from_audit_event(event, pod_fields=False)
    for value in (document, {"a": node}, {"a": [node, {"b": node}]}, {"a": [{"b": node}, {"b": node, "c": 1}]},
                  {"a": [{"b": node}]}, node):
        assert canonical(compile_path(path)(value)) == canonical([found for _, found in located_values(value, path)])


class _Items(list):  # a list subclass: walked as a list, never taken for a value
    pass


@pytest.mark.parametrize(("document", "expected"), [
    ({"a": [{"b": ("x", ["y", None])}, {"b": "z"}]}, ["x", "y", "z"]),
    ({"a": [{"b": _Items(["x"])}, {"b": {"c": 1}}]}, ["x", {"c": 1}]),
    ({"a": [{"b": "x"}, None, MappingProxyType({"b": 2**70})]}, ["x", 2**70]),
    ({"a": [{"b": None}, {"c": "x"}, {"b": [[["deep"]]]}]}, ["deep"]),
    ({"a": [{"b": "x"}, [{"b": "y"}]]}, ["x", "y"]),
    ({"a": _Items([{"b": "x"}])}, ["x"]),
    ({"a": []}, []),
])
def test_odd_lists_before_the_last_segment(document: dict[str, Any], expected: list[Any]) -> None:
    found = compile_path("a.b")(document)
    assert canonical(found) == canonical(expected) == canonical([value for _, value in located_values(document, "a.b")])


# --- the rule index and the engine --------------------------------------------------------------------

_ENGINE = RuleEngine(load_rules(), settle_heap=False)


# Every kind of requirement the index keeps (present, absent, an object, exact, prefix, tested values).
_QUERIES = ["kubernetes.audit.verb:* and kubernetes.audit.objectRef.resource:pods",
            "not kubernetes.audit.objectRef.subresource:*", "kubernetes.audit.objectRef.subresource:(exec or attach)",
            "kubernetes.audit.user.username:sys*", "kubernetes.audit.verb:create and kubernetes.audit.user.uid:*",
            "kubernetes.audit.requestObject.spec.containers.image:*alpine*", "kubernetes.audit.sourceIPs:10.0.0.0/8",
            "kubernetes.audit.annotations.authorization_k8s_io/decision:allow", "kubernetes.audit.user:{ uid:* }",
            "kubernetes.audit.responseStatus.code:1786 and kubernetes.audit.objectRef.name:*"]
_INDEXES = (_ENGINE._state[1], RuleIndex(list(range(len(_QUERIES))), [parse(query) for query in _QUERIES]))


@settings(max_examples=400, deadline=None)
@given(EVENT)
def test_the_indexs_generated_mask_is_its_fields_admitted(event: dict[str, Any]) -> None:
    document = document_from_audit_event(event, pod_fields=False)
    for index in _INDEXES:
        for fields, subject, mask in ((index._fields, document, index._document_mask),
                                      (index._event_fields, event, index._event_mask)):
            values = FieldValues(subject, index._resolvers)
            expected = index._all
            for field in fields:
                if expected & field.constrained:
                    expected &= field.admitted(FieldValues(subject, index._resolvers)[field.path])
                    if not expected:
                        break
            assert mask(values) == expected


def _reference_key(rule: Any, document: Mapping[str, Any]) -> tuple[str, ...]:
    """new_terms_key as it was written first: every field's values as text, sorted, joined by RS."""
    from gatewatch.kql.fields import field_values

    admission = (document.get("gatewatch") or {}).get("source") == "admission"
    fields = rule.new_terms.admission_fields() if admission else rule.new_terms.fields
    return tuple("\x1e".join(sorted(str(value) for value in field_values(document, field))) for field in fields)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(TEXT, st.integers(), st.just(2**70), st.booleans(), st.floats(allow_nan=False)),
                max_size=3),
       st.sampled_from(["audit", "admission"]))
def test_a_new_terms_key_is_its_formula(values: list[Any], source: str) -> None:
    (rule,) = [rule for rule in _ENGINE.ruleset.rules if rule.new_terms is not None][:1]
    document = {"gatewatch": {"source": source}, "source": {"ip": values}, "user": {"name": values[:1]},
                "user_agent": {"original": values[1:]}}
    expected = _reference_key(rule, document)
    assert new_terms_key(rule, document) == expected
    assert new_terms_key(rule, FieldValues(document, _ENGINE._state[1]._resolvers)) == expected


def test_matches_of_rules_without_new_terms_are_shared_and_equal_to_new_ones() -> None:
    from gatewatch.engine import Match

    event = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": "create", "stage": "ResponseComplete",
             "objectRef": {"resource": "pods", "subresource": "exec", "name": "p"},
             "annotations": {"authorization.k8s.io/decision": "allow"}}
    first = _ENGINE.evaluate(document_from_audit_event(event), new_terms=False)
    second = _ENGINE.evaluate(document_from_audit_event(event), new_terms=False)
    assert first and first == [Match(rule=match.rule) for match in first] == second


@pytest.mark.parametrize("event", [
    {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": "create", "stage": "ResponseComplete",
     "objectRef": {"resource": "pods", "namespace": "prod"}, "sourceIPs": ["10.0.0.1", "10.0.0.2"],
     "userAgent": "kubectl", "user": {"username": "é"}, "annotations": {"authorization.k8s.io/decision": "allow"},
     "requestObject": {"spec": {"containers": [{"name": "a", "image": "alpine:3.20"}]}}},
])
def test_a_new_terms_match_keys_on_its_fields(event: dict[str, Any]) -> None:
    document = document_from_audit_event(event)
    (match,) = [match for match in _ENGINE.evaluate(document, new_terms=False) if match.new_terms_key is not None]
    assert match.new_terms_key == _reference_key(match.rule, document) == ("10.0.0.1\x1e10.0.0.2", "kubectl", "é")
