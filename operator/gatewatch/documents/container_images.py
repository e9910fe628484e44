"""The images a request sets: ``gatewatch.images`` (and ``container.image.name``) of the document.

Updates and patches (``gatewatch.images``):

- at admission, an UPDATE carries ``oldObject``: ``gatewatch.images`` holds
  only the images the update adds or changes (compared per container kind and
  container name), so relabelling a running busybox pod does not report
  busybox again;
- in an audit log there is no ``oldObject``. An ``update`` event's
  requestObject is the whole object, so every image in it is listed (replay
  cannot tell an image change from any other update). A ``patch`` event's
  requestObject is the patch body: a strategic merge or merge patch
  (``{"spec": {"containers": [{"name": "app", "image": "busybox"}]}}``) lists
  the images it sets; a JSON patch (a list of operations) lists the images its
  ``add``/``replace`` operations set at ``/spec``, ``/spec/<kind>``,
  ``/spec/<kind>/<i>`` or ``/spec/<kind>/<i>/image`` (container name unknown
  for the last form). Images the patch does not mention are not seen.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gatewatch.documents.types import ImageEntry
from gatewatch.images import normalize_image
from gatewatch.shapes import CONTAINER_KINDS, as_list, is_object, json_patch_spec, json_pointer


def _containers(spec: Mapping[str, Any], container_kind: str) -> list[Mapping[str, Any]]:
    """``spec[container_kind]`` as Elastic reads it: a single container is a list of one; non-objects are no container."""
    return [container for container in as_list(spec.get(container_kind)) if is_object(container)]


def _container_image_names(spec: Mapping[str, Any]) -> list[str] | None:
    containers = spec.get("containers")  # _containers(spec, "containers") inlined: every Pod event reads it
    if containers is None:
        return None
    if type(containers) is not list:
        containers = [containers]
    return [image for c in containers
            if (type(c) is dict or isinstance(c, Mapping)) and type(image := c.get("image")) is str] or None


def image_entry(reference: str, *, container_kind: str, container_name: str | None) -> ImageEntry:
    """One ``gatewatch.images`` element: ``reference`` normalized (see images.py)."""
    image = normalize_image(reference)
    return {
        "reference": reference,
        "registry": image.registry,
        "repository": image.repository,
        "name": image.short_name,
        "tag": image.tag,
        "digest": image.digest,
        "container_kind": container_kind,
        "container_name": container_name,
    }


ContainerKey = tuple[str, str | int]  # (container kind, container name, or index when unnamed)


def _container_images(spec: Mapping[str, Any]) -> dict[ContainerKey, str | None]:
    images: dict[ContainerKey, str | None] = {}
    for container_kind in CONTAINER_KINDS:
        for index, container in enumerate(_containers(spec, container_kind)):
            name = container.get("name")
            images[(container_kind, name if type(name) is str else index)] = container.get("image")
    return images


def _images(spec: Mapping[str, Any], *, old_spec: Mapping[str, Any] | None = None) -> list[ImageEntry]:
    """The images of a spec; with ``old_spec``, only those that differ from it.

    Reads any resource's spec (a CRD's too) without trusting it: what is not
    a container with a string image is no image.
    """
    if not is_object(spec):
        return []
    if old_spec is None:
        return _all_images(spec)
    previous = _container_images(old_spec)
    entries: list[ImageEntry] = []
    for container_kind in CONTAINER_KINDS:
        for index, container in enumerate(_containers(spec, container_kind)):
            reference = container.get("image")
            if type(reference) is not str:  # a patch element that does not set the image
                continue
            name = container.get("name")
            name = name if type(name) is str else None
            if previous.get((container_kind, name if name is not None else index)) == reference:
                continue
            entries.append(image_entry(reference, container_kind=container_kind, container_name=name))
    return entries


def _all_images(spec: Mapping[str, Any]) -> list[ImageEntry]:
    """``_images(spec)`` without an old spec (every audit event, every CREATE), ``_containers`` inlined:
    no index is needed, so nothing is filtered first. Held to ``_images`` by tests/test_documents_fast_path.py."""
    entries: list[ImageEntry] = []
    for container_kind in CONTAINER_KINDS:
        containers = spec.get(container_kind)
        if containers is None:
            continue
        if type(containers) is not list:
            containers = [containers]
        for container in containers:
            if type(container) is not dict and not isinstance(container, Mapping):
                continue
            reference = container.get("image")
            if type(reference) is not str:  # a patch element that does not set the image
                continue
            name = container.get("name")
            entries.append(image_entry(reference, container_kind=container_kind,
                                       container_name=name if type(name) is str else None))
    return entries


def _json_patch_images(operations: list[Any]) -> list[ImageEntry]:
    """The images a JSON patch (RFC 6902) sets in the pod spec with ``add`` or ``replace``.

    ``copy`` and ``move`` name a source path, not a value: what they write is
    not seen. Operations that are not objects with a string path set nothing.
    """
    entries: list[ImageEntry] = []
    for operation in operations:
        if not is_object(operation) or operation.get("op") not in ("add", "replace"):
            continue
        path = operation.get("path")
        if type(path) is not str:
            continue
        fragment = json_patch_spec(json_pointer(path), operation.get("value"))
        if fragment is not None:
            entries += _images(fragment)
    return entries
