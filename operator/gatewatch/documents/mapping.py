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
gatewatch.user.effective                impersonatedUser.username, else user.username   admission: userInfo.username
gatewatch.images                        requestObject.spec.{containers,initContainers,  normalized, see images.py;
                                        ephemeralContainers}[].image                    UPDATE: only added/changed
                                                                                        images; JSON patch: the
                                                                                        images its operations set
gatewatch.containers,                   a whole Pod (requestObject of a Pod create or   see podspec.py: one element
gatewatch.security_contexts,            update, an ephemeralcontainers update, a        per container, security
gatewatch.added_capabilities,           manifest): its spec and annotations,            context, added capability,
gatewatch.volumes,                      normalized                                      volume source, host port,
gatewatch.host_ports,                                                                   probe host, annotation;
gatewatch.probe_hosts,                                                                  each with its path in the
gatewatch.annotations                                                                   Pod
gatewatch.exec                          requestURI query of pods/exec and pods/attach   command, container, stdin, tty
gatewatch.admission.uid                 AdmissionRequest.uid                            admission only
gatewatch.dry_run                       AdmissionRequest.dryRun                         admission only
======================================  ==============================================  ==========================

The rows are also data, ``DOCUMENT_FIELDS``; ``_build_document`` fills them in
the same order, and the tests check that the two agree.

Updates and patches (``gatewatch.images``):

- at admission, an UPDATE carries ``oldObject``: ``gatewatch.images`` holds
  only the images the update adds or changes (compared per container kind and
  container name), so relabelling a running busybox pod does not report
  busybox again;
- in an audit log there is no ``oldObject``. An ``update`` event's
  requestObject is the whole object, so every image in it is listed (replay
  cannot tell an image change from any other update). A ``patch`` event's
  requestObject is the patch body: a strategic merge or merge patch
  (``{"spec": {"containers": [{"name": "app", "image": "busybox"}]}}``) lists
  the images it sets; a JSON patch (a list of operations) lists the images its
  ``add``/``replace`` operations set at ``/spec``, ``/spec/<kind>``,
  ``/spec/<kind>/<i>`` or ``/spec/<kind>/<i>/image`` (container name unknown
  for the last form). Images the patch does not mention are not seen.

