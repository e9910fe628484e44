"""The strict shape check's fast path (generated code) refuses exactly what the field-naming walk refuses."""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.shapes import CONNECT_OPTIONS, POD, USER_INFO, Leaf, ListOf, ObjectOf, Spec, _problem, problem

WRONG = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=3), st.just([]), st.just({}),
                  st.floats(allow_nan=False))


def shaped(spec: Spec) -> st.SearchStrategy[Any]:
    """Values mostly of ``spec``'s shape, now and then of a wrong type anywhere (a forged review)."""
    if isinstance(spec, Leaf):
        right: st.SearchStrategy[Any] = st.from_type(spec.python_type) if spec.python_type is not str else st.text(max_size=4)
        if spec.python_type is int:
            right = st.integers()
    elif isinstance(spec, ListOf):
        right = st.lists(st.deferred(lambda: shaped(spec.item)), max_size=3)
    else:
        assert isinstance(spec, ObjectOf)
        fields = {key: st.deferred(lambda s=item: shaped(s)) for key, item in spec.fields.items()}
        extra = (st.dictionaries(st.text(max_size=3), st.deferred(lambda: shaped(spec.values)), max_size=2)
                 if spec.values is not None else st.dictionaries(st.text(max_size=3), WRONG, max_size=1))
        right = st.builds(lambda known, more: {**more, **known},
                          st.fixed_dictionaries({}, optional=fields), extra)
        right = st.one_of(right, right.map(lambda d: MappingProxyType(d)))  # a Mapping that is not a dict
    return st.one_of(right, right, right, right, right, right, right, WRONG)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_the_fast_path_agrees_with_the_walk(data: st.DataObject) -> None:
    for spec, where in ((POD, "request.object"), (USER_INFO, "request.userInfo"), (CONNECT_OPTIONS, "request.object")):
        value = data.draw(shaped(spec))
        assert problem(value, spec, where) == _problem(value, spec, where)


def test_a_wrong_type_deep_in_a_pod_is_still_named() -> None:
    pod = {"spec": {"containers": [{"name": "a", "image": "busybox"},
                                   {"name": "b", "securityContext": {"capabilities": {"add": ["NET_ADMIN", 1]}}}]}}
    assert problem(pod, POD, "request.object") == (
        "request.object.spec.containers[1].securityContext.capabilities.add[1]: expected a string, got int")


def test_a_mapping_that_is_not_a_dict_is_an_object() -> None:
    pod: Mapping[str, Any] = MappingProxyType({"spec": MappingProxyType({"containers": []})})
    assert problem(pod, POD, "request.object") is None
