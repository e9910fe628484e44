"""docs/rules.md "KQL support": every example and claim there, checked against the implementation."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gatewatch.errors import KqlSyntaxError
from gatewatch.kql import compile_query

DOC = Path(__file__).resolve().parents[1] / "docs" / "rules.md"
RECENT = (datetime.now(timezone.utc) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

DOCUMENT = {
    "@timestamp": RECENT,
    "user": {"name": "system:node:worker-1"},
    "verb": "create",
    "w": "foo   bar",
    "k": "and",
    "star": "a*b",
    "backslash_star": "a\\*b",
    "a": "x",
    "n": 10,
    "s": "10",
    "b": False,
    "cs": "Busybox",
    "empty": "",
    "nothing": None,
    "no_items": [],
    "no_fields": {},
    "f": {"my field": "x"},
    "source": {"ip": ["10.1.2.3", "::ffff:10.1.2.4"]},
    "gatewatch": {"images": [
        {"name": "nginx", "container_kind": "initContainers"},
        {"name": "busybox", "container_kind": "containers"},
    ]},
    "kubernetes": {"audit": {
        "verb": "create",
        "objectRef": {"resource": "pods", "subresource": "exec"},
        "annotations": {"authorization_k8s_io/decision": "allow"},
        "responseStatus": {"code": 403},
        "requestObject": {
            "metadata": {"labels": {"app.kubernetes.io/name": "web"}},
            "spec": {"hostPID": True, "containers": [{"image": "busybox:1.36"}, {"image": "nicolaka/netshoot:v0.13"}]},
        },
    }},
}


@pytest.mark.parametrize(
    ("query", "matches"),
    [
        # quoting and escapes
        ('user.name:"system:node:worker-1"', True),
        (r"user.name:system\:node\:*", True),
        ("w:foo   bar", True),
        ("w:foo bar", False),  # inner whitespace is kept exactly
        (r"k:\and", True),
        (r'backslash_star:"a\*b"', True),  # unknown escapes in quotes stay as written
        # wildcards
        (r"kubernetes.audit.requestObject.spec.containers.image:(busybox* or *netshoot\:*)", True),
        ('star:"a*b"', True),
        ('star:"a?b"', False),
        (r"star:a\*b", True),
        ("a:?", False),  # ? is no wildcard
        # precedence
        ("a:x or n:5 and b:true", True),
        ("(a:x or n:5) and b:true", False),
        ("NOT user.name:alice AND verb:create", True),
        # value lists, on a list field: decided per part on the whole list
        ("gatewatch.images.name:(busybox and nginx)", True),
        ("gatewatch.images.name:(busybox and not nginx)", False),
        ("not gatewatch.images.name:alpine", True),
        ("not missing:x", True),
        ('kubernetes.audit.verb:("create" or "get")', True),
        # nested: the same element
        ("gatewatch.images:{ name:busybox and container_kind:initContainers }", False),
        ("gatewatch.images.name:busybox and gatewatch.images.container_kind:initContainers", True),
        # exists
        ("kubernetes.audit.objectRef.subresource:*", True),
        ("not kubernetes.audit.impersonatedUser:*", True),
        ("empty:*", True),
        ("nothing:*", False),
        ("no_items:*", False),
        ("no_fields:*", False),
        ("*", True),
        # numbers, booleans, IP, CIDR
        ("n:10", True),
        ("s:10", True),
        ("n:10.0", True),
        ("s:10.0", False),
        ("kubernetes.audit.requestObject.spec.hostPID:true", True),
        ("source.ip:10.0.0.0/8", True),
        ("source.ip:10.1.2.4", True),  # IPv4-mapped IPv6
        ("n:1*", True),
        # ranges
        ("s > 9", True),  # numeric, not keyword order
        ("kubernetes.audit.responseStatus.code >= 400", True),
        ("@timestamp > now-1h", True),
        ("@timestamp < now-1h", False),
        ("source.ip < 10.2.0.0", True),
        ("cs < C", True),
        ("cs < 2026-01-01", False),  # a date bound only compares dates
        # case sensitivity
        ("cs:busybox", False),
        ("cs:Busy*", True),
        ("Cs:Busybox", False),
        # field names
        ('"f.my field":x', True),
        ('kubernetes.audit.annotations.authorization_k8s_io/decision:"allow"', True),
        ("kubernetes.audit.requestObject.metadata.labels.app.kubernetes.io/name:web", True),
        ("kubernetes.audit.annotations.*:allow", True),
        # free text
        ("busybox", True),
        ("Busybox", True),
        ("alpine", False),
    ],
)
def test_documented_kql_semantics(query: str, matches: bool) -> None:
    assert compile_query(query)(DOCUMENT) is matches


@pytest.mark.parametrize("query", ["", "n:>5", "a:(x or y", "gatewatch.images:{ name:x", "gatewatch.*:{ name:x }"])
def test_documented_refusals(query: str) -> None:
    with pytest.raises(KqlSyntaxError):
        compile_query(query)


def test_the_doc_shows_these_examples() -> None:
    # The examples above are the doc's; keep the two together.
    text = DOC.read_text()
    for example in (
        r"user.name:system\:node\:*",
        "a:x or n:5 and b:false",
        "gatewatch.images:{ name:busybox and container_kind:initContainers }",
        "source.ip:10.0.0.0/8",
        "@timestamp > now-1h",
        "kubernetes.audit.annotations.*:allow",
        '"f.my field":x',
    ):
        assert example in text, example