Field types follow the one input-shape policy, gatewatch.shapes: an
admission review with a field of the wrong type raises InputError naming it
(the API server would never send one); an audit event is refused only when
it is not an audit event at all (``check_audit_event``), and is otherwise
mapped as Elastic would index it: a single value where a list is expected is
a list of one, a field of the wrong type is absent (``audit_event_view``
says which, for replay's warnings).

An AdmissionRequest becomes the audit event the API server writes once the
request is allowed (``audit_event_from_admission_request``): stage
ResponseComplete, decision allow (authorization has already passed when
admission runs), verb create for CREATE and CONNECT, patch for an UPDATE sent
as a patch (``kubectl debug``), requestURI rebuilt the way kubectl sends it.

Access paths at admission (each a CONNECT whatever the HTTP method; the audit
log has the method's verb instead: get, create, update, patch, delete):

- ``pods/portforward``: PodPortForwardOptions, ``ports`` in the query
  (``/api/v1/namespaces/NS/pods/NAME/portforward?ports=8080``), when the
  client sent any: kubectl names its ports in SPDY stream headers instead,
  which admission never sees;
- ``pods/proxy`` and ``nodes/proxy``: PodProxyOptions / NodeProxyOptions,
  whose ``path`` is the rest of the URL path
  (``/api/v1/nodes/NAME/proxy/exec/NS/POD/CONTAINER``); the query string the
  client sent (an exec's ``command=``) and the body are not in the options,
  so they are not in the requestURI either.

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
- as Elastic: ``user.name`` is ``user.username`` only, which in an audit
  event of an impersonated request is the impersonator;
  ``gatewatch.user.effective`` is the identity the request acted as. At
  admission ``userInfo`` is already the impersonated user, and the
  impersonator is not visible.

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
from urllib.parse import parse_qs, quote_plus

from gatewatch.errors import InputError
from gatewatch.images import normalize_image
from gatewatch.podspec import pod_fields as podspec_fields
from gatewatch.shapes import (
    AUDIT_API_VERSIONS,
    CONNECT_OPTIONS,
    CONTAINER_KINDS,
    POD,
    USER_INFO,
    as_list,
    audit_event_refusal,
    audit_event_view,
    is_object,
    json_patch_spec,
    json_pointer,
    pod_problem,
    problem,
)

DATASET = "kubernetes.audit_logs"
AUDIT_API_VERSION = "audit.k8s.io/v1"
ADMISSION_API_VERSIONS = frozenset({"admission.k8s.io/v1", "admission.k8s.io/v1beta1"})
DECISION_ANNOTATION = "authorization.k8s.io/decision"
OUTCOME_BY_DECISION = {"allow": "success", "forbid": "failure"}
# Subresources whose options travel in the requestURI query (PodExecOptions, PodAttachOptions).
INTERACTIVE_SUBRESOURCES = frozenset({"exec", "attach"})
# pods/proxy, nodes/proxy (and services/proxy): the options' path is part of the requestURI's path.
PROXY_SUBRESOURCES = frozenset({"proxy"})

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
    ("gatewatch.user.effective", "impersonatedUser.username, else user.username"),
    ("gatewatch.images", "requestObject.spec.{containers,initContainers,ephemeralContainers}[].image, normalized;"
     " for an UPDATE only the images it adds or changes; for a JSON patch the images it sets"),
    ("gatewatch.containers", "a whole Pod's containers of every kind (see podspec.py)"),
    ("gatewatch.security_contexts", "a whole Pod's securityContext and each container's (see podspec.py)"),
    ("gatewatch.added_capabilities", "a whole Pod's securityContext.capabilities.add entries (see podspec.py)"),
    ("gatewatch.volumes", "a whole Pod's volume sources (see podspec.py)"),
    ("gatewatch.host_ports", "a whole Pod's hostPort settings (see podspec.py)"),
    ("gatewatch.probe_hosts", "a whole Pod's probe and lifecycle handler hosts (see podspec.py)"),
    ("gatewatch.annotations", "a whole Pod's metadata.annotations (see podspec.py)"),
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


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_object(obj: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """An admitted object's Pod fields, type-checked strictly (gatewatch.shapes); returns its spec (or an empty one)."""
    found = problem(obj, POD, where.rstrip("."))
    if found is not None:
        raise InputError(found)
    spec = obj.get("spec")
    return spec if spec is not None else _EMPTY


def _containers(spec: Mapping[str, Any], container_kind: str) -> list[Mapping[str, Any]]:
    """``spec[container_kind]`` as Elastic reads it: a single container is a list of one; non-objects are no container."""
    return [container for container in as_list(spec.get(container_kind)) if is_object(container)]


def _container_image_names(spec: Mapping[str, Any]) -> list[str] | None:
    return [image for c in _containers(spec, "containers") if type(image := c.get("image")) is str] or None


def image_entry(reference: str, *, container_kind: str, container_name: str | None) -> ImageEntry:
    """One ``gatewatch.images`` element: ``reference`` normalized (see images.py)."""
    image = normalize_image(reference)
    return {
        "reference": reference,
        "registry": image.registry,
        "repository": image.repository,
        "name": image.short_name,
        "tag": image.tag,
        "digest": image.digest,
        "container_kind": container_kind,
        "container_name": container_name,
    }


ContainerKey = tuple[str, str | int]  # (container kind, container name, or index when unnamed)


def _container_images(spec: Mapping[str, Any]) -> dict[ContainerKey, str | None]:
    images: dict[ContainerKey, str | None] = {}
    for container_kind in CONTAINER_KINDS:
        for index, container in enumerate(_containers(spec, container_kind)):
            name = container.get("name")
            images[(container_kind, name if type(name) is str else index)] = container.get("image")
    return images


def _images(spec: Mapping[str, Any], *, old_spec: Mapping[str, Any] | None = None) -> list[ImageEntry]:
    """The images of a spec; with ``old_spec``, only those that differ from it.

    Reads any resource's spec (a CRD's too) without trusting it: what is not
    a container with a string image is no image.
    """
    if not is_object(spec):
        return []
    previous = _container_images(old_spec) if old_spec is not None else None
    entries: list[ImageEntry] = []
    for container_kind in CONTAINER_KINDS:
        for index, container in enumerate(_containers(spec, container_kind)):
            reference = container.get("image")
            if type(reference) is not str:  # a patch element that does not set the image
                continue
            name = container.get("name")
            name = name if type(name) is str else None
            if previous is not None and previous.get((container_kind, name if name is not None else index)) == reference:
                continue
            entries.append(image_entry(reference, container_kind=container_kind, container_name=name))
    return entries


def _json_patch_images(operations: list[Any]) -> list[ImageEntry]:
    """The images a JSON patch (RFC 6902) sets in the pod spec with ``add`` or ``replace``.

    ``copy`` and ``move`` name a source path, not a value: what they write is
    not seen. Operations that are not objects with a string path set nothing.
    """
    entries: list[ImageEntry] = []
    for operation in operations:
        if not is_object(operation) or operation.get("op") not in ("add", "replace"):
            continue
        path = operation.get("path")
        if type(path) is not str:
            continue
        fragment = json_patch_spec(json_pointer(path), operation.get("value"))
        if fragment is not None:
            entries += _images(fragment)
    return entries


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
    # Not urlsplit: it raises on text such as "//[" (an IPv6 host never closed).
    query = parse_qs(request_uri.partition("?")[2].partition("#")[0])
    return {
        "command": query.get("command", []),
        "container": (query.get("container") or [None])[0],
        "stdin": _parse_bool((query.get("stdin") or ["false"])[0]),
        "tty": _parse_bool((query.get("tty") or ["false"])[0]),
    }


# Pod subresources whose request object is the whole Pod (Pod Security Admission evaluates them too).
WHOLE_POD_SUBRESOURCES = frozenset({"", "ephemeralcontainers"})


def _is_whole_pod(
    event: Mapping[str, Any], object_ref: Mapping[str, Any], request_object: Mapping[str, Any], *, source: Source
) -> bool:
    """True when the request object is a whole Pod, not a patch of one or another kind of object.

    At admission (and for a manifest) the object of a Pod create or update is
    always whole, a patch included; in an audit log a ``patch`` event's
    requestObject is the patch body, so only create and update count there.
    """
    if object_ref.get("resource") != "pods" or (object_ref.get("subresource") or "") not in WHOLE_POD_SUBRESOURCES:
        return False
    if request_object.get("kind", "Pod") != "Pod":
        return False
    return source != "audit" or event.get("verb") in ("create", "update")


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
    object_field: str = "requestObject.",
    old_object: Mapping[str, Any] | None = None,
    object_checked: bool = False,
    with_pod_fields: bool = True,
) -> dict[str, Any]:
    """The mapping itself: one block per group of DOCUMENT_FIELDS rows, in order.

    ``event`` is an audit event's view (gatewatch.shapes.audit_event_view) or
    was built by audit_event_from_admission_request: the lookups below trust
    the types of its own fields. ``object_field`` names the requestObject in
    errors (``request.object.`` for a review); ``old_object`` (an UPDATE's)
    limits gatewatch.images to what changed; ``object_checked``: the
    requestObject is an audit event's, already conformed (its spec is read
    as any resource's, see _images), so it is not checked strictly;
    ``with_pod_fields=False`` leaves out the normalized Pod lists (the engine
    says whether a rule reads them: they cost more than the rest of the
    mapping). Straight-line code rather than a loop over the table: this is
    the hot path.
    """
    raw_annotations = _as_mapping(event.get("annotations"))
    annotations = {key.replace(".", "_"): value for key, value in raw_annotations.items()} if raw_annotations else {}
    user = _as_mapping(event.get("user")) or _EMPTY
    object_ref = _as_mapping(event.get("objectRef")) or _EMPTY
    raw_request_object = event.get("requestObject")
    request_object = _as_mapping(raw_request_object) or _EMPTY
    if not request_object:
        spec = _EMPTY
    elif object_checked:
        spec = _as_mapping(request_object.get("spec")) or _EMPTY
    else:
        spec = _check_object(request_object, object_field)
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
    impersonated = _as_mapping(event.get("impersonatedUser"))
    effective_user = (_str_or_none(impersonated.get("username")) if impersonated else None) or user_fields.get("name")
    if effective_user is not None:
        gatewatch["user"] = {"effective": effective_user}
    if spec:
        old_spec = _check_object(old_object, "request.oldObject.") if old_object is not None else None
        images = _images(spec, old_spec=old_spec)
    elif type(raw_request_object) is list:  # a JSON patch, as the audit log records it
        images = _json_patch_images(raw_request_object)
    else:
        images = None
    _put(gatewatch, "images", images or None)
    if with_pod_fields and request_object and _is_whole_pod(event, object_ref, request_object, source=source):
        gatewatch.update(podspec_fields(request_object, where=object_field))
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


def check_audit_event(event: Any, *, pod_fields: bool = True) -> None:
    """Raise InputError when ``event`` is not an audit event at all (not an object, wrong kind or
    apiVersion, no verb): the only events replay drops. Fields of the wrong type are not refused
    (gatewatch.shapes.audit_event_view sets them aside, the normalized Pod lists' included, so
    ``pod_fields`` changes nothing here; it is kept for callers that pass it)."""
    refusal = audit_event_refusal(event)
    if refusal is not None:
        raise InputError(refusal)


def _audit_timestamp(event: Mapping[str, Any]) -> Any:
    return (
        event.get("stageTimestamp")
        or event.get("requestReceivedTimestamp")
        or event.get("timestamp")  # audit.k8s.io/v1beta1
    )


def document_from_audit_event(
    event: Mapping[str, Any], *, checked: bool = False, pod_fields: bool = True
) -> dict[str, Any]:
    """Map one audit.k8s.io/v1 (or v1beta1) Event onto the document.

    Raises InputError when ``event`` is not an audit event (see
    check_audit_event); the caller adds the file and line. A field of the
    wrong type is absent from the document (gatewatch.shapes). ``checked=True``
    says ``event`` is already the view audit_event_view returned (replay
    checks every line once), so it is not conformed again. ``pod_fields=False``
    leaves out the normalized Pod lists (``RuleEngine.reads_pod_fields`` says
    when none is needed).
    """
    if not checked:
        event = audit_event_view(event).event
    return _build_document(
        event, source="audit", timestamp=_audit_timestamp(event), object_checked=True, with_pod_fields=pod_fields
    )


def document_from_audit_line(text: str | bytes, *, source: str | None = None, line: int | None = None) -> dict[str, Any]:
    """Parse one JSON line of an audit log (log backend) into a document.

    Errors name ``source:line``.
    """
    try:
        event = json.loads(text)
    except ValueError as error:
        raise InputError(f"not valid JSON: {error}", source=source, line=line) from None
    except RecursionError:
        raise InputError("not valid JSON: nested too deeply", source=source, line=line) from None
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
        if api_version is not None and (type(api_version) is not str or api_version not in ADMISSION_API_VERSIONS):
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
    if type(operation) is not str or operation not in OPERATIONS:
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
    # The options become the requestURI's query, keys sorted: only YAML can make a key that is no string.
    options, options_field = (obj, "object") if operation == "CONNECT" else (request.get("options"), "options")
    if options:
        for key in options:
            if type(key) is not str:
                raise InputError(f"{prefix}{options_field}: keys must be strings, got {key!r}")
    problem = _admission_objects_problem(request, prefix)
    if problem is not None:
        raise InputError(problem)
    return cast(AdmissionRequest, request)


def _admission_objects_problem(request: Mapping[str, Any], prefix: str) -> str | None:
    """What a real API server never sends in the fields gatewatch reads: the user, a Pod's spec and
    containers, exec/attach options. At admission the object has passed the API server's schema
    validation, so anything else is a forged or broken call, refused rather than half evaluated."""
    found = problem(request.get("userInfo"), USER_INFO, f"{prefix}userInfo")  # gatewatch.shapes, strict
    if found is not None:
        return found
    kind = request["kind"]
    operation = request["operation"]
    if kind.get("group", "") == "" and kind["kind"] == "Pod" and operation in ("CREATE", "UPDATE"):
        objects = (("object", request.get("object")), ("oldObject", request.get("oldObject")))
        for field, pod in objects:
            if pod is None:
                continue  # object: checked above; an UPDATE without oldObject is evaluated as all new
            if not is_object(pod.get("spec")):
                return f"{prefix}{field}.spec: expected an object, got {_type_name(pod.get('spec'))}"
            found = pod_problem(pod, prefix=f"{prefix}{field}.")
            if found is not None:
                return found
    if operation == "CONNECT":
        return problem(request.get("object"), CONNECT_OPTIONS, f"{prefix}object")
    return None


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
    if subresource in PROXY_SUBRESOURCES and isinstance(options, Mapping):
        # PodProxyOptions/NodeProxyOptions.path is the URL path after .../proxy, leading "/"
        # included (kube-apiserver's getRequestOptions): it goes back into the path. The
        # client's query string is not in the options, so admission never sees it.
        proxied = options.get("path")
        if isinstance(proxied, str) and proxied:
            path += proxied if proxied.startswith("/") else f"/{proxied}"
        options = {key: value for key, value in options.items() if key != "path"}
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
    name = request.get("name") or (_str_or_none(metadata.get("name")) if metadata else None) or ""
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
    return document_from_admission_request(parse_admission_request(review), now=now, source=source)


def document_from_admission_request(
    request: AdmissionRequest, *, now: datetime | None = None, source: Source = "admission", pod_fields: bool = True
) -> dict[str, Any]:
    """document_from_admission_review for a request ``parse_admission_request`` already returned
    (the webhook checks every review before evaluating it: no second parse). ``pod_fields=False``
    leaves out the normalized Pod lists."""
    return _document_from_request(request, now=now, source=source, pod_fields=pod_fields)


def _document_from_request(
    request: AdmissionRequest,
    *,
    now: datetime | None,
    source: Source,
    workload_kind: str | None = None,
    pod_fields: bool = True,
) -> dict[str, Any]:
    timestamp = format_timestamp(now)
    event = audit_event_from_admission_request(request, timestamp=timestamp)
    old_object = request.get("oldObject") if request["operation"] == "UPDATE" else None
    return _build_document(
        event,
        source=source,
        timestamp=timestamp,
        admission=request if source == "admission" else None,
        workload_kind=workload_kind,
        object_field="" if source == "manifest" else "request.object.",
        old_object=old_object,
        with_pod_fields=pod_fields,
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
    source: Source = "manifest",
    pod_fields: bool = True,
) -> dict[str, Any]:
    """A manifest Pod, evaluated as the Pod CREATE it would cause.

    Goes through the admission path with an equivalent AdmissionRequest.
    ``namespace`` overrides the Pod's own (default: ``default``); ``user``
    (userInfo shape) is absent unless given; ``workload_kind`` names the
    workload the Pod came from (orchestrator.resource.parent.type).
    ``source`` is ``admission`` for the Pod template of a workload under
    review (the webhook evaluates it as ``gatewatch check`` does).
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
    # They become objectRef.name / .namespace and part of the requestURI.
    for key in ("name", "generateName", "namespace"):
        _check_type(metadata.get(key), str, f"metadata.{key}", "a string")
    name = metadata.get("name") or metadata.get("generateName") or ""
    request: dict[str, Any] = {
        "uid": "",  # not an admission call: no uid, and gatewatch.admission stays absent
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "name": name,
        "namespace": namespace or metadata.get("namespace") or DEFAULT_NAMESPACE,
        "object": pod,
        "dryRun": False,
    }
    if user:
        request["userInfo"] = user
    return _document_from_request(
        cast(AdmissionRequest, request), now=now, source=source, workload_kind=workload_kind, pod_fields=pod_fields
    )
