"""EQL sequence rules: loading, never at admission, bounded memory of the matcher."""
from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from gatewatch.documents import document_from_audit_event
from gatewatch.engine import RuleEngine, event_time
from gatewatch.errors import RuleError
from gatewatch.rules import load_rules_text
from gatewatch.sequences import SequenceMatcher, match_sequences

from audit_events import audit_event

RULES = """\
version: 1
ruleset: sequences
rules:
  - id: rbac-then-workload
    name: RBAC change then workload change
    description: A role changed, then a workload by the same user.
    severity: medium
    risk_score: 47
    language: eql
    query: |
      sequence by user.name {maxspan}
        [any where kubernetes.audit.objectRef.resource == "roles" and kubernetes.audit.verb == "patch"]
        [{second} where kubernetes.audit.objectRef.resource == "deployments"]
"""


def _rule(*, maxspan: str = "with maxspan=5m", second: str = "any"):
    (rule,) = load_rules_text(RULES.format(maxspan=maxspan, second=second), file="seq.yaml").rules
    return rule


def _document(*args, **kwargs):
    return document_from_audit_event(audit_event(*args, **kwargs))


def test_a_sequence_rule_loads_and_never_matches_one_admission_document():
    rule = _rule()
    assert rule.sequence and rule.replay_only and not rule.aggregates
    engine = RuleEngine(load_rules_text(RULES.format(maxspan="", second="any"), file="seq.yaml"))
    role_change = _document("patch", "roles")
    # The rule index keeps it a candidate (replay builds the document for its steps) ...
    assert engine.may_match_audit_event(audit_event("patch", "roles"))
    # ... but one request is never a sequence.
    assert engine.evaluate(role_change) == []


def test_a_step_of_another_event_category_names_file_line_and_position():
    with pytest.raises(RuleError) as caught:
        _rule(second="process")
    message = str(caught.value)
    assert "seq.yaml:" in message and "rule 'rbac-then-workload'" in message
    assert "event category 'process': only 'any where' steps are supported" in message
    assert "query line 3" in message


def _feed(matcher: SequenceMatcher, document):
    observation = matcher.sequence.observe(document, at=event_time(document), item=document["user"]["name"])
    return [] if observation is None else matcher.feed(observation)


def test_pending_sequences_are_capped_and_the_oldest_evicted_counted():
    matcher = SequenceMatcher(_rule(maxspan="").matcher, max_pending=3)
    for minute, user in enumerate(["u0", "u1", "u2", "u3", "u4"]):
        _feed(matcher, _document("patch", "roles", user=user, at=timedelta(minutes=minute)))
    assert (matcher.pending, matcher.evicted) == (3, 2)
    assert _feed(matcher, _document("create", "deployments", user="u0", at=timedelta(minutes=6))) == []
    (done,) = _feed(matcher, _document("create", "deployments", user="u4", at=timedelta(minutes=7)))
    assert done.items == ("u4", "u4") and done.key == ("u4",)


def test_expired_sequences_are_swept_before_any_is_evicted():
    matcher = SequenceMatcher(_rule().matcher, max_pending=3)
    for user in ["u0", "u1", "u2"]:
        _feed(matcher, _document("patch", "roles", user=user, at=timedelta(minutes=0)))
    for user in ["u3", "u4"]:  # 10 minutes later: the first three are past maxspan
        _feed(matcher, _document("patch", "roles", user=user, at=timedelta(minutes=10)))
    assert (matcher.pending, matcher.evicted, matcher.expired) == (2, 0, 3)


# --- docs/rules.md "EQL sequences" -------------------------------------------------------------

DOC = Path(__file__).resolve().parents[1] / "docs" / "rules.md"


def _doc_rule():
    text = DOC.read_text()
    start = text.index("\n### EQL sequences\n")
    section = text[start:text.index("\n## ", start + 1)]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1)
    (rule,) = load_rules_text(block, file="docs/rules.md").rules
    return rule


