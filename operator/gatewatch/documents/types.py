"""The typed shapes a document is built from and into.

The inputs (AdmissionRequest and the parts of it gatewatch reads, the
audit.k8s.io/v1 Event), one ``gatewatch.images`` element, the document's top
level, and the names of the sources and admission operations. Types only:
no code runs here.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict

Source = Literal["admission", "audit", "manifest"]
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
OPERATIONS: frozenset[str] = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class GroupVersionResource(TypedDict):
    group: str
    version: str
    resource: str


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]
    extra: dict[str, list[str]]


class AdmissionRequest(TypedDict):
    """admission.k8s.io/v1 (and v1beta1) AdmissionRequest, as validated by parse_admission_request."""

    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    operation: Operation
    subResource: NotRequired[str]
    requestKind: NotRequired[GroupVersionKind]
    requestResource: NotRequired[GroupVersionResource]
    requestSubResource: NotRequired[str]
    name: NotRequired[str]
    namespace: NotRequired[str]
    userInfo: NotRequired[UserInfo]
    object: NotRequired[Mapping[str, Any] | None]
    oldObject: NotRequired[Mapping[str, Any] | None]
    dryRun: NotRequired[bool]
    options: NotRequired[Mapping[str, Any] | None]


class ObjectReference(TypedDict, total=False):
    resource: str
    namespace: str
    name: str
    uid: str
    apiGroup: str
    apiVersion: str
    resourceVersion: str
    subresource: str


class AuditEvent(TypedDict, total=False):
    """audit.k8s.io/v1 Event (the fields gatewatch reads or writes)."""

    kind: str
    apiVersion: str
    level: str
    auditID: str
    stage: str
    requestURI: str
    verb: str
    user: UserInfo
    impersonatedUser: UserInfo
    sourceIPs: list[str]
    userAgent: str
    objectRef: ObjectReference
    responseStatus: Mapping[str, Any]
    requestObject: Mapping[str, Any]
    responseObject: Mapping[str, Any]
    requestReceivedTimestamp: str
    stageTimestamp: str
    annotations: Mapping[str, str]


class ImageEntry(TypedDict):
    """One element of gatewatch.images."""

    reference: str
    registry: str | None
    repository: str
    name: str  # the repository's last path component: "busybox" for quay.io/prometheus/busybox
    tag: str | None
    digest: str | None
    container_kind: str
    container_name: str | None


# The document is a plain nested dict (see docs/architecture.md); this names
# its top level for readers and type checkers.
Document = TypedDict(
    "Document",
    {
        "@timestamp": str,
        "event": dict[str, Any],
        "data_stream": dict[str, Any],
        "kubernetes": dict[str, Any],
        "user": dict[str, Any],
        "user_agent": dict[str, Any],
        "source": dict[str, Any],
        "client": dict[str, Any],
        "related": dict[str, Any],
        "container": dict[str, Any],
        "orchestrator": dict[str, Any],
        "gatewatch": dict[str, Any],
    },
    total=False,
)
