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
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from gatewatch.errors import EsqlSyntaxError, GatewatchError, KqlSyntaxError
from gatewatch.esql import ast
from gatewatch.esql.dissect import compile_dissect
from gatewatch.esql.functions import AGGREGATES, CASTS, FUNCTIONS, UNSUPPORTED, add_period, apply
from gatewatch.esql.grok import compile_grok
from gatewatch.esql.regex import PatternError, lucene_regex, wildcard
from gatewatch.esql.values import (
    LONG_MAX,
    LONG_MIN,
    Period,
    Value,
    as_list,
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


# --- names: which column does a name refer to ----------------------------------------------


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
                return _checked(-value)
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
            from gatewatch.esql.regex import java_regex

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


def _checked(number: int | float) -> int | float | None:
    if isinstance(number, int) and not LONG_MIN <= number <= LONG_MAX:
        return None  # long overflow: ES|QL gives null with a warning
    return number


def arithmetic(operator: str, left: Value, right: Value) -> Value:
    """``+ - * / %`` with ES|QL's rules: nulls and multi-values give null, integer division
    truncates, a division by zero or an overflow gives null, dates move by durations."""
    if left is None or right is None or isinstance(left, tuple) or isinstance(right, tuple):
        return None
    try:
        return _arithmetic(operator, left, right)
    except (OverflowError, ValueError, ArithmeticError):
        return None  # a date out of range, a float overflow: null, as ES|QL's failed evaluation


def _arithmetic(operator: str, left: Any, right: Any) -> Value:
    if is_number(left) and is_number(right):
        if operator == "+":
            return _checked(left + right)
        if operator == "-":
            return _checked(left - right)
        if operator == "*":
            return _checked(left * right)
        if right == 0:
            return None
        if isinstance(left, int) and isinstance(right, int):
            quotient = abs(left) // abs(right) * (1 if (left >= 0) == (right >= 0) else -1)  # Java truncation
            return _checked(quotient) if operator == "/" else left - right * quotient
        if operator == "/":
            return left / right
        return left - right * int(left / right)  # Java's % on doubles keeps the dividend's sign
    if isinstance(left, datetime) and operator in "+-":
        sign = 1 if operator == "+" else -1
        if isinstance(right, timedelta):
            return left + sign * right
        if isinstance(right, Period):
            return add_period(left, right, sign)
    if isinstance(right, datetime) and operator == "+":
        return _arithmetic("+", right, left)
    if isinstance(left, timedelta) and isinstance(right, timedelta) and operator in "+-":
        return left + right if operator == "+" else left - right
    if isinstance(left, Period) and isinstance(right, Period) and operator in "+-":
        sign = 1 if operator == "+" else -1
        return Period(left.months + sign * right.months, left.days + sign * right.days)
    return None


# --- the necessary condition, as KQL, for the rule index and lint ---------------------------------


def requirement(condition: ast.Expression, resolve: Callable[[str], Binding]) -> kql_ast.Node | None:
    """A KQL tree implied by ``condition`` over document fields (None: nothing certain)."""
    if isinstance(condition, ast.And):
        parts = [part for part in (requirement(item, resolve) for item in condition.items) if part is not None]
        return None if not parts else parts[0] if len(parts) == 1 else kql_ast.And(tuple(parts))
    if isinstance(condition, ast.Or):
        parts = [requirement(item, resolve) for item in condition.items]
        return None if any(part is None for part in parts) else kql_ast.Or(tuple(parts))  # type: ignore[arg-type]

    def document_field(node: ast.Expression) -> str | None:
        if isinstance(node, ast.Column):
            binding = resolve(node.name)
            return binding.field if isinstance(binding, DocumentField) else None
        return None

    def text(node: ast.Expression) -> str | None:
        return node.value if isinstance(node, ast.Literal) and isinstance(node.value, str) else None

    if isinstance(condition, ast.Comparison) and condition.operator == "==":
        for column, literal in ((condition.left, condition.right), (condition.right, condition.left)):
            name, value = document_field(column), text(literal)
            if name is not None and value is not None:
                return kql_ast.Term(name, value)
    if isinstance(condition, ast.In) and not condition.negated:
        name = document_field(condition.value)
        values = [text(item) for item in condition.items]
        if name is not None and values and all(value is not None for value in values):
            terms = tuple(kql_ast.Term(name, value) for value in values)  # type: ignore[arg-type]
            return terms[0] if len(terms) == 1 else kql_ast.Or(terms)
    if isinstance(condition, ast.IsNull) and condition.negated:
        name = document_field(condition.value)
        if name is not None:
            return kql_ast.Exists(name)
    if isinstance(condition, ast.Like) and not condition.regex and not condition.negated and len(condition.patterns) == 1:
        name, pattern = document_field(condition.value), condition.patterns[0]
        if name is not None and "?" not in pattern and "\\" not in pattern:
            return kql_ast.Wildcard.from_pattern(name, pattern) if "*" in pattern else kql_ast.Term(name, pattern)
    if isinstance(condition, ast.Call) and condition.name in ("starts_with", "ends_with") and len(condition.args) == 2:
        name, affix = document_field(condition.args[0]), text(condition.args[1])
        if name is not None and affix is not None:
            parts = (affix, "") if condition.name == "starts_with" else ("", affix)
            return kql_ast.Wildcard(name, parts)
    if isinstance(condition, ast.Call) and condition.name == "kql" and condition.args:
        query = text(condition.args[0])
        if query is not None:
            try:
                return compile_kql(query).node
            except GatewatchError:
                return None
    return None


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
