"""Manifests on disk -> Pods (from workload templates) and AdmissionReviews."""
from __future__ import annotations

import io
import json
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatewatch.errors import InputError
from gatewatch.kql import compile_query
from gatewatch.workloads import (
    InputItem,
    document_from_item,
    iter_input_files,
    pod_from_workload,
    read_input_file,
    read_inputs,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOW = datetime(2026, 11, 22, 6, 0, tzinfo=timezone.utc)

POD_SPEC = """\
      containers:
        - name: app
          image: busybox:1.36
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def items_of(path: Path) -> list[InputItem]:
    return list(read_inputs([path]))


def test_examples_directory() -> None:
    items = list(read_inputs([EXAMPLES]))
    by_subject = {item.subject: item for item in items}
    assert [item.category for item in items] == [
        "pod", "pod", "pod",  # examples/pod-security/: a CronJob, a DaemonSet, a Deployment
        "pod", "pod", "skipped", "admission_review", "admission_review", "admission_review"]
    netshoot = by_subject["Pod netshoot"]
    assert netshoot.line == 3 and netshoot.source.endswith("examples/pods/netshoot.yaml")
    web = by_subject["Deployment web (pod web-deployment-pod)"]
    assert web.pod is not None and web.pod["metadata"]["namespace"] == "shop"
    assert by_subject["Service web"].skip_reason == "kind Service creates no Pod"
    assert "AdmissionReview CONNECT pods/exec payments/payments-api-7d9c6b5f4-x2x8l" in by_subject
    assert "AdmissionReview UPDATE pods payments/payments-api-7d9c6b5f4-x2x8l" in by_subject


def test_example_documents_flag_netshoot_and_not_nginx() -> None:
    debug_image = compile_query(
        'kubernetes.audit.verb:"create" and '
        "kubernetes.audit.requestObject.spec.containers.image:(alpine* or busybox* or *netshoot\\:*)"
    )
    verdicts = {
        item.subject: debug_image(document_from_item(item, now=NOW))
        for item in read_inputs([EXAMPLES / "pods"])
        if item.category == "pod"
    }
    assert verdicts == {"Pod netshoot": True, "Deployment web (pod web-deployment-pod)": False}


@pytest.mark.parametrize(
    ("kind", "api_version", "template_yaml"),
    [
        ("Deployment", "apps/v1", "spec:\n  template:\n    metadata:\n      labels: {app: x}\n    spec:\n"),
        ("StatefulSet", "apps/v1", "spec:\n  template:\n    metadata:\n      labels: {app: x}\n    spec:\n"),
        ("DaemonSet", "apps/v1", "spec:\n  template:\n    metadata:\n      labels: {app: x}\n    spec:\n"),
        ("ReplicaSet", "apps/v1", "spec:\n  template:\n    metadata:\n      labels: {app: x}\n    spec:\n"),
        ("ReplicationController", "v1", "spec:\n  template:\n    metadata:\n      labels: {app: x}\n    spec:\n"),
        ("Job", "batch/v1", "spec:\n  template:\n    metadata:\n      labels: {app: x}\n    spec:\n"),
        (
            "CronJob",
            "batch/v1",
            "spec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n"
            "        metadata:\n          labels: {app: x}\n        spec:\n",
        ),
    ],
)
def test_workload_becomes_the_pod_its_template_creates(tmp_path: Path, kind: str, api_version: str, template_yaml: str) -> None:
    indent = " " * (len(template_yaml.splitlines()[-1]) - len(template_yaml.splitlines()[-1].lstrip()) + 2)
    spec = textwrap.indent(textwrap.dedent(POD_SPEC), indent)
    text = f"apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: tools\n  namespace: ops\n{template_yaml}{spec}"
    (item,) = items_of(write(tmp_path, "w.yaml", text))
    assert item.category == "pod", item.error
    assert item.pod is not None
    assert item.pod["metadata"] == {"labels": {"app": "x"}, "name": f"tools-{kind.lower()}-pod", "namespace": "ops"}
    assert item.pod["spec"]["containers"][0]["image"] == "busybox:1.36"
    document = document_from_item(item, now=NOW)
    assert document["orchestrator"]["namespace"] == "ops"
    assert document["orchestrator"]["resource"] == {"type": "pods", "name": f"tools-{kind.lower()}-pod", "parent": {"type": kind}}
    assert document["gatewatch"]["source"] == "manifest"


def test_template_namespace_is_replaced_by_the_workloads(tmp_path: Path) -> None:
    text = """\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          template:
            metadata: {namespace: elsewhere, annotations: {a: b}}
            spec:
              containers: [{name: app, image: nginx}]
    """
    (item,) = items_of(write(tmp_path, "d.yaml", text))
    assert item.pod is not None and item.pod["metadata"] == {"annotations": {"a": "b"}, "name": "web-deployment-pod"}
    assert document_from_item(item, now=NOW)["orchestrator"]["namespace"] == "default"


def test_multi_document_yaml_keeps_positions_and_skips_empty_documents(tmp_path: Path) -> None:
    text = """\
        # leading comment
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: c}
        ---
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers: [{name: a, image: alpine:3.20}]
    """
    items = items_of(write(tmp_path, "m.yaml", text))
    assert [(i.category, i.line, i.document_index, i.manifest_kind) for i in items] == [
        ("skipped", 2, 0, "ConfigMap"),
        ("pod", 7, 2, "Pod"),
    ]


def test_kind_list_yields_each_item_with_its_line(tmp_path: Path) -> None:
    text = """\
        apiVersion: v1
        kind: List
        items:
          - apiVersion: v1
            kind: Pod
            metadata: {name: one}
            spec:
              containers: [{name: a, image: busybox}]
          - apiVersion: v1
            kind: Service
            metadata: {name: svc}
    """
    items = items_of(write(tmp_path, "list.yaml", text))
    assert [(i.category, i.line, i.item_index, i.manifest_name) for i in items] == [
        ("pod", 4, 0, "one"),
        ("skipped", 9, 1, "svc"),
    ]


def test_json_file_with_a_pod_list(tmp_path: Path) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "j"}, "spec": {"containers": [{"name": "a", "image": "curlimages/curl:8.5.0"}]}}
    path = tmp_path / "pods.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "PodList", "items": [pod, pod]}))
    items = items_of(path)
    assert [(i.category, i.item_index, i.line) for i in items] == [("pod", 0, 1), ("pod", 1, 1)]


def test_admission_review_in_yaml(tmp_path: Path) -> None:
    review = json.loads((EXAMPLES / "reviews" / "exec-review.json").read_text())
    path = tmp_path / "review.yaml"
    path.write_text(yaml.safe_dump(review))
    (item,) = items_of(path)
    assert item.category == "admission_review"
    document = document_from_item(item, now=NOW)
    assert document["kubernetes"]["audit"]["objectRef"]["subresource"] == "exec"
    assert document["gatewatch"]["source"] == "admission"


def test_malformed_admission_review_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad-review.yaml", "---\napiVersion: admission.k8s.io/v1\nkind: AdmissionReview\nrequest: {operation: CREATE}\n")
    (item,) = items_of(path)
    with pytest.raises(InputError) as caught:
        document_from_item(item, now=NOW)
    assert str(caught.value) == f"{path}:2: AdmissionReview CREATE: request.uid: missing"


def test_invalid_yaml_raises_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n")
    with pytest.raises(InputError) as caught:
        items_of(path)
    assert caught.value.source == str(path)
    assert caught.value.line == 5
    assert "invalid YAML" in str(caught.value)


def test_invalid_json_raises_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "kind": "Pod",\n  "metadata": {,}\n}\n')
    with pytest.raises(InputError) as caught:
        items_of(path)
    assert (caught.value.source, caught.value.line) == (str(path), 3)


def test_documents_before_a_yaml_error_are_still_yielded(tmp_path: Path) -> None:
    path = write(tmp_path, "half.yaml", "kind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: a, image: x}]}\n---\nkind: [\n")
    reader = read_input_file(str(path))
    assert next(reader).manifest_name == "a"
    with pytest.raises(InputError):
        next(reader)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- just\n- a list\n", "document 1: expected a Kubernetes object, got list"),
        ("metadata: {name: x}\n", "kind: missing: not a Kubernetes object"),
        ("kind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1}\n", "Deployment web: spec.template: missing or not an object"),
        (
            "kind: CronJob\nmetadata: {name: c}\nspec: {jobTemplate: {spec: {}}}\n",
            "CronJob c: spec.jobTemplate.spec.template: missing or not an object",
        ),
        (
            "kind: Deployment\nmetadata: {name: web}\nspec: {template: {spec: {containers: [{name: a}]}}}\n",
            "Deployment web: spec.template.spec.containers[0].image: missing or empty",
        ),
        ("kind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n", "Pod p: spec.containers: missing or empty"),
        (
            "kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}], initContainers: [oops]}\n",
            "Pod p: spec.initContainers[0]: expected an object, got str",
        ),
        # Wrongly typed fields: named, never a TypeError.
        ("kind: Pod\nmetadata: {name: p}\nspec: {containers: busybox}\n", "Pod p: spec.containers: expected a list, got str"),
        ("kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: 5}]}\n",
         "Pod p: spec.containers[0].image: expected a string, got int"),
        ("kind: Pod\nmetadata: {name: p, labels: []}\nspec: {containers: [{name: a, image: x}]}\n",
         "Pod p: metadata.labels: expected an object of strings, got list"),
        ("kind: Deployment\nmetadata: {name: web}\nspec: {template: 3}\n", "Deployment web: spec.template: missing or not an object"),
        ("kind: Deployment\nmetadata: {name: web}\nspec: {template: {metadata: {labels: [a]}, spec: {containers: [{name: a, image: x}]}}}\n",
         "Deployment web: spec.template.metadata.labels: expected an object of strings, got list"),
        ("kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}], ephemeralContainers: {a: b}}\n",
         "Pod p: spec.ephemeralContainers: expected a list, got dict"),
    ],
)
def test_object_that_cannot_be_evaluated_is_invalid_and_reading_goes_on(tmp_path: Path, text: str, message: str) -> None:
    good = "---\nkind: Pod\nmetadata: {name: after}\nspec: {containers: [{name: a, image: nginx}]}\n"
    path = write(tmp_path, "x.yaml", text + good)
    bad, after = items_of(path)
    assert bad.category == "invalid" and bad.error is not None
    assert str(bad.error) == f"{path}:1: {message}"
    assert after.category == "pod" and after.manifest_name == "after"
    with pytest.raises(InputError, match="expected|missing"):
        document_from_item(bad)


def test_skipped_item_has_no_document(tmp_path: Path) -> None:
    (item,) = items_of(write(tmp_path, "s.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n"))
    assert item.category == "skipped"
    with pytest.raises(InputError, match="nothing to evaluate: kind Secret creates no Pod"):
        document_from_item(item)


def test_directories_are_walked_recursively_in_order_for_manifest_suffixes(tmp_path: Path) -> None:
    pod = "kind: Pod\nmetadata: {{name: {}}}\nspec: {{containers: [{{name: a, image: x}}]}}\n"
    write(tmp_path, "b/two.yml", pod.format("two"))
    write(tmp_path, "a/deeper/one.yaml", pod.format("one"))
    write(tmp_path, "c.JSON", json.dumps({"kind": "Pod", "metadata": {"name": "three"}, "spec": {"containers": [{"name": "a", "image": "x"}]}}))
    write(tmp_path, "notes.txt", "kind: Pod\n")
    write(tmp_path, "chart/README.md", "# not yaml: [\n")
    write(tmp_path, ".git/config.yaml", "not: [yaml\n")
    write(tmp_path, "a/.hidden.yaml", "not: [yaml\n")
    names = [item.manifest_name for item in read_inputs([tmp_path])]
    assert names == ["one", "two", "three"]
    assert len(list(iter_input_files([tmp_path]))) == 3


def test_an_explicit_file_is_read_whatever_its_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "pod.txt", "kind: Pod\nmetadata: {name: t}\nspec: {containers: [{name: a, image: x}]}\n")
    assert [i.manifest_name for i in items_of(path)] == ["t"]


def test_missing_path_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        list(read_inputs([tmp_path / "nope.yaml"]))
    assert str(caught.value) == f"{tmp_path / 'nope.yaml'}: no such file or directory"


def test_byte_order_mark_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"kind": "Pod", "metadata": {"name": "b"}, "spec": {"containers": [{"name": "a", "image": "x"}]}}).encode())
    assert [i.manifest_name for i in items_of(path)] == ["b"]


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("kind: Pod\nmetadata: {name: s}\nspec: {containers: [{name: a, image: x}]}\n"))
    (item,) = list(read_inputs(["-"]))
    assert (item.source, item.manifest_name, item.category) == ("-", "s", "pod")


@pytest.mark.parametrize("workload", [{"kind": ["Deployment"]}, {"kind": None}, "Deployment"])
def test_pod_from_workload_refuses_what_is_not_a_workload_with_an_input_error(workload: Any) -> None:
    with pytest.raises(InputError):
        pod_from_workload(workload)


@pytest.mark.parametrize(
    ("text", "anchor_line"),
    [
        ("kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: busybox\n"
         "    env: &env\n    - {name: A, value: x, again: *env}\n", 7),
        ("kind: Pod\nmetadata: &m {name: p, labels: {self: *m}}\nspec: {containers: [{name: a, image: x}]}\n", 2),
        ("kind: List\nitems: &items\n- *items\n", 2),
        ("&whole {kind: Pod, *whole : 1}\n", 1),  # as a mapping key
    ],
    ids=["list-in-env", "mapping-in-labels", "list-item", "key"],
)
def test_document_that_contains_itself_is_refused_naming_file_and_document(
    tmp_path: Path, text: str, anchor_line: int
) -> None:
    first = "kind: Pod\nmetadata: {name: before}\nspec: {containers: [{name: a, image: nginx}]}\n---\n"
    after = "---\nkind: Pod\nmetadata: {name: after}\nspec: {containers: [{name: a, image: nginx}]}\n"
    path = write(tmp_path, "looped.yaml", first + text + after)
    before, looped, later = items_of(path)
    assert looped.category == "invalid" and looped.error is not None
    assert str(looped.error) == (
        f"{path}:5: document 2: a YAML alias inside its own anchor (anchored at line {4 + anchor_line})"
        " makes it contain itself, which no Kubernetes object can"
    )
    with pytest.raises(InputError, match="contain itself"):
        document_from_item(looped)
    assert (before.manifest_name, later.manifest_name) == ("before", "after")


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    # Seven levels of ten aliases: a few hundred bytes that would expand to 10^7 list items.
    levels = ['  l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"  l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 7)]
    text = "kind: Pod\nmetadata: {name: bomb}\nx:\n" + "\n".join(levels) + "\nspec: {containers: [{name: a, image: nginx}]}\n"
    (item,) = items_of(write(tmp_path, "bomb.yaml", text))
    assert item.category == "invalid" and "excessive YAML aliasing" in str(item.error)


def test_a_moderately_aliased_manifest_is_read(tmp_path: Path) -> None:
    levels = ['  l0: &l0 ["a","b","c","d","e","f","g","h","i","j"]']
    levels += [f"  l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 4)]  # 11,111 items
    text = "kind: Pod\nmetadata: {name: ok}\nx:\n" + "\n".join(levels) + "\nspec: {containers: [{name: a, image: nginx}]}\n"
    (item,) = items_of(write(tmp_path, "aliases.yaml", text))
    assert item.category == "pod"


def test_an_anchor_used_twice_side_by_side_is_not_a_loop(tmp_path: Path) -> None:
    path = write(tmp_path, "shared.yaml", (
        "kind: Pod\nmetadata: {name: p, labels: &l {app: web}, annotations: *l}\n"
        "spec: {containers: [&c {name: a, image: busybox}, *c]}\n"
    ))
    (item,) = items_of(path)
    assert item.category == "pod"
    assert item.pod["metadata"]["annotations"] == {"app": "web"}
    assert document_from_item(item, now=NOW)["container"]["image"]["name"] == ["busybox", "busybox"]
