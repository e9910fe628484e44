"""docs/install.md's ready-to-apply ValidatingAdmissionPolicy: valid for the Kubernetes API
and the same policy the chart renders with namespaces.guardLabels (so the two cannot drift)."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTALL_GUIDE = REPO_ROOT / "docs" / "install.md"
EXAMPLE_MARKER = "# gatewatch-namespace-labels.yaml"


def _render_manifests():
    if "render_manifests" in sys.modules:
        return sys.modules["render_manifests"]
    spec = importlib.util.spec_from_file_location("render_manifests", REPO_ROOT / "scripts" / "render_manifests.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def documented_policy() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", INSTALL_GUIDE.read_text(), flags=re.S)
    (block,) = [b for b in blocks if b.startswith(EXAMPLE_MARKER)]
    return [doc for doc in yaml.safe_load_all(block) if doc]


@pytest.mark.parametrize("kubernetes_version", ["1.30", kubernetes_validate.utils.latest_version()])
def test_the_documented_policy_is_valid_for_the_kubernetes_api(kubernetes_version):
    objects = documented_policy()
    assert [o["kind"] for o in objects] == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    for obj in objects:
        kubernetes_validate.validate(obj, kubernetes_version, strict=True)


def test_the_documented_policy_is_what_the_chart_renders_for_the_same_subjects():
    guard = {"enabled": True, "allowedGroups": ["system:masters", "platform-admins"],
             "allowedUsers": ["system:serviceaccount:argocd:argocd-application-controller"]}
    render_manifests = _render_manifests()
    rendered = render_manifests.render_chart(
        {"namespaces": {"guardLabels": guard}}, chart_dir=REPO_ROOT / "charts" / "gatewatch",
        release_name="gatewatch", namespace="gatewatch", api_versions=[render_manifests.ADMISSION_POLICY_API],
    )
    from_chart = {(o["kind"], o["metadata"]["name"]): o["spec"] for o in rendered
                  if o["kind"].startswith("ValidatingAdmissionPolicy")}
    documented = {(o["kind"], o["metadata"]["name"]): o["spec"] for o in documented_policy()}
    assert documented == from_chart
