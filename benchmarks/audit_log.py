"""A realistic Kubernetes audit log, generated: what a small production cluster's API server writes.

    python benchmarks/audit_log.py --lines 100000 > audit.jsonl

The mix follows what a cluster logs with the audit policy most installations
start from (kubeadm's and the cloud providers' examples: everything at
Metadata, writes of workloads, RBAC and Pods at Request/RequestResponse,
RequestReceived omitted for most):

- control-plane chatter, most of the log: leases renewed by the controller
  manager, the scheduler and every kubelet (update, with the Lease in the
  request and response), watches and lists from controllers, kubelets
  reading their Pods' configmaps and secrets, token and access reviews, Pod
  status patches;
- Events created by kubelets and controllers;
- people and CI: kubectl get/list/describe, deployment rollouts, Pod
  creations (some with debug images, some privileged), exec and attach (over
  SPDY and websocket), kubectl debug, a few requests authorization forbade.

Lines are written as the API server writes them: Go's field order, compact,
``&``, ``<`` and ``>`` escaped as ``\\u0026``, ``\\u003c``, ``\\u003e``.
Deterministic for a seed.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

NODES = [f"ip-10-0-{i // 8}-{i * 7 % 250}.ec2.internal" for i in range(12)]
NAMESPACES = ["default", "payments", "web", "checkout", "monitoring", "ingress-nginx", "argocd", "kube-system", "ci"]
CONTROLLERS = [
    "deployment-controller", "replicaset-controller", "endpointslice-controller", "namespace-controller",
    "generic-garbage-collector", "horizontal-pod-autoscaler", "job-controller", "daemon-set-controller",
]
PEOPLE = ["alice@example.com", "bob@example.com", "carol@example.com", "system:serviceaccount:ci:deployer"]
IMAGES = [
    "registry.example.com/payments/api:2.14.1", "registry.example.com/web/frontend:5.2.0", "nginx:1.27.2",
    "quay.io/prometheus/node-exporter:v1.8.2", "ghcr.io/argoproj/argocd:v2.13.1", "busybox:1.36",
    "alpine:3.20", "nicolaka/netshoot:v0.13",
]
KUBECTL = ["kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46", "kubectl/v1.29.4 (darwin/arm64) kubernetes/55019c8"]
GO_ESCAPES = {ord("&"): "\\u0026", ord("<"): "\\u003c", ord(">"): "\\u003e"}


class AuditLog:
    def __init__(self, seed: int, start: datetime) -> None:
        self.rng = random.Random(seed)
        self.now = start

    # --- building blocks -------------------------------------------------------

    def _id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _stamp(self, moment: datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def _event(
        self,
        *,
        verb: str,
        uri: str,
        user: dict[str, Any],
        agent: str,
        object_ref: dict[str, Any] | None,
        code: int,
        level: str = "Metadata",
        ip: str = "10.0.0.12",
        decision: str = "allow",
        reason: str = "",
        request_object: Any = None,
        response_object: Any = None,
        impersonated: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        self.now += timedelta(microseconds=self.rng.randint(200, 9000))
        received = self.now
        done = received + timedelta(microseconds=self.rng.randint(400, 30000))
        event: dict[str, Any] = {
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": level, "auditID": self._id(),
            "stage": "ResponseComplete", "requestURI": uri, "verb": verb, "user": user,
        }
        if impersonated is not None:
            event["impersonatedUser"] = impersonated
        event["sourceIPs"] = [ip]
        event["userAgent"] = agent
        if object_ref is not None:
            event["objectRef"] = object_ref
        status: dict[str, Any] = {"metadata": {}, "code": code}
        if code >= 400:
            status.update(status="Failure", reason="Forbidden" if code == 403 else "NotFound",
                          message=f"{verb} refused", details={})
        event["responseStatus"] = status
        if request_object is not None and level in ("Request", "RequestResponse"):
            event["requestObject"] = request_object
        if response_object is not None and level == "RequestResponse":
            event["responseObject"] = response_object
        event["requestReceivedTimestamp"] = self._stamp(received)
        event["stageTimestamp"] = self._stamp(done)
        annotations = {"authorization.k8s.io/decision": decision, "authorization.k8s.io/reason": reason}
        if decision == "forbid":
            annotations["authorization.k8s.io/reason"] = ""
        event["annotations"] = annotations
        events = [event]
        if self.rng.random() < 0.15:  # the policy of some clusters keeps RequestReceived
            early = {k: v for k, v in event.items()
                     if k not in ("responseStatus", "responseObject", "annotations")}
            early["stage"] = "RequestReceived"
            early["stageTimestamp"] = self._stamp(received)
            events.insert(0, early)
        return events

    def _node_user(self, node: str) -> dict[str, Any]:
        return {"username": f"system:node:{node}", "groups": ["system:nodes", "system:authenticated"]}

    def _sa_user(self, namespace: str, name: str, pod: str | None = None) -> dict[str, Any]:
        user: dict[str, Any] = {
            "username": f"system:serviceaccount:{namespace}:{name}", "uid": self._id(),
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
        }
        if pod is not None:
            user["extra"] = {
                "authentication.kubernetes.io/credential-id": [f"JTI={self._id()}"],
                "authentication.kubernetes.io/node-name": [self.rng.choice(NODES)],
                "authentication.kubernetes.io/node-uid": [self._id()],
                "authentication.kubernetes.io/pod-name": [pod],
                "authentication.kubernetes.io/pod-uid": [self._id()],
            }
        return user

    def _person(self) -> dict[str, Any]:
        name = self.rng.choice(PEOPLE)
        if name.startswith("system:serviceaccount:"):
            return self._sa_user("ci", "deployer", pod="deployer-7c9f8d6b5-q2m4x")
        return {"username": name, "groups": ["platform", "system:authenticated"]}

    def _rbac(self, kind: str, name: str, subject: str) -> str:
        return f'RBAC: allowed by {kind} "{name}" of ClusterRole "{name}" to User "{subject}"'

    def _pod(self, namespace: str, name: str, image: str, *, privileged: bool = False) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": "app", "image": image, "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "DB_PASSWORD", "valueFrom": {
                "secretKeyRef": {"name": "db", "key": "password"}}}],
            "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent",
        }
        if privileged:
            container["securityContext"] = {"privileged": True}
        return {
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"generateName": f"{name[:-5]}", "namespace": namespace, "labels": {
                "app.kubernetes.io/name": name.split("-")[0], "pod-template-hash": "7d9c6b5f4"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name[:-6],
                                     "uid": self._id(), "controller": True, "blockOwnerDeletion": True}]},
            "spec": {"volumes": [{"name": "kube-api-access", "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}], "defaultMode": 420}}],
                "containers": [container], "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst", "serviceAccountName": "default", "securityContext": {},
                "schedulerName": "default-scheduler", "enableServiceLinks": True, "preemptionPolicy": "PreemptLowerPriority"},
            "status": {},
        }

    def _lease(self, namespace: str, name: str, holder: str) -> dict[str, Any]:
        return {"kind": "Lease", "apiVersion": "coordination.k8s.io/v1", "metadata": {
            "name": name, "namespace": namespace, "uid": self._id(), "resourceVersion": str(self.rng.randint(10**6, 10**8)),
            "creationTimestamp": "2026-10-01T08:00:00Z"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 40,
                     "renewTime": self._stamp(self.now), "leaseTransitions": 2}}

    # --- kinds of requests ---------------------------------------------------------

    def lease_renewal(self) -> list[dict[str, Any]]:
        node = self.rng.choice(NODES)
        if self.rng.random() < 0.7:
            namespace, name, user = "kube-node-lease", node, self._node_user(node)
            agent = "kubelet/v1.31.2 (linux/amd64) kubernetes/5864a46"
        else:
            component = self.rng.choice(["kube-controller-manager", "kube-scheduler"])
            namespace, name = "kube-system", component
            user = {"username": f"system:{component}", "groups": ["system:authenticated"]}
            agent = f"{component}/v1.31.2 (linux/amd64) kubernetes/5864a46/leader-election"
        lease = self._lease(namespace, name, name)
        verb = "update" if self.rng.random() < 0.8 else "get"
        return self._event(
            verb=verb, uri=f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}?timeout=10s",
            user=user, agent=agent, ip="10.0.0.12",
            object_ref={"resource": "leases", "namespace": namespace, "name": name,
                        "apiGroup": "coordination.k8s.io", "apiVersion": "v1"},
            code=200, level="RequestResponse" if verb == "update" else "Metadata",
            reason="", request_object=lease, response_object=lease,
        )

    def controller_read(self) -> list[dict[str, Any]]:
        controller = self.rng.choice(CONTROLLERS)
        resource, group = self.rng.choice([("pods", ""), ("replicasets", "apps"), ("deployments", "apps"),
                                           ("endpointslices", "discovery.k8s.io"), ("jobs", "batch"),
                                           ("configmaps", ""), ("namespaces", "")])
        verb = self.rng.choice(["watch", "list", "list", "watch", "get"])
        prefix = "/api/v1" if not group else f"/apis/{group}/v1"
        query = "?allowWatchBookmarks=true&resourceVersion=81234567&timeout=7m3s&timeoutSeconds=423&watch=true" \
            if verb == "watch" else "?limit=500&resourceVersion=0"
        object_ref: dict[str, Any] = {"resource": resource, "apiVersion": "v1"}
        if group:
            object_ref["apiGroup"] = group
        return self._event(
            verb=verb, uri=f"{prefix}/{resource}{query}", user=self._sa_user("kube-system", controller),
            agent=f"kube-controller-manager/v1.31.2 (linux/amd64) kubernetes/5864a46/system:serviceaccount:kube-system:{controller}",
            object_ref=object_ref, code=200,
            reason=self._rbac("ClusterRoleBinding", f"system:controller:{controller}",
                              f"system:serviceaccount:kube-system:{controller}"),
        )

    def kubelet_read(self) -> list[dict[str, Any]]:
        node = self.rng.choice(NODES)
        namespace = self.rng.choice(NAMESPACES)
        resource = self.rng.choice(["configmaps", "secrets", "pods", "services", "nodes"])
        name = f"{namespace}-config" if resource != "nodes" else node
        verb = self.rng.choice(["get", "watch", "list"])
        object_ref: dict[str, Any] = {"resource": resource, "apiVersion": "v1"}
        if resource != "nodes":
            object_ref["namespace"] = namespace
            uri = f"/api/v1/namespaces/{namespace}/{resource}"
        else:
            uri = "/api/v1/nodes"
        if verb == "get":
            object_ref["name"] = name
            uri += f"/{name}"
        else:
            uri += f"?fieldSelector=metadata.name%3D{name}&limit=500&resourceVersion=0"
        return self._event(
            verb=verb, uri=uri, user=self._node_user(node),
            agent="kubelet/v1.31.2 (linux/amd64) kubernetes/5864a46", object_ref=object_ref, code=200,
            ip=f"10.0.{self.rng.randint(0, 3)}.{self.rng.randint(2, 250)}", reason="",
        )

    def pod_status_patch(self) -> list[dict[str, Any]]:
        node = self.rng.choice(NODES)
        namespace = self.rng.choice(NAMESPACES)
        name = f"{namespace}-api-7d9c6b5f4-{self.rng.randint(10000, 99999)}"
        patch = {"metadata": {"uid": self._id()}, "status": {"$setElementOrder/conditions": [
            {"type": "PodReadyToStartContainers"}, {"type": "Initialized"}, {"type": "Ready"},
            {"type": "ContainersReady"}, {"type": "PodScheduled"}],
            "conditions": [{"lastTransitionTime": self._stamp(self.now), "status": "True", "type": "Ready"}],
            "containerStatuses": [{"containerID": f"containerd://{self.rng.getrandbits(128):032x}",
                                   "image": self.rng.choice(IMAGES), "name": "app", "ready": True,
                                   "restartCount": 0, "started": True}]}}
        return self._event(
            verb="patch", uri=f"/api/v1/namespaces/{namespace}/pods/{name}/status",
            user=self._node_user(node), agent="kubelet/v1.31.2 (linux/amd64) kubernetes/5864a46",
            object_ref={"resource": "pods", "namespace": namespace, "name": name, "apiVersion": "v1",
                        "subresource": "status"},
            code=200, level="Request", request_object=patch,
        )

    def event_create(self) -> list[dict[str, Any]]:
        namespace = self.rng.choice(NAMESPACES)
        name = f"{namespace}-api-7d9c6b5f4-{self.rng.randint(10000, 99999)}"
        reason = self.rng.choice(["Pulled", "Created", "Started", "Scheduled", "SuccessfulCreate", "BackOff"])
        node = self.rng.choice(NODES)
        body = {"kind": "Event", "apiVersion": "v1", "metadata": {"name": f"{name}.{self.rng.getrandbits(64):x}",
                "namespace": namespace}, "involvedObject": {"kind": "Pod", "namespace": namespace, "name": name,
                "uid": self._id(), "apiVersion": "v1", "fieldPath": "spec.containers{app}"},
                "reason": reason, "message": f"Container image \"{self.rng.choice(IMAGES)}\" already present on machine",
                "source": {"component": "kubelet", "host": node}, "firstTimestamp": self._stamp(self.now),
                "lastTimestamp": self._stamp(self.now), "count": 1, "type": "Normal", "reportingComponent": "kubelet",
                "reportingInstance": node}
        return self._event(
            verb="create", uri=f"/api/v1/namespaces/{namespace}/events", user=self._node_user(node),
            agent="kubelet/v1.31.2 (linux/amd64) kubernetes/5864a46",
            object_ref={"resource": "events", "namespace": namespace, "name": body["metadata"]["name"], "apiVersion": "v1"},
            code=201, level="Request", request_object=body,
        )

    def review(self) -> list[dict[str, Any]]:
        resource = self.rng.choice(["tokenreviews", "subjectaccessreviews"])
        group = "authentication.k8s.io" if resource == "tokenreviews" else "authorization.k8s.io"
        user = self._sa_user("kube-system", "metrics-server", pod="metrics-server-5f9c7d8b6-abcde")
        body: dict[str, Any] = {"kind": "SubjectAccessReview", "apiVersion": f"{group}/v1", "metadata": {},
                                "spec": {"resourceAttributes": {"namespace": "monitoring", "verb": "get",
                                                                "resource": "pods", "name": "prometheus-0"},
                                         "user": "system:serviceaccount:monitoring:prometheus"}, "status": {"allowed": False}}
        return self._event(
            verb="create", uri=f"/apis/{group}/v1/{resource}", user=user,
            agent="metrics-server/v0.7.2 (linux/amd64) kubernetes/$Format",
            object_ref={"resource": resource, "apiGroup": group, "apiVersion": "v1"}, code=201,
            level="Request" if resource == "subjectaccessreviews" else "Metadata", request_object=body,
            reason=self._rbac("ClusterRoleBinding", "system:auth-delegator", user["username"]),
        )

    def person_read(self) -> list[dict[str, Any]]:
        user = self._person()
        namespace = self.rng.choice(NAMESPACES)
        resource = self.rng.choice(["pods", "deployments", "services", "secrets", "configmaps", "events", "ingresses"])
        verb = self.rng.choice(["get", "list", "list"])
        forbidden = self.rng.random() < 0.05
        object_ref = {"resource": resource, "namespace": namespace, "apiVersion": "v1"}
        return self._event(
            verb=verb, uri=f"/api/v1/namespaces/{namespace}/{resource}?limit=500", user=user,
            agent=self.rng.choice(KUBECTL), object_ref=object_ref, code=403 if forbidden else 200,
            ip=f"203.0.113.{self.rng.randint(2, 250)}", decision="forbid" if forbidden else "allow",
            reason="" if forbidden else self._rbac("RoleBinding", "edit", user["username"]),
        )

    def pod_create(self) -> list[dict[str, Any]]:
        namespace = self.rng.choice(NAMESPACES)
        name = f"{namespace}-api-7d9c6b5f4-{self.rng.randint(10000, 99999)}"
        image = self.rng.choice(IMAGES)
        pod = self._pod(namespace, name, image, privileged=self.rng.random() < 0.05)
        controller = self.rng.random() < 0.85
        user = self._sa_user("kube-system", "replicaset-controller") if controller else self._person()
        return self._event(
            verb="create", uri=f"/api/v1/namespaces/{namespace}/pods", user=user,
            agent="kube-controller-manager/v1.31.2 (linux/amd64) kubernetes/5864a46/system:serviceaccount:kube-system:replicaset-controller"
            if controller else self.rng.choice(KUBECTL),
            object_ref={"resource": "pods", "namespace": namespace, "name": name, "apiVersion": "v1"},
            code=201, level="RequestResponse", request_object=pod, response_object=pod,
            reason=self._rbac("ClusterRoleBinding", "system:controller:replicaset-controller", user["username"]),
        )

    def deployment_write(self) -> list[dict[str, Any]]:
        namespace = self.rng.choice(NAMESPACES)
        name = f"{namespace}-api"
        patch = {"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": self._stamp(self.now)}}}}}
        user = self._person()
        return self._event(
            verb="patch", uri=f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}?fieldManager=kubectl-rollout",
            user=user, agent=self.rng.choice(KUBECTL),
            object_ref={"resource": "deployments", "namespace": namespace, "name": name, "apiGroup": "apps", "apiVersion": "v1"},
            code=200, level="Request", request_object=patch, ip=f"203.0.113.{self.rng.randint(2, 250)}",
            reason=self._rbac("RoleBinding", "edit", user["username"]),
        )

    def exec_or_attach(self) -> list[dict[str, Any]]:
        namespace = self.rng.choice(NAMESPACES)
        name = f"{namespace}-api-7d9c6b5f4-{self.rng.randint(10000, 99999)}"
        subresource = "exec" if self.rng.random() < 0.9 else "attach"
        query = "command=sh&container=app&stdin=true&stdout=true&tty=true" if subresource == "exec" \
            else "container=app&stdin=true&stdout=true&tty=true"
        user = self._person()
        return self._event(
            verb=self.rng.choice(["create", "get"]), uri=f"/api/v1/namespaces/{namespace}/pods/{name}/{subresource}?{query}",
            user=user, agent=self.rng.choice(KUBECTL),
            object_ref={"resource": "pods", "namespace": namespace, "name": name, "apiVersion": "v1",
                        "subresource": subresource},
            code=101, level="Request", ip=f"203.0.113.{self.rng.randint(2, 250)}",
            reason=self._rbac("RoleBinding", "edit", user["username"]),
        )

    def debug(self) -> list[dict[str, Any]]:
        namespace = self.rng.choice(NAMESPACES)
        name = f"{namespace}-api-7d9c6b5f4-{self.rng.randint(10000, 99999)}"
        patch = {"spec": {"ephemeralContainers": [{"name": "debugger-x7k2p", "image": "nicolaka/netshoot:v0.13",
                                                   "stdin": True, "tty": True, "targetContainerName": "app"}]}}
        user = self._person()
        return self._event(
            verb="patch", uri=f"/api/v1/namespaces/{namespace}/pods/{name}/ephemeralcontainers",
            user=user, agent=self.rng.choice(KUBECTL),
            object_ref={"resource": "pods", "namespace": namespace, "name": name, "apiVersion": "v1",
                        "subresource": "ephemeralcontainers"},
            code=200, level="Request", request_object=patch, ip=f"203.0.113.{self.rng.randint(2, 250)}",
            reason=self._rbac("RoleBinding", "edit", user["username"]),
        )

    # Share of the log, in requests (not lines).
    MIX = (
        ("lease_renewal", 0.30), ("controller_read", 0.20), ("kubelet_read", 0.20), ("pod_status_patch", 0.06),
        ("event_create", 0.08), ("review", 0.06), ("person_read", 0.05), ("pod_create", 0.025),
        ("deployment_write", 0.01), ("exec_or_attach", 0.01), ("debug", 0.005),
    )

    def events(self) -> Iterator[dict[str, Any]]:
        kinds = [getattr(self, name) for name, _ in self.MIX]
        weights = [share for _, share in self.MIX]
        while True:
            yield from self.rng.choices(kinds, weights)[0]()


def audit_lines(count: int, *, seed: int = 7, start: datetime | None = None) -> Iterator[str]:
    """``count`` JSON lines (no newline), as the API server's log backend writes them."""
    log = AuditLog(seed, start or datetime(2026, 11, 1, tzinfo=timezone.utc))
    for _, event in zip(range(count), log.events()):
        yield json.dumps(event, separators=(",", ":"), ensure_ascii=False).translate(GO_ESCAPES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    out = sys.stdout
    for line in audit_lines(args.lines, seed=args.seed):
        out.write(line + "\n")


if __name__ == "__main__":
    main()
