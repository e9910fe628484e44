"""The AdmissionReviews the webhook benchmarks send: kube-apiserver's, for a Pod CREATE
(busybox, which matches a rule, or nginx, which does not) and a pods/exec CONNECT."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Literal

from webhook_servers import BASELINE_HANDLER_ID, BENCH_NAMESPACE, EXEC_TARGET_POD, WEBHOOK_PATH

ReviewKind = Literal["pod-busybox", "pod-nginx", "exec"]
REVIEW_MIX: tuple[ReviewKind, ...] = ("pod-busybox", "pod-nginx", "exec")
# "matching" (the spec's mix: 2 of 3 reviews match a rule, each an alert and an Event);
# "clean": harmless Pod CREATEs only, nothing matches (most of a real cluster's traffic).
MIXES: dict[str, tuple[ReviewKind, ...]] = {"matching": REVIEW_MIX, "clean": ("pod-nginx",)}
# gatewatch serves one handler per route at {path}/{handler id}; the baseline one handler for all.
GATEWATCH_PATHS: dict[ReviewKind, str] = {
    "pod-busybox": f"{WEBHOOK_PATH}/pods", "pod-nginx": f"{WEBHOOK_PATH}/pods", "exec": f"{WEBHOOK_PATH}/pods-exec",
}


# --- the requests ---------------------------------------------------------------------------------


def admission_review(kind: ReviewKind, *, index: int) -> dict:
    """An admission.k8s.io/v1 AdmissionReview as kube-apiserver sends it."""
    user = {"username": "alice@example.com", "uid": "u-1", "groups": ["system:authenticated"]}
    if kind == "exec":
        options = {"kind": "PodExecOptions", "apiVersion": "v1", "stdin": True, "stdout": True, "tty": True,
                   "container": "c0", "command": ["sh"]}
        request = {
            "kind": {"group": "", "version": "v1", "kind": "PodExecOptions"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "subResource": "exec", "requestSubResource": "exec",
            "operation": "CONNECT", "name": EXEC_TARGET_POD, "object": options,
        }
    else:
        image = "busybox:1.36" if kind == "pod-busybox" else "nginx:1.27"
        name = f"bench-{index}"
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": BENCH_NAMESPACE, "labels": {"app": "bench"}},
            "spec": {"containers": [{"name": "main", "image": image,
                                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
        }
        request = {
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE", "name": name, "object": pod,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        }
    request.update(
        uid=str(uuid.UUID(int=index)), namespace=BENCH_NAMESPACE, userInfo=user, dryRun=False,
        requestKind=request["kind"], requestResource=request["resource"], oldObject=None,
    )
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


@dataclass(frozen=True)
class PreparedReview:
    kind: ReviewKind
    uid: str
    body: bytes


def prepare_reviews(count: int, *, first_index: int, mix: tuple[ReviewKind, ...] = REVIEW_MIX) -> list[PreparedReview]:
    """Encoded before the clock starts, so the client's JSON work is not measured."""
    reviews = []
    for index in range(first_index, first_index + count):
        kind = mix[index % len(mix)]
        review = admission_review(kind, index=index)
        reviews.append(PreparedReview(kind=kind, uid=review["request"]["uid"], body=json.dumps(review).encode()))
    return reviews


def path_for(server: str, kind: ReviewKind) -> str:
    """Where ``server`` (baseline, or a gatewatch) is sent a review of ``kind``."""
    return GATEWATCH_PATHS[kind] if server.startswith("gatewatch") else f"{WEBHOOK_PATH}/{BASELINE_HANDLER_ID}"


__all__ = ["MIXES", "REVIEW_MIX", "PreparedReview", "ReviewKind", "admission_review", "path_for", "prepare_reviews"]
