"""YAML that remembers where things were written, so rule errors name the line.

``load_located_yaml`` returns plain data whose mappings are ``LocatedMapping``
(a dict with ``.line`` and per-key ``.key_line`` / ``.value_line``) and whose
sequences are ``LocatedList`` (a list with ``.line`` and ``.item_lines``).
Duplicate keys are an error (PyYAML would silently keep the last one).
"""
from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gatewatch.errors import RuleError


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


class _LocatingLoader(yaml.SafeLoader):
    def __init__(self, stream: str, *, file: str) -> None:
        super().__init__(stream)
        self.file = file

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
                    f"duplicate key {key!r} (first at line {mapping.key_lines[key]})",
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
    """Parse one YAML document, keeping line numbers; YAML errors become ``RuleError``."""
    loader = _LocatingLoader(text, file=file)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        reason = " ".join(part for part in (error.context, error.problem) if part) or "invalid YAML"
        raise RuleError(f"invalid YAML: {reason}", file=file, line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as error:
        raise RuleError(f"invalid YAML: {error}", file=file) from None
    finally:
        loader.dispose()
