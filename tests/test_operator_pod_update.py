"""`kubectl set image pod/...` end to end: a pod UPDATE that swaps in a debug image.

gatewatch runs with the default rules (rules.yaml) against kmock; the harness
calls its webhooks as kube-apiserver would, matchConditions included (CEL,
evaluated with cel-python). An API server that ignores matchConditions would
send every pod update: gatewatch's own answer to an update that changes no
image is checked too.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from apiserver_harness import ApiRequest, add_pod
from gatewatch.kube.webhook_configuration import POD_IMAGES_CHANGED
from test_operator_admission import Cluster, eventually, running_cluster, webhook_configuration

DEBUG_IMAGE_COMPANION = "gatewatch-debug-image-pod"
PATCH_OPTIONS = {"kind": "PatchOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-set"}


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    packaged_rules = {"files": [], "packaged": True, "reloadIntervalSeconds": 0.1, "configMapName": "team-rules"}
    async with running_cluster(tmp_path, rules=packaged_rules) as running:
        yield running


def set_image(pod: dict[str, Any], image: str) -> ApiRequest:
    """The UPDATE the API server admits for ``kubectl set image pod/<name> c0=<image>``."""
    updated = {**pod, "spec": {**pod["spec"], "containers": [{**pod["spec"]["containers"][0], "image": image}]}}
    return ApiRequest(
        operation="UPDATE", resource="pods", namespace=pod["metadata"]["namespace"], name=pod["metadata"]["name"],
        object=updated, old_object=pod, options=PATCH_OPTIONS,
    )


async def test_pod_update_webhook_is_registered_with_the_image_change_condition(cluster: Cluster):
    webhooks = {webhook["name"]: webhook for webhook in webhook_configuration(cluster)["webhooks"]}
    update_hook = webhooks["pods-update.warn.gatewatch.io"]
    assert update_hook["rules"][0]["resources"] == ["pods"]
    assert update_hook["rules"][0]["operations"] == ["UPDATE"]
    assert update_hook["clientConfig"]["service"]["path"] == "/validate/pods-update/warn"
    assert update_hook["matchConditions"] == [POD_IMAGES_CHANGED.as_dict()]
    # Pod creation keeps its own webhook, with no condition.
    assert "matchConditions" not in webhooks["pods.warn.gatewatch.io"]


async def test_set_image_to_busybox_in_a_warn_namespace_gets_the_warning(cluster: Cluster):
    pod = add_pod(cluster.k8s, "warn-ns", "web", images=["nginx:1.27"])
    result = await cluster.harness().admit(set_image(pod, "busybox:1.36"))
    assert result.allowed, result
    assert result.called == ["pods-update.warn.gatewatch.io"]
    assert result.warnings == [
        "gatewatch: [T1610,T1609] Kubernetes Pod Created or Updated with a Common Debug or Base Image "
        "(any registry) (medium)"
    ]
    await eventually(cluster.alert_lines, what="alert")
    (alert,) = cluster.alert_lines()
    assert alert["rule"]["id"] == DEBUG_IMAGE_COMPANION
    assert alert["kubernetes"]["audit"]["verb"] == "patch"


async def test_set_image_from_a_mirror_in_an_enforce_namespace_is_denied(cluster: Cluster):
    pod = add_pod(cluster.k8s, "enforce-ns", "web", images=["nginx:1.27"])
    result = await cluster.harness().admit(set_image(pod, "registry.k8s.io/e2e-test-images/busybox:1.36.1-1"))
    assert not result.allowed and result.code == 403
    assert DEBUG_IMAGE_COMPANION in result.message


def relabel(pod: dict[str, Any]) -> ApiRequest:
    relabelled = {**pod, "metadata": {**pod["metadata"], "labels": {"team": "payments"}}}
    return ApiRequest(
        operation="UPDATE", resource="pods", namespace=pod["metadata"]["namespace"], name=pod["metadata"]["name"],
        object=relabelled, old_object=pod, options={"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"},
    )


async def test_an_update_that_changes_no_image_never_reaches_gatewatch(cluster: Cluster):
    # Controllers relabel and annotate pods all the time: the matchConditions keep them away.
    pod = add_pod(cluster.k8s, "warn-ns", "legacy", images=["busybox:1.36"])
    result = await cluster.harness().admit(relabel(pod))
    assert result.allowed and result.warnings == [] and result.called == []


async def test_called_anyway_gatewatch_reports_only_images_an_update_adds_or_changes(cluster: Cluster):
    # An API server that ignores matchConditions (older than 1.28, or the feature off) calls for every update.
    pod = add_pod(cluster.k8s, "warn-ns", "legacy", images=["busybox:1.36"])
    harness = cluster.harness()
    harness.configuration = copy.deepcopy(harness.configuration)  # the registered one stays as it is
    for webhook in harness.configuration["webhooks"]:
        webhook.pop("matchConditions", None)
    result = await harness.admit(relabel(pod))
    assert result.allowed and result.warnings == [] and result.called == ["pods-update.warn.gatewatch.io"]
