"""The audit part replay and the webhook encode (``encoded_audit``) is redacted by a walk that keeps, not copies,
what redaction leaves as it is (``_shared_redacted``): it must write the very bytes of the general redaction
(``redact_object``, then the nulls dropped as ``_without_nulls`` drops them), on any input, and leave the
document as it was. Also: an alert's @timestamp (worked out once per second) and an exec URI's query (redacted
once per query, whatever the pod) are as before."""
from __future__ import annotations

import json
import types
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatewatch import alerts
from gatewatch.alerts import _without_nulls, build_alert, encoded_audit
from gatewatch.redaction import (
    LAST_APPLIED_ANNOTATION,
    MAX_ALERT_DEPTH,
    _redacted,
    _redacted_audit,
    _redacted_request_uri,
    _shared_redacted,
    redact_object,
)
from gatewatch.engine import Match
from gatewatch.rules import load_rules

SECRET = "hunter2-s3cret"
ENV_SECRET = "only-in-an-env-value"


class Dict(dict):
    """Not a dict proper, so never shared: what the walk reads of it (items) is not what orjson reads (its storage)."""

    def items(self):  # type: ignore[override]
        return list(reversed(super().items()))


class List(list):
    pass


class Str(str):
    pass


# Keys redaction looks at (and the ones around them), and any text.
KEYS = st.sampled_from([
    "env", "command", "args", "metadata", "managedFields", "annotations", LAST_APPLIED_ANNOTATION, "data",
    "stringData", "items", "kind", "value", "valueFrom", "name", "op", "path", "spec", "containers", "labels",
]) | st.text(max_size=4)
TEXT = st.sampled_from([
    "Secret", "SecretList", "curl", "-H", f"Authorization: Bearer {SECRET}", "--password", SECRET, f"-p{SECRET}",
    "mysql", "sh", "/spec/containers/0/env/0", "/spec/containers/0/env", "/spec/containers/0/env/0/value",
    "/spec/containers/0/args/1", "/spec/containers/0/command", "/data", "/data/x", "", "caf\u00e9", "\ud800",
    "del \x7f", "null", '"env":',
]) | st.text(alphabet=st.characters(blacklist_categories=()), max_size=8)  # lone surrogates included
SCALARS = (st.none() | st.booleans() | TEXT
           | st.integers(min_value=-(2**70), max_value=2**70)  # beyond 64 bits: orjson refuses them
           | st.floats(allow_nan=True, allow_infinity=True))
ODD_SCALARS = st.builds(Str, TEXT) | st.just(datetime(2026, 12, 2, tzinfo=timezone.utc))


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    operation = st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "replace", "remove"]), "path": TEXT}, optional={"value": children})
    dicts = st.dictionaries(KEYS, children, max_size=5)
    return (
        dicts
        | st.lists(children, max_size=4)
        | st.lists(operation, min_size=1, max_size=3)  # a JSON patch
        | st.builds(lambda env: {"name": "c", "env": env}, st.lists(children, max_size=3))
        | st.builds(lambda d: {"kind": "Secret", **d}, dicts)
        | st.builds(Dict, dicts) | st.builds(types.MappingProxyType, dicts)
        | st.builds(List, st.lists(children, max_size=3)) | st.builds(tuple, st.lists(children, max_size=3))
    )


VALUES = st.recursive(SCALARS | ODD_SCALARS, containers, max_leaves=30)


def nested(depth: int, inner: Any) -> Any:
    """``inner`` under ``depth`` levels of mappings and lists."""
    for level in range(depth):
        inner = {"spec": inner} if level % 3 else [inner]
    return inner


def encodings(value: Any) -> tuple[Any, ...]:
    """What the alert writers make of a value: orjson's bytes (replay's and the webhook's options) or its refusal,
    and the stdlib's line."""
    written: list[Any] = []
    for option in (None, alerts._ORJSON_AS_STDLIB):
        try:
            written.append(orjson.dumps(value, default=str, option=option))
        except (TypeError, orjson.JSONEncodeError):
            written.append("refused")
    written.append(json.dumps(value, default=str))
    return tuple(written)


def general(value: Any, secret: bool, depth: int, drop_nulls: bool) -> Any:
    redacted = redact_object(value, secret=secret, depth=depth)
    return _without_nulls(redacted) if drop_nulls else redacted


def snapshot(value: Any) -> str:
    return json.dumps(value, default=repr)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=VALUES, secret=st.booleans(), depth=st.integers(min_value=0, max_value=MAX_ALERT_DEPTH + 1),
       drop_nulls=st.booleans())
def test_the_shared_walk_writes_what_the_general_redaction_writes(
        value: Any, secret: bool, depth: int, drop_nulls: bool) -> None:
    before = snapshot(value)
    shared = _shared_redacted(value, secret, depth, drop_nulls)
    assert encodings(shared) == encodings(general(value, secret, depth, drop_nulls))
    assert encodings(shared) == encodings(_redacted(value, secret, depth, drop_nulls))
    assert snapshot(value) == before  # the document the rules matched is left as it was


