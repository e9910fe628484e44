"""ES|QL syntax tree -> evaluators over gatewatch documents, one event at a time.

A query runs as ES|QL runs it over one document: FROM gives a row whose columns
are the document's fields; each processing command maps the rows to new rows
(WHERE drops them, EVAL/GROK/DISSECT add columns, MV_EXPAND multiplies them).
The document matches when a row is left. Everything static is decided at
compile time: which column a name refers to (a document field or a computed
column; a dropped or unknown one is an error, as ES|QL's verifier says "Unknown
column"), which function it calls, every literal pattern (RLIKE, LIKE, GROK,
DISSECT, REPLACE, KQL) parsed and translated once.

Three-valued logic as ES|QL: a comparison with null or with a multi-valued
column is null, ``AND``/``OR``/``NOT`` propagate null, WHERE keeps a row only
when its condition is true. ``IS NULL`` is false for a multi-value.

STATS aggregates over many rows; ``gatewatch.esql.aggregate`` runs it.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from gatewatch.errors import EsqlSyntaxError, KqlSyntaxError
from gatewatch.esql import ast
from gatewatch.esql.dissect import compile_dissect
from gatewatch.esql.functions import AGGREGATES, CASTS, FUNCTIONS, UNSUPPORTED, apply
from gatewatch.esql.grok import compile_grok
from gatewatch.esql.javaregex import java_regex
from gatewatch.esql.lucene import lucene_regex, wildcard
from gatewatch.esql.names import DocumentField, Scope, Slot, _name_matches
from gatewatch.esql.regex import PatternError
from gatewatch.esql.requirement import requirement
from gatewatch.esql.values import (
    Period,
    Value,
    arithmetic,
    as_list,
    checked_long,
    compare,
    field_reader,
    is_number,
    normalize,
    parse_date,
)
from gatewatch.kql import ast as kql_ast
from gatewatch.kql import compile_query as compile_kql

Document = Mapping[str, Any]


class Row:
    """One ES|QL row: the document it came from, the computed columns, the query's NOW()."""

    __slots__ = ("document", "columns", "now")

    def __init__(self, document: Document, columns: dict[str, Value], now: datetime) -> None:
        self.document = document
        self.columns = columns
        self.now = now

    def copy(self) -> Row:
        return Row(self.document, dict(self.columns), self.now)


Evaluator = Callable[[Row], Value]
Stage = Callable[[list[Row]], list[Row]]


# --- the compiled query ---------------------------------------------------------------------------


@dataclass
class Pipeline:
    stages: list[Stage]
    scope: Scope

    def run(self, rows: list[Row]) -> list[Row]:
        for stage in self.stages:
            if not rows:
                return rows
            rows = stage(rows)
        return rows


class CompiledEsql:
    """A compiled ES|QL query, called with a document: ``True`` when a row is left.

    ``query`` is the text; ``fields`` the document fields it reads; ``requirement``
    a KQL syntax tree every matching document satisfies (from the WHERE
    conditions on document fields before any STATS; None when there is none),
    which the rule index and lint read; ``aggregates`` whether it has STATS
    (then one event alone never matches: see ``gatewatch.esql.aggregate``).
    NOW() is the document's @timestamp (at admission: the time of the request).
    """

    __slots__ = ("query", "ast", "fields", "requirement", "aggregates", "pipeline", "_has_now")

    def __init__(self, *, query: str, tree: ast.Query, fields: frozenset[str], requirement: kql_ast.Node | None,
                 pipeline: Pipeline, aggregates: bool) -> None:
        self.query = query
        self.ast = tree
        self.fields = fields
        self.requirement = requirement
        self.pipeline = pipeline
        self.aggregates = aggregates

    def __call__(self, document: Document) -> bool:
        if self.aggregates:
            return False
        return bool(self.rows_for(document))

    def rows_for(self, document: Document, *, now: datetime | None = None) -> list[Row]:
        """The rows ``document`` leaves after the per-event commands (before any STATS)."""
        moment = now or _document_time(document)
        return self.pipeline.run([Row(document, {}, moment)])

    def columns(self, row: Row) -> dict[str, Value]:
        """The named columns of a row left by the per-event commands (computed ones, and
        document fields the query named), in ES|QL's order."""
        out: dict[str, Value] = {}
        for name, binding in self.pipeline.scope.visible():
            if isinstance(binding, Slot):
                out[name] = row.columns.get(binding.key)
            elif isinstance(binding, DocumentField):
                out[name] = field_reader(binding.field)(row.document)
        return out

    def __repr__(self) -> str:
        return f"CompiledEsql({self.query!r})"


