"""A manifest Pod (``gatewatch check``, a workload's Pod template) -> document, as the Pod CREATE it would cause."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from gatewatch.documents.admission import _check_type, _document_from_request
from gatewatch.documents.types import AdmissionRequest, Source
from gatewatch.errors import InputError

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
