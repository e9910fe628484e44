"""The input-shape policy: the fields gatewatch reads, the type each must have, and what a wrong type does.

One table (``AUDIT_EVENT``, ``POD`` and their parts) says which fields the
mapping, the reports and the alerts read and what each must hold. Two inputs
read it differently:

- **Admission reviews and manifests: strict** (``problem``). At admission the
  API server has already decoded the object into its schema, so a field of the
  wrong type means a forged or broken review: refused with an InputError that
  names the field (a 4xx at the webhook, never an allow; exit status 2 in
  ``gatewatch check``).
- **Audit-log events: Elastic's semantics** (``audit_event_view``). An event is
  dropped only when it is not an audit event at all (``audit_event_refusal``:
  not an object, a kind other than Event, an apiVersion other than
  audit.k8s.io, no verb). Anything else is evaluated as Elasticsearch would
  index it: where a list is expected a single value is a list of one (an
  object and a list of one object are indexed alike), and a field whose type
  makes no sense (an object where a string is needed) is absent for matching
  and named in a warning, which replay counts in its summary.

The Pod fields (``POD``) are read in an audit event only where the request
carries a Pod (``objectRef.resource`` pods, the Pod itself or its
ephemeralcontainers); a CRD's ``spec.containers`` is its own business.

Null is always fine: it is how a merge patch deletes a field
(``{"metadata": {"labels": {"canary": null}}}``). Views share everything
unchanged with their input (copy on write): treat both as read-only.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from gatewatch.errors import InputError, quoted

AUDIT_API_VERSIONS = frozenset({"audit.k8s.io/v1", "audit.k8s.io/v1beta1"})
CONTAINER_KINDS = ("containers", "initContainers", "ephemeralContainers")
# Subresources of pods whose request body is a Pod (or a patch of one).
POD_BODY_SUBRESOURCES = frozenset({"", "ephemeralcontainers"})


# --- the table's vocabulary -------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """A scalar of one Python type (JSON's bool is not an integer here)."""

    what: str
    python_type: type


@dataclass(frozen=True)
class ListOf:
    item: "Spec"


@dataclass(frozen=True)
class ObjectOf:
    """An object; ``fields`` names the keys read, ``values`` (when set) applies to every other key."""

    fields: Mapping[str, "Spec"] = field(default_factory=dict)
    values: "Spec | None" = None


Spec = Union[Leaf, ListOf, ObjectOf]

STRING = Leaf("a string", str)
INTEGER = Leaf("an integer", int)
BOOLEAN = Leaf("true or false", bool)

# --- the table ------------------------------------------------------------------------

OBJECT_REFERENCE_FIELDS = ("resource", "namespace", "name", "uid", "apiGroup", "apiVersion", "resourceVersion",
                           "subresource")
USER_INFO = ObjectOf({
    "username": STRING,
    "uid": STRING,
    "groups": ListOf(STRING),
    "extra": ObjectOf(values=ListOf(STRING)),
})
# A probe or lifecycle hook: its httpGet and tcpSocket hold the host the normalized Pod lists read.
HANDLER = ObjectOf({"httpGet": ObjectOf(), "tcpSocket": ObjectOf()})
CONTAINER = ObjectOf({
    "name": STRING,
    "image": STRING,
    "env": ListOf(ObjectOf({"name": STRING})),
    "securityContext": ObjectOf({"capabilities": ObjectOf({"add": ListOf(STRING)})}),
    "ports": ListOf(ObjectOf()),
    "livenessProbe": HANDLER,
    "readinessProbe": HANDLER,
    "startupProbe": HANDLER,
    "lifecycle": ObjectOf({"postStart": HANDLER, "preStop": HANDLER}),
})
POD_METADATA = ObjectOf({
    "name": STRING,
    "generateName": STRING,
    "namespace": STRING,
    "labels": ObjectOf(values=STRING),
    "annotations": ObjectOf(values=STRING),
    "ownerReferences": ListOf(ObjectOf({"kind": STRING, "name": STRING})),
})
POD_SPEC = ObjectOf({
    **{kind: ListOf(CONTAINER) for kind in CONTAINER_KINDS},
    "securityContext": ObjectOf(),
    "volumes": ListOf(ObjectOf({"hostPath": ObjectOf()})),
})
# A Pod, or a patch of one: what rules, reports, alerts and the normalized Pod lists (podspec.py) read of it.
POD = ObjectOf({"metadata": POD_METADATA, "spec": POD_SPEC})
# The options of pods/exec and pods/attach at admission (PodExecOptions, PodAttachOptions): the API
# server builds them from the URL, so another type is a forged review. (In an audit event they are
# the requestURI's query, a string.)
CONNECT_OPTIONS = ObjectOf({
    "command": ListOf(STRING),
    "container": STRING,
    **{stream: BOOLEAN for stream in ("stdin", "stdout", "stderr", "tty")},
})
# The audit event's own fields (requestObject and responseObject: see audit_event_view).
AUDIT_EVENT = ObjectOf({
    "level": STRING,
    "auditID": STRING,
    "stage": STRING,
    "requestURI": STRING,
    "user": USER_INFO,
    "impersonatedUser": USER_INFO,
    "sourceIPs": ListOf(STRING),
    "userAgent": STRING,
    "objectRef": ObjectOf({key: STRING for key in OBJECT_REFERENCE_FIELDS}),
    "responseStatus": ObjectOf({"code": INTEGER}),
    "requestReceivedTimestamp": STRING,
    "stageTimestamp": STRING,
    "timestamp": STRING,  # audit.k8s.io/v1beta1
    "annotations": ObjectOf(values=STRING),
})


def describe(spec: "Spec") -> str:
    """What a value of ``spec``'s shape is, in an error: "a string", "a list", "an object of strings"."""
    if isinstance(spec, Leaf):
        return spec.what
    if isinstance(spec, ListOf):  # a list of objects is "a list": its items are named one by one
        return "a list" + (_of(spec.item) if isinstance(spec.item, Leaf) else "")
    return "an object" + (_of(spec.values) if spec.values is not None and not spec.fields else "")


def _of(item: "Spec") -> str:
    if isinstance(item, Leaf):
        return " of " + item.what.removeprefix("a ").removeprefix("an ") + "s"
    return " of objects" if isinstance(item, ObjectOf) else " of lists"


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def is_object(value: Any) -> bool:
    # dict first: JSON and YAML give dicts, and the ABC check costs more.
    return type(value) is dict or isinstance(value, Mapping)


def as_list(value: Any) -> list[Any]:
    """Elasticsearch's view of a field where a list is expected: a single value is a list of one."""
    if value is None:
        return []
    return value if type(value) is list else [value]


def _fits(value: Any, leaf: Leaf) -> bool:
    return type(value) is leaf.python_type


# --- strict: admission reviews and manifests -------------------------------------------


def problem(value: Any, spec: Spec, where: str) -> str | None:
    """Why ``value`` does not have the shape ``spec`` says (``where`` names it), else None. Null is absent.

    Every review is checked: the tables checked per review (a Pod, the user, exec
    options) are first tried as generated straight-line code, which names nothing;
    only what it does not pass (something wrong, or a Mapping that is not a dict)
    takes the walk that names the field.
    """
    fits = _STRICT_FITS.get(id(spec))
    if fits is not None and fits(value):
        return None
    return _problem(value, spec, where)


def _problem(value: Any, spec: Spec, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(spec, Leaf):
        return None if _fits(value, spec) else f"{where}: expected {spec.what}, got {type_name(value)}"
    if isinstance(spec, ListOf):
        if type(value) is not list:
            return f"{where}: expected {describe(spec)}, got {type_name(value)}"
        for index, item in enumerate(value):
            found = _problem(item, spec.item, f"{where}[{index}]")
            if found is not None:
                return found
        return None
    if not is_object(value):
        return f"{where}: expected {describe(spec)}, got {type_name(value)}"
    for key, item_spec in spec.fields.items():
        found = _problem(value.get(key), item_spec, _join(where, key))
        if found is not None:
            return found
    if spec.values is not None:
        for key, item in value.items():
            if key not in spec.fields:
                found = _problem(item, spec.values, _key_path(where, key))
                if found is not None:
                    return found
    return None


def pod_problem(pod: Mapping[str, Any], *, prefix: str = "") -> str | None:
    """Why a Pod (or a Pod patch) has a field of the wrong type for evaluating it, else None."""
    return problem(pod, POD, prefix.rstrip("."))


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _key_path(where: str, key: Any) -> str:
    """A key of a map of the user's own keys (labels, annotations): ``annotations['authorization.k8s.io/decision']``."""
    return f"{where}[{key!r}]"


# --- Elastic's semantics: audit-log events ----------------------------------------------

_ABSENT: Any = object()


def conform(value: Any, spec: Spec, where: str, warnings: list[str]) -> Any:
    """``value`` as Elasticsearch reads it under ``spec``: a single value where a list is expected
    is a list of one; a value of the wrong type is ``_ABSENT`` (and named in ``warnings``).

    Returns ``value`` itself when nothing changes (the usual case), else a copy
    of the parts that changed.
    """
    if value is None:
        return None
    if isinstance(spec, Leaf):
        if _fits(value, spec):
            return value
        warnings.append(f"{where}: expected {spec.what}, got {type_name(value)}")
        return _ABSENT
    if isinstance(spec, ListOf):
        if type(value) is not list:
            item = conform(value, spec.item, where, warnings)
            return _ABSENT if item is _ABSENT else [item]
        conformed = [conform(item, spec.item, f"{where}[{index}]", warnings) for index, item in enumerate(value)]
        if all(new is old for new, old in zip(conformed, value)):
            return value
        return [item for item in conformed if item is not _ABSENT]
    if not is_object(value):
        warnings.append(f"{where}: expected {describe(spec)}, got {type_name(value)}")
        return _ABSENT
    changed: dict[str, Any] = {}
    for key, item_spec in spec.fields.items():
        item = value.get(key)
        if item is not None:
            new = conform(item, item_spec, _join(where, key), warnings)
            if new is not item:
                changed[key] = new
    if spec.values is not None:
        for key, item in value.items():
            if key not in spec.fields and item is not None:
                new = conform(item, spec.values, _key_path(where, key), warnings)
                if new is not item:
                    changed[key] = new
    if not changed:
        return value
    copied = {key: item for key, item in value.items() if changed.get(key, item) is not _ABSENT}
    for key, item in changed.items():
        if item is not _ABSENT:
            copied[key] = item
    return copied


def audit_event_refusal(event: Any) -> str | None:
    """Why ``event`` is not an audit event at all (and so is dropped), else None."""
    if not is_object(event):
        return f"an audit event must be a JSON object, got {type_name(event)}"
    return audit_event_gate(event.get("kind"), event.get("apiVersion"), event.get("verb"))


def audit_event_gate(kind: Any, api_version: Any, verb: Any) -> str | None:
    """The refusal of an event with this kind, apiVersion and verb, else None (replay's fast path asks this too)."""
    if kind is not None and kind != "Event":
        return f"kind: expected Event, got {quoted(kind)}: not an audit event"
    # The type first: a list or an object cannot be looked up in a set.
    if api_version is not None and (type(api_version) is not str or api_version not in AUDIT_API_VERSIONS):
        return f"apiVersion: expected one of {sorted(AUDIT_API_VERSIONS)}, got {quoted(api_version)}: not an audit event"
    if type(verb) is not str or not verb:
        return "verb: missing or not a string: not an audit event"
    return None


@dataclass(slots=True)
class AuditEventView:
    """An audit event as it is evaluated, and what was set aside to read it so."""

    event: Mapping[str, Any]
    warnings: list[str]


def audit_event_view(event: Any) -> AuditEventView:
    """The event as Elastic would evaluate it; raises InputError only when it is not an audit event.

    Checks every field of ``AUDIT_EVENT``; ``requestObject`` must be an object
    (or, for a patch, a JSON patch: a list of operations) and is read as a Pod
    where the request carries one; ``responseObject`` must be an object.
    """
    refusal = audit_event_refusal(event)
    if refusal is not None:
        raise InputError(refusal)
    if _fits_as_it_is(event):  # the usual case, decided without building a path or a warning
        return AuditEventView(event, [])
    return _careful_view(event)


def _careful_view(event: Mapping[str, Any]) -> AuditEventView:
    """``audit_event_view`` of an audit event without its fast path: every field conformed, each
    wrong type named (tests/test_documents_fast_path.py holds the fast path to this)."""
    warnings: list[str] = []
    view = conform(event, AUDIT_EVENT, "", warnings)
    request_object = event.get("requestObject")
    if request_object is not None:
        new = _conform_request_object(request_object, view, warnings)
        if new is not request_object:
            view = _with(view, event, "requestObject", new)
    response_object = event.get("responseObject")
    if response_object is not None and not is_object(response_object):
        warnings.append(f"responseObject: expected an object, got {type_name(response_object)}")
        view = _with(view, event, "responseObject", _ABSENT)
    return AuditEventView(view, warnings)


def _with(view: Mapping[str, Any], event: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    copied = dict(view) if view is event else view  # conform returns a fresh dict when it changed anything
    if value is _ABSENT:
        copied.pop(key, None)
    else:
        copied[key] = value
    return copied  # type: ignore[return-value]


def carries_pod(event: Mapping[str, Any]) -> bool:
    """Whether the request body of this (conformed) event is a Pod or a patch of one."""
    object_ref = event.get("objectRef")
    if type(object_ref) is not dict and not is_object(object_ref):
        return False
    return object_ref.get("resource") == "pods" and (object_ref.get("subresource") or "") in POD_BODY_SUBRESOURCES


def _compile_fits(spec: Spec) -> Any:
    """``value -> bool``: whether ``value`` has ``spec``'s shape exactly as it is (null is absent), as
    straight-line code; False also where ``conform`` would only rewrite (a single value for a list)."""
    lines = ["def fits(value):"]
    constants: dict[str, Any] = {}
    names = iter(range(1_000_000))

    def emit(node: Spec, var: str, depth: int) -> None:
        pad = "    " * depth
        if isinstance(node, Leaf):  # the type first: most values are present, and then one test decides
            lines.append(f"{pad}if {var}.__class__ is not {node.python_type.__name__} and {var} is not None: return False")
            return
        lines.append(f"{pad}if {var} is not None:")
        if isinstance(node, ListOf):
            item = f"x{next(names)}"
            lines.append(f"{pad}    if {var}.__class__ is not list: return False")
            lines.append(f"{pad}    for {item} in {var}:")
            emit(node.item, item, depth + 2)
            return
        lines.append(f"{pad}    if {var}.__class__ is not dict: return False")
        for key, item_spec in node.fields.items():
            item = f"x{next(names)}"
            lines.append(f"{pad}    {item} = {var}.get({key!r})")
            emit(item_spec, item, depth + 1)
        if node.values is not None and not node.fields:  # labels, annotations: every value, no key to skip
            item = f"x{next(names)}"
            lines.append(f"{pad}    for {item} in {var}.values():")
            emit(node.values, item, depth + 2)
        elif node.values is not None:
            key, item, known = f"k{next(names)}", f"x{next(names)}", f"known{next(names)}"
            constants[known] = frozenset(node.fields)
            lines.append(f"{pad}    for {key}, {item} in {var}.items():")
            lines.append(f"{pad}        if {key} in {known}: continue")
            emit(node.values, item, depth + 2)

    emit(spec, "value", 1)
    lines.append("    return True")
    exec("\n".join(lines), constants)  # noqa: S102 - source built above from the table
    return constants["fits"]


_EVENT_FITS = _compile_fits(AUDIT_EVENT)
_POD_FITS = _compile_fits(POD)
# ``problem``'s fast path, by table (the tables are module constants: their id is stable).
# A value that fits has no problem: a dict is an object, an exact type a leaf.
_STRICT_FITS = {id(POD): _POD_FITS, id(USER_INFO): _compile_fits(USER_INFO),
                id(CONNECT_OPTIONS): _compile_fits(CONNECT_OPTIONS)}


def _fits_as_it_is(event: Mapping[str, Any]) -> bool:
    if event.__class__ is not dict or not _EVENT_FITS(event):
        return False
    request_object = event.get("requestObject")
    if request_object is not None and (request_object.__class__ is not dict
                                       or (carries_pod(event) and not _POD_FITS(request_object))):
        return False  # a JSON patch, a Pod to conform, something odd: the careful path
    response_object = event.get("responseObject")
    return response_object is None or response_object.__class__ is dict


def _conform_request_object(request_object: Any, view: Mapping[str, Any], warnings: list[str]) -> Any:
    pod = carries_pod(view)
    if is_object(request_object):
        return conform(request_object, POD, "requestObject", warnings) if pod else request_object
    # A patch's requestObject is the patch body: a JSON patch is a list of operations.
    if type(request_object) is list and view.get("verb") == "patch":
        return _conform_json_patch(request_object, warnings) if pod else request_object
    what = "an object or a JSON patch" if view.get("verb") == "patch" else "an object"
    warnings.append(f"requestObject: expected {what}, got {type_name(request_object)}")
    return _ABSENT


def _conform_json_patch(operations: list[Any], warnings: list[str]) -> list[Any]:
    """A JSON patch of a Pod: operations that are not objects with a string path are set aside, and so
    are add/replace operations whose value does not fit the Pod field they write."""
    kept: list[Any] = []
    for index, operation in enumerate(operations):
        where = f"requestObject[{index}]"
        if not is_object(operation):
            warnings.append(f"{where}: expected a JSON patch operation (an object), got {type_name(operation)}")
            continue
        path = operation.get("path")
        if type(path) is not str:
            warnings.append(f"{where}.path: expected a string, got {type_name(path)}")
            continue
        if operation.get("op") in ("add", "replace"):
            fragment = json_patch_spec(json_pointer(path), operation.get("value"))
            if fragment is not None:
                found: list[str] = []
                conform({"spec": fragment}, POD, f"{where}.value (written at {path}) as", found)
                if found:  # "... as.spec.containers[0].image" reads "... as spec.containers[0].image"
                    warnings.extend(message.replace(" as.", " as ", 1) for message in found)
                    continue
        kept.append(operation)
    return kept if len(kept) != len(operations) else operations


def json_pointer(path: str) -> list[str]:
    # RFC 6901: "" is the whole document; ~1 is "/", ~0 is "~".
    return [token.replace("~1", "/").replace("~0", "~") for token in path.split("/")[1:]]


def json_patch_spec(tokens: list[str], value: Any) -> Any:
    """The Pod spec fragment one add/replace operation writes, or None when it writes no container."""
    if not tokens:
        return value.get("spec") if is_object(value) else None
    if tokens[0] != "spec":
        return None
    rest = tokens[1:]
    if not rest:
        return value
    if rest[0] not in CONTAINER_KINDS:
        return None
    if len(rest) == 1:
        return {rest[0]: value}
    if len(rest) == 2:  # /spec/containers/0 or /spec/containers/-
        return {rest[0]: [value]}
    if len(rest) == 3 and rest[2] == "image":
        return {rest[0]: [{"image": value}]}
    return None