def _document_time(document: Document) -> datetime:
    stamp = document.get("@timestamp") if isinstance(document, Mapping) else None
    parsed = parse_date(stamp) if isinstance(stamp, str) else None
    return parsed or datetime.now(timezone.utc)


# --- compiling ---------------------------------------------------------------------------------------


class _Refusal(Exception):
    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


class QueryCompiler:
    """Compiles the commands of one query; ``fields`` collects the document fields read."""

    def __init__(self, query: ast.Query) -> None:
        self.query = query
        self.scope = Scope()
        self.fields: set[str] = set()

    def refuse(self, reason: str, offset: int) -> _Refusal:
        return _Refusal(reason, offset)

    # -- commands

    def source(self, command: ast.From | ast.Row) -> list[Stage]:
        if isinstance(command, ast.From):
            for name in command.metadata:
                if name not in ("_id", "_index", "_version", "_score", "_ignored", "_source", "_index_mode"):
                    raise self.refuse(f"unsupported metadata field [{name}]", command.offset)
            return []
        evaluators = []
        for item in command.fields:
            evaluator = self.expression(item.expression)
            evaluators.append((self.scope.define(item.name).key, evaluator))

        def row_stage(rows: list[Row]) -> list[Row]:
            for row in rows:
                for key, evaluator in evaluators:
                    row.columns[key] = evaluator(row)
            return rows

        return [row_stage]

    def command(self, command: ast.Command) -> Stage:
        if isinstance(command, ast.Where):
            condition = self.expression(command.condition)
            return lambda rows: [row for row in rows if condition(row) is True]
        if isinstance(command, ast.Eval):
            evaluators = []
            for item in command.fields:
                evaluator = self.expression(item.expression)  # sees the columns defined before it
                evaluators.append((self.scope.define(item.name).key, evaluator))

            def eval_stage(rows: list[Row]) -> list[Row]:
                for row in rows:
                    for key, evaluator in evaluators:
                        row.columns[key] = evaluator(row)
                return rows

            return eval_stage
        if isinstance(command, ast.Grok):
            return self.grok(command)
        if isinstance(command, ast.Dissect):
            return self.dissect(command)
        if isinstance(command, (ast.Keep, ast.Drop)):
            return self.project(command)
        if isinstance(command, ast.Rename):
            return self.rename(command)
        if isinstance(command, ast.Limit):
            count = command.count
            return lambda rows: rows[:count]
        if isinstance(command, ast.Sort):
            return self.sort(command)
        if isinstance(command, ast.MvExpand):
            return self.mv_expand(command)
        if isinstance(command, ast.Stats):
            raise self.refuse("STATS aggregates over many events: it runs in replay, never on one event",
                              command.offset)
        if isinstance(command, (ast.From, ast.Row)):
            raise self.refuse("FROM and ROW only start a query", command.offset)
        raise self.refuse(f"unsupported command {type(command).__name__}", 0)  # pragma: no cover

    def grok(self, command: ast.Grok) -> Stage:
        source = self.expression(command.input)
        if len(command.patterns) != 1:
            raise self.refuse("GROK with several patterns is not supported", command.pattern_offset)
        try:
            pattern = compile_grok(command.patterns[0])
        except PatternError as error:
            raise self.refuse(f"invalid GROK pattern: {error.reason}", command.pattern_offset) from None
        targets = [(capture.column, self.scope.define(capture.column).key) for capture in pattern.columns]

        def grok_stage(rows: list[Row]) -> list[Row]:
            for row in rows:
                found: dict[str, list[Any]] = {column: [] for column, _ in targets}
                for text in as_list(source(row)):
                    if isinstance(text, str):
                        captured = pattern.captures(text)
                        if captured is not None:
                            for column, values in captured.items():
                                found[column].extend(values)
                for column, key in targets:
                    row.columns[key] = normalize(found[column])
            return rows

        return grok_stage

    def dissect(self, command: ast.Dissect) -> Stage:
        source = self.expression(command.input)
        try:
            pattern = compile_dissect(command.pattern, command.append_separator)
        except PatternError as error:
            raise self.refuse(f"invalid DISSECT pattern: {error.reason}", command.pattern_offset) from None
        targets = [(column, self.scope.define(column).key) for column in pattern.columns]

        def dissect_stage(rows: list[Row]) -> list[Row]:
            for row in rows:
                found: dict[str, list[Any]] = {column: [] for column, _ in targets}
                for text in as_list(source(row)):
                    if isinstance(text, str):
                        parsed = pattern.parse(text)
                        if parsed is not None:
                            for column, value in parsed.items():
                                found[column].append(value)
                for column, key in targets:
                    row.columns[key] = normalize(found[column])
            return rows

        return dissect_stage

    def project(self, command: ast.Keep | ast.Drop) -> Stage:
        keep = isinstance(command, ast.Keep)
        scope = self.scope
        for name in list(scope.bindings):
            matched = any(_name_matches(pattern, name) for pattern in command.patterns)
            if keep != matched:
                scope.bindings[name] = None
        scope.filters.append(("keep" if keep else "drop", command.patterns))
        if keep:
            ordered: list[str] = []
            for pattern in command.patterns:
                for name in scope.order:
                    if name not in ordered and _name_matches(pattern, name):
                        ordered.append(name)
                if "*" not in pattern and pattern not in ordered and scope.resolve(pattern) is not None:
                    ordered.append(pattern)  # a document field named in KEEP becomes an output column
            scope.order = ordered
        else:
            scope.order = [name for name in scope.order if scope.resolve(name) is not None]
        return lambda rows: rows

    def rename(self, command: ast.Rename) -> Stage:
        for old, new in command.pairs:
            binding = self.scope.resolve(old)
            if binding is None:
                raise self.refuse(f"Unknown column [{old}]", command.offset)
            if isinstance(binding, DocumentField):
                self.fields.add(binding.field)
            self.scope.bindings[new] = binding
            self.scope.bindings[old] = None
            order = self.scope.order
            if old in order:
                order[order.index(old)] = new
            else:
                order.append(new)
            if order.count(new) > 1:
                order.reverse()
                order.remove(new)
                order.reverse()
        return lambda rows: rows

    def sort(self, command: ast.Sort) -> Stage:
        keys = [(self.expression(order.expression), order) for order in command.orders]

        def sort_stage(rows: list[Row]) -> list[Row]:
            for evaluator, order in reversed(keys):
                nulls_first = order.nulls_first if order.nulls_first is not None else order.descending
                present = [(row, evaluator(row)) for row in rows]
                with_values = [(row, value) for row, value in present if value is not None]
                nulls = [row for row, value in present if value is None]
                try:
                    with_values.sort(key=lambda item: _sort_key(item[1], order.descending), reverse=order.descending)
                except TypeError:
                    pass  # values of different types: keep their order
                ordered = [row for row, _ in with_values]
                rows = nulls + ordered if nulls_first else ordered + nulls
            return rows

        return sort_stage

    def mv_expand(self, command: ast.MvExpand) -> Stage:
        source = self.expression(ast.Column(command.column, command.offset))
        key = self.scope.define(command.column).key

        def expand_stage(rows: list[Row]) -> list[Row]:
            out: list[Row] = []
            for row in rows:
                values = as_list(source(row)) or [None]
                for value in values:
                    copy = row.copy()
                    copy.columns[key] = value
                    out.append(copy)
            return out

        return expand_stage

    # -- expressions

    def expression(self, node: ast.Expression) -> Evaluator:
        method = getattr(self, "_" + type(node).__name__.lower())
        return method(node)

    def _literal(self, node: ast.Literal) -> Evaluator:
        value = node.value
        return lambda row: value

    def _column(self, node: ast.Column) -> Evaluator:
        binding = self.scope.resolve(node.name)
        if binding is None:
            raise self.refuse(f"Unknown column [{node.name}]", node.offset)
        if isinstance(binding, Slot):
            key = binding.key
            return lambda row: row.columns.get(key)
        self.fields.add(binding.field)
        read = field_reader(binding.field)
        return lambda row: read(row.document)

    def _parameter(self, node: ast.Parameter) -> Evaluator:
        raise self.refuse("query parameters (?) have no value in a rule", node.offset)

    def _matchoperator(self, node: ast.MatchOperator) -> Evaluator:
        raise self.refuse("the match operator (:) is full-text search, which needs an Elasticsearch index",
                          node.offset)

    def _negate(self, node: ast.Negate) -> Evaluator:
        item = self.expression(node.item)

        def negate(row: Row) -> Value:
            value = item(row)
            if value is None or isinstance(value, tuple):
                return None
            if is_number(value):
                return checked_long(-value)
            if isinstance(value, (timedelta, Period)):
                return -value
            return None

        return negate

    def _arithmetic(self, node: ast.Arithmetic) -> Evaluator:
        left, right, operator = self.expression(node.left), self.expression(node.right), node.operator
        return lambda row: arithmetic(operator, left(row), right(row))

    def _comparison(self, node: ast.Comparison) -> Evaluator:
        left, right, operator = self.expression(node.left), self.expression(node.right), node.operator
        return lambda row: compare(operator, left(row), right(row))

    def _and(self, node: ast.And) -> Evaluator:
        items = [self.expression(item) for item in node.items]

        def conjunction(row: Row) -> Value:
            unknown = False
            for item in items:
                value = item(row)
                if value is False:
                    return False
                if value is not True:
                    unknown = True
            return None if unknown else True

        return conjunction

    def _or(self, node: ast.Or) -> Evaluator:
        items = [self.expression(item) for item in node.items]

        def disjunction(row: Row) -> Value:
            unknown = False
            for item in items:
                value = item(row)
                if value is True:
                    return True
                if value is not False:
                    unknown = True
            return None if unknown else False

        return disjunction

    def _not(self, node: ast.Not) -> Evaluator:
        item = self.expression(node.item)

        def negation(row: Row) -> Value:
            value = item(row)
            return (not value) if isinstance(value, bool) else None

        return negation

    def _isnull(self, node: ast.IsNull) -> Evaluator:
        value, negated = self.expression(node.value), node.negated
        return lambda row: (value(row) is not None) if negated else (value(row) is None)

    def _in(self, node: ast.In) -> Evaluator:
        value, items, negated = self.expression(node.value), [self.expression(i) for i in node.items], node.negated

        def membership(row: Row) -> Value:
            candidate = value(row)
            if candidate is None or isinstance(candidate, tuple):
                return None
            unknown = False
            for item in items:
                result = compare("==", candidate, item(row))
                if result is True:
                    return False if negated else True
                if result is None:
                    unknown = True
            if unknown:
                return None
            return True if negated else False

        return membership

    def _like(self, node: ast.Like) -> Evaluator:
        value, negated = self.expression(node.value), node.negated
        matchers = []
        for pattern, offset in zip(node.patterns, node.pattern_offsets or (node.offset,) * len(node.patterns)):
            try:
                matchers.append(lucene_regex(pattern) if node.regex else wildcard(pattern))
            except PatternError as error:
                kind = "RLIKE" if node.regex else "LIKE"
                what = "cannot be translated" if error.untranslatable else "is invalid"
                raise self.refuse(f"{kind} pattern {what}: {error.reason}", offset) from None

        def like(row: Row) -> Value:
            text = value(row)
            if not isinstance(text, str):
                return None  # null, a multi-value, or not a string
            matched = any(matcher(text) for matcher in matchers)
            return not matched if negated else matched

        return like

    def _cast(self, node: ast.Cast) -> Evaluator:
        function = CASTS.get(node.type)
        if function is None:
            raise self.refuse(f"unsupported cast to [{node.type}]", node.offset)
        return self._call(ast.Call(name=function, args=(node.value,), offset=node.offset))

    def _call(self, node: ast.Call) -> Evaluator:
        name = node.name
        if name in UNSUPPORTED:
            raise self.refuse(f"function {name.upper()}() is not supported: {UNSUPPORTED[name]}", node.offset)
        if name in AGGREGATES:
            raise self.refuse(f"aggregate function {name.upper()}() is only allowed in STATS", node.offset)
        if name == "case":
            return self._case(node)
        if name == "coalesce":
            return self._coalesce(node)
        if name == "kql":
            return self._kql(node)
        if name == "now":
            if node.args:
                raise self.refuse("NOW() takes no arguments", node.offset)
            return lambda row: row.now
        function = FUNCTIONS.get(name)
        if function is None:
            raise self.refuse(f"unknown or unsupported function {name.upper()}()", node.offset)
        count = len(node.args)
        if node.star or count < function.min_args or (function.max_args is not None and count > function.max_args):
            raise self.refuse(f"{name.upper()}() takes {function.arity_text()}, got {count}", node.offset)
        args = [self.expression(arg) for arg in node.args]
        self._check_literal_patterns(node)
        return lambda row: apply(function, [arg(row) for arg in args])

    def _check_literal_patterns(self, node: ast.Call) -> None:
        """A literal REPLACE regex is checked now, so a bad one refuses the rule, not every event."""
        if node.name == "replace" and isinstance(node.args[1], ast.Literal) and isinstance(node.args[1].value, str):
            try:
                java_regex(node.args[1].value)
            except PatternError as error:
                raise self.refuse(f"REPLACE regex: {error.reason}", node.args[1].offset) from None

    def _case(self, node: ast.Call) -> Evaluator:
        if len(node.args) < 2:
            raise self.refuse("CASE() takes at least 2 arguments", node.offset)
        args = [self.expression(arg) for arg in node.args]
        pairs = list(zip(args[0::2], args[1::2]))
        default = args[-1] if len(args) % 2 else None

        def case(row: Row) -> Value:
            for condition, value in pairs:
                if condition(row) is True:
                    return value(row)
            return default(row) if default is not None else None

        return case

    def _coalesce(self, node: ast.Call) -> Evaluator:
        if not node.args:
            raise self.refuse("COALESCE() takes at least 1 argument", node.offset)
        args = [self.expression(arg) for arg in node.args]

        def coalesce(row: Row) -> Value:
            for arg in args:
                value = arg(row)
                if value is not None:
                    return value
            return None

        return coalesce

    def _kql(self, node: ast.Call) -> Evaluator:
        if len(node.args) != 1 or not isinstance(node.args[0], ast.Literal) or not isinstance(node.args[0].value, str):
            raise self.refuse("KQL() takes one string literal", node.offset)
        try:
            compiled = compile_kql(node.args[0].value)
        except KqlSyntaxError as error:
            raise self.refuse(f"KQL() query: {error.reason} (column {error.column})", node.args[0].offset) from None
        self.fields.update(field_name for field_name in compiled.fields if "*" not in field_name)
        return lambda row: compiled(row.document)


