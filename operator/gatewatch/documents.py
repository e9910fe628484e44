"""AdmissionReview / audit event / Pod -> the document the rules query.

The document is the one Elastic's Kubernetes integration stores for an audit
event (data stream ``logs-kubernetes.audit_logs-*``), so Elastic's detection
rules run unchanged. Every input is first turned into an audit event
(``audit.k8s.io/v1`` Event); one table then maps the audit event onto the
document:

======================================  ==============================================  ==========================
document field                          from the audit event                            notes
======================================  ==============================================  ==========================
@timestamp                              stageTimestamp, else requestReceivedTimestamp   admission: now (UTC)
event.kind                              "event"
event.dataset, data_stream.dataset      "kubernetes.audit_logs"
event.action                            verb
event.outcome                           annotations[authorization.k8s.io/decision]      allow->success, forbid->failure
kubernetes.audit                        the whole event                                 annotation keys: "." -> "_"
user.name / user.id                     user.username / user.uid                        absent when empty
user_agent.original                     userAgent                                       never for admission
source.ip, client.ip, related.ip        sourceIPs (the valid IP addresses)              never for admission
related.user                            user.uid, user.username
container.image.name                    requestObject.spec.containers[].image           a list
orchestrator.type                       "kubernetes"
orchestrator.api_version                apiVersion                                      as Elastic: the audit API
orchestrator.namespace                  objectRef.namespace
orchestrator.resource.type / .name      objectRef.resource / objectRef.name
orchestrator.resource.parent.type       requestObject's controller ownerReference kind  or the manifest's workload
gatewatch.source                        "admission" | "audit" | "manifest"
gatewatch.images                        requestObject.spec.{containers,initContainers,  normalized, see images.py
                                        ephemeralContainers}[].image
gatewatch.exec                          requestURI query of pods/exec and pods/attach   command, container, stdin, tty
gatewatch.admission.uid                 AdmissionRequest.uid                            admission only
gatewatch.dry_run                       AdmissionRequest.dryRun                         admission only
======================================  ==============================================  ==========================

The rows are also data, ``DOCUMENT_FIELDS``; ``_build_document`` fills them in
the same order, and the tests check that the two agree.

An AdmissionRequest becomes the audit event the API server writes once the
request is allowed (``audit_event_from_admission_request``): stage
ResponseComplete, decision allow (authorization has already passed when
admission runs), verb create for CREATE and CONNECT, patch for an UPDATE sent
as a patch (``kubectl debug``), requestURI rebuilt the way kubectl sends it.

Where this follows Elastic's ingest pipeline (elastic/integrations,
packages/kubernetes/data_stream/audit_logs/elasticsearch/ingest_pipeline/
default.yml) and where it deviates:

- deviation: Elastic removes requestObject.metadata and responseObject.metadata
  (to bound its mapping); we keep them: our rules use labels and names, and
  Elastic's rules cannot reference fields Elastic drops.
- deviation: Elastic's ``convert`` to ip fails as a whole when one sourceIPs
  entry is not an IP; we keep the valid entries.
- deviation: Elastic copies ``requestObject.spec.containers.image`` with a
  ``set``, which does not walk lists; we store the list of images the KQL
  query ``container.image.name:...`` was written for.
- addition: the ``gatewatch.*`` namespace.

Hot path: this runs for every admission review and every replayed audit line.
Documents share sub-objects with their input (no deep copies): treat both as
read-only.
"""
from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Literal, NotRequired, TypedDict, cast
from urllib.parse import parse_qs, quote_plus, urlsplit

from gatewatch.errors import InputError
from gatewatch.images import normalize_image

DATASET = "kubernetes.audit_logs"
AUDIT_API_VERSION = "audit.k8s.io/v1"
AUDIT_API_VERSIONS = frozenset({"audit.k8s.io/v1", "audit.k8s.io/v1beta1"})
ADMISSION_API_VERSIONS = frozenset({"admission.k8s.io/v1", "admission.k8s.io/v1beta1"})
DECISION_ANNOTATION = "authorization.k8s.io/decision"
OUTCOME_BY_DECISION = {"allow": "success", "forbid": "failure"}
CONTAINER_KINDS = ("containers", "initContainers", "ephemeralContainers")
# Subresources whose options travel in the requestURI query (PodExecOptions, PodAttachOptions).
INTERACTIVE_SUBRESOURCES = frozenset({"exec", "attach"})