def _sequences(rule, events) -> list[tuple[int, ...]]:
    observations = []
    for line, event in enumerate(events, start=1):
        document = document_from_audit_event(event)
        observation = rule.matcher.observe(document, at=event_time(document), item=line)
        if observation is not None:
            observations.append(observation)
    completed, _ = match_sequences(rule.matcher, observations)
    return [done.items for done in completed]


def test_the_documented_example_does_what_the_text_says():
    rule = _doc_rule()
    assert rule.sequence and rule.matcher.maxspan == timedelta(minutes=5)
    role = audit_event("patch", "clusterroles", namespace=None, name="edit")
    workload = audit_event("create", "cronjobs", at=timedelta(minutes=5))  # 5 minutes exactly still counts
    unbind = audit_event("delete", "rolebindings", at=timedelta(minutes=1))
    assert _sequences(rule, [role, workload]) == [(1, 2)]
    assert _sequences(rule, [role, unbind, workload]) == []  # until between the steps
    assert _sequences(rule, [role, workload, audit_event("delete", "rolebindings", at=timedelta(minutes=6))]) == [(1, 2)]
    too_late = audit_event("create", "cronjobs", at=timedelta(minutes=5, milliseconds=1))
    assert _sequences(rule, [role, too_late]) == []


# --- join keys as Elasticsearch reads them (elastic/elasticsearch#79677, #89965) ----------------


def _query_sequences(query: str, events) -> list[tuple]:
    from gatewatch.rules.eql import eql_sequence
    from gatewatch.sequences import compile_sequence

    sequence = compile_sequence(eql_sequence(query), source=query)
    observations = []
    for line, event in enumerate(events, start=1):
        document = document_from_audit_event(event)
        observation = sequence.observe(document, at=event_time(document), item=line)
        if observation is not None:
            observations.append(observation)
    completed, _ = match_sequences(sequence, observations)
    return [(done.key, done.items) for done in completed]


BY_NAMESPACE = """
sequence by {field} with maxspan=10m
  [any where kubernetes.audit.objectRef.resource == "clusterroles"]
  [any where kubernetes.audit.objectRef.resource in ("clusterrolebindings", "deployments")]
"""


def test_an_absent_join_field_keeps_the_event_out_unless_the_field_is_optional():
    # Cluster-scoped objects have no namespace.
    events = [audit_event("create", "clusterroles", namespace=None, name="r"),
              audit_event("create", "clusterrolebindings", namespace=None, name="rb", at=timedelta(minutes=1))]
    assert _query_sequences(BY_NAMESPACE.format(field="kubernetes.audit.objectRef.namespace"), events) == []
    optional = BY_NAMESPACE.format(field="?kubernetes.audit.objectRef.namespace")
    assert _query_sequences(optional, events) == [((None,), (1, 2))]
    # An optional null does not join with a value.
    namespaced = [events[0], audit_event("create", "deployments", at=timedelta(minutes=1))]
    assert _query_sequences(optional, namespaced) == []


def test_each_value_of_a_multi_valued_join_field_is_a_key_of_its_own():
    query = """
    sequence by kubernetes.audit.user.groups with maxspan=10m
      [any where kubernetes.audit.objectRef.resource == "roles"]
      [any where kubernetes.audit.objectRef.resource == "deployments"]
    """
    events = [audit_event("patch", "roles", user="alice", groups=("team-a", "system:authenticated")),
              audit_event("patch", "deployments", user="bob", groups=("team-a",), at=timedelta(minutes=1)),
              audit_event("patch", "deployments", user="carol", groups=("team-b",), at=timedelta(minutes=2))]
    assert _query_sequences(query, events) == [(("team-a",), (1, 2))]
    # Both values shared: two sequences of the same events, one per key.
    both_groups = [events[0], audit_event("patch", "deployments", user="dave", at=timedelta(minutes=1),
                                          groups=("system:authenticated", "team-a"))]
    assert sorted(_query_sequences(query, both_groups)) == [
        (("system:authenticated",), (1, 2)), (("team-a",), (1, 2))]
