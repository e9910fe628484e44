"""AdmissionReview -> the audit event the API server would write -> document.

A review is validated strictly (``parse_admission_request``: a malformed one
raises InputError naming the field), then rebuilt as an audit event.

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
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, cast
from urllib.parse import quote_plus

from gatewatch.documents.mapping import DECISION_ANNOTATION, _as_mapping, _build_document, _str_or_none
from gatewatch.documents.types import OPERATIONS, AdmissionRequest, AuditEvent, ObjectReference, Source
from gatewatch.errors import InputError
from gatewatch.shapes import CONNECT_OPTIONS, USER_INFO, is_object, pod_problem, problem

AUDIT_API_VERSION = "audit.k8s.io/v1"
ADMISSION_API_VERSIONS = frozenset({"admission.k8s.io/v1", "admission.k8s.io/v1beta1"})
# pods/proxy, nodes/proxy (and services/proxy): the options' path is part of the requestURI's path.
PROXY_SUBRESOURCES = frozenset({"proxy"})

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


def _check_type(value: Any, expected: type | tuple[type, ...], field: str, what: str) -> None:
    if value is not None and not isinstance(value, expected):
        raise InputError(f"{field}: expected {what}, got {type(value).__name__}")


def _check_object(value: Any, prefix: str, key: str) -> None:
    # dict first: every review has several of these, and the ABC check costs more than the rest.
    if value is not None and type(value) is not dict and not isinstance(value, Mapping):
        raise InputError(f"{prefix}{key}: expected an object, got {type(value).__name__}")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


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
    # What the API server sends, answered at once (every review has four of these); the rest names the problem.
    if type(value) is dict and type(value.get("group", "")) is str and type(value.get("version")) is str \
            and type(named := value.get(last)) is str and named:
        return
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
    if type(review) is not dict and not isinstance(review, Mapping):  # dict first: the ABC check costs more
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
        if type(request) is not dict and not isinstance(request, Mapping):
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
    for key in ("userInfo", "oldObject", "options"):
        _check_object(request.get(key), prefix, key)
    _check_type(request.get("dryRun"), bool, f"{prefix}dryRun", "true or false")
    obj = request.get("object")
    if operation != "DELETE" and type(obj) is not dict and not isinstance(obj, Mapping):
        raise InputError(f"{prefix}object: expected an object for {operation}, got {type(obj).__name__}")
    _check_object(obj, prefix, "object")
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
    operation = request["operation"]
    if pod_objects_checked(request):
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


def pod_objects_checked(request: AdmissionRequest) -> bool:
    """Whether ``parse_admission_request`` checked the request's object and oldObject as Pods
    (a Pod CREATE or UPDATE, its ephemeralcontainers included): the document need not check them again."""
    kind = request["kind"]
    return kind.get("group", "") == "" and kind["kind"] == "Pod" and request["operation"] in ("CREATE", "UPDATE")


# What quote_plus(text, safe="") leaves as it is: most option values (container names, "true").
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def _query_escape(text: str) -> str:
    return text if _UNRESERVED.fullmatch(text) else quote_plus(text, safe="")


def _query_string(options: Any) -> str:
    """Encode API options as the query string Go's url.Values.Encode writes.

    Keys sorted, one ``key=value`` per list element, booleans only when true
    and empty values omitted (the options' ``omitempty``), QueryEscape'd.
    """
    if type(options) is not dict and not isinstance(options, Mapping):
        return ""
    pairs: list[str] = []
    for key in sorted(options):
        if key in ("kind", "apiVersion"):
            continue
        value = options[key]
        for item in value if isinstance(value, list) else (value,):
            if item is None or item is False or item == "":
                continue  # unset (omitempty)
            if item is True:
                text = "true"
            elif type(item) is str:  # the usual case, before the costlier checks
                text = item
            elif isinstance(item, (Mapping, list)):
                continue  # nested: never part of a query
            else:
                text = str(item)
            pairs.append(f"{_query_escape(key)}={_query_escape(text)}")
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
    elif moment.tzinfo is not timezone.utc:
        moment = moment.astimezone(timezone.utc)
    if moment.year >= 1000:
        # The text up to the second is the same for every review within it: worked out once per second.
        second = (moment.second, moment.minute, moment.hour, moment.day, moment.month, moment.year)
        last = _last_second
        if last[0] != second:
            # isoformat is several times cheaper than strftime, and the same text once the year has four
            # digits (strftime does not pad years); "+00:00" becomes "Z".
            last = _remember_second(second, moment.isoformat(timespec="seconds")[:-6])
        return f"{last[1]}.{moment.microsecond:06d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# format_timestamp's last second and its text, as one tuple (replaced whole: any thread reads a matching pair).
_last_second: tuple[tuple[int, ...], str] = ((), "")


def _remember_second(second: tuple[int, ...], text: str) -> tuple[tuple[int, ...], str]:
    global _last_second
    _last_second = (second, text)
    return _last_second


def document_from_admission_review(
    review: Mapping[str, Any], *, now: datetime | None = None, source: Source = "admission"
) -> dict[str, Any]:
    """Map an AdmissionReview (wrapped or a bare request) onto the document.

    ``now`` (default: the current time) becomes @timestamp. Raises InputError
    for a malformed review (see parse_admission_request).
    """
    return document_from_admission_request(parse_admission_request(review), now=now, source=source)


def document_from_admission_request(
    request: AdmissionRequest,
    *,
    now: datetime | None = None,
    source: Source = "admission",
    pod_fields: bool = True,
    checked: bool = False,
) -> dict[str, Any]:
    """document_from_admission_review for a request ``parse_admission_request`` already returned
    (the webhook checks every review before evaluating it: no second parse). ``pod_fields=False``
    leaves out the normalized Pod lists. ``checked``: the request came from ``parse_admission_request``
    itself (not a mapping built or changed since), so the Pod objects it checked are not checked again."""
    return _document_from_request(request, now=now, source=source, pod_fields=pod_fields, checked=checked)


def _document_from_request(
    request: AdmissionRequest,
    *,
    now: datetime | None,
    source: Source,
    workload_kind: str | None = None,
    pod_fields: bool = True,
    checked: bool = False,
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
        object_checked=checked and pod_objects_checked(request),
        with_pod_fields=pod_fields,
    )
