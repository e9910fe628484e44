"""EQL sequences, gatewatch against Elastic's reference EQL engine (the ``eql``
package's PythonEngine), on audit events as an API server writes them, mapped
to gatewatch's document.

What is compared is the sequence semantics: order over event time, join keys
read from the document, maxspan, ``until``, one event satisfying two steps.
The reference engine is given each step's verdict as a flag field (``gw.s0 ==
true``): its single-event semantics are Endgame's (``==`` case-insensitive, a
multi-valued field never equal to a value), not Elasticsearch's, while
gatewatch's steps go through its single-event EQL path, which follows
Elasticsearch (tests/test_rules_eql.py). The join keys and timestamps the
reference engine reads are the documents' own.
"""
from __future__ import annotations

import random
from datetime import timedelta

import eql
import pytest

from gatewatch.documents import document_from_audit_event
from gatewatch.engine import event_time
from gatewatch.rules.eql import eql_sequence
from gatewatch.sequences import CompiledSequence, compile_sequence, match_sequences

from audit_events import audit_event

RBAC_THEN_WORKLOAD = """
sequence by user.name with maxspan=5m
  [any where kubernetes.audit.objectRef.resource in ("roles", "clusterroles") and
     kubernetes.audit.verb in ("create", "update", "patch") and
     `kubernetes.audit.annotations.authorization_k8s_io/decision` == "allow"]
  [any where kubernetes.audit.objectRef.resource in ("deployments", "daemonsets", "cronjobs") and
     kubernetes.audit.verb in ("create", "patch") and
     not kubernetes.audit.user.groups == "system:masters"]
"""
RBAC_THEN_WORKLOAD_UNTIL = RBAC_THEN_WORKLOAD + """
until [any where kubernetes.audit.objectRef.resource == "rolebindings" and kubernetes.audit.verb == "delete"]
"""
# Every step can be the same event: a patch of anything.
PATCH_TWICE = """
sequence by user.name with maxspan=10m
  [any where kubernetes.audit.verb == "patch"]
  [any where kubernetes.audit.verb in ("patch", "update")]
"""
# Keys per step: a role in a namespace, then a workload in the same namespace, by anyone.
SAME_NAMESPACE = """
sequence with maxspan=10m
  [any where kubernetes.audit.objectRef.resource == "roles"] by kubernetes.audit.objectRef.namespace
  [any where kubernetes.audit.objectRef.resource == "deployments"] by kubernetes.audit.objectRef.namespace
  [any where kubernetes.audit.objectRef.resource == "cronjobs"] by kubernetes.audit.objectRef.namespace
"""
# Without maxspan, three steps, per-step keys on top of the sequence's own.
THREE_STEPS = """
sequence by user.name
  [any where kubernetes.audit.verb == "create"] by kubernetes.audit.objectRef.namespace
  [any where kubernetes.audit.verb == "patch"] by kubernetes.audit.objectRef.namespace
  [any where kubernetes.audit.verb == "delete"] by kubernetes.audit.objectRef.namespace
until [any where kubernetes.audit.verb == "deletecollection"] by kubernetes.audit.objectRef.namespace
"""
_TICKS_PER_MICROSECOND = 10  # the reference engine counts time in 100 ns ticks (Windows FILETIME)


def _sequence(query: str) -> CompiledSequence:
    return compile_sequence(eql_sequence(query), source=query)


def _documents(events):
    return [document_from_audit_event(event) for event in events]


def gatewatch_sequences(query: str, events) -> list[tuple[int, ...]]:
    sequence = _sequence(query)
    observations = []
    for index, document in enumerate(_documents(events)):
        observation = sequence.observe(document, at=event_time(document), item=index)
        if observation is not None:
            observations.append(observation)
    completed, _ = match_sequences(sequence, observations)
    return [done.items for done in completed]


