"""Audit event -> the document the rules query, as one readable mapping table.

The document is the one Elastic's Kubernetes integration stores for an audit
event (data stream ``logs-kubernetes.audit_logs-*``), so Elastic's detection
rules run unchanged. Every input is first turned into an audit event
(``audit.k8s.io/v1`` Event: admission.py, audit.py, manifests.py); one table
then maps the audit event onto the document:

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

The images of updates and patches: see container_images.py.

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
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from gatewatch.documents.container_images import _container_image_names, _images, _json_patch_images
from gatewatch.documents.types import AdmissionRequest, Source
from gatewatch.errors import InputError
from gatewatch.podspec import pod_fields as podspec_fields
from gatewatch.query_string import query_pairs
from gatewatch.shapes import POD, problem

DATASET = "kubernetes.audit_logs"
DECISION_ANNOTATION = "authorization.k8s.io/decision"
OUTCOME_BY_DECISION = {"allow": "success", "forbid": "failure"}
# Subresources whose options travel in the requestURI query (PodExecOptions, PodAttachOptions).
INTERACTIVE_SUBRESOURCES = frozenset({"exec", "attach"})


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


def _check_object(obj: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """An admitted object's Pod fields, type-checked strictly (gatewatch.shapes); returns its spec (or an empty one)."""
    found = problem(obj, POD, where.rstrip("."))
    if found is not None:
        raise InputError(found)
    spec = obj.get("spec")
    return spec if spec is not None else _EMPTY


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


def _parse_query(query: str) -> dict[str, list[str]]:
    """``urllib.parse.parse_qs(query)``: every exec review has one (gatewatch.query_string)."""
    parsed: dict[str, list[str]] = {}
    for name, value in query_pairs(query):
        parsed.setdefault(name, []).append(value)
    return parsed


def _interactive_options(request_uri: Any) -> dict[str, Any] | None:
    """pods/exec and pods/attach options, read from the requestURI.

    An audit event of an exec carries its options only in the requestURI, so
    the admission path rebuilds that URI and both inputs are read the same way.
    """
    if type(request_uri) is not str:
        return None
    # Not urlsplit: it raises on text such as "//[" (an IPv6 host never closed).
    command, container, stdin, tty = _query_options(request_uri.partition("?")[2].partition("#")[0])
    return {"command": list(command), "container": container, "stdin": stdin, "tty": tty}


