"""Field paths over documents: ``a.b.c`` -> the values found there.

Documents are nested dicts and lists (JSON-like). A path resolves

- through nested dicts, one segment at a time;
- through lists: every element is followed and nested lists are flattened, so
  ``spec.containers.image`` gives the image of every container;
- through keys that themselves contain dots: when a segment is missing, it is
  joined with the following segments, so ``labels.app.kubernetes.io/name``
  finds ``{"labels": {"app.kubernetes.io/name": ...}}`` and ``event.dataset``
  finds a flat ``{"event.dataset": ...}``.

``None``, a missing key and an empty list all mean "absent": they contribute no
value. Paths are split once (``compile_path``), not per document, and a
document's values of a field are resolved once however many queries read them
(``FieldValues``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import Any, TypeAlias

from gatewatch.kql.glob import glob_matcher, split_pattern

Resolver: TypeAlias = Callable[[Any], list[Any]]

_MISSING = object()


@lru_cache(maxsize=4096)
def compile_path(path: str) -> Resolver:
    """Return a function ``document -> list of values`` at ``path``.

    The values are leaves (str, int, float, bool) or dicts, never lists or None.
    """
    segments = tuple(path.split("."))
    count = len(segments)
    # For each position, the longer keys that start there: ("a.b", 2), ("a.b.c", 3)...
    joined_keys = tuple(
        tuple((".".join(segments[start:end]), end) for end in range(start + 2, count + 1))
        for start in range(count)
    )

    def collect(node: Any, position: int, found: list[Any]) -> None:
        # Iterative along dict chains; recursive at lists and dotted keys.
        while True:
            if node.__class__ is dict:  # the usual node, spared the ABC checks below
                if position == count:
                    found.append(node)
                    return
            elif isinstance(node, (list, tuple)):
                for item in node:
                    if item is not None:
                        collect(item, position, found)
                return
            elif position == count:
                found.append(node)
                return
            elif not isinstance(node, Mapping):
                return
            child = node.get(segments[position], _MISSING)
            if child is _MISSING or child is None:
                for key, end in joined_keys[position]:
                    value = node.get(key)
                    if value is not None:
                        collect(value, end, found)
                return
            node = child
            position += 1

    def rest(node: Any, position: int) -> list[Any]:
        found: list[Any] = []
        if node is not None:
            collect(node, position, found)
        return found

    return _straight_line_resolver(segments, rest)


def _straight_line_resolver(segments: tuple[str, ...], rest: Callable[[Any, int], list[Any]]) -> Resolver:
    """The fast path, as code generated for the path: follow plain dicts, one ``get`` per segment;
    hand over to ``rest`` (``collect``) at the first list, missing key or other mapping (the prefix
    walked so far has no branches, so continuing from there is the same as starting over). Every
    review resolves a dozen paths: no loop, no tuple unpacking per segment."""
    lines = ["def resolve(document):", "    node = document"]
    last = len(segments) - 1
    for position, segment in enumerate(segments):
        if position == last:
            # A list of plain dicts before the last segment (``containers.image``, ``images.name``): one
            # value per element, as ``collect`` finds them (no dotted key starts at the last segment); any
            # other element, or a value that is itself a list, and ``collect`` walks the list instead.
            lines += [
                "    if node.__class__ is list:",
                "        found = []",
                "        for item in node:",
                f"            if item.__class__ is not dict: return rest(node, {position})",
                f"            child = item.get({segment!r})",
                "            if child is not None:",
                "                if child.__class__ is not str and isinstance(child, (list, tuple)):",
                f"                    return rest(node, {position})",
                "                found.append(child)",
                "        return found",
            ]
        # The last segment missing: no longer dotted key starts there, so nothing is found.
        missing = "return []" if position == last else f"return rest(node, {position})"
        lines += [
            f"    if node.__class__ is not dict: return rest(node, {position})",
            f"    child = node.get({segment!r})",
            f"    if child is None: {missing}",
            "    node = child",
        ]
    lines += ["    if node.__class__ is str: return [node]",  # the usual value, spared the isinstance below
              f"    if isinstance(node, (list, tuple)): return rest(node, {len(segments)})", "    return [node]"]
    namespace: dict[str, Any] = {"rest": rest}
    exec(compile("\n".join(lines), f"<gatewatch.kql.fields {'.'.join(segments)!r}>", "exec"), namespace)  # noqa: S102
    resolver: Resolver = namespace["resolve"]
    return resolver


def field_values(document: Mapping[str, Any], path: str) -> list[Any]:
    """The values of ``path`` in ``document`` (empty when absent); see the module doc."""
    return compile_path(path)(document)


def leaf_values(document: Any) -> list[Any]:
    """Every scalar value anywhere in the document (for free-text queries), in document order.

    Iterative, as ``flattened_fields``.
    """
    found: list[Any] = []
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, (list, tuple)):
            stack.extend(reversed(node))
        elif node is not None:
            found.append(node)
    return found


def flattened_fields(document: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted path, scalar value)`` for every leaf, lists flattened (no index in the path).

    This is how Elasticsearch names fields, so wildcard field names match against it.
    In document order; iterative, so a deeply nested document cannot exhaust the stack.
    """
    stack: list[tuple[str, Any]] = [(prefix, document)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, Mapping):
            stack.extend(reversed([(f"{path}.{key}" if path else str(key), value) for key, value in node.items()]))
        elif isinstance(node, (list, tuple)):
            stack.extend(reversed([(path, item) for item in node]))
        elif node is not None and path:
            yield path, node