def reference_sequences(query: str, events) -> list[tuple[int, ...]]:
    """The same sequence in eql's engine, each step (and until) as a flag gatewatch computed."""
    sequence = _sequence(query)
    parsed = eql_sequence(query)

    def by(fields):
        return f" by {', '.join(fields)}" if fields else ""

    maxspan = (f" with maxspan={int(parsed.maxspan.total_seconds() * 1000)}ms" if parsed.maxspan else "")
    text = f"sequence{maxspan}\n" + "".join(
        f"  [any where gw.s{index} == true]{by(keys)}\n" for index, keys in enumerate(parsed.keys)
    )
    if parsed.until is not None:
        text += f"until [any where gw.u == true]{by(parsed.until_keys)}\n"
    with eql.parser.elasticsearch_syntax, eql.parser.ignore_missing_functions:
        reference = eql.parse_query(text)
    found: list[tuple[int, ...]] = []
    engine = eql.PythonEngine()
    engine.add_output_hook(lambda result: found.append(tuple(event.data["gw"]["index"] for event in result.events)))
    engine.add_query(reference)
    feed = []
    for index, document in enumerate(_documents(events)):
        at = event_time(document)
        flags = {f"s{step}": matches(document) for step, matches in enumerate(sequence.steps)}
        flags["u"] = bool(sequence.until is not None and sequence.until(document))
        flags["index"] = index
        ticks = (at - at.replace(year=1970, month=1, day=1, hour=0, minute=0, second=0, microsecond=0)) \
            // timedelta(microseconds=1) * _TICKS_PER_MICROSECOND
        feed.append((at, index, eql.Event("generic", ticks, {**document, "gw": flags})))
    feed.sort(key=lambda item: (item[0], item[1]))
    engine.stream_events([event for _, _, event in feed])
    return found


def both(query: str, events) -> list[tuple[int, ...]]:
    ours, theirs = gatewatch_sequences(query, events), reference_sequences(query, events)
    assert ours == theirs
    return ours


def m(minutes: float) -> timedelta:
    return timedelta(minutes=minutes)


# --- the cases a user would ask about ------------------------------------------------------


def test_rbac_change_then_workload_by_the_same_user_is_one_sequence_of_both_events():
    events = [audit_event("patch", "clusterroles", at=m(0), namespace=None, name="edit"),
              audit_event("get", "pods", at=m(1)),
              audit_event("patch", "deployments", at=m(2))]
    assert both(RBAC_THEN_WORKLOAD, events) == [(0, 2)]


@pytest.mark.parametrize(("gap", "expected"), [
    (timedelta(minutes=5), [(0, 1)]),  # the workload 5 minutes after the role change: inside (inclusive)
    (timedelta(minutes=5, seconds=1), []),  # out of the window
])
def test_maxspan_is_measured_from_the_first_event(gap, expected):
    # stageTimestamp (@timestamp) of both events is 3 ms after their request: the gap is exact.
    events = [audit_event("create", "roles", at=m(0)), audit_event("create", "deployments", at=gap)]
    assert both(RBAC_THEN_WORKLOAD, events) == expected


def test_wrong_order_is_no_sequence_whatever_the_line_order():
    workload_first = [audit_event("patch", "deployments", at=m(0)), audit_event("patch", "roles", at=m(1))]
    assert both(RBAC_THEN_WORKLOAD, workload_first) == []
    # Lines out of time order (two API servers' logs concatenated): event time decides.
    role_first_written_last = [audit_event("patch", "deployments", at=m(2)), audit_event("patch", "roles", at=m(1))]
    assert both(RBAC_THEN_WORKLOAD, role_first_written_last) == [(1, 0)]


def test_a_different_user_does_not_complete_the_sequence():
    events = [audit_event("patch", "roles", user="alice", at=m(0)),
              audit_event("patch", "deployments", user="bob", at=m(1)),
              audit_event("patch", "deployments", user="alice", at=m(2))]
    assert both(RBAC_THEN_WORKLOAD, events) == [(0, 2)]


