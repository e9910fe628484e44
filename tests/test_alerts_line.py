"""An alert's JSON line: written by orjson, byte for byte what the stdlib encoder wrote, redacted as before."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.alerts import alert_line, build_alert
from gatewatch.documents import document_from_admission_review
from gatewatch.engine import RuleEngine
from gatewatch.rules import load_rules_text


def stdlib_line(value: Any) -> str:
    """What alert_line wrote before orjson: the stdlib encoder, compact, ASCII only."""
    return json.dumps(value, separators=(",", ":"), sort_keys=False, default=str)


# JSON-like values as documents and alerts hold them: any text (non-ASCII, control
# characters, DEL, lone surrogates), integers of any size, nesting; keys of any JSON type.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(),
    st.text(alphabet=st.characters(codec="ascii")),
)
keys = st.one_of(st.text(max_size=8), st.text(alphabet=st.characters(codec="ascii"), max_size=8),
                 st.integers(), st.booleans(), st.none())
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_like, max_size=5))
def test_the_line_is_the_stdlib_encoders_bytes(alert: dict) -> None:
    assert alert_line(alert) == stdlib_line(alert)


def test_what_orjson_refuses_or_writes_otherwise_is_written_the_stdlib_way() -> None:
    cases = [
        {"message": "caf\u00e9 \u2028"},  # non-ASCII: the line stays ASCII, escaped
        {"command": ["sh", "-c", "\ud800"]},  # a lone surrogate (the stdlib parser accepts one)
        {"size": 2**64},  # beyond 64 bits
        {"labels": {1: "a", None: "b"}},  # keys that are not strings
        {"delete": "\x7f"},  # DEL: ASCII, escaped by the stdlib
        {"at": datetime(2026, 12, 2, 5, 0, tzinfo=timezone.utc), "set": {"a"}},  # default=str, as the stdlib
    ]
    for alert in cases:
        line = alert_line(alert)
        assert line == stdlib_line(alert)
        assert line.isascii()


def test_finite_floats_keep_their_value() -> None:
    alert = {"ratio": [0.1, 1e-7, 1e16, -2.5e-300, 1.0]}
    assert json.loads(alert_line(alert)) == alert


REVIEW = {
    "apiVersion": "admission.k8s.io/v1",
    "kind": "AdmissionReview",
    "request": {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "namespace": "payments",
        "name": "dbg",
        "userInfo": {"username": "alice"},
        "object": {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "dbg", "namespace": "payments"},
            "spec": {"containers": [{"name": "main", "image": "busybox:1.36",
                                     "command": ["curl", "-H", "Authorization: Bearer hunter2-s3cret", "https://db"],
                                     "env": [{"name": "DB_PASSWORD", "value": "pa\u00dfword-\u00e9t\u00e9"}]}]},
        },
    },
}


def test_a_real_alert_is_redacted_in_its_line() -> None:
    rules = load_rules_text(
        "version: 1\nruleset: t\nrules:\n  - id: curl\n    name: curl in a pod\n    description: d\n"
        "    severity: high\n    risk_score: 73\n"
        "    query: 'kubernetes.audit.requestObject.spec.containers.command:curl'\n"
    )
    document = document_from_admission_review(REVIEW)
    (match,) = RuleEngine(rules).evaluate(document)
    alert = build_alert(match, document, now=datetime(2026, 12, 2, tzinfo=timezone.utc))
    line = alert_line(alert)
    assert "hunter2-s3cret" not in line
    assert "pa\\u00dfword" not in line and "pa\u00dfword" not in line
    assert line == stdlib_line(alert)
    assert json.loads(line)["rule"]["id"] == "curl"
