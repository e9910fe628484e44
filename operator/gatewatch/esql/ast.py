"""The ES|QL syntax tree: one frozen dataclass per expression and per command.

Every node keeps ``offset``, its position in the query text, so a compile-time
refusal (an unknown function, a regular expression Python cannot express) points
at the construct. Column names are kept as ES|QL sees them: a qualified name's
parts joined by ``.`` (backquotes removed), so `` `a.b` `` and ``a.b`` are the
same column.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

# --- expressions -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant. ``type`` is ES|QL's: null, integer, long, double, boolean,
    keyword, time_duration, date_period; a list literal is a tuple ``value``."""

    value: Any
    type: str
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Call:
    """A function call; ``name`` is lower-case, ``star`` for ``COUNT(*)``."""

    name: str
    args: tuple[Expression, ...]
    offset: int = 0
    star: bool = False


@dataclass(frozen=True, slots=True)
class Negate:
    item: Expression
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Arithmetic:
    operator: str  # + - * / %
    left: Expression
    right: Expression
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Comparison:
    operator: str  # == != < <= > >= =~
    left: Expression
    right: Expression
    offset: int = 0


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expression, ...]
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expression, ...]
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Not:
    item: Expression
    offset: int = 0


@dataclass(frozen=True, slots=True)
class In:
    value: Expression
    items: tuple[Expression, ...]
    negated: bool = False
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Like:
    """``LIKE`` (wildcards) or, with ``regex``, ``RLIKE`` (Lucene regular expression);
    several patterns: true when any matches."""

    value: Expression
    patterns: tuple[str, ...]
    regex: bool = False
    negated: bool = False
    offset: int = 0
    pattern_offsets: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class IsNull:
    value: Expression
    negated: bool = False
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Cast:
    """``value::type``."""

    value: Expression
    type: str
    offset: int = 0


@dataclass(frozen=True, slots=True)
class MatchOperator:
    """``field : "query"`` (full-text match): parsed, never evaluated."""

    field: str
    query: Literal
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Parameter:
    """``?`` or ``?name``: a value the request supplies; rules have none."""

    text: str
    offset: int = 0


Expression: TypeAlias = (
    Literal | Column | Call | Negate | Arithmetic | Comparison | And | Or | Not | In | Like | IsNull | Cast
    | MatchOperator | Parameter
)

# --- commands ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """``name = expression``; an unnamed field is named after its source text, as ES|QL does."""

    name: str
    expression: Expression
    offset: int = 0


@dataclass(frozen=True, slots=True)
class From:
    indices: tuple[str, ...]
    metadata: tuple[str, ...] = ()
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Row:
    fields: tuple[Field, ...]
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Where:
    condition: Expression
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Eval:
    fields: tuple[Field, ...]
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Grok:
    input: Expression
    patterns: tuple[str, ...]
    offset: int = 0
    pattern_offset: int = 0


@dataclass(frozen=True, slots=True)
class Dissect:
    input: Expression
    pattern: str
    append_separator: str = ""
    offset: int = 0
    pattern_offset: int = 0


@dataclass(frozen=True, slots=True)
class Keep:
    patterns: tuple[str, ...]
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Drop:
    patterns: tuple[str, ...]
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Rename:
    pairs: tuple[tuple[str, str], ...]  # (old, new)
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Limit:
    count: int
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Order:
    expression: Expression
    descending: bool = False
    nulls_first: bool | None = None


@dataclass(frozen=True, slots=True)
class Sort:
    orders: tuple[Order, ...]
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One ``name = agg(...) [WHERE condition]`` of STATS."""

    name: str
    expression: Expression
    where: Expression | None = None
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Stats:
    aggregates: tuple[Aggregate, ...]
    groups: tuple[Field, ...] = ()
    offset: int = 0


@dataclass(frozen=True, slots=True)
class MvExpand:
    column: str
    offset: int = 0


Command: TypeAlias = From | Row | Where | Eval | Grok | Dissect | Keep | Drop | Rename | Limit | Sort | Stats | MvExpand


@dataclass(frozen=True, slots=True)
class Query:
    """A whole query: ``commands[0]`` is FROM or ROW; ``text`` is the source."""

    commands: tuple[Command, ...]
    text: str

    @property
    def source(self) -> From | Row:
        return self.commands[0]  # type: ignore[return-value]

    @property
    def has_stats(self) -> bool:
        return any(isinstance(command, Stats) for command in self.commands)
