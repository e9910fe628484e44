"""STATS: ES|QL's aggregation over the rows of many events, and whole-query execution.

``execute(query, documents)`` runs a query as ES|QL would over a set of
documents: the per-event commands on each document, STATS over all rows left,
then the commands after STATS on the aggregated rows. Replay uses it over
the time windows Elastic's scheduler would query; tests use it with ROW.

Semantics (ES|QL's aggregate functions): a multi-valued argument contributes
each of its values; COUNT(*) and COUNT() count rows, COUNT(x) non-null values;
COUNT_DISTINCT is exact (Elasticsearch's is a HyperLogLog++ estimate, exact
below its precision threshold of 3000 by default); VALUES gives the distinct
values (sorted); a BY key that is multi-valued puts the row in one group per
value, a null key is a group of its own. Without BY there is exactly one
output row, also for no input rows.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from gatewatch.esql import ast
from gatewatch.esql.compiler import (
    CompiledEsql,
    Evaluator,
    Pipeline,
    QueryCompiler,
    Row,
    Slot,
    _Refusal,
    compile_pipeline,
    refusal_error,
)
from gatewatch.esql.values import Scalar, Value, as_list, compare, is_number, normalize

SUPPORTED = ("count", "count_distinct", "values", "min", "max", "sum", "avg")


@dataclass(frozen=True)
class _Aggregate:
    name: str
    function: str
    argument: Evaluator | None  # None: COUNT(*) / COUNT()
    where: Evaluator | None


@dataclass(frozen=True)
class StatsPlan:
    """A query split at STATS: per-event commands, the aggregation, the commands after."""

    before: Pipeline
    before_compiler: QueryCompiler
    aggregates: tuple[_Aggregate, ...]
    groups: tuple[tuple[str, Evaluator], ...]
    after: Pipeline
    after_compiler: QueryCompiler


def _calls_now(node: object) -> int | None:
    """The offset of a NOW() call in a syntax tree, or None."""
    if isinstance(node, ast.Call) and node.name == "now":
        return node.offset
    if isinstance(node, tuple):
        for item in node:
            found = _calls_now(item)
            if found is not None:
                return found
    elif hasattr(node, "__dataclass_fields__"):
        for name in node.__dataclass_fields__:  # type: ignore[attr-defined]
            found = _calls_now(getattr(node, name))
            if found is not None:
                return found
    return None


def _plan(tree: ast.Query) -> StatsPlan:
    compiler, before, index, _ = compile_pipeline(tree, stop_at_stats=True)
    stats = tree.commands[index]
    assert isinstance(stats, ast.Stats)
    now_offset = _calls_now(tree.commands[1:index + 1])
    if now_offset is not None:
        raise _Refusal("NOW() before or in STATS is not supported: each event is evaluated once, before the "
                       "rule's run time is known (NOW() after STATS is the run time)", now_offset)
    aggregates = []
    for item in stats.aggregates:
        call = item.expression
        if not isinstance(call, ast.Call) or call.name not in SUPPORTED:
            what = f"{call.name.upper()}()" if isinstance(call, ast.Call) else "an expression of aggregates"
            raise _Refusal(f"STATS supports {', '.join(name.upper() for name in SUPPORTED)}, not {what}",
                           item.offset)
        if call.star or not call.args:
            if call.name != "count":
                raise _Refusal(f"{call.name.upper()}() needs an argument", item.offset)
            argument = None
        else:
            if len(call.args) > (2 if call.name == "count_distinct" else 1):
                raise _Refusal(f"too many arguments for {call.name.upper()}()", item.offset)
            argument = compiler.expression(call.args[0])
        where = compiler.expression(item.where) if item.where is not None else None
        aggregates.append(_Aggregate(item.name, call.name, argument, where))
    groups = tuple((group.name, compiler.expression(group.expression)) for group in stats.groups)
    # After STATS the columns are the aggregates and the groups; no document field is left.
    after_query = ast.Query(commands=(ast.Row(fields=()),) + tree.commands[index + 1:], text=tree.text)
    after_compiler = QueryCompiler(after_query)
    for name in [aggregate.name for aggregate in aggregates] + [name for name, _ in groups]:
        after_compiler.scope.define(name)
    after_compiler.scope.filters.append(("keep", ()))  # nothing but these columns
    stages = []
    for command in tree.commands[index + 1:]:
        if isinstance(command, ast.Stats):
            raise _Refusal("a second STATS is not supported", command.offset)
        stages.append(after_compiler.command(command))
    return StatsPlan(before, compiler, tuple(aggregates), groups, Pipeline(stages, after_compiler.scope),
                     after_compiler)


def check_stats(tree: ast.Query) -> None:
    """Compile the STATS part of ``tree`` (raises the compiler's refusal)."""
    _plan(tree)


def _distinct(values: Iterable[Scalar]) -> list[Scalar]:
    kept: list[Scalar] = []
    seen: set[Any] = set()
    for value in values:
        key = (type(value).__name__ if not is_number(value) else "number", value)
        if key not in seen:
            seen.add(key)
            kept.append(value)
    return kept


def _ordered(values: list[Scalar]) -> list[Scalar]:
    try:
        return sorted(values)  # type: ignore[type-var]
    except TypeError:
        return sorted(values, key=str)


def _aggregate(function: str, values: list[Scalar], rows: int) -> Value:
    if function == "count":
        return rows if values is None else len(values)
    if function == "count_distinct":
        return len(_distinct(values))
    if function == "values":
        return normalize(_ordered(_distinct(values)))
    if not values:
        return None
    if function == "min":
        best = values[0]
        for value in values[1:]:
            if compare("<", value, best):
                best = value
        return best
    if function == "max":
        best = values[0]
        for value in values[1:]:
            if compare(">", value, best):
                best = value
        return best
    numbers = [value for value in values if is_number(value)]
    if not numbers:
        return None
    if function == "sum":
        return sum(numbers)
    if function == "avg":
        return sum(numbers) / len(numbers)
    raise ValueError(function)  # pragma: no cover


def _group_keys(values: Value) -> list[Scalar | None]:
    return [None] if values is None else list(as_list(values))


@dataclass(frozen=True, slots=True)
class _Item:
    """What STATS needs of one row: its group keys and, per aggregate, whether its
    WHERE holds and the argument's values."""

    keys: tuple[tuple[Scalar | None, ...], ...]
    inputs: tuple[tuple[bool, tuple[Scalar, ...]], ...]


def project(plan: StatsPlan, row: Row) -> _Item:
    keys: list[tuple[Scalar | None, ...]] = [()]
    for _, evaluator in plan.groups:
        keys = [key + (value,) for key in keys for value in _group_keys(evaluator(row))]
    inputs = tuple(
        (aggregate.where is None or aggregate.where(row) is True,
         () if aggregate.argument is None else tuple(as_list(aggregate.argument(row))))
        for aggregate in plan.aggregates
    )
    return _Item(tuple(keys), inputs)


def aggregate_items(plan: StatsPlan, items: Iterable[_Item], *, now: datetime) -> list[Row]:
    """STATS over projected rows -> one row per group (columns: aggregates, then groups)."""
    groups: dict[tuple[Any, ...], tuple[tuple[Scalar | None, ...], list[_Item]]] = {}
    if not plan.groups:
        groups[()] = ((), list(items))
    else:
        for item in items:
            for key in item.keys:
                identity = tuple((type(part).__name__, part) for part in key)
                groups.setdefault(identity, (key, []))[1].append(item)
    scope = plan.after_compiler.scope
    out: list[Row] = []
    for key, members in groups.values():
        columns: dict[str, Value] = {}
        for position, aggregate in enumerate(plan.aggregates):
            selected = [item.inputs[position][1] for item in members if item.inputs[position][0]]
            if aggregate.argument is None:
                value = len(selected)
            else:
                values = [value for values_of_row in selected for value in values_of_row]
                value = _aggregate(aggregate.function, values, len(selected))
            columns[_slot(scope, aggregate.name)] = value
        for (name, _), part in zip(plan.groups, key):
            columns[_slot(scope, name)] = part
        out.append(Row({}, columns, now))
    return out


def aggregate_rows(plan: StatsPlan, rows: list[Row], *, now: datetime) -> list[Row]:
    """STATS over rows of the per-event commands."""
    return aggregate_items(plan, (project(plan, row) for row in rows), now=now)


def _slot(scope: Any, name: str) -> str:
    binding = scope.bindings[name]
    assert isinstance(binding, Slot)
    return binding.key


def execute(query: str | ast.Query, documents: Iterable[Mapping[str, Any]] = (), *,
            now: datetime | None = None) -> list[dict[str, Value]]:
    """Run a whole query: FROM over ``documents`` (ROW: one row), STATS over all rows.

    Returns the output rows as column -> value. NOW() is ``now`` (default: the
    current time). Raises ``EsqlSyntaxError`` like ``compile_esql``.
    """
    from gatewatch.esql.parser import parse

    tree = parse(query) if isinstance(query, str) else query
    moment = now or datetime.now(timezone.utc)
    try:
        if tree.has_stats:
            plan = _plan(tree)
            compiled = None
        else:
            compiler, pipeline, _, _ = compile_pipeline(tree)
            plan = None
            compiled = CompiledEsql(query=tree.text, tree=tree, fields=frozenset(compiler.fields), requirement=None,
                                    pipeline=pipeline, aggregates=False)
    except _Refusal as refusal:
        raise refusal_error(tree.text, refusal) from None
    sources: list[Mapping[str, Any]] = [{}] if isinstance(tree.source, ast.Row) else list(documents)
    if plan is None:
        assert compiled is not None
        rows = [row for document in sources for row in compiled.pipeline.run([Row(document, {}, moment)])]
        return [compiled.columns(row) for row in rows]
    rows = [row for document in sources for row in plan.before.run([Row(document, {}, moment)])]
    result = plan.after.run(aggregate_rows(plan, rows, now=moment))
    return [_columns(plan.after_compiler, row) for row in result]


def _columns(compiler: QueryCompiler, row: Row) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for name, binding in compiler.scope.visible():
        if isinstance(binding, Slot):
            out[name] = row.columns.get(binding.key)
    return out


Runner = Callable[[list[Row]], list[Row]]
