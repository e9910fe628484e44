"""Audit events as a Kubernetes API server writes them (audit.k8s.io/v1, one JSON
object a line), for tests of rules that span several events."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

START = datetime(2026, 11, 22, 5, 0, 0, tzinfo=timezone.utc)
_API_GROUPS = {
    "roles": ("rbac.authorization.k8s.io", "v1"), "clusterroles": ("rbac.authorization.k8s.io", "v1"),
    "rolebindings": ("rbac.authorization.k8s.io", "v1"), "deployments": ("apps", "v1"),
    "daemonsets": ("apps", "v1"), "cronjobs": ("batch", "v1"), "pods": ("", "v1"), "secrets": ("", "v1"),
}


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit_event(
    verb: str, resource: str, *, user: str = "alice", at: timedelta = timedelta(0), namespace: str | None = "prod",
    name: str = "web", groups: tuple[str, ...] = ("system:authenticated",), decision: str = "allow",
    code: int = 200,
) -> dict[str, Any]:
    """One ResponseComplete event ``at`` after START (the request took 3 ms)."""
    group, version = _API_GROUPS.get(resource, ("", "v1"))
    received = START + at
    path = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if namespace is not None:
        path += f"/namespaces/{namespace}"
    path += f"/{resource}" + ("" if verb == "create" else f"/{name}")
    object_ref: dict[str, Any] = {"resource": resource, "name": name, "apiVersion": version}
    if group:
        object_ref["apiGroup"] = group
    if namespace is not None:
        object_ref["namespace"] = namespace
    return {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{verb}/{resource}/{user}/{at}/{name}")),
        "stage": "ResponseComplete", "requestURI": path, "verb": verb,
        "user": {"username": user, "uid": f"uid-{user}", "groups": list(groups)},
        "sourceIPs": ["10.0.12.7"], "userAgent": "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46",
        "objectRef": object_ref,
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": _stamp(received),
        "stageTimestamp": _stamp(received + timedelta(milliseconds=3)),
        "annotations": {"authorization.k8s.io/decision": decision,
                        "authorization.k8s.io/reason": "RBAC: allowed by ClusterRoleBinding \"admins\""},
    }


def audit_log(*events: dict[str, Any]) -> str:
    return "".join(json.dumps(event) + "\n" for event in events)
