"""The document mapping as it was before its hot path was inlined (gatewatch at d7bccae), kept
verbatim as the reference the differential tests (test_documents_fast_path.py) hold the current
``_build_document`` and ``_images`` to. Do not optimize this file: it is the general path."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gatewatch.documents.container_images import image_entry
from gatewatch.documents.mapping import (
    DATASET, INTERACTIVE_SUBRESOURCES, OUTCOME_BY_DECISION, _is_ip, _is_whole_pod,
)
from gatewatch.documents.types import AdmissionRequest, ImageEntry, Source
from gatewatch.errors import InputError
from gatewatch.podspec import pod_fields as podspec_fields
from gatewatch.query_string import query_pairs
from gatewatch.shapes import CONTAINER_KINDS, POD, as_list, is_object, json_patch_spec, json_pointer, problem


def _containers(spec: Mapping[str, Any], container_kind: str) -> list[Mapping[str, Any]]:
    """``spec[container_kind]`` as Elastic reads it: a single container is a list of one; non-objects are no container."""
    return [container for container in as_list(spec.get(container_kind)) if is_object(container)]


def _container_image_names(spec: Mapping[str, Any]) -> list[str] | None:
    return [image for c in _containers(spec, "containers") if type(image := c.get("image")) is str] or None


def _container_images(spec: Mapping[str, Any]) -> dict[tuple[str, str | int], str | None]:
    images: dict[tuple[str, str | int], str | None] = {}
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
def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    # dict first: JSON and YAML give dicts, and the ABC check costs more.
    if type(value) is dict or isinstance(value, Mapping):
        return value
    return None


_EMPTY: Mapping[str, Any] = {}


def _str_or_none(value: Any) -> str | None:
    return value if type(value) is str and value else None


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
    query = _parse_query(request_uri.partition("?")[2].partition("#")[0])
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
