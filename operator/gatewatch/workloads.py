"""Manifests on disk -> the Pods they create and the AdmissionReviews they hold.

``read_inputs`` walks files and directories (``.yaml``, ``.yml``, ``.json``,
recursively, in sorted order, skipping hidden entries), reads multi-document YAML, JSON and
``kind: List``, and yields one ``InputItem`` per object:

- a Pod, as written;
- a workload (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob,
  ReplicationController): the Pod its template creates, with the template's
  metadata, the workload's namespace and a readable name,
  ``<workload>-<kind>-pod`` (``web-deployment-pod``);
- an AdmissionReview, or a bare AdmissionRequest (the ``request`` without
  the envelope, as kwctl and Kubewarden's policy test data write it), to be
  evaluated as the request it is;
- anything else: skipped, with the reason (not an error);
- an object that cannot be evaluated (a workload without a Pod template, a
  document that is not a mapping, a document that contains itself through a
  YAML alias inside its own anchor, ``&a [*a]``): invalid, carrying its
  InputError, so the rest of the file is still read.

A file that is not valid YAML/JSON, or cannot be read, raises InputError with
the file and line. ``document_from_item`` turns a Pod or AdmissionReview item
into the document the rules query; callers check ``item.category`` first and
report skipped and invalid items themselves.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from gatewatch.documents import document_from_admission_review, document_from_pod
from gatewatch.errors import InputError
from gatewatch.shapes import CONTAINER_KINDS, is_object, pod_problem, type_name
from gatewatch.yamlbounds import expanded_size, node_inside_itself

MANIFEST_SUFFIXES = frozenset({".yaml", ".yml", ".json"})
STDIN = "-"

# Where each workload kind keeps its Pod template.
POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}

ItemCategory = Literal["pod", "admission_review", "skipped", "invalid"]

try:  # libyaml is much faster; fall back to the pure-Python loader
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader


@dataclass(frozen=True)
class InputItem:
    """One object read from an input file.

    ``line`` is 1-based (the start of the YAML document or List item; 1 for
    JSON). ``document_index`` is the 0-based position of the document in the
    file, ``item_index`` the position inside a ``kind: List`` (else None).
    ``manifest_kind``/``manifest_name`` are the object as written (a
    Deployment); ``pod`` is what gets evaluated for a Pod or workload.
    """

    source: str
    line: int
    document_index: int
    category: ItemCategory
    manifest_kind: str | None = None
    manifest_name: str | None = None
    item_index: int | None = None
    pod: dict[str, Any] | None = None
    review: Mapping[str, Any] | None = None
    skip_reason: str | None = None
    error: InputError | None = None

    @property
    def location(self) -> str:
        """``file:line`` for reports."""
        return f"{self.source}:{self.line}"

    @property
    def workload_kind(self) -> str | None:
        """The workload kind a Pod came from (None for a Pod as written)."""
        return self.manifest_kind if self.manifest_kind in POD_TEMPLATE_PATHS else None

    @property
    def subject(self) -> str:
        """``Deployment web (pod web-deployment-pod)``, ``Pod netshoot``, ..."""
        text = f"{self.manifest_kind or 'object'} {self.manifest_name or '<unnamed>'}"
        if self.pod is not None and self.workload_kind:
            text += f" (pod {self.pod['metadata']['name']})"
        return text


# --- files ---------------------------------------------------------------------------


def iter_input_files(paths: Iterable[str | Path]) -> Iterator[str]:
    """The files to read: files as given, directories walked for manifest suffixes."""
    for raw in paths:
        if str(raw) == STDIN:
            yield STDIN
            continue
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                # Hidden entries (.git, .venv, editor files) are never manifests.
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                if not hidden and child.is_file() and child.suffix.lower() in MANIFEST_SUFFIXES:
                    yield str(child)
        elif path.exists():
            yield str(path)
        else:
            raise InputError("no such file or directory", source=str(path))


def read_inputs(paths: Iterable[str | Path]) -> Iterator[InputItem]:
    """Every object in ``paths`` (files, directories, ``-`` for stdin), in order.

    Raises InputError at the first file that cannot be read or parsed; to
    carry on past one, call ``read_input_file`` per file of ``iter_input_files``.
    """
    for source in iter_input_files(paths):
        yield from read_input_file(source)


def read_input_file(source: str) -> Iterator[InputItem]:
    """The objects of one file (``-``: stdin); JSON when it ends in .json, else YAML."""
    try:
        if source == STDIN:
            text = sys.stdin.read()
        else:
            text = Path(source).read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read: {error}", source=source) from None
    if source.lower().endswith(".json"):
        documents = _json_documents(text, source)
    else:
        documents = _yaml_documents(text, source)
    for document_index, (line, document, item_lines) in enumerate(documents):
        yield from _items_from_document(
            document, source=source, line=line, document_index=document_index, item_lines=item_lines
        )


def _json_documents(text: str, source: str) -> Iterator[tuple[int, Any, list[int]]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"invalid JSON: {error.msg} (column {error.colno})", source=source, line=error.lineno) from None
    except RecursionError:  # the YAML loader has its own limit and says so; json does not
        raise InputError("invalid JSON: nested too deeply", source=source) from None
    yield 1, document, []


@dataclass(frozen=True)
class _RefusedDocument:
    """A YAML document refused before it is built, and why."""

    reason: str


def _yaml_documents(text: str, source: str) -> Iterator[tuple[int, Any, list[int]]]:
    """(first line, document, first line of each List item) per YAML document.

    Composes nodes first so every document and List item knows its line. A
    document that would contain itself comes as a _RefusedDocument instead.
    """
    # An alias needs an anchor (&) and a reference (*): most files have neither.
    may_loop = "&" in text and "*" in text
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            line = node.start_mark.line + 1
            looped = node_inside_itself(node) if may_loop else None
            if looped is not None:
                reason = (
                    f"a YAML alias inside its own anchor (anchored at line {looped.start_mark.line + 1})"
                    " makes it contain itself, which no Kubernetes object can"
                )
                yield line, _RefusedDocument(reason), []
                continue
            expanded = expanded_size(node).nodes if may_loop else 0
            if expanded > MAX_EXPANDED_NODES:
                reason = (
                    f"excessive YAML aliasing: its aliases expand it to more than {MAX_EXPANDED_NODES:,} nodes"
                    " (an alias bomb; kubectl refuses these too)"
                )
                yield line, _RefusedDocument(reason), []
                continue
            document = loader.construct_document(node)
            yield line, document, _list_item_lines(node)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        reason = str(getattr(error, "problem", None) or error)
        raise InputError(
            f"invalid YAML: {reason}",
            source=source,
            line=mark.line + 1 if mark is not None else None,
        ) from None
    finally:
        loader.dispose()


# Aliases share a node, but everything downstream (rules, alerts, redaction copies)
# walks the document expanded: a few hundred bytes of nested aliases ("billion
# laughs") would expand to billions of nodes. Real manifests have thousands.
MAX_EXPANDED_NODES = 1_000_000


def _list_item_lines(node: yaml.Node) -> list[int]:
    if not isinstance(node, yaml.MappingNode):
        return []
    for key, value in node.value:
        if getattr(key, "value", None) == "items" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


# --- objects -------------------------------------------------------------------------


def _items_from_document(
    document: Any, *, source: str, line: int, document_index: int, item_lines: list[int]
) -> Iterator[InputItem]:
    if document is None:  # an empty document (a stray '---'): nothing to report
        return
    if isinstance(document, _RefusedDocument):
        error = InputError(f"document {document_index + 1}: {document.reason}", source=source, line=line)
        yield InputItem(source=source, line=line, document_index=document_index, category="invalid", error=error)
        return
    if not isinstance(document, Mapping):
        yield InputItem(
            source=source,
            line=line,
            document_index=document_index,
            category="invalid",
            error=InputError(
                f"document {document_index + 1}: expected a Kubernetes object, got {type(document).__name__}",
                source=source,
                line=line,
            ),
        )
        return
    kind = document.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(document.get("items"), list):
        for item_index, item in enumerate(document["items"]):
            item_line = item_lines[item_index] if item_index < len(item_lines) else line
            yield _item_from_object(
                item, source=source, line=item_line, document_index=document_index, item_index=item_index
            )
        return
    yield _item_from_object(document, source=source, line=line, document_index=document_index)


def _item_from_object(
    obj: Any, *, source: str, line: int, document_index: int, item_index: int | None = None
) -> InputItem:
    unread = InputItem(source=source, line=line, document_index=document_index, item_index=item_index, category="invalid")
    if not isinstance(obj, Mapping):
        error = InputError(f"expected a Kubernetes object, got {type(obj).__name__}", source=source, line=line)
        return replace(unread, error=error)
    if is_admission_request(obj):
        return replace(unread, category="admission_review", review=obj, manifest_kind="AdmissionRequest",
                       manifest_name=_review_summary(obj))
    kind = obj.get("kind")
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    named = replace(
        unread,
        manifest_kind=kind if isinstance(kind, str) else None,
        manifest_name=name if isinstance(name, str) else None,
    )
    if not isinstance(kind, str) or not kind:
        return replace(named, error=InputError("kind: missing: not a Kubernetes object", source=source, line=line))
    if kind == "AdmissionReview":
        return replace(named, category="admission_review", review=obj, manifest_name=_review_summary(obj))
    if kind != "Pod" and kind not in POD_TEMPLATE_PATHS:
        return replace(named, category="skipped", skip_reason=f"kind {kind} creates no Pod")
    try:
        pod = obj if kind == "Pod" else pod_from_workload(obj)
        _check_pod(pod, field_prefix="" if kind == "Pod" else ".".join(POD_TEMPLATE_PATHS[kind]) + ".")
    except InputError as error:
        located = InputError(f"{kind} {name or '<unnamed>'}: {error.reason}", source=source, line=line)
        return replace(named, error=located)
    return replace(named, category="pod", pod=dict(pod))


def is_admission_request(obj: Mapping[str, Any]) -> bool:
    """A bare AdmissionRequest: its ``kind`` is a group/version/kind object, and it has an operation and a resource."""
    return isinstance(obj.get("kind"), Mapping) and "operation" in obj and "resource" in obj and "request" not in obj


def _review_summary(review: Mapping[str, Any]) -> str | None:
    """``CONNECT pods/exec payments/api-0`` for reports (None when there is no request)."""
    request = review if is_admission_request(review) else review.get("request")
    if not isinstance(request, Mapping):
        return None
    resource = request.get("resource")
    resource_name = resource.get("resource") if isinstance(resource, Mapping) else None
    if request.get("subResource"):
        resource_name = f"{resource_name}/{request['subResource']}"
    target = "/".join(str(part) for part in (request.get("namespace"), request.get("name")) if part)
    return " ".join(str(part) for part in (request.get("operation"), resource_name, target) if part) or None


def pod_from_workload(workload: Mapping[str, Any]) -> dict[str, Any]:
    """The Pod a workload's template creates, named ``<workload>-<kind>-pod``.

    The Pod gets the template's metadata (labels, annotations) and the
    workload's namespace; the spec is shared with the workload, not copied.
    """
    if not isinstance(workload, Mapping):
        raise InputError(f"a workload must be an object, got {type(workload).__name__}")
    kind = workload.get("kind")
    path = POD_TEMPLATE_PATHS.get(kind) if isinstance(kind, str) else None
    if path is None:
        raise InputError(f"kind {kind!r} has no Pod template")
    template: Any = workload
    for depth, key in enumerate(path):
        template = template.get(key) if isinstance(template, Mapping) else None
        if not isinstance(template, Mapping):
            raise InputError(f"{'.'.join(path[: depth + 1])}: missing or not an object")
    workload_meta = workload.get("metadata") if isinstance(workload.get("metadata"), Mapping) else {}
    template_meta = template.get("metadata") if isinstance(template.get("metadata"), Mapping) else {}
    workload_name = workload_meta.get("name") or "unnamed"
    metadata: dict[str, Any] = {**template_meta, "name": f"{workload_name}-{kind.lower()}-pod"}
    if workload_meta.get("namespace"):
        metadata["namespace"] = workload_meta["namespace"]
    else:
        metadata.pop("namespace", None)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template.get("spec")}


def _check_pod(pod: Mapping[str, Any], *, field_prefix: str) -> None:
    """A manifest Pod the API server would accept, as far as the rules read it: every field of the
    right type (gatewatch.shapes, strict), a spec with containers, each naming an image."""
    spec = pod.get("spec")
    if not is_object(spec):
        raise InputError(f"{field_prefix}spec: missing or not an object")
    found = pod_problem(pod, prefix=field_prefix)
    if found is not None:
        raise InputError(found)
    if not spec.get("containers"):
        raise InputError(f"{field_prefix}spec.containers: missing or empty")
    for container_kind in CONTAINER_KINDS:
        for index, container in enumerate(spec.get(container_kind) or ()):
            if not is_object(container):
                raise InputError(f"{field_prefix}spec.{container_kind}[{index}]: expected an object, "
                                 f"got {type_name(container)}")
            if not container.get("image"):
                raise InputError(f"{field_prefix}spec.{container_kind}[{index}].image: missing or empty")


# --- documents -----------------------------------------------------------------------


def document_from_item(item: InputItem, *, now: datetime | None = None) -> dict[str, Any]:
    """The document for a Pod or AdmissionReview item; errors name the item's file and line.

    Raises InputError for an invalid item (its own error) and for a skipped
    one (there is nothing to evaluate).
    """
    if item.category == "pod" and item.pod is not None:
        try:
            return document_from_pod(item.pod, now=now, workload_kind=item.workload_kind)
        except InputError as error:
            raise InputError(error.reason, source=item.source, line=item.line) from None
    if item.category == "admission_review" and item.review is not None:
        try:
            return document_from_admission_review(item.review, now=now)
        except InputError as error:  # named as a Pod's errors are: AdmissionReview CREATE pods ns/name
            raise InputError(f"{item.subject}: {error.reason}", source=item.source, line=item.line) from None
    if item.error is not None:
        raise item.error
    raise InputError(f"nothing to evaluate: {item.skip_reason}", source=item.source, line=item.line)


document_from_input = document_from_item  # the name the design notes used
