"""Replay remembers the rule index's answer per skimmed event shape; a remembered answer must be the index's own."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.offline.candidates import CandidateMemo
from gatewatch.offline.lines import SKIMMED_FIELDS, SKIMMED_STRUCTS, skim_line

OBJECT_REFS = [
    None,
    {"resource": "pods"},
    {"resource": "pods", "subresource": "exec", "namespace": "team-a"},
    {"resource": "pods", "namespace": "kube-system"},
    {"resource": "secrets", "namespace": "team-a", "name": "db"},
    {"resource": "pods", "shard": "7"},  # a field no ObjectReference has: the skim does not hold it
    {},
]


def index(event: Mapping[str, Any]) -> bool:
    """An index that reads the verb, then objectRef's fields, one by one, as the rule index does."""
    if event.get("verb") not in ("create", "get"):
        return False
    ref = event.get("objectRef", {})
    if ref.get("resource") != "pods":
        return False
    return ref.get("namespace") != "kube-system" or ref.get("subresource") == "exec" or ref.get("shard") == "7"


def reads_shard(event: Mapping[str, Any]) -> bool:
    ref = event.get("objectRef", {})
    return event["verb"] in ("create", "get") and ref.get("resource") == "pods" \
        and ref.get("namespace") == "kube-system" and ref.get("subresource") != "exec"


def skim(verb: str, object_ref: dict[str, str] | None) -> Any:
    event: dict[str, Any] = {"kind": "Event", "verb": verb}
    if object_ref is not None:
        event["objectRef"] = object_ref
    found = skim_line(json.dumps(event).encode())
    assert found is not None
    return event, found


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["get", "create", "list"]), st.sampled_from(OBJECT_REFS)),
                min_size=1, max_size=30))
def test_the_memo_answers_as_the_index_or_asks_for_the_whole_event(events: list) -> None:
    memo = CandidateMemo(index, known=SKIMMED_FIELDS, structs=SKIMMED_STRUCTS)
    for _ in range(2):  # the second time from what it remembered
        for verb, object_ref in events:
            event, skimmed = skim(verb, object_ref)
            answer = memo.may_match(skimmed)
            if answer is None:  # only when the index read a field the skim does not hold
                assert reads_shard(event), (verb, object_ref)
            else:
                assert answer == index(event), (verb, object_ref)


def test_an_event_without_object_ref_first_does_not_blind_the_memo_to_later_ones() -> None:
    memo = CandidateMemo(index, known=SKIMMED_FIELDS, structs=SKIMMED_STRUCTS)
    assert memo.may_match(skim("get", None)[1]) is False
    assert memo.may_match(skim("get", {"resource": "pods"})[1]) is True
    assert memo.may_match(skim("get", {"resource": "secrets", "namespace": "team-a"})[1]) is False
    assert memo.may_match(skim("get", {"resource": "pods", "namespace": "team-a"})[1]) is True
    assert memo.may_match(skim("get", {"resource": "pods", "namespace": "kube-system", "subresource": "exec"})[1]) is True
    assert memo.may_match(skim("get", {"resource": "pods", "namespace": "kube-system"})[1]) is None  # reads shard