Source = Literal["admission", "audit", "manifest"]
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
OPERATIONS: frozenset[str] = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})

# Fields an admission request never carries: the API server has not written
# its audit event yet, and AdmissionReview has no user agent, no client
# address, no response and no audit ID. A field is unavailable when it is one
# of these or lies beneath one (kubernetes.audit.responseObject.spec...).
ADMISSION_UNAVAILABLE_FIELDS: frozenset[str] = frozenset(
    {
        "source.ip",
        "client.ip",
        "related.ip",
        "user_agent.original",
        "kubernetes.audit.userAgent",
        "kubernetes.audit.sourceIPs",
        "kubernetes.audit.auditID",
        "kubernetes.audit.impersonatedUser",
        "kubernetes.audit.responseStatus",
        "kubernetes.audit.responseObject",
        "kubernetes.audit.annotations.authorization_k8s_io/reason",
    }
)


# --- typed shapes -------------------------------------------------------------


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


# --- the mapping table: audit event -> document ---------------------------------

# The table, as data: (document field, where it comes from). _build_document
# below fills exactly these fields, in this order; tests check the two agree.
DOCUMENT_FIELDS: tuple[tuple[str, str], ...] = (
    ("@timestamp", "stageTimestamp, else requestReceivedTimestamp (v1beta1: timestamp); admission: now"),
    ("event.kind", '"event"'),
    ("event.dataset", f'"{DATASET}"'),
    ("event.action", "verb"),
    ("event.outcome", "annotations[authorization.k8s.io/decision]: allow -> success, forbid -> failure"),
    ("data_stream.dataset", f'"{DATASET}"'),
    ("kubernetes.audit", "the event, annotation keys' dots -> underscores"),
    ("user.name", "user.username"),
    ("user.id", "user.uid"),
    ("user_agent.original", "userAgent"),
    ("source.ip", "sourceIPs (the valid IP addresses)"),
    ("client.ip", "sourceIPs (the valid IP addresses)"),
    ("related.ip", "sourceIPs (the valid IP addresses)"),
    ("related.user", "user.uid, user.username"),
    ("container.image.name", "requestObject.spec.containers[].image"),
    ("orchestrator.type", '"kubernetes"'),
    ("orchestrator.api_version", "apiVersion"),
    ("orchestrator.namespace", "objectRef.namespace"),
    ("orchestrator.resource.type", "objectRef.resource"),
    ("orchestrator.resource.name", "objectRef.name"),
    ("orchestrator.resource.parent.type", "requestObject.metadata.ownerReferences[controller].kind, or the manifest's workload kind"),
    ("gatewatch.source", '"admission" | "audit" | "manifest"'),
    ("gatewatch.images", "requestObject.spec.{containers,initContainers,ephemeralContainers}[].image, normalized"),
    ("gatewatch.exec", "requestURI query of pods/exec and pods/attach: command, container, stdin, tty"),
    ("gatewatch.admission.uid", "AdmissionRequest.uid"),
    ("gatewatch.dry_run", "AdmissionRequest.dryRun"),
)


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    # dict first: JSON and YAML give dicts, and the ABC check costs more.
    if type(value) is dict or isinstance(value, Mapping):
        return value
    return None


_EMPTY: Mapping[str, Any] = {}


def _str_or_none(value: Any) -> str | None:
    return value if type(value) is str and value else None


@lru_cache(maxsize=1024)
def _is_ip(text: Any) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _valid_ips(ips: Any) -> list[str] | None:
    if type(ips) is not list:
        return None
    return [ip for ip in ips if type(ip) is str and _is_ip(ip)] or None


def _image_of(container: Any) -> Any:
    mapping = _as_mapping(container)
    return mapping.get("image") if mapping is not None else None


def _container_image_names(spec: Mapping[str, Any]) -> list[str] | None:
    containers = spec.get("containers")
    if type(containers) is not list:
        return None
    return [image for c in containers if type(image := _image_of(c)) is str] or None


