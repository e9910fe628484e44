"""Field path resolution: nested dicts, lists, dotted keys, absent values."""
from __future__ import annotations

import pytest

from gatewatch.kql import field_values
from gatewatch.kql.fields import flattened_fields, leaf_values


def test_nested_dicts():
    assert field_values({"a": {"b": {"c": "x"}}}, "a.b.c") == ["x"]


def test_lists_collect_every_element_and_flatten_nested_lists():
    document = {"spec": {"containers": [{"image": "a"}, {"image": "b"}, {"image": ["c", ["d"]]}]}}
    assert field_values(document, "spec.containers.image") == ["a", "b", "c", "d"]


def test_dotted_key_at_top_level():
    assert field_values({"event.dataset": "kubernetes.audit_logs"}, "event.dataset") == ["kubernetes.audit_logs"]


def test_dotted_key_inside_a_dict():
    document = {"labels": {"app.kubernetes.io/name": "web"}}
    assert field_values(document, "labels.app.kubernetes.io/name") == ["web"]


def test_dotted_key_followed_by_more_segments():
    document = {"kubernetes": {"audit.objectRef": {"resource": "pods"}}}
    assert field_values(document, "kubernetes.audit.objectRef.resource") == ["pods"]


def test_dotted_keys_inside_lists():
    document = {"items": [{"a.b": 1}, {"a": {"b": 2}}]}
    assert field_values(document, "items.a.b") == [1, 2]


@pytest.mark.parametrize("document", [{}, {"a": None}, {"a": {"b": None}}, {"a": []}, {"a": {"b": []}}, {"a": [None]}])
def test_absent_null_and_empty_list_give_no_values(document):
    assert field_values(document, "a.b") == []


def test_scalar_in_the_middle_of_a_path_gives_no_values():
    assert field_values({"a": "text"}, "a.b") == []


def test_objects_are_returned_as_values():
    assert field_values({"a": [{"b": 1}, {"c": 2}]}, "a") == [{"b": 1}, {"c": 2}]


def test_falsy_values_are_present():
    assert field_values({"a": [0, False, ""]}, "a") == [0, False, ""]


def test_leaf_values_and_flattened_fields():
    document = {"a": {"b": [1, {"c": "x"}]}, "d.e": None, "f": True}
    assert leaf_values(document) == [1, "x", True]
    assert list(flattened_fields(document)) == [("a.b", 1), ("a.b.c", "x"), ("f", True)]
