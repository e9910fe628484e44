"""EQL sequence rules: loading, never at admission, bounded memory of the matcher."""
from __future__ import annotations

from datetime import timedelta

import pytest

from gatewatch.documents import document_from_audit_event
from gatewatch.engine import RuleEngine, event_time
from gatewatch.errors import RuleError
from gatewatch.rules import load_rules_text
from gatewatch.sequences import SequenceMatcher

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