def _sort_key(value: Value, descending: bool) -> Any:
    if isinstance(value, tuple):
        value = min(value) if not descending else max(value)  # ES|QL sorts a multi-value by its min (max)
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return (value.version, int(value))
    return value


def compile_pipeline(query: ast.Query, *, stop_at_stats: bool = False) -> tuple[QueryCompiler, Pipeline, int,
                                                                                kql_ast.Node | None]:
    """The per-event commands of ``query`` -> (compiler, pipeline, index of the first command
    not compiled, requirement). Raises ``_Refusal``."""
    compiler = QueryCompiler(query)
    stages = compiler.source(query.source)
    required: list[kql_ast.Node] = []
    certain = True  # no command yet that makes WHERE conditions not imply the document's values
    index = 1
    for index, command in enumerate(query.commands[1:], start=1):
        if isinstance(command, ast.Stats) and stop_at_stats:
            return compiler, Pipeline(stages, compiler.scope), index, _and(required)
        if isinstance(command, ast.Where) and certain:
            found = requirement(command.condition, compiler.scope.resolve)
            if found is not None:
                required.append(found)
        if isinstance(command, ast.MvExpand):
            certain = False
        stages.append(compiler.command(command))
    else:
        index = len(query.commands)
    return compiler, Pipeline(stages, compiler.scope), index, _and(required)


