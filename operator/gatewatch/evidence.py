"""Which fields of the Pod made a rule match, named as Pod Security Admission names them.

``kql.explain`` says where in the document the values are that made a rule's
query true; ``podspec.pod_path`` says where those are in the Pod
(``spec.initContainers[0].securityContext.privileged``). Locations outside the
Pod (the verb, the user) are left out: they are the rule's conditions, not
what the Pod got wrong. Used where an alert or a report is written, never on
the admission hot path.
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from gatewatch.kql import CompiledQuery
from gatewatch.kql.explain import matched_locations
from gatewatch.podspec import POD_FIELD_NAMES, pod_path

# Where Pod fields are in the document: the request object, and the normalized lists.
_POD_FIELD_PREFIXES = ("kubernetes.audit.requestObject.", *(f"gatewatch.{name}" for name in POD_FIELD_NAMES))


@lru_cache(maxsize=1024)
def _may_name_pod_fields(matcher: Any) -> bool:
    """False when the query reads no Pod field at all (an exec rule): nothing to explain."""
    fields = getattr(matcher, "fields", None)
    if fields is None:
        return True
    return any("*" in field or field.startswith(_POD_FIELD_PREFIXES) for field in fields)


def offending_fields(matcher: Any, document: Mapping[str, Any]) -> list[str]:
    """The Pod fields behind a match of ``matcher`` (a compiled KQL query), in query order, without
    repeats; none for a query of another language (ES|QL), which ``kql.explain`` cannot walk."""
    if not isinstance(matcher, CompiledQuery) or not _may_name_pod_fields(matcher):
        return []
    fields: dict[str, None] = {}
    for location in matched_locations(matcher, document):
        path = pod_path(location, document)
        if path is not None:
            fields[path] = None
    return list(fields)


def offending_containers(fields: list[str], document: Mapping[str, Any]) -> list[str]:
    """The names of the containers those fields belong to (``spec.containers[1]...`` -> its name)."""
    if not fields:  # most matches: no Pod field to name (an exec, an image rule)
        return []
    names: dict[str, None] = {}
    containers = (document.get("gatewatch") or {}).get("containers") or []
    by_path = {element.get("path"): element.get("name") for element in containers if isinstance(element, Mapping)}
    for field in fields:
        head = field.split("]", 1)[0] + "]" if "]" in field else None
        name = by_path.get(head)
        if isinstance(name, str):
            names[name] = None
    return list(names)
