"""Bounds on a composed YAML node graph, checked before anything is built from it.

YAML aliases share a node, but everything downstream (rule validation, rules,
alerts, redaction copies, error messages) may walk the data expanded: a few
hundred bytes of nested aliases ("billion laughs") expand to billions of
nodes. Nesting is bounded too: building deeply nested data recurses. Each
check here costs the composed size, not the expanded one, and is iterative,
so no input can exhaust the stack or the memory while being checked.

Used by the manifest reader (workloads.py) and the rule loader (rules/yamlsource.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import yaml


@dataclass(frozen=True, slots=True)
class ExpandedSize:
    """What a node would be once every alias is expanded."""

    nodes: int  # every node counted once per place it appears
    scalar_chars: int  # the characters of every scalar, counted the same way
    depth: int  # the longest chain of nested collections, the node itself included


def children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return []


def node_inside_itself(root: yaml.Node) -> yaml.Node | None:
    """The first node found inside itself (``&a [*a]``), else None.

    A depth-first walk of the composed nodes, where an alias is the node it
    names: a node met again while it is still being walked contains itself.
    An anchor used twice side by side is fine.
    """
    walking: set[int] = set()
    done: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        key = id(node)
        if leaving:
            walking.discard(key)
            done.add(key)
            continue
        if key in done:
            continue
        if key in walking:
            return node
        walking.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children(node))
    return None


def expanded_size(root: yaml.Node) -> ExpandedSize:
    """Nodes, scalar characters and depth of ``root`` expanded (``root`` must contain no loop:
    check ``node_inside_itself`` first). Memoized per distinct node."""
    sizes: dict[int, ExpandedSize] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        below = children(node)
        if not below:
            text = node.value if isinstance(node, yaml.ScalarNode) else ""
            sizes[key] = ExpandedSize(nodes=1, scalar_chars=len(text), depth=0 if isinstance(node, yaml.ScalarNode) else 1)
            continue
        if children_done:
            known = [sizes[id(child)] for child in below]
            sizes[key] = ExpandedSize(
                nodes=1 + sum(size.nodes for size in known),
                scalar_chars=sum(size.scalar_chars for size in known),
                depth=1 + max(size.depth for size in known),
            )
            continue
        stack.append((node, True))
        stack.extend((child, False) for child in below if id(child) not in sizes)
    return sizes[id(root)]