def _and(nodes: list[kql_ast.Node]) -> kql_ast.Node | None:
    if not nodes:
        return None
    return nodes[0] if len(nodes) == 1 else kql_ast.And(tuple(nodes))


def refusal_error(query: str, refusal: _Refusal) -> EsqlSyntaxError:
    return EsqlSyntaxError(refusal.reason, query=query, offset=refusal.offset, unsupported=True)


def compile_esql(query: str | ast.Query) -> CompiledEsql:
    """Compile ES|QL text (or a parsed query) for evaluation one event at a time.

    A query with STATS compiles too (``aggregates`` is then True): its commands
    up to STATS run per event, and one event alone never matches.
    Raises ``EsqlSyntaxError``; ``unsupported`` is True for valid ES|QL
    gatewatch does not evaluate.
    """
    from gatewatch.esql.parser import parse

    tree = parse(query) if isinstance(query, str) else query
    try:
        compiler, pipeline, _, required = compile_pipeline(tree, stop_at_stats=True)
        if tree.has_stats:
            from gatewatch.esql.aggregate import check_stats  # the STATS part must compile as well

            check_stats(tree)
    except _Refusal as refusal:
        raise refusal_error(tree.text, refusal) from None
    return CompiledEsql(
        query=tree.text, tree=tree, fields=frozenset(compiler.fields), requirement=required, pipeline=pipeline,
        aggregates=tree.has_stats,
    )