@lru_cache(maxsize=1024)
def _query_options(query: str) -> tuple[tuple[str, ...], str | None, bool, bool]:
    """The options of one query, remembered: the path names the pod, but the query
    (``command=sh&container=app&stdin=true&tty=true``) repeats, and parsing it cost 2 us.
    Immutable, so no document shares a list with another."""
    parsed = _parse_query(query)
    return (
        tuple(parsed.get("command", ())),
        (parsed.get("container") or [None])[0],
        _parse_bool((parsed.get("stdin") or ["false"])[0]),
        _parse_bool((parsed.get("tty") or ["false"])[0]),
    )


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
    requestObject (and ``old_object``) is an audit event's, already conformed
    (its spec is read as any resource's, see _images), or a review's Pod that
    parse_admission_request checked strictly, so it is not checked (again);
    ``with_pod_fields=False`` leaves out the normalized Pod lists (the engine
    says whether a rule reads them: they cost more than the rest of the
    mapping). Straight-line code rather than a loop over the table: this is
    the hot path.
    """
    # Inlined: every helper call here was a Python call per event (replay maps thousands a second).
    # Each ``x.__class__ is not dict`` test takes the general ``_as_mapping`` only for what is not a
    # plain dict; tests/test_documents_fast_path.py holds this to the mapping before it was inlined.
    get = event.get
    raw_annotations = get("annotations")
    if raw_annotations.__class__ is not dict:
        raw_annotations = _as_mapping(raw_annotations)
    annotations = {key.replace(".", "_"): value for key, value in raw_annotations.items()} if raw_annotations else {}
    user = get("user")
    if user.__class__ is not dict:
        user = _as_mapping(user) or _EMPTY
    object_ref = get("objectRef")
    if object_ref.__class__ is not dict:
        object_ref = _as_mapping(object_ref) or _EMPTY
    raw_request_object = get("requestObject")
    request_object = raw_request_object
    if request_object.__class__ is not dict:
        request_object = _as_mapping(request_object) or _EMPTY
    if not request_object:
        spec = _EMPTY
    elif object_checked:
        spec = request_object.get("spec")
        if spec.__class__ is not dict:
            spec = _as_mapping(spec) or _EMPTY
    else:
        spec = _check_object(request_object, object_field)
    document: dict[str, Any] = {}

    if timestamp is not None:
        document["@timestamp"] = timestamp

    event_fields: dict[str, Any] = {"kind": "event", "dataset": DATASET}
    verb = get("verb")
    if type(verb) is str and verb:
        event_fields["action"] = verb
    outcome = OUTCOME_BY_DECISION.get(annotations.get("authorization_k8s_io/decision"))
    if outcome is not None:
        event_fields["outcome"] = outcome
    document["event"] = event_fields
    document["data_stream"] = {"dataset": DATASET}

    audit = dict(event)  # shallow: only the annotations are replaced
    if raw_annotations is not None:
        audit["annotations"] = annotations
    document["kubernetes"] = {"audit": audit}

    username = user.get("username")
    uid = user.get("uid")
    user_fields: dict[str, Any] = {}
    if type(username) is str and username:
        user_fields["name"] = username
    if type(uid) is str and uid:
        user_fields["id"] = uid
    if user_fields:
        document["user"] = user_fields

    user_agent = get("userAgent")
    if type(user_agent) is str and user_agent:
        document["user_agent"] = {"original": user_agent}

    source_ips = _valid_ips(get("sourceIPs"))
    related: dict[str, Any] = {}
    if source_ips is not None:
        document["source"] = {"ip": source_ips}
        document["client"] = {"ip": source_ips}
        related["ip"] = source_ips
    related_users = [v for v in (uid, username) if v]
    if related_users:
        related["user"] = related_users
    if related:
        document["related"] = related

    image_names = _container_image_names(spec) if spec else None
    if image_names is not None:
        document["container"] = {"image": {"name": image_names}}

    resource: dict[str, Any] = {}
    resource_type = object_ref.get("resource")
    if type(resource_type) is str and resource_type:
        resource["type"] = resource_type
    resource_name = object_ref.get("name")
    if type(resource_name) is str and resource_name:
        resource["name"] = resource_name
    parent_kind = workload_kind or (_controller_kind(request_object) if request_object else None)
    if parent_kind is not None:
        resource["parent"] = {"type": parent_kind}
    orchestrator: dict[str, Any] = {"type": "kubernetes"}
    api_version = get("apiVersion")
    if type(api_version) is str and api_version:
        orchestrator["api_version"] = api_version
    namespace = object_ref.get("namespace")
    if type(namespace) is str and namespace:
        orchestrator["namespace"] = namespace
    if resource:
        orchestrator["resource"] = resource
    document["orchestrator"] = orchestrator

    gatewatch: dict[str, Any] = {"source": source}
    impersonated = get("impersonatedUser")
    if impersonated is not None:
        impersonated = _as_mapping(impersonated)
    effective_user = (_str_or_none(impersonated.get("username")) if impersonated else None) or user_fields.get("name")
    if effective_user is not None:
        gatewatch["user"] = {"effective": effective_user}
    if spec:
        if old_object is None:
            old_spec = None
        elif object_checked:
            old_spec = _as_mapping(old_object.get("spec")) or _EMPTY
        else:
            old_spec = _check_object(old_object, "request.oldObject.")
        images = _images(spec, old_spec=old_spec)
    elif type(raw_request_object) is list:  # a JSON patch, as the audit log records it
        images = _json_patch_images(raw_request_object)
    else:
        images = None
    if images:
        gatewatch["images"] = images
    if with_pod_fields and request_object and _is_whole_pod(event, object_ref, request_object, source=source):
        gatewatch.update(podspec_fields(request_object, where=object_field))
    if object_ref.get("subresource") in INTERACTIVE_SUBRESOURCES:
        _put(gatewatch, "exec", _interactive_options(get("requestURI")))
    if admission is not None:
        gatewatch["admission"] = {"uid": admission["uid"]}
        _put(gatewatch, "dry_run", admission.get("dryRun"))
    document["gatewatch"] = gatewatch
    return document