def test_join_keys_are_exact_as_elasticsearch_keywords():
    # gatewatch only: the reference engine folds case; a keyword field in Elasticsearch does not.
    events = [audit_event("patch", "roles", user="Alice", at=m(0)),
              audit_event("patch", "deployments", user="alice", at=m(1))]
    assert gatewatch_sequences(RBAC_THEN_WORKLOAD, events) == []


def test_system_masters_workload_changes_do_not_complete_it():
    events = [audit_event("patch", "roles", at=m(0)),
              audit_event("patch", "deployments", at=m(1), groups=("system:masters", "system:authenticated"))]
    assert both(RBAC_THEN_WORKLOAD, events) == []


def test_one_event_satisfying_both_steps_is_never_a_sequence_alone():
    assert both(PATCH_TWICE, [audit_event("patch", "deployments", at=m(0))]) == []
    three = [audit_event("patch", "deployments", at=m(i)) for i in range(3)]
    # The second patch completes the first and starts another, which the third completes.
    assert both(PATCH_TWICE, three) == [(0, 1), (1, 2)]


def test_a_new_first_step_replaces_the_waiting_one():
    events = [audit_event("patch", "roles", at=m(0)), audit_event("patch", "roles", at=m(4)),
              audit_event("patch", "deployments", at=m(6))]
    assert both(RBAC_THEN_WORKLOAD, events) == [(1, 2)]


def test_until_between_the_steps_ends_the_sequence_but_not_after():
    role, until, workload = (audit_event("patch", "roles", at=m(0)),
                             audit_event("delete", "rolebindings", at=m(1)),
                             audit_event("patch", "deployments", at=m(2)))
    assert both(RBAC_THEN_WORKLOAD_UNTIL, [role, until, workload]) == []
    late_until = audit_event("delete", "rolebindings", at=m(3))
    assert both(RBAC_THEN_WORKLOAD_UNTIL, [role, workload, late_until]) == [(0, 1)]
    other_user = audit_event("delete", "rolebindings", user="bob", at=m(1))
    assert both(RBAC_THEN_WORKLOAD_UNTIL, [role, other_user, workload]) == [(0, 2)]


def test_keys_per_step():
    events = [audit_event("create", "roles", user="alice", namespace="prod", at=m(0)),
              audit_event("create", "deployments", user="bob", namespace="dev", at=m(1)),
              audit_event("create", "deployments", user="bob", namespace="prod", at=m(2)),
              audit_event("create", "cronjobs", user="carol", namespace="prod", at=m(3))]
    assert both(SAME_NAMESPACE, events) == [(0, 2, 3)]


# --- many streams --------------------------------------------------------------------------

_KINDS = [("patch", "roles"), ("create", "clusterroles"), ("patch", "deployments"), ("create", "cronjobs"),
          ("delete", "rolebindings"), ("get", "pods"), ("create", "roles"), ("delete", "roles"),
          ("deletecollection", "pods"), ("update", "deployments")]


@pytest.mark.parametrize("query", [RBAC_THEN_WORKLOAD, RBAC_THEN_WORKLOAD_UNTIL, PATCH_TWICE, SAME_NAMESPACE,
                                   THREE_STEPS], ids=["rbac", "rbac-until", "patch-twice", "namespace", "three"])
def test_random_streams_give_the_reference_engines_sequences(query):
    rng = random.Random(20261202)
    found = 0
    for _ in range(100):
        events = []
        for _ in range(rng.randint(3, 20)):
            verb, resource = rng.choice(_KINDS)
            events.append(audit_event(
                verb, resource, user=rng.choice(["alice", "bob"]), namespace=rng.choice(["prod", "dev"]),
                at=timedelta(seconds=rng.randint(0, 900)), name=f"obj-{rng.randint(0, 9_999_999)}",
                groups=rng.choice([("system:authenticated",), ("system:masters", "system:authenticated")]),
            ))
        found += len(both(query, events))
    assert found >= 5  # the streams do make sequences, not only near misses
