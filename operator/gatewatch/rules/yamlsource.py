"""YAML that remembers where things were written, so rule errors name the line.

``load_located_yaml`` returns plain data whose mappings are ``LocatedMapping``
(a dict with ``.line`` and per-key ``.key_line`` / ``.value_line``) and whose
sequences are ``LocatedList`` (a list with ``.line`` and ``.item_lines``).
Duplicate keys are an error (PyYAML would silently keep the last one).

Parsing is libyaml's (``yaml.CSafeLoader``: its nodes carry the marks the line
numbers come from); only building the data is Python. Before anything is
built, the composed nodes are checked against the bounds below: a rules
update must not be able to exhaust the memory, the stack or the time of the
process that serves reviews. Nothing of the parse outlives the call: the
nodes and the loader are dropped, only the data is returned.
"""
from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gatewatch.errors import RuleError, bounded, quoted
from gatewatch.yamlbounds import expanded_size, node_inside_itself

# A rules ConfigMap holds at most about 1 MiB (etcd's object limit); 1,000
# rules of the shipped kind take about 2.3 MB.
MAX_FILE_BYTES = 8 * 1024 * 1024
# Once aliases are expanded: 1,000 rules are about 40,000 nodes.
MAX_EXPANDED_NODES = 1_000_000
MAX_EXPANDED_SCALAR_CHARS = 4 * MAX_FILE_BYTES
# Rules nest about 8 deep (rules, rule, threat, tactic, techniques, subtechniques).
MAX_DEPTH = 64

try:  # libyaml parses about 10x faster than the pure-Python loader
    _BaseLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _BaseLoader = yaml.SafeLoader


class LocatedMapping(dict):
    """A YAML mapping with the 1-based line of itself, each key and each value."""

    line: int
    key_lines: dict[Any, int]
    value_lines: dict[Any, int]
    # For block scalars (``|``, ``>``) the text starts on the line after the key.
    value_text_lines: dict[Any, int]

    def key_line(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)

    def value_line(self, key: Any) -> int:
        return self.value_lines.get(key, self.key_line(key))

    def text_line(self, key: Any) -> int:
        """The file line of the first line of a string value's text."""
        return self.value_text_lines.get(key, self.value_line(key))


class LocatedList(list):
    line: int
    item_lines: list[int]

    def item_line(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


def _text_line(node: Node) -> int:
    line = node.start_mark.line + 1
    if isinstance(node, ScalarNode) and node.style in ("|", ">"):
        return line + 1
    return line


class _LocatingLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    def __init__(self, stream: str, *, file: str) -> None:
        super().__init__(stream)
        self.file = file

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as error:  # a scalar its tag cannot read: 2026-13-45, 0x_, 5,000 digits
            raise RuleError(f"invalid YAML value: {bounded(str(error), limit=200)}",
                            file=self.file, line=node.start_mark.line + 1) from None

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> LocatedMapping:  # type: ignore[override]
        self.flatten_mapping(node)
        mapping = LocatedMapping()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines, mapping.value_lines, mapping.value_text_lines = {}, {}, {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            key_line = key_node.start_mark.line + 1
            try:
                hash(key)
            except TypeError:
                raise RuleError("a mapping key must be a plain value", file=self.file, line=key_line) from None
            if key in mapping:
                raise RuleError(
                    f"duplicate key {quoted(key)} (first at line {mapping.key_lines[key]})",
                    file=self.file,
                    line=key_line,
                )
            mapping[key] = self.construct_object(value_node, deep=True)
            mapping.key_lines[key] = key_line
            mapping.value_lines[key] = value_node.start_mark.line + 1
            mapping.value_text_lines[key] = _text_line(value_node)
        return mapping

    def construct_sequence(self, node: SequenceNode, deep: bool = False) -> LocatedList:  # type: ignore[override]
        items = LocatedList(self.construct_object(child, deep=True) for child in node.value)
        items.line = node.start_mark.line + 1
        items.item_lines = [_text_line(child) for child in node.value]
        return items


_LocatingLoader.add_constructor("tag:yaml.org,2002:map", _LocatingLoader.construct_mapping)
_LocatingLoader.add_constructor("tag:yaml.org,2002:seq", _LocatingLoader.construct_sequence)


def load_located_yaml(text: str, *, file: str) -> Any:
    """Parse one YAML document, keeping line numbers; YAML errors and inputs beyond the
    bounds (size, aliases, nesting) become ``RuleError``."""
    if len(text) > MAX_FILE_BYTES:
        raise RuleError(f"the file is larger than {MAX_FILE_BYTES:,} bytes", file=file)
    loader = _LocatingLoader(text, file=file)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_bounds(node, file=file)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        reason = " ".join(part for part in (error.context, error.problem) if part) or "invalid YAML"
        raise RuleError(f"invalid YAML: {bounded(reason)}", file=file, line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as error:
        raise RuleError(f"invalid YAML: {bounded(str(error))}", file=file) from None
    finally:
        loader.dispose()


def _check_bounds(root: Node, *, file: str) -> None:
    looped = node_inside_itself(root)
    if looped is not None:
        raise RuleError("a YAML alias inside its own anchor: the data would contain itself",
                        file=file, line=looped.start_mark.line + 1)
    size = expanded_size(root)
    if size.depth > MAX_DEPTH:
        raise RuleError(f"nested more than {MAX_DEPTH} levels deep", file=file, line=root.start_mark.line + 1)
    if size.nodes > MAX_EXPANDED_NODES or size.scalar_chars > MAX_EXPANDED_SCALAR_CHARS:
        raise RuleError(
            f"excessive YAML aliasing: its aliases expand it to more than {MAX_EXPANDED_NODES:,} nodes "
            f"or {MAX_EXPANDED_SCALAR_CHARS:,} characters (an alias bomb)",
            file=file, line=root.start_mark.line + 1,
        )