def compile_wildcard_path(pattern: str) -> Resolver:
    """``document -> values`` of every flattened field whose name matches ``pattern``
    (``labels.*``, ``*.name``: ``*`` spans dots too), in linear time per name (``kql.glob``)."""
    name_matches = glob_matcher(split_pattern(pattern))
    return lambda document: [value for path, value in flattened_fields(document) if name_matches(path)]


Location = tuple[str | int, ...]


def located_values(document: Any, path: str) -> list[tuple[Location, Any]]:
    """``field_values`` with where each value is: ``(location, value)`` pairs, in the same order.

    A location is the concrete path to the value: keys (a dotted key whole)
    and list indexes, ``("spec", "containers", 1, "image")``. Not for the hot
    path: alerts use it to name the fields a match looked at.
    """
    segments = path.split(".")
    count = len(segments)
    found: list[tuple[Location, Any]] = []

    def collect(node: Any, position: int, location: Location) -> None:
        if isinstance(node, (list, tuple)):
            for index, item in enumerate(node):
                if item is not None:
                    collect(item, position, (*location, index))
            return
        if position == count:
            found.append((location, node))
            return
        if not isinstance(node, Mapping):
            return
        child = node.get(segments[position], _MISSING)
        if child is _MISSING or child is None:
            for end in range(position + 2, count + 1):
                key = ".".join(segments[position:end])
                value = node.get(key)
                if value is not None:
                    collect(value, end, (*location, key))
            return
        collect(child, position + 1, (*location, segments[position]))

    if document is not None:
        collect(document, 0, ())
    return found

def resolver_for(field: str | None) -> Resolver:
    """How a query reads ``field``: a path, a wildcard field name (``labels.*``), or every leaf (None: free text)."""
    if field is None:
        return leaf_values
    if "*" in field:
        return compile_wildcard_path(field)
    return compile_path(field)


class Resolvers(dict[str | None, Resolver]):
    """``resolver_for`` of each field, made on first use (one per rule set)."""

    def __missing__(self, field: str | None) -> Resolver:
        resolver = self[field] = resolver_for(field)
        return resolver


class FieldValues(dict[str | None, list[Any]]):
    """One document's values per field, each resolved on first use, then shared.

    ``values[field]`` is ``resolver_for(field)(document)``: the rule index and
    every compiled query of a rule set read a document through one of these,
    so ``kubernetes.audit.verb`` is looked up once per document, not once per rule.
    """

    __slots__ = ("document", "_resolvers")

    def __init__(self, document: Any, resolvers: Resolvers) -> None:
        super().__init__()
        self.document = document
        self._resolvers = resolvers

    def __missing__(self, field: str | None) -> list[Any]:
        found = self[field] = self._resolvers[field](self.document)
        return found