def _images(spec: Mapping[str, Any]) -> list[ImageEntry] | None:
    entries: list[ImageEntry] = []
    for container_kind in CONTAINER_KINDS:
        containers = spec.get(container_kind)
        if type(containers) is not list:
            continue
        for container in containers:
            reference = _image_of(container)
            if type(reference) is not str:
                continue
            image = normalize_image(reference)
            name = container.get("name")
            entries.append(
                {
                    "reference": reference,
                    "registry": image.registry,
                    "repository": image.repository,
                    "tag": image.tag,
                    "digest": image.digest,
                    "container_kind": container_kind,
                    "container_name": name if type(name) is str else None,
                }
            )
    return entries or None


def _controller_kind(request_object: Mapping[str, Any]) -> str | None:
    metadata = _as_mapping(request_object.get("metadata"))
    owners = metadata.get("ownerReferences") if metadata else None
    if type(owners) is list:
        for owner in owners:
            if _as_mapping(owner) is not None and owner.get("controller"):
                return _str_or_none(owner.get("kind"))
    return None


def _parse_bool(value: str) -> bool:
    # Go's strconv.ParseBool, which the API server's parameter codec uses.
    return value in ("1", "t", "T", "true", "TRUE", "True")


def _interactive_options(request_uri: Any) -> dict[str, Any] | None:
    """pods/exec and pods/attach options, read from the requestURI.

    An audit event of an exec carries its options only in the requestURI, so
    the admission path rebuilds that URI and both inputs are read the same way.
    """
    if type(request_uri) is not str:
        return None
    query = parse_qs(urlsplit(request_uri).query)
    return {
        "command": query.get("command", []),
        "container": (query.get("container") or [None])[0],
        "stdin": _parse_bool((query.get("stdin") or ["false"])[0]),
        "tty": _parse_bool((query.get("tty") or ["false"])[0]),
    }


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` unless ``value`` is None: absent, as Elastic leaves a field it has no value for."""
    if value is not None:
        target[key] = value


def _build_document(
    event: Mapping[str, Any],
    *,
    source: Source,
    timestamp: str | None,
    admission: AdmissionRequest | None = None,
    workload_kind: str | None = None,
) -> dict[str, Any]:
    """The mapping itself: one block per group of DOCUMENT_FIELDS rows, in order.

    Straight-line code rather than a loop over the table: this is the hot path.
    """
    raw_annotations = _as_mapping(event.get("annotations"))
    annotations = {key.replace(".", "_"): value for key, value in raw_annotations.items()} if raw_annotations else {}
    user = _as_mapping(event.get("user")) or _EMPTY
    object_ref = _as_mapping(event.get("objectRef")) or _EMPTY
    request_object = _as_mapping(event.get("requestObject")) or _EMPTY
    spec = _as_mapping(request_object.get("spec")) or _EMPTY
    document: dict[str, Any] = {}

    _put(document, "@timestamp", timestamp)

    event_fields: dict[str, Any] = {"kind": "event", "dataset": DATASET}
    _put(event_fields, "action", _str_or_none(event.get("verb")))
    _put(event_fields, "outcome", OUTCOME_BY_DECISION.get(annotations.get("authorization_k8s_io/decision")))
    document["event"] = event_fields
    document["data_stream"] = {"dataset": DATASET}

    audit = dict(event)  # shallow: only the annotations are replaced
    if raw_annotations is not None:
        audit["annotations"] = annotations
    document["kubernetes"] = {"audit": audit}

    user_fields: dict[str, Any] = {}
    _put(user_fields, "name", _str_or_none(user.get("username")))
    _put(user_fields, "id", _str_or_none(user.get("uid")))
    if user_fields:
        document["user"] = user_fields

    user_agent = _str_or_none(event.get("userAgent"))
    if user_agent is not None:
        document["user_agent"] = {"original": user_agent}

    source_ips = _valid_ips(event.get("sourceIPs"))
    related: dict[str, Any] = {}
    if source_ips is not None:
        document["source"] = {"ip": source_ips}
        document["client"] = {"ip": source_ips}
        related["ip"] = source_ips
    _put(related, "user", [v for v in (user.get("uid"), user.get("username")) if v] or None)
    if related:
        document["related"] = related

    image_names = _container_image_names(spec) if spec else None
    if image_names is not None:
        document["container"] = {"image": {"name": image_names}}

    resource: dict[str, Any] = {}
    _put(resource, "type", _str_or_none(object_ref.get("resource")))
    _put(resource, "name", _str_or_none(object_ref.get("name")))
    parent_kind = workload_kind or (_controller_kind(request_object) if request_object else None)
    if parent_kind is not None:
        resource["parent"] = {"type": parent_kind}
    orchestrator: dict[str, Any] = {"type": "kubernetes"}
    _put(orchestrator, "api_version", _str_or_none(event.get("apiVersion")))
    _put(orchestrator, "namespace", _str_or_none(object_ref.get("namespace")))
    if resource:
        orchestrator["resource"] = resource
    document["orchestrator"] = orchestrator

    gatewatch: dict[str, Any] = {"source": source}
    _put(gatewatch, "images", _images(spec) if spec else None)
    if object_ref.get("subresource") in INTERACTIVE_SUBRESOURCES:
        _put(gatewatch, "exec", _interactive_options(event.get("requestURI")))
    if admission is not None:
        gatewatch["admission"] = {"uid": admission["uid"]}
        _put(gatewatch, "dry_run", admission.get("dryRun"))
    document["gatewatch"] = gatewatch
    return document


# --- audit events ----------------------------------------------------------------


def _check_type(value: Any, expected: type | tuple[type, ...], field: str, what: str) -> None:
    if value is not None and not isinstance(value, expected):
        raise InputError(f"{field}: expected {what}, got {type(value).__name__}")


def document_from_audit_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """Map one audit.k8s.io/v1 (or v1beta1) Event onto the document.

    Raises InputError when ``event`` is not an audit event (wrong kind or
    apiVersion, no verb, a field of the wrong type); the caller adds the
    file and line.
    """
    if not isinstance(event, Mapping):
        raise InputError(f"an audit event must be a JSON object, got {type(event).__name__}")
    kind = event.get("kind")
    if kind is not None and kind != "Event":
        raise InputError(f"kind: expected Event, got {kind!r}: not an audit event")
    api_version = event.get("apiVersion")
    if api_version is not None and api_version not in AUDIT_API_VERSIONS:
        raise InputError(f"apiVersion: expected one of {sorted(AUDIT_API_VERSIONS)}, got {api_version!r}")
    verb = event.get("verb")
    if not isinstance(verb, str) or not verb:
        raise InputError("verb: missing or not a string: not an audit event")
    for field in ("user", "objectRef", "annotations", "requestObject"):
        _check_type(event.get(field), Mapping, field, "an object")
    _check_type(event.get("sourceIPs"), list, "sourceIPs", "a list")
    timestamp = (
        event.get("stageTimestamp")
        or event.get("requestReceivedTimestamp")
        or event.get("timestamp")  # audit.k8s.io/v1beta1
    )
    _check_type(timestamp, str, "stageTimestamp", "a string")
    return _build_document(event, source="audit", timestamp=timestamp)


def document_from_audit_line(text: str | bytes, *, source: str | None = None, line: int | None = None) -> dict[str, Any]:
    """Parse one JSON line of an audit log (log backend) into a document.

    Errors name ``source:line``.
    """
    try:
        event = json.loads(text)
    except ValueError as error:
        raise InputError(f"not valid JSON: {error}", source=source, line=line) from None
    try:
        return document_from_audit_event(event)
    except InputError as error:
        raise InputError(error.reason, source=source, line=line) from None


# --- admission reviews -----------------------------------------------------------


def _require_str(request: Mapping[str, Any], key: str, prefix: str, *, required: bool = True) -> None:
    value = request.get(key)
    if value is None:
        if required:
            raise InputError(f"{prefix}{key}: missing")
        return
    if not isinstance(value, str) or (required and not value):
        raise InputError(f"{prefix}{key}: expected a non-empty string, got {value!r}")


def _require_group_version(request: Mapping[str, Any], key: str, last: str, prefix: str, *, required: bool) -> None:
    value = request.get(key)
    if value is None:
        if required:
            raise InputError(f"{prefix}{key}: missing")
        return
    if not isinstance(value, Mapping):
        raise InputError(f"{prefix}{key}: expected an object with group, version, {last}")
    for part in ("group", "version", last):
        if not isinstance(value.get(part, "" if part == "group" else None), str):
            raise InputError(f"{prefix}{key}.{part}: missing or not a string")
    if not value[last]:
        raise InputError(f"{prefix}{key}.{last}: empty")


def parse_admission_request(review: Mapping[str, Any]) -> AdmissionRequest:
    """Validate an AdmissionReview (v1/v1beta1, wrapped or a bare request) and return its request.

    The returned mapping is the request itself (not a copy), typed. Malformed
    input raises InputError naming the field, e.g. ``request.uid: missing``.
    """
    if not isinstance(review, Mapping):
        raise InputError(f"an AdmissionReview must be a JSON object, got {type(review).__name__}")
    if "request" in review or review.get("kind") == "AdmissionReview":
        kind = review.get("kind")
        if kind is not None and kind != "AdmissionReview":
            raise InputError(f"kind: expected AdmissionReview, got {kind!r}")
        api_version = review.get("apiVersion")
        if api_version is not None and api_version not in ADMISSION_API_VERSIONS:
            raise InputError(
                f"apiVersion: expected one of {sorted(ADMISSION_API_VERSIONS)}, got {api_version!r}"
            )
        request = review.get("request")
        if not isinstance(request, Mapping):
            raise InputError("request: missing or not an object")
        prefix = "request."
    else:
        request, prefix = review, ""

    _require_str(request, "uid", prefix)
    _require_group_version(request, "kind", "kind", prefix, required=True)
    _require_group_version(request, "resource", "resource", prefix, required=True)
    _require_group_version(request, "requestKind", "kind", prefix, required=False)
    _require_group_version(request, "requestResource", "resource", prefix, required=False)
    operation = request.get("operation")
    if operation not in OPERATIONS:
        raise InputError(f"{prefix}operation: expected one of {sorted(OPERATIONS)}, got {operation!r}")
    for key in ("subResource", "requestSubResource", "name", "namespace"):
        _require_str(request, key, prefix, required=False)
    _check_type(request.get("userInfo"), Mapping, f"{prefix}userInfo", "an object")
    _check_type(request.get("oldObject"), Mapping, f"{prefix}oldObject", "an object")
    _check_type(request.get("options"), Mapping, f"{prefix}options", "an object")
    _check_type(request.get("dryRun"), bool, f"{prefix}dryRun", "true or false")
    obj = request.get("object")
    if operation != "DELETE" and not isinstance(obj, Mapping):
        raise InputError(f"{prefix}object: expected an object for {operation}, got {type(obj).__name__}")
    _check_type(obj, Mapping, f"{prefix}object", "an object")
    return cast(AdmissionRequest, request)


def _query_string(options: Any) -> str:
    """Encode API options as the query string Go's url.Values.Encode writes.

    Keys sorted, one ``key=value`` per list element, booleans only when true
    and empty values omitted (the options' ``omitempty``), QueryEscape'd.
    """
    if not isinstance(options, Mapping):
        return ""
    pairs: list[str] = []
    for key in sorted(options):
        if key in ("kind", "apiVersion"):
            continue
        value = options[key]
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item is None or item is False or item == "" or isinstance(item, (Mapping, list)):
                continue  # unset (omitempty), or nested: never part of a query
            text = "true" if item is True else str(item)
            pairs.append(f"{quote_plus(key, safe='')}={quote_plus(text, safe='')}")
    return "&".join(pairs)


def _request_uri(
    *, operation: str, gvr: Mapping[str, Any], namespace: str, name: str, subresource: str, options: Any
) -> str:
    group, version = gvr.get("group") or "", gvr.get("version") or ""
    path = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    if namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{gvr.get('resource')}"
    if operation != "CREATE" or subresource:  # a create POSTs to the collection
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    if operation == "DELETE":  # DeleteOptions travel in the body
        return path
    query = _query_string(options)
    return f"{path}?{query}" if query else path


def _verb(request: AdmissionRequest) -> str:
    operation = request["operation"]
    if operation in ("CREATE", "CONNECT"):
        return "create"
    if operation == "UPDATE":
        options = request.get("options")
        is_patch = isinstance(options, Mapping) and options.get("kind") == "PatchOptions"
        return "patch" if is_patch else "update"
    return "delete"


def audit_event_from_admission_request(request: AdmissionRequest, *, timestamp: str) -> AuditEvent:
    """The audit event the API server writes for ``request`` once it is allowed.

    No auditID: request.uid identifies the admission call, not the API
    request's audit ID, which differs; the uid is kept in the document under
    gatewatch.admission.uid instead. No userAgent and no sourceIPs: an
    AdmissionReview does not carry them. ``user`` is userInfo, i.e. the
    effective user: when impersonating, the audit log names the impersonator
    in ``user`` and this user in ``impersonatedUser``.
    """
    gvr = request.get("requestResource") or request["resource"]
    subresource = request.get("requestSubResource", request.get("subResource")) or ""
    obj = request.get("object")
    namespace = request.get("namespace") or ""
    metadata = _as_mapping(obj.get("metadata")) if obj is not None else None
    name = request.get("name") or (metadata.get("name") if metadata else None) or ""
    options = obj if request["operation"] == "CONNECT" else request.get("options")

    object_ref: ObjectReference = {"resource": gvr["resource"]}
    if namespace:
        object_ref["namespace"] = namespace
    if name:
        object_ref["name"] = name
    if gvr.get("group"):
        object_ref["apiGroup"] = gvr["group"]
    object_ref["apiVersion"] = gvr["version"]
    if subresource:
        object_ref["subresource"] = subresource

    event: AuditEvent = {
        "kind": "Event",
        "apiVersion": AUDIT_API_VERSION,
        "level": "Request",
        "stage": "ResponseComplete",
        "requestURI": _request_uri(
            operation=request["operation"],
            gvr=gvr,
            namespace=namespace,
            name=name,
            subresource=subresource,
            options=options,
        ),
        "verb": _verb(request),
        "objectRef": object_ref,
        "requestReceivedTimestamp": timestamp,
        "stageTimestamp": timestamp,
        # Authorization runs before admission: a request under review was allowed.
        "annotations": {DECISION_ANNOTATION: "allow"},
    }
    user = request.get("userInfo")
    if user:
        event["user"] = user
    if isinstance(obj, Mapping):
        event["requestObject"] = obj
    return event


def format_timestamp(moment: datetime | None = None) -> str:
    """RFC 3339 with microseconds in UTC, as the audit log writes it; naive means UTC."""
    moment = moment or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def document_from_admission_review(
    review: Mapping[str, Any], *, now: datetime | None = None, source: Source = "admission"
) -> dict[str, Any]:
    """Map an AdmissionReview (wrapped or a bare request) onto the document.

    ``now`` (default: the current time) becomes @timestamp. Raises InputError
    for a malformed review (see parse_admission_request).
    """
    request = parse_admission_request(review)
    return _document_from_request(request, now=now, source=source)


def _document_from_request(
    request: AdmissionRequest, *, now: datetime | None, source: Source, workload_kind: str | None = None
) -> dict[str, Any]:
    timestamp = format_timestamp(now)
    event = audit_event_from_admission_request(request, timestamp=timestamp)
    return _build_document(
        event,
        source=source,
        timestamp=timestamp,
        admission=request if source == "admission" else None,
        workload_kind=workload_kind,
    )


# --- manifests -------------------------------------------------------------------

DEFAULT_NAMESPACE = "default"  # where kubectl creates an object that names none


def document_from_pod(
    pod: Mapping[str, Any],
    *,
    namespace: str | None = None,
    user: Mapping[str, Any] | None = None,
    now: datetime | None = None,
    workload_kind: str | None = None,
) -> dict[str, Any]:
    """A manifest Pod, evaluated as the Pod CREATE it would cause.

    Goes through the admission path with an equivalent AdmissionRequest.
    ``namespace`` overrides the Pod's own (default: ``default``); ``user``
    (userInfo shape) is absent unless given; ``workload_kind`` names the
    workload the Pod came from (orchestrator.resource.parent.type).
    """
    if not isinstance(pod, Mapping):
        raise InputError(f"a Pod must be an object, got {type(pod).__name__}")
    kind = pod.get("kind")
    if kind is not None and kind != "Pod":
        raise InputError(f"kind: expected Pod, got {kind!r}")
    metadata = pod.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise InputError("metadata: expected an object")
    if not isinstance(pod.get("spec"), Mapping):
        raise InputError("spec: missing or not an object")
    name = metadata.get("name") or metadata.get("generateName") or ""
    request: dict[str, Any] = {
        "uid": "",  # not an admission call: no uid, and gatewatch.admission stays absent
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "name": name if isinstance(name, str) else "",
        "namespace": namespace or metadata.get("namespace") or DEFAULT_NAMESPACE,
        "object": pod,
        "dryRun": False,
    }
    if user:
        request["userInfo"] = user
    return _document_from_request(
        cast(AdmissionRequest, request), now=now, source="manifest", workload_kind=workload_kind
    )
