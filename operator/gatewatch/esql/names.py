"""Which column an ES|QL name refers to, after each command, as ES|QL's analyzer decides.

A name is bound to a computed column (``Slot``: EVAL, GROK, DISSECT, ROW,
MV_EXPAND, STATS), to a document field (``DocumentField``: any name no command
bound), or to nothing (None: removed by DROP, not kept by KEEP, renamed away).
KEEP and DROP patterns also filter the document fields never bound. A reference
to a removed name is an error when the query compiles ("Unknown column").
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gatewatch.esql.lucene import wildcard


@dataclass(frozen=True, slots=True)
class Slot:
    """A computed column, stored in ``Row.columns`` under ``key`` (unique per definition)."""

    key: str


@dataclass(frozen=True, slots=True)
class DocumentField:
    field: str


Binding = Slot | DocumentField | None  # None: dropped


@dataclass
class Scope:
    """The columns visible after each command, as ES|QL's analyzer resolves names."""

    bindings: dict[str, Binding] = field(default_factory=dict)
    # Applied in order to document fields never bound: ("keep" | "drop", patterns).
    filters: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # visible named columns, in output order
    counter: int = 0

    def resolve(self, name: str) -> Binding:
        if name in self.bindings:
            return self.bindings[name]
        for kind, patterns in self.filters:
            matched = any(_name_matches(pattern, name) for pattern in patterns)
            if (kind == "keep") != matched:
                return None
        return DocumentField(name)

    def define(self, name: str) -> Slot:
        self.counter += 1
        slot = Slot(f"{name}#{self.counter}")
        self.bindings[name] = slot
        if name in self.order:
            self.order.remove(name)  # a redefined column moves to the end, as in ES|QL
        self.order.append(name)
        return slot

    def visible(self) -> list[tuple[str, Binding]]:
        return [(name, self.bindings.get(name, DocumentField(name))) for name in self.order
                if self.resolve(name) is not None]


def _name_matches(pattern: str, name: str) -> bool:
    return name == pattern if "*" not in pattern else wildcard(pattern.replace("\\", "\\\\"))(name)
