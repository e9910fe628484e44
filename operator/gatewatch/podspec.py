"""A whole Pod -> the normalized ``gatewatch.*`` fields over its spec.

Rules about Pod security (the ``pod-security-*`` packs, docs/pod-security.md)
ask questions of every container of every kind, of every security context
(the Pod's and each container's), of every volume or host port. KQL can ask
"does some element of this list satisfy a condition" with a nested query,
``list:{ condition }``, so each of those questions gets one flat list here,
with one element per thing asked about:

==============================  ===============================================  ===============================================
field                           one element per                                  keys
==============================  ===============================================  ===============================================
gatewatch.containers            container of every kind (containers,             the container's own fields, plus
                                initContainers, ephemeralContainers)             container_kind, container_index, path
gatewatch.security_contexts     securityContext: the Pod's (spec.securityContext) the context's own fields, plus level
                                and each container's                             ("pod" | "container"), container_kind,
                                                                                 container_index, container_name, path
gatewatch.added_capabilities    entry of a container's                           name, container_kind, container_index,
                                securityContext.capabilities.add                 container_name, path
gatewatch.volumes               volume source of spec.volumes (a volume that     name (the volume's), type (the source's key:
                                names none is an emptyDir, as the API server     hostPath, emptyDir, nfs, ...), host_path
                                defaults it)                                     (hostPath only), path
gatewatch.host_ports            ports entry of a container that sets hostPort    port, container_kind, container_index,
                                                                                 container_name, path
gatewatch.probe_hosts           probe or lifecycle handler (httpGet, tcpSocket)  host, handler (livenessProbe.httpGet, ...,
                                that sets host                                   lifecycle.preStop.tcpSocket),
                                                                                 container_kind, container_index,
                                                                                 container_name, path
gatewatch.annotations           metadata annotation                              key, value, path
==============================  ===============================================  ===============================================

``path`` is where the element is in the Pod, the way Pod Security Admission
names fields: ``spec.initContainers[0]``, ``spec.containers[1].securityContext``,
``spec.volumes[2].hostPath``, ``metadata.annotations[container.apparmor.security.beta.kubernetes.io/app]``.
Alerts name the offending fields with it (``gatewatch.offending_fields``): for
``gatewatch.containers`` and ``gatewatch.security_contexts``, whose elements
carry the Pod's own fields, the field a rule looked at is appended
(``spec.initContainers[0].securityContext.privileged``).

Only values that are set make elements: a ``hostPort`` or ``host`` of null is
absent, as Kubernetes reads it. Fields of the wrong type that this mapping
reads (a securityContext that is not an object, an ``add`` that is not a list
of strings, ...) raise InputError naming the field; the API server would have
refused them.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gatewatch.errors import InputError

CONTAINER_KINDS = ("containers", "initContainers", "ephemeralContainers")
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
LIFECYCLE_HOOKS = ("postStart", "preStop")
HOST_ACTIONS = ("httpGet", "tcpSocket")
# The type of a volume that names no source: the API server's default.
DEFAULT_VOLUME_TYPE = "emptyDir"

# The normalized lists, as named under ``gatewatch``.
POD_FIELD_NAMES = ("containers", "security_contexts", "added_capabilities", "volumes", "host_ports", "probe_hosts",
                   "annotations")
# Lists whose elements are the Pod's own objects: a field a rule reads in one
# of them is a field of the Pod, below the element's path.
POD_OBJECT_LISTS = frozenset({"containers", "security_contexts"})
# Keys gatewatch adds to those elements (they describe the element, they are not the Pod's).
DESCRIPTIVE_KEYS = frozenset({"container_kind", "container_index", "container_name", "level", "path"})


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _mapping(value: Any, where: str, path: str) -> Mapping[str, Any] | None:
    """``value`` if it is an object, None if null; InputError naming ``where + path`` otherwise.

    The field name is only built for the error: this runs for every Pod reviewed.
    """
    if value is None or type(value) is dict:
        return value
    if isinstance(value, Mapping):
        return value
    raise InputError(f"{where}{path}: expected an object, got {_type_name(value)}")


def _list(value: Any, where: str, path: str) -> list[Any]:
    if value is None:
        return []
    if type(value) is not list:
        raise InputError(f"{where}{path}: expected a list, got {_type_name(value)}")
    return value


def pod_fields(pod: Mapping[str, Any], *, where: str = "") -> dict[str, list[dict[str, Any]]]:
    """The normalized fields of a whole Pod object, keyed by their name under ``gatewatch``.

    ``where`` prefixes field names in errors (``request.object.``). A list
    with no element is left out (absent, as Elastic leaves an empty field).
    Elements share the Pod's sub-objects (shallow copies): treat them as read-only.
    """
    spec = _mapping(pod.get("spec"), where, "spec") or {}
    fields: dict[str, list[dict[str, Any]]] = {}
    containers: list[dict[str, Any]] = []
    contexts: list[dict[str, Any]] = []
    capabilities: list[dict[str, Any]] = []
    host_ports: list[dict[str, Any]] = []
    probe_hosts: list[dict[str, Any]] = []

    pod_context = _mapping(spec.get("securityContext"), where, "spec.securityContext")
    if pod_context is not None:
        contexts.append({**pod_context, "level": "pod", "path": "spec.securityContext"})

    for kind in CONTAINER_KINDS:
        items = spec.get(kind)
        if not items:
            continue
        for index, container in enumerate(_list(items, where, f"spec.{kind}")):
            path = f"spec.{kind}[{index}]"
            container = _mapping(container, where, path)
            if container is None:
                continue
            name = container.get("name")
            who = {"container_kind": kind, "container_index": index,
                   "container_name": name if type(name) is str else None}
            containers.append({**container, "container_kind": kind, "container_index": index, "path": path})
            context = container.get("securityContext")
            if context is not None:
                context = _mapping(context, where, f"{path}.securityContext")
                contexts.append({**context, "level": "container", **who, "path": f"{path}.securityContext"})
                if context.get("capabilities") is not None:
                    capabilities += _added_capabilities(context, who, f"{path}.securityContext", where)
            if container.get("ports"):
                host_ports += _host_ports(container, who, path, where)
            if not _HANDLER_KEYS.isdisjoint(container):
                probe_hosts += _probe_hosts(container, who, path, where)

    for name, elements in (
        ("containers", containers),
        ("security_contexts", contexts),
        ("added_capabilities", capabilities),
        ("volumes", _volumes(spec, where) if spec.get("volumes") else ()),
        ("host_ports", host_ports),
        ("probe_hosts", probe_hosts),
        ("annotations", _annotations(pod, where)),
    ):
        if elements:
            fields[name] = list(elements)
    return fields


# The container keys that may hold a probe or lifecycle handler.
_HANDLER_KEYS = frozenset({*PROBES, "lifecycle"})


def _added_capabilities(context: Mapping[str, Any], who: dict[str, Any], path: str, where: str) -> list[dict[str, Any]]:
    capabilities = _mapping(context.get("capabilities"), where, f"{path}.capabilities")
    if capabilities is None:
        return []
    found = []
    for index, name in enumerate(_list(capabilities.get("add"), where, f"{path}.capabilities.add")):
        at = f"{path}.capabilities.add[{index}]"
        if type(name) is not str:
            raise InputError(f"{where}{at}: expected a string, got {_type_name(name)}")
        found.append({"name": name, **who, "path": at})
    return found


def _host_ports(container: Mapping[str, Any], who: dict[str, Any], path: str, where: str) -> list[dict[str, Any]]:
    found = []
    for index, port in enumerate(_list(container.get("ports"), where, f"{path}.ports")):
        port = _mapping(port, where, f"{path}.ports[{index}]")
        if port is not None and port.get("hostPort") is not None:
            found.append({"port": port["hostPort"], **who, "path": f"{path}.ports[{index}].hostPort"})
    return found


def _probe_hosts(container: Mapping[str, Any], who: dict[str, Any], path: str, where: str) -> list[dict[str, Any]]:
    handlers: list[tuple[str, Any]] = [(probe, container.get(probe)) for probe in PROBES]
    lifecycle = _mapping(container.get("lifecycle"), where, f"{path}.lifecycle")
    if lifecycle is not None:
        handlers += [(f"lifecycle.{hook}", lifecycle.get(hook)) for hook in LIFECYCLE_HOOKS]
    found = []
    for name, handler in handlers:
        handler = _mapping(handler, where, f"{path}.{name}")
        if handler is None:
            continue
        for action in HOST_ACTIONS:
            target = _mapping(handler.get(action), where, f"{path}.{name}.{action}")
            if target is not None and target.get("host") is not None:
                found.append({"host": target["host"], "handler": f"{name}.{action}", **who,
                              "path": f"{path}.{name}.{action}.host"})
    return found


def _volumes(spec: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    found = []
    for index, volume in enumerate(_list(spec.get("volumes"), where, "spec.volumes")):
        path = f"spec.volumes[{index}]"
        volume = _mapping(volume, where, path)
        if volume is None:
            continue
        name = volume.get("name")
        name = name if type(name) is str else None
        sources = [key for key, value in volume.items() if key != "name" and value is not None]
        if not sources:
            found.append({"name": name, "type": DEFAULT_VOLUME_TYPE, "path": path})
        for source in sources:
            element: dict[str, Any] = {"name": name, "type": source, "path": f"{path}.{source}"}
            if source == "hostPath":
                host_path = _mapping(volume[source], where, f"{path}.hostPath")
                if host_path is not None and host_path.get("path") is not None:
                    element["host_path"] = host_path["path"]
            found.append(element)
    return found


def _annotations(pod: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    metadata = _mapping(pod.get("metadata"), where, "metadata")
    annotations = _mapping(metadata.get("annotations"), where, "metadata.annotations") if metadata else None
    if not annotations:
        return []
    found = []
    for key, value in annotations.items():
        if value is None:
            continue
        if type(value) is not str:
            raise InputError(f"{where}metadata.annotations[{key!r}]: expected a string, got {_type_name(value)}")
        found.append({"key": str(key), "value": value, "path": f"metadata.annotations[{key}]"})
    return found


def pod_path(location: tuple[str | int, ...], document: Mapping[str, Any]) -> str | None:
    """Where in the Pod a location of the document lies, or None when it is not in the Pod.

    ``location`` is a concrete path of the document (``("gatewatch",
    "containers", 1, "securityContext", "privileged")``, list indexes as
    ints). ``kubernetes.audit.requestObject.X`` is the Pod's ``X``; an element
    of a normalized list is at its ``path`` (for containers and security
    contexts, with the field below it appended).
    """
    if location[:3] == ("kubernetes", "audit", "requestObject") and len(location) > 3:
        return _render(location[3:])
    if len(location) >= 3 and location[0] == "gatewatch" and type(location[2]) is int:
        elements = (document.get("gatewatch") or {}).get(location[1])
        if type(elements) is not list or location[2] >= len(elements):
            return None
        element = elements[location[2]]
        path = element.get("path") if isinstance(element, Mapping) else None
        if type(path) is not str:
            return None
        below = location[3:]
        if location[1] in POD_OBJECT_LISTS and below and below[0] not in DESCRIPTIVE_KEYS:
            return f"{path}.{_render(below)}"
        return path
    return None


def _render(location: tuple[str | int, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if type(part) is int else (f".{part}" if text else str(part))
    return text