@settings(max_examples=300, deadline=None)
@given(inner=VALUES, depth=st.integers(min_value=MAX_ALERT_DEPTH - 8, max_value=MAX_ALERT_DEPTH + 2),
       drop_nulls=st.booleans())
def test_the_shared_walk_cuts_deep_nesting_where_the_general_one_does(inner: Any, depth: int, drop_nulls: bool) -> None:
    value = nested(depth, {"name": "deep", "env": [{"name": "P", "value": ENV_SECRET}], "x": inner, "n": None})
    shared = _shared_redacted(value, False, 1, drop_nulls)
    assert encodings(shared) == encodings(general(value, False, 1, drop_nulls))
    assert ENV_SECRET not in json.dumps(shared, default=str)


def audit_events() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"kind": st.just("Event"), "verb": st.sampled_from(["create", "patch", "get"]),
         "objectRef": st.fixed_dictionaries({"resource": st.sampled_from(["pods", "secrets", "deployments"])}),
         "requestURI": st.sampled_from([
             "/api/v1/namespaces/a/pods/x", "/api/v1/namespaces/a/pods/x/exec?command=sh&container=c",
             f"/api/v1/namespaces/a/pods/y/exec?command=curl&command=-H&command=Authorization%3A+Bearer+{SECRET}",
         ])},
        optional={"requestObject": VALUES, "responseObject": VALUES, "user": VALUES, "annotations": VALUES,
                  "stage": st.none() | TEXT},
    )


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(audit=audit_events())
def test_an_encoded_audit_part_is_the_general_redaction_encoded(audit: dict[str, Any]) -> None:
    before = snapshot(audit)
    expected = _redacted_audit(audit, drop_nulls=True)  # the general walk: a copy
    try:
        written = orjson.dumps(expected, default=str)
    except (TypeError, orjson.JSONEncodeError):
        written = None  # orjson refuses a part: replay builds the event's alerts whole
    assert encoded_audit({"kubernetes": {"audit": audit}}) == written
    assert snapshot(audit) == before


def test_a_pod_with_nothing_to_redact_is_written_as_it_came() -> None:
    # The common case the shared walk is for, and the cases beside it that must still be redacted.
    pod = {"kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 80}],
                                    "resources": {"limits": {"cpu": "1"}}}],
                    "volumes": [{"name": "v", "emptyDir": {}}]}}
    audit = {"kind": "Event", "objectRef": {"resource": "pods"}, "requestObject": pod, "responseObject": pod}
    assert encoded_audit({"kubernetes": {"audit": audit}}) == orjson.dumps(audit)
    with_env = json.loads(json.dumps(audit))
    with_env["requestObject"]["spec"]["containers"][0]["env"] = [{"name": "P", "value": SECRET}]
    with_env["responseObject"]["spec"]["nodeName"] = None  # a null in a mapping: dropped
    with_env["responseObject"]["spec"]["volumes"][0]["emptyDir"] = {"medium": None}  # in a list: kept
    written = encoded_audit({"kubernetes": {"audit": with_env}})
    assert written is not None and SECRET.encode() not in written
    assert b"nodeName" not in written and b'"emptyDir":{"medium":null}' in written
    assert with_env["requestObject"]["spec"]["containers"][0]["env"][0]["value"] == SECRET  # left as it was


@settings(max_examples=300, deadline=None)
@given(moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30),
                           timezones=st.just(timezone.utc)),
       step=st.integers(min_value=0, max_value=2_000_000))
def test_an_alerts_timestamp_is_its_isoformat(moment: datetime, step: int) -> None:
    # Alerts of one second share the text of that second; microseconds of 0 and years before 1000 as isoformat.
    match = Match(rule=load_rules().rules[0], new_terms_key=None)
    document = {"kubernetes": {"audit": {}}}
    for stamp in (moment, moment + timedelta(microseconds=step) if moment.year < 9999 else moment,
                  moment.replace(microsecond=0)):
        expected = stamp.isoformat().replace("+00:00", "Z")
        assert build_alert(match, document, now=stamp)["@timestamp"] == expected
    other = moment.astimezone(timezone(timedelta(hours=5, minutes=30)))  # another zone: written in UTC
    assert build_alert(match, document, now=other)["@timestamp"] == moment.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("credential", [True, False], ids=["token", "nothing-to-hide"])
def test_an_exec_query_seen_before_keeps_each_pods_path(credential: bool) -> None:
    # One exec query to pod after pod: redacted once, and each URI keeps its own pod's path.
    query = "command=curl&command=-H&command=" + (f"Authorization%3A+Bearer+{SECRET}" if credential else "x")
    query += "&container=app&stdout=true"
    for pod in ("web-1", "web-2", "web-1"):
        uri = f"/api/v1/namespaces/a/pods/{pod}/exec?{query}"
        redacted = _redacted_request_uri(uri)
        assert redacted.startswith(f"/api/v1/namespaces/a/pods/{pod}/exec?")
        assert SECRET not in redacted
        assert (redacted == uri) is not credential  # nothing to hide: as the API server wrote it
